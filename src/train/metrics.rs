//! CSV rows and the run record: `MetricsRow` is the schema of `metrics.csv` (one row per
//! evaluation), `StepRow` that of `steps.csv` (one row per iteration, under `log_steps`),
//! `StepStats` averages what the training steps return between two rows, and `RunRecord` is
//! `run.json`, rewritten atomically (temp file + rename). `csv_log` writes the CSV files.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::fingerprint::DataFingerprint;
use crate::data::images::SkippedImage;
use crate::files::{self, write_atomic};
use crate::train::csv_log::CsvRow;

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
    /// lambda · the method's loss (`align_loss`; CORAL's for method coral, so lambda ·
    /// coral_loss there): the term that enters the objective.
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
    /// The unweighted loss of the run's method, mean since the previous row: CORAL's for
    /// `coral` (equal to `coral_loss`), DDC's MMD², DAN's MK-MMD. Files written before this
    /// column existed (all of method coral) read it as `coral_loss` (`read_rows`).
    #[serde(default = "nan")]
    pub align_loss: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// The column names of `metrics.csv`.
pub const COLUMNS: [&str; 12] = [
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
    "align_loss",
];

impl CsvRow for MetricsRow {
    const COLUMNS: &'static [&'static str] = &COLUMNS;
}

/// One training iteration, as `steps.csv` holds it (under `log_steps`): the values behind the
/// means of a `metrics.csv` row, for comparisons step by step (fp32 against bf16, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    /// The iteration (0-based: the step that takes `iteration` to `iteration + 1`).
    pub iteration: usize,
    /// Base learning rate of this step (before multipliers).
    pub lr: f64,
    pub class_loss: f64,
    pub coral_loss: f64,
    pub coral_distance: f64,
    /// Source images of the batch classified correctly.
    pub correct: usize,
    /// The method's unweighted loss (as in `MetricsRow`; older files: `coral_loss`).
    #[serde(default = "nan")]
    pub align_loss: f64,
}

impl CsvRow for StepRow {
    const COLUMNS: &'static [&'static str] =
        &["iteration", "lr", "class_loss", "coral_loss", "coral_distance", "correct", "align_loss"];
}

/// What one training step reports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepStats {
    pub class_loss: f64,
    pub coral_loss: f64,
    pub coral_distance: f64,
    pub correct: usize,
    pub seen: usize,
    /// The method's loss; absent from checkpoints written before it existed (method coral).
    #[serde(default)]
    pub align_loss: f64,
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
        self.sum.align_loss += s.align_loss;
        self.steps += 1;
    }

    /// (class_loss, coral_loss, coral_distance, source_acc, align_loss); NaN before the first
    /// step.
    pub fn means(&self) -> (f64, f64, f64, f64, f64) {
        let n = self.steps as f64;
        if self.steps == 0 {
            return (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN);
        }
        (
            self.sum.class_loss / n,
            self.sum.coral_loss / n,
            self.sum.coral_distance / n,
            self.sum.correct as f64 / self.sum.seen as f64,
            self.sum.align_loss / n,
        )
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
        rows.push(row.with_align_loss());
    }
    Ok(rows)
}

impl MetricsRow {
    /// Before the `align_loss` column every run was of method coral, whose loss it is.
    fn with_align_loss(mut self) -> Self {
        if self.align_loss.is_nan() {
            self.align_loss = self.coral_loss;
        }
        self
    }
}

/// Every row of a `steps.csv`; an error names the file. Files from before the `align_loss`
/// column read it as `coral_loss` (as `read_rows` does).
pub fn read_steps(path: &Path) -> Result<Vec<StepRow>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let rows = reader
        .deserialize()
        .collect::<Result<Vec<StepRow>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(rows
        .into_iter()
        .map(|mut r| {
            if r.align_loss.is_nan() {
                r.align_loss = r.coral_loss;
            }
            r
        })
        .collect())
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

/// `deep-coral sweep --status` / `--wait` while runs are still to finish and none failed
/// (EX_TEMPFAIL: look again later).
pub const EXIT_UNFINISHED: u8 = 75;

/// The exit code of a process stopped by signal `sig`, as a shell reports it: 128 + `sig` (130
/// for SIGINT, 143 for SIGTERM).
pub fn signal_exit_code(sig: i32) -> u8 {
    128u8.saturating_add(sig.clamp(0, 127) as u8)
}

impl Status {
    /// Every status, in declaration order.
    pub const ALL: [Status; 5] = [Status::Running, Status::Done, Status::Diverged, Status::Interrupted, Status::Failed];

    /// The exit code of `deep-coral train` for a run that ended so: 0 done, 3 diverged, 130
    /// interrupted (by SIGINT, SIGTERM or SIGUSR1, checkpointed), 1 otherwise. The one place
    /// these numbers are written; everything else asks here.
    pub const fn exit_code(self) -> u8 {
        match self {
            Status::Done => 0,
            Status::Diverged => 3,
            Status::Interrupted => 130,
            Status::Running | Status::Failed => 1,
        }
    }

    /// The status a `train` exit code says, where it says one besides "failed": done,
    /// diverged, interrupted.
    pub fn of_exit_code(code: i32) -> Option<Status> {
        [Status::Done, Status::Diverged, Status::Interrupted].into_iter().find(|s| i32::from(s.exit_code()) == code)
    }

