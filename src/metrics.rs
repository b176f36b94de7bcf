//! CSV rows and the run record: `MetricsRow` is the schema of `metrics.csv` (one row per
//! evaluation, flushed whole), `StepStats` averages what the training steps return between two
//! rows, and `RunRecord` is `run.json`, rewritten atomically (temp file + rename).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::images::SkippedImage;

/// One evaluation: the columns of `metrics.csv`, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Training iterations completed.
    pub iteration: usize,
    /// Passes over the source domain completed (fractional).
    pub epoch: f64,
    /// Base learning rate of the last iteration (before multipliers).
    pub lr: f64,
    /// Source cross-entropy, mean over the iterations since the previous row.
    pub class_loss: f64,
    /// Unweighted CORAL loss 1/(4d²)‖C_S − C_T‖²_F, mean since the previous row.
    pub coral_loss: f64,
    /// lambda · coral_loss: the term that enters the objective.
    pub weighted_coral_loss: f64,
    /// ‖C_S − C_T‖_F between the source and target batches, mean since the previous row
    /// (logged for lambda = 0 too).
    pub coral_distance: f64,
    /// Accuracy on the source training batches since the previous row (0-1).
    pub source_acc: f64,
    /// Accuracy on the whole target domain, centre crop, eval mode (0-1).
    pub target_acc: f64,
    /// Mean cross-entropy on the whole target domain (labels used for evaluation only).
    pub target_loss: f64,
    /// Seconds since training started.
    pub elapsed_s: f64,
}

/// The column names of `metrics.csv`.
pub const COLUMNS: [&str; 11] = [
    "iteration",
    "epoch",
    "lr",
    "class_loss",
    "coral_loss",
    "weighted_coral_loss",
    "coral_distance",
    "source_acc",
    "target_acc",
    "target_loss",
    "elapsed_s",
];

/// What one training step reports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub class_loss: f64,
    pub coral_loss: f64,
    pub coral_distance: f64,
    pub correct: usize,
    pub seen: usize,
}

/// Sums of `StepStats` since the last row.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepMeans {
    sum: StepStats,
    steps: usize,
}

impl StepMeans {
    pub fn add(&mut self, s: StepStats) {
        self.sum.class_loss += s.class_loss;
        self.sum.coral_loss += s.coral_loss;
        self.sum.coral_distance += s.coral_distance;
        self.sum.correct += s.correct;
        self.sum.seen += s.seen;
        self.steps += 1;
    }

    /// (class_loss, coral_loss, coral_distance, source_acc); NaN before the first step.
    pub fn means(&self) -> (f64, f64, f64, f64) {
        let n = self.steps as f64;
        if self.steps == 0 {
            return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
        }
        (
            self.sum.class_loss / n,
            self.sum.coral_loss / n,
            self.sum.coral_distance / n,
            self.sum.correct as f64 / self.sum.seen as f64,
        )
    }
}

/// `metrics.csv`, one whole row at a time, flushed after each.
pub struct MetricsLog {
    writer: csv::Writer<File>,
    path: PathBuf,
}

impl MetricsLog {
    /// Starts a new file (truncating any earlier one) with the header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        writer.write_record(COLUMNS)?;
        writer.flush()?;
        Ok(Self { writer, path: path.to_path_buf() })
    }

    /// Reopens an existing file for appending, keeping its first `keep_rows` rows (a resumed
    /// run drops rows written after its checkpoint, a cut-off last line included). The kept
    /// rows are rewritten atomically, so a kill while resuming loses nothing.
    pub fn resume(path: &Path, keep_rows: usize) -> Result<Self> {
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let rows = reader
            .deserialize()
            .take(keep_rows)
            .collect::<Result<Vec<MetricsRow>, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            rows.len() == keep_rows,
            "{} holds {} rows, but the checkpoint was taken after {keep_rows}",
            path.display(),
            rows.len()
        );
        let mut kept = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        kept.write_record(COLUMNS)?;
        for row in &rows {
            kept.serialize(row)?;
        }
        write_atomic(path, &kept.into_inner().context("buffering metrics rows")?)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} for appending", path.display()))?;
        let writer = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        Ok(Self { writer, path: path.to_path_buf() })
    }

    pub fn append(&mut self, row: &MetricsRow) -> Result<()> {
        self.writer.serialize(row).with_context(|| format!("writing {}", self.path.display()))?;
        self.writer.flush().with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}

/// Reads every row of a `metrics.csv`; an error names the file, the line and the column.
pub fn read_rows(path: &Path) -> Result<Vec<MetricsRow>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("reading the header of {}", path.display()))?.clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        let row = record.deserialize::<MetricsRow>(Some(&headers)).map_err(|e| {
            let line = record.position().map_or(0, |p| p.line());
            let column = match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => {
                    err.field().and_then(|i| headers.get(i as usize)).unwrap_or("?").to_string()
                }
                _ => "?".into(),
            };
            anyhow::anyhow!("{}: line {line}, column {column}: {e}", path.display())
        })?;
        rows.push(row);
    }
    Ok(rows)
}

