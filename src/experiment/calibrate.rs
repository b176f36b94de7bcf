//! Lambda by the paper's rule (§3.3, and the authors' per-shift values): "at the end of
//! training the classification loss and the CORAL loss are roughly the same". For each
//! transfer of a spec, short pilot runs search lambda in log space until the weighted CORAL
//! loss `lambda * l_CORAL` and the classification loss at the pilot's last evaluation agree
//! within a factor (default 2), then a spec with that lambda per transfer (beside lambda = 0)
//! is written for the sweep to run, with every pilot's losses as evidence.
//!
//! The search: the ratio `r(lambda) = lambda * l_CORAL / l_class` grows with lambda (the CORAL
//! loss itself falls as its weight grows, so more slowly than lambda). The first pilot runs
//! at the spec's own nonzero lambda of the transfer (else 1); while every pilot is on one side
//! of `r = 1`, the next lambda is `lambda / r` (exact if the CORAL loss did not depend on
//! lambda), at most 1000x away; once pilots bracket `r = 1`, the next one is the secant of
//! `log r` against `log lambda` between the two nearest, kept inside the bracket. A pilot that
//! diverges counts as "too large". After `max_pilots` the pilot with `|log r|` smallest is
//! taken, and the output says it is outside the factor.
//!
//! Pilots are ordinary runs of a sweep, in `<results>/<name>-calibrate/<src>_<tgt>/lambda_<x>/
//! seed_<n>/`: a calibration stopped part-way resumes, and finished pilots are not rerun.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::experiment::launcher::Launcher;
use crate::experiment::run_state::RunState;
use crate::experiment::spec::{Spec, Transfer};
use crate::experiment::sweep;
use crate::files::write_atomic;
use crate::train::metrics::{self, RunRecord, Status};

/// How to search.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Accept a lambda when `1/factor <= r <= factor`.
    pub factor: f64,
    /// Pilot length; `None` = the spec's own iterations. The learning-rate step keeps its
    /// place as a fraction of the schedule.
    pub pilot_iterations: Option<usize>,
    /// Pilots per transfer at most.
    pub max_pilots: usize,
    /// The seed of every pilot.
    pub seed: u64,
    /// Name of the calibrated spec (default `<name>-calibrated`).
    pub name: Option<String>,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        Self { factor: 2.0, pilot_iterations: None, max_pilots: 6, seed: 1, name: None }
    }
}

/// One pilot run and what it ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pilot {
    pub lambda: f64,
    /// The run folder.
    pub dir: PathBuf,
    /// Classification loss at the last evaluation (mean of the steps since the one before).
    pub class_loss: f64,
    /// `lambda * l_CORAL` at the last evaluation.
    pub weighted_coral_loss: f64,
    /// `weighted_coral_loss / class_loss`; infinite for a pilot that diverged.
    pub ratio: f64,
}

/// The lambda chosen for one transfer, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferCalibration {
    pub source: String,
    pub target: String,
    pub lambda: f64,
    /// The chosen pilot's ratio is within the factor.
    pub within_factor: bool,
    pub pilots: Vec<Pilot>,
}

/// What `calibrate` found, and where it wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub factor: f64,
    pub pilot_iterations: usize,
    pub transfers: Vec<TransferCalibration>,
}

/// The pilots' experiment: the spec's settings on a (possibly shorter) schedule, one seed.
fn pilot_spec(spec: &Spec, opts: &CalibrateOptions) -> Spec {
    let mut train = spec.train.clone();
    if let Some(n) = opts.pilot_iterations {
        let frac = |k: usize| ((k as f64) * n as f64 / train.iterations as f64).round().max(1.0) as usize;
        train.lr_step = frac(train.lr_step);
        train.eval_every = frac(train.eval_every).min(n);
        train.iterations = n;
    }
    Spec {
        name: format!("{}-calibrate", spec.name),
        description: format!("pilot runs of `deep-coral calibrate` for {}", spec.name),
        train,
        transfers: Vec::new(),
        seeds: vec![opts.seed],
        paper_table: None,
        paper_curves: None,
        ..spec.clone()
    }
}