    /// As run.json writes it: `running`, `done`, `diverged`, `interrupted`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Done => "done",
            Status::Diverged => "diverged",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
        }
    }
}

/// Library versions recorded with every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    #[serde(default)]
    pub deep_coral: String,
    #[serde(default)]
    pub libtorch: String,
}

impl Default for Versions {
    fn default() -> Self {
        Self { deep_coral: env!("CARGO_PKG_VERSION").into(), libtorch: env!("DEEP_CORAL_TORCH_VERSION").into() }
    }
}

/// Images per domain, after any skipped files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageCounts {
    pub source: usize,
    pub target: usize,
}

/// `run.json`: the effective config and how the run went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub config: TrainConfig,
    pub status: Status,
    #[serde(default)]
    pub versions: Versions,
    /// e.g. "cpu" or "cuda:0".
    #[serde(default)]
    pub device: String,
    /// libtorch intra-op threads actually used.
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default)]
    pub images: ImageCounts,
    #[serde(default)]
    pub skipped_images: Vec<SkippedImage>,
    #[serde(default)]
    pub iterations_done: usize,
    /// Target accuracy at the last evaluation (the paper's number).
    #[serde(default)]
    pub final_target_acc: Option<f64>,
    /// Highest target accuracy over all evaluations (not the paper's protocol).
    #[serde(default)]
    pub best_target_acc: Option<f64>,
    /// Iteration at which a loss turned NaN or infinite.
    #[serde(default)]
    pub diverged_at: Option<usize>,
    #[serde(default)]
    pub error: Option<String>,
    /// Seconds in the training loop (evaluations included).
    #[serde(default)]
    pub wall_time_s: f64,
    /// Seconds before the first iteration: scanning, loading weights, decoding images or
    /// (under `finetune` fc/last) building or reading the feature cache.
    #[serde(default)]
    pub setup_time_s: f64,
    #[serde(default)]
    pub started: String,
    /// The data the run started on; `--resume` refuses other data. Absent in older records.
    #[serde(default)]
    pub data: Option<DataFingerprint>,
}

impl RunRecord {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// `write`, and when that fails (a full disk has no room for the temporary copy), an
    /// overwrite in place, which reuses the old file's space: the last record of a failed run
    /// should still say so.
    pub fn write_last(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomic(path, text.as_bytes()).or_else(|first| {
            let mut f = files::create_nofollow(path).map_err(|_| first)?;
            f.write_all(text.as_bytes()).map_err(|e| files::io_context(e, "writing", path))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::csv_log::CsvLog;

    #[test]
    fn a_status_names_itself_as_run_json_does_and_has_one_exit_code() {
        for s in Status::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
        assert_eq!(Status::ALL.map(Status::exit_code), [1, 0, 3, 130, 1]);
        assert_eq!(Status::of_exit_code(130), Some(Status::Interrupted));
        assert_eq!(Status::of_exit_code(3), Some(Status::Diverged));
        assert_eq!(Status::of_exit_code(1), None);
    }

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
            align_loss: 0.25,
        }
    }

    #[test]
    fn header_is_the_schema_and_rows_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.csv");
        let mut log = CsvLog::<MetricsRow>::create(&path).unwrap();
        log.append(&row(0)).unwrap();
        log.append(&row(50)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
        assert_eq!(text.lines().nth(1).unwrap(), "0,0.5,0.001,NaN,0.25,0.2,2.0,0.5,0.75,1.0,3.5,0.25");
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].class_loss.is_nan());
        assert_eq!(rows[1].iteration, 50);
        drop(log);
        let mut log = CsvLog::<MetricsRow>::resume(&path, 1).unwrap();
        log.append(&row(100)).unwrap();
        let its: Vec<_> = read_rows(&path).unwrap().iter().map(|r| r.iteration).collect();
        assert_eq!(its, [0, 100]);
        drop(log);
        // A process killed mid-write leaves a cut-off last line; rows past the checkpoint go.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"150,0.5,0.0").unwrap();
        let mut log = CsvLog::<MetricsRow>::resume(&path, 2).unwrap();
        log.append(&row(150)).unwrap();
        let its: Vec<_> = read_rows(&path).unwrap().iter().map(|r| r.iteration).collect();
        assert_eq!(its, [0, 100, 150]);
        let err = CsvLog::<MetricsRow>::resume(&path, 4).err().expect("too few rows").to_string();
        assert!(err.contains("after 4"), "{err}");
        // A file from before the align_loss column reads it as the CORAL loss.
        let old = tmp.path().join("old.csv");
        std::fs::write(&old, format!("{}\n0,0.5,0.001,1.0,0.25,0.2,2.0,0.5,0.75,1.0,3.5\n", COLUMNS[..11].join(",")))
            .unwrap();
        assert_eq!(read_rows(&old).unwrap()[0].align_loss, 0.25);
        std::fs::remove_file(&old).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn step_means() {
        let mut m = StepMeans::default();
        assert!(m.means().0.is_nan());
        m.add(StepStats {
            class_loss: 1.0,
            coral_loss: 0.1,
            coral_distance: 2.0,
            correct: 3,
            seen: 4,
            align_loss: 0.1,
        });
        m.add(StepStats {
            class_loss: 3.0,
            coral_loss: 0.3,
            coral_distance: 4.0,
            correct: 1,
            seen: 4,
            align_loss: 0.5,
        });
        let (c, l, d, a, al) = m.means();
        assert_eq!(al, 0.3);
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
}