/// Where a run stands; `done` is written last, so anything else means "incomplete".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Done,
    Diverged,
    Interrupted,
    Failed,
}

/// Library versions recorded with every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    pub deep_coral: String,
    pub libtorch: String,
}

impl Default for Versions {
    fn default() -> Self {
        Self { deep_coral: env!("CARGO_PKG_VERSION").into(), libtorch: env!("DEEP_CORAL_TORCH_VERSION").into() }
    }
}

/// Images per domain, after any skipped files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageCounts {
    pub source: usize,
    pub target: usize,
}

/// `run.json`: the effective config and how the run went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub config: TrainConfig,
    pub status: Status,
    pub versions: Versions,
    /// e.g. "cpu" or "cuda:0".
    pub device: String,
    /// libtorch intra-op threads actually used.
    pub threads: usize,
    pub classes: Vec<String>,
    pub images: ImageCounts,
    #[serde(default)]
    pub skipped_images: Vec<SkippedImage>,
    pub iterations_done: usize,
    /// Target accuracy at the last evaluation (the paper's number).
    pub final_target_acc: Option<f64>,
    /// Highest target accuracy over all evaluations (not the paper's protocol).
    pub best_target_acc: Option<f64>,
    /// Iteration at which a loss turned NaN or infinite.
    pub diverged_at: Option<usize>,
    pub error: Option<String>,
    /// Seconds in the training loop (evaluations included).
    pub wall_time_s: f64,
    /// Seconds before the first iteration: scanning, loading weights, decoding images or
    /// (under `finetune` fc/last) building or reading the feature cache.
    #[serde(default)]
    pub setup_time_s: f64,
    pub started: String,
}

impl RunRecord {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().ok();
        Ok(())
    })
}

/// Has `write` fill a temporary file beside `path`, then renames it over `path`, so a reader
/// or a crash never sees half a file. The temporary name carries this process's id
/// (`<name>.<pid>.tmp`): two processes writing the same file at once (two runs of a sweep
/// building one feature cache) each rename a whole file of their own.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!("{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    write(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> MetricsRow {
        MetricsRow {
            iteration: i,
            epoch: 0.5,
            lr: 1e-3,
            class_loss: f64::NAN,
            coral_loss: 0.25,
            weighted_coral_loss: 0.2,
            coral_distance: 2.0,
            source_acc: 0.5,
            target_acc: 0.75,
            target_loss: 1.0,
            elapsed_s: 3.5,
        }
    }

    #[test]
    fn header_is_the_schema_and_rows_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.csv");
        let mut log = MetricsLog::create(&path).unwrap();
        log.append(&row(0)).unwrap();
        log.append(&row(50)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
        assert_eq!(text.lines().nth(1).unwrap(), "0,0.5,0.001,NaN,0.25,0.2,2.0,0.5,0.75,1.0,3.5");
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].class_loss.is_nan());
        assert_eq!(rows[1].iteration, 50);
        drop(log);
        let mut log = MetricsLog::resume(&path, 1).unwrap();
        log.append(&row(100)).unwrap();
        let its: Vec<_> = read_rows(&path).unwrap().iter().map(|r| r.iteration).collect();
        assert_eq!(its, [0, 100]);
        drop(log);
        // A process killed mid-write leaves a cut-off last line; rows past the checkpoint go.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"150,0.5,0.0").unwrap();
        let mut log = MetricsLog::resume(&path, 2).unwrap();
        log.append(&row(150)).unwrap();
        let its: Vec<_> = read_rows(&path).unwrap().iter().map(|r| r.iteration).collect();
        assert_eq!(its, [0, 100, 150]);
        let err = MetricsLog::resume(&path, 4).err().expect("too few rows").to_string();
        assert!(err.contains("after 4"), "{err}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn step_means() {
        let mut m = StepMeans::default();
        assert!(m.means().0.is_nan());
        m.add(StepStats { class_loss: 1.0, coral_loss: 0.1, coral_distance: 2.0, correct: 3, seen: 4 });
        m.add(StepStats { class_loss: 3.0, coral_loss: 0.3, coral_distance: 4.0, correct: 1, seen: 4 });
        let (c, l, d, a) = m.means();
        assert_eq!((c, d, a), (2.0, 3.0, 0.5));
        assert!((l - 0.2).abs() < 1e-12);
    }

    #[test]
    fn f64_survive_json_exactly() {
        // Checkpoints keep the running sums of StepMeans in JSON; a resumed run needs every bit.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x >> 11) as f64 / (1u64 << 53) as f64 * 10.0;
            let back: f64 = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:?}");
        }
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("run.json");
        write_atomic(&p, b"{}").unwrap();
        write_atomic(&p, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // The temporary file is this process's own (two runs writing one file never share it).
        let mut used = None;
        write_atomic_with(&p, |t| {
            used = Some(t.to_path_buf());
            Ok(std::fs::write(t, b"[]")?)
        })
        .unwrap();
        assert_eq!(used.unwrap(), tmp.path().join(format!("run.json.{}.tmp", std::process::id())));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[]");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