/// Reads how pilot run `dir` (at `lambda`) ended.
fn read_pilot(dir: &Path, lambda: f64) -> Result<Pilot> {
    let record = RunRecord::read(&dir.join("run.json"))?;
    if record.status == Status::Diverged {
        return Ok(Pilot {
            lambda,
            dir: dir.into(),
            class_loss: f64::NAN,
            weighted_coral_loss: f64::NAN,
            ratio: f64::INFINITY,
        });
    }
    let rows = metrics::read_rows(&dir.join("metrics.csv"))?;
    let last = rows.last().with_context(|| format!("{} has no rows", dir.join("metrics.csv").display()))?;
    let ratio = last.weighted_coral_loss / last.class_loss;
    Ok(Pilot {
        lambda,
        dir: dir.into(),
        class_loss: last.class_loss,
        weighted_coral_loss: last.weighted_coral_loss,
        ratio: if ratio.is_finite() { ratio } else { f64::INFINITY },
    })
}

/// The next lambda to try after `pilots`, or `None` when the last one is within `factor`.
fn next_lambda(pilots: &[Pilot], factor: f64) -> Option<f64> {
    let last = pilots.last()?;
    if last.ratio >= 1.0 / factor && last.ratio <= factor {
        return None;
    }
    let below = pilots.iter().filter(|p| p.ratio < 1.0).max_by(|a, b| a.lambda.total_cmp(&b.lambda));
    let above = pilots.iter().filter(|p| p.ratio > 1.0).min_by(|a, b| a.lambda.total_cmp(&b.lambda));
    let next = match (below, above) {
        (Some(lo), Some(hi)) if hi.ratio.is_finite() && lo.ratio > 0.0 => {
            // Secant of log r against log lambda, kept strictly inside the bracket.
            let (x0, x1) = (lo.lambda.ln(), hi.lambda.ln());
            let (y0, y1) = (lo.ratio.ln(), hi.ratio.ln());
            let x = x0 - y0 * (x1 - x0) / (y1 - y0);
            let margin = 0.1 * (x1 - x0);
            x.clamp(x0 + margin, x1 - margin).exp()
        }
        (Some(lo), Some(hi)) => (lo.lambda * hi.lambda).sqrt(),
        _ if last.ratio.is_finite() && last.ratio > 0.0 => last.lambda / last.ratio.clamp(1e-3, 1e3),
        _ if last.ratio > 1.0 => last.lambda / 1e3,
        _ => last.lambda * 1e3,
    };
    Some(round_lambda(next))
}

/// Two significant digits: lambdas that a spec and a folder name read well, and that a rerun
/// of the search reproduces exactly.
fn round_lambda(x: f64) -> f64 {
    let digits = 1 - x.log10().floor() as i32;
    let scale = 10f64.powi(digits);
    let rounded = (x * scale).round() / scale;
    format!("{rounded:.*}", digits.max(0) as usize).parse().unwrap_or(rounded)
}

/// The pilot closest to `r = 1` in log space.
fn best(pilots: &[Pilot]) -> &Pilot {
    pilots.iter().min_by(|a, b| a.ratio.ln().abs().total_cmp(&b.ratio.ln().abs())).expect("at least one pilot")
}

