//! The run folder's CSV files (`metrics.csv`, `steps.csv`), one whole row at a time: each row
//! is formatted in memory and handed to the kernel in one `write`; if that write fails part-way
//! (the disk filled up), the file is cut back to its last whole row, so a file never ends in
//! half a row. Opened without following a planted link.

use std::fs::File;
use std::io::{Seek, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::files::{self, write_atomic};

/// A row type of a CSV file: its fields in the order of `COLUMNS`.
pub trait CsvRow: Serialize + DeserializeOwned {
    const COLUMNS: &'static [&'static str];
}

pub struct CsvLog<R: CsvRow> {
    file: File,
    /// Length of the file after its last whole row.
    len: u64,
    path: PathBuf,
    rows: PhantomData<R>,
}

impl<R: CsvRow> CsvLog<R> {
    /// Starts a new file (truncating any earlier one) with the header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = files::create_nofollow(path)?;
        let mut log = Self { file, len: 0, path: path.to_path_buf(), rows: PhantomData };
        log.write_whole(&csv_line(|w| w.write_record(R::COLUMNS))?)?;
        Ok(log)
    }

    /// Reopens an existing file for appending, keeping its first `keep_rows` rows (a resumed
    /// run drops rows written after its checkpoint, a cut-off last line included). The kept
    /// rows are rewritten atomically, so a kill while resuming loses nothing.
    pub fn resume(path: &Path, keep_rows: usize) -> Result<Self> {
        files::check_writable_target(path)?;
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let rows = reader
            .deserialize()
            .take(keep_rows)
            .collect::<Result<Vec<R>, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            rows.len() == keep_rows,
            "{} holds {} rows, but the checkpoint was taken after {keep_rows}",
            path.display(),
            rows.len()
        );
        let mut kept = csv_line(|w| w.write_record(R::COLUMNS))?;
        for row in &rows {
            kept.extend(csv_line(|w| w.serialize(row))?);
        }
        write_atomic(path, &kept)?;
        let file = files::open_append(path)?;
        Ok(Self { file, len: kept.len() as u64, path: path.to_path_buf(), rows: PhantomData })
    }

    pub fn append(&mut self, row: &R) -> Result<()> {
        let line = csv_line(|w| w.serialize(row))?;
        self.write_whole(&line)
    }

    /// Writes `bytes` whole or not at all.
    fn write_whole(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.file.write_all(bytes) {
            // Cut a partly written row off again (a full disk accepts part of a write).
            self.file.set_len(self.len).ok();
            self.file.seek(std::io::SeekFrom::Start(self.len)).ok();
            return Err(files::io_context(e, "writing", &self.path));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// One CSV line (with its newline), as `write` formats it.
fn csv_line(write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    write(&mut w)?;
    w.into_inner().map_err(|e| anyhow::anyhow!("formatting a CSV row: {e}"))
}