/// Runs the search for every transfer of `spec` (pilots of all transfers at once, through
/// `launcher`), writes `calibration.json` and `calibration.md` into the pilots' experiment
/// folder, and returns the result.
pub fn calibrate(
    spec: &Spec,
    results_root: &Path,
    launcher: &dyn Launcher,
    exe: &Path,
    opts: &CalibrateOptions,
) -> Result<Calibration> {
    if !(opts.factor > 1.0 && opts.factor.is_finite()) {
        bail!("--factor must be a number > 1, got {}", opts.factor);
    }
    if opts.max_pilots == 0 {
        bail!("--max-pilots must be at least 1");
    }
    let base = pilot_spec(spec, opts);
    let mut pilots: Vec<Vec<Pilot>> = vec![Vec::new(); spec.transfers.len()];
    let mut next: Vec<Option<f64>> = spec
        .transfers
        .iter()
        .map(|t| Some(t.lambdas.iter().copied().find(|&l| l > 0.0).map_or(1.0, round_lambda)))
        .collect();
    for round in 1..=opts.max_pilots {
        let todo: Vec<(usize, f64)> = next.iter().enumerate().filter_map(|(i, l)| l.map(|l| (i, l))).collect();
        if todo.is_empty() {
            break;
        }
        eprintln!("calibrate {}: round {round}, {} pilot(s)", spec.name, todo.len());
        let mut round_spec = base.clone();
        round_spec.transfers =
            todo.iter().map(|&(i, l)| Transfer { lambdas: vec![l], ..spec.transfers[i].clone() }).collect();
        // A pilot that diverges fails its sweep, and is still evidence ("lambda too large").
        let swept = sweep::sweep_spec(&round_spec, results_root, launcher, exe);
        if let Ok(Some(sig)) = swept.as_ref().map(|s| s.interrupted_by) {
            bail!("calibration stopped by signal {sig}; run it again to resume the pilots");
        }
        let runs = round_spec.runs(results_root);
        for ((i, lambda), run) in todo.into_iter().zip(&runs) {
            if RunState::read(&run.dir) != RunState::Done && !run_diverged(&run.dir) {
                let why = swept.as_ref().err().map_or(String::new(), |e| format!(" ({e:#})"));
                bail!("pilot {} did not finish{why}; see {}", run.dir.display(), run.dir.join("train.log").display());
            }
            let pilot = read_pilot(&run.dir, lambda)?;
            eprintln!(
                "  {}: lambda {} -> class {:.4}, lambda*coral {:.4}, ratio {:.3}",
                spec.transfers[i].name(),
                lambda,
                pilot.class_loss,
                pilot.weighted_coral_loss,
                pilot.ratio
            );
            pilots[i].push(pilot);
            next[i] = next_lambda(&pilots[i], opts.factor)
                .filter(|l| !pilots[i].iter().any(|p| p.lambda == *l) && round < opts.max_pilots);
        }
    }
    let transfers = spec
        .transfers
        .iter()
        .zip(&pilots)
        .map(|(t, ps)| {
            let chosen = best(ps);
            TransferCalibration {
                source: t.source.clone(),
                target: t.target.clone(),
                lambda: chosen.lambda,
                within_factor: chosen.ratio >= 1.0 / opts.factor && chosen.ratio <= opts.factor,
                pilots: ps.clone(),
            }
        })
        .collect();
    let calibration = Calibration { factor: opts.factor, pilot_iterations: base.train.iterations, transfers };
    let dir = results_root.join(&base.name);
    write_atomic(&dir.join("calibration.json"), (serde_json::to_string_pretty(&calibration)? + "\n").as_bytes())?;
    write_atomic(&dir.join("calibration.md"), markdown(&calibration, spec).as_bytes())?;
    Ok(calibration)
}

fn run_diverged(dir: &Path) -> bool {
    RunRecord::read(&dir.join("run.json")).is_ok_and(|r| r.status == Status::Diverged)
}

/// The evidence as a markdown table: every pilot of every transfer.
pub fn markdown(c: &Calibration, spec: &Spec) -> String {
    let mut s = format!(
        "# Lambda by the paper's rule: {}\n\nPilots of {} iterations; accepted when lambda x CORAL loss and the \
         classification loss at the last evaluation agree within a factor {}.\n\n\
         | transfer | lambda | class loss | lambda x CORAL | ratio | chosen |\n|---|---|---|---|---|---|\n",
        spec.name, c.pilot_iterations, c.factor
    );
    for t in &c.transfers {
        for p in &t.pilots {
            let mark = if p.lambda == t.lambda {
                if t.within_factor {
                    "yes"
                } else {
                    "closest (outside the factor)"
                }
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {}->{} | {} | {:.4} | {:.4} | {:.3} | {mark} |",
                t.source, t.target, p.lambda, p.class_loss, p.weighted_coral_loss, p.ratio
            );
        }
    }
    s
}

/// `spec` with each transfer's lambdas set to `[0, calibrated]`, renamed, its description
/// saying where the lambdas come from.
pub fn calibrated_spec(spec: &Spec, c: &Calibration, opts: &CalibrateOptions, evidence: &Path) -> Spec {
    let mut out = spec.clone();
    out.name = opts.name.clone().unwrap_or_else(|| format!("{}-calibrated", spec.name));
    for (t, tc) in out.transfers.iter_mut().zip(&c.transfers) {
        t.lambdas = vec![0.0, tc.lambda];
    }
    let list: Vec<String> = c.transfers.iter().map(|t| format!("{}->{} {}", t.source, t.target, t.lambda)).collect();
    out.description = format!(
        "{} Lambda per transfer by the paper's rule (deep-coral calibrate, factor {}, pilots of {} iterations, seed \
         {}; evidence in {}): {}.",
        spec.description,
        c.factor,
        c.pilot_iterations,
        opts.seed,
        evidence.display(),
        list.join(", ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pilot(lambda: f64, ratio: f64) -> Pilot {
        Pilot { lambda, dir: PathBuf::new(), class_loss: 1.0, weighted_coral_loss: ratio, ratio }
    }

    #[test]
    fn the_search_steps_in_log_space_then_brackets() {
        // Within the factor: done.
        assert_eq!(next_lambda(&[pilot(0.8, 1.5)], 2.0), None);
        // Ratio 0.01 at 0.5: the CORAL loss barely depends on lambda, so 100x more.
        assert_eq!(next_lambda(&[pilot(0.5, 0.01)], 2.0), Some(50.0));
        // Too large by 1e6: at most 1000x smaller per step.
        assert_eq!(next_lambda(&[pilot(1.0, 1e6)], 2.0), Some(0.001));
        // A bracket: the secant in log-log, inside it.
        let next = next_lambda(&[pilot(0.1, 0.1), pilot(10.0, 10.0)], 2.0).unwrap();
        assert!((next - 1.0).abs() < 1e-12, "{next}");
        // A diverged pilot bounds from above.
        let next = next_lambda(&[pilot(0.1, 0.1), pilot(10.0, f64::INFINITY)], 2.0).unwrap();
        assert_eq!(next, 1.0);
        assert_eq!(best(&[pilot(0.1, 0.1), pilot(1.0, 3.0), pilot(10.0, 30.0)]).lambda, 1.0);
    }

    #[test]
    fn lambdas_keep_two_significant_digits() {
        assert_eq!(round_lambda(0.123456), 0.12);
        assert_eq!(round_lambda(0.0007321), 0.00073);
        assert_eq!(round_lambda(57.3), 57.0);
        assert_eq!(round_lambda(1.0), 1.0);
    }

    #[test]
    fn pilots_keep_the_schedule_shape() {
        let mut spec = crate::experiment::spec::parse(
            r#"{"name": "x", "train": {"iterations": 300, "lr_step": 225, "eval_every": 25},
                "transfers": [{"source": "a", "target": "b", "lambdas": [0, 0.5]}], "seeds": [1, 2]}"#,
            Path::new("x.json"),
        )
        .unwrap();
        spec.path = PathBuf::from("x.json");
        let p = pilot_spec(&spec, &CalibrateOptions { pilot_iterations: Some(100), ..Default::default() });
        assert_eq!((p.train.iterations, p.train.lr_step, p.train.eval_every), (100, 75, 8));
        assert_eq!((p.name.as_str(), p.seeds.as_slice()), ("x-calibrate", &[1][..]));
    }
}
