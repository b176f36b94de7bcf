//! Lambda by the paper's rule (`rule`: at the end of training the classification loss and
//! `lambda * l_CORAL` roughly agree): for each transfer of a spec, pilot runs search lambda in
//! log space until the rule's ratio `r`, read over the last 20% of the steps and pooled over
//! two seeds (by default), is within a factor (default 2); then a spec with that lambda per
//! transfer (beside lambda = 0) is written for the sweep to run, with every pilot's losses as
//! evidence.
//!
//! Pilots run the spec's own schedule (the length of the real runs, unless
//! `--pilot-iterations` says otherwise) with `log_steps` on, so the window is read from every
//! step. They evaluate the target only at the start and the end: the rule reads training
//! losses, and an evaluation draws none of training's random numbers, so a pilot trains
//! exactly as the real run of the same lambda and seed does.
//!
//! The search: `r(lambda)` grows with lambda (the CORAL loss itself falls as its weight grows,
//! so more slowly than lambda). The first pilot runs at the spec's own nonzero lambda of the
//! transfer (else 1); while every pilot is on one side of `r = 1`, the next lambda is
//! `lambda / r` (exact if the CORAL loss did not depend on lambda), at most 1000x away; once
//! pilots bracket `r = 1`, the next one is the secant of `log r` against `log lambda` between
//! the two nearest, kept inside the bracket. A pilot with a seed that diverges counts as "too
//! large". After `max_pilots` the pilot with `|log r|` smallest is taken, and the output says
//! it is outside the factor.
//!
//! Pilots are ordinary runs of a sweep, in `<results>/<name>-calibrate/<src>_<tgt>/lambda_<x>/
//! seed_<n>/`: a calibration stopped part-way resumes, and finished pilots are not rerun.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::experiment::launcher::Launcher;
use crate::experiment::rule::{self, WindowLosses};
use crate::experiment::run_state::RunState;
use crate::experiment::spec::{Spec, Transfer};
use crate::experiment::sweep;
use crate::files::write_atomic;
use crate::train::metrics::{RunRecord, Status};

/// How to search.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Accept a lambda when `1/factor <= r <= factor`.
    pub factor: f64,
    /// The fraction of the steps, at the end of a pilot, that the rule reads.
    pub window: f64,
    /// Pilot length; `None` = the spec's own iterations. The learning-rate step keeps its
    /// place as a fraction of the schedule.
    pub pilot_iterations: Option<usize>,
    /// Pilots per transfer at most.
    pub max_pilots: usize,
    /// The seeds every pilot runs with; the rule pools them.
    pub seeds: Vec<u64>,
    /// Name of the calibrated spec (default `<name>-calibrated`).
    pub name: Option<String>,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        Self {
            factor: rule::FACTOR,
            window: rule::WINDOW,
            pilot_iterations: None,
            max_pilots: 6,
            seeds: vec![1, 2],
            name: None,
        }
    }
}

impl CalibrateOptions {
    /// Refuses options the search cannot use, before any pilot runs.
    pub fn validate(&self) -> Result<()> {
        if !(self.factor > 1.0 && self.factor.is_finite()) {
            bail!("--factor must be a number > 1, got {}", self.factor);
        }
        if !(self.window > 0.0 && self.window <= 1.0) {
            bail!("--window must be a fraction of the iterations in (0, 1], got {}", self.window);
        }
        if self.max_pilots == 0 {
            bail!("--max-pilots must be at least 1");
        }
        if self.seeds.is_empty() {
            bail!("--seeds must name at least one seed (the rule pools two by default)");
        }
        if self.pilot_iterations == Some(0) {
            bail!("--pilot-iterations must be positive, got 0");
        }
        Ok(())
    }

    /// The calibrated experiment's name.
    pub fn output_name(&self, spec: &Spec) -> String {
        self.name.clone().unwrap_or_else(|| format!("{}-calibrated", spec.name))
    }

    /// Where the calibrated spec goes (`write`, else `experiments/<name>.json`), checked before
    /// any pilot runs: a plain experiment name, a folder that exists, a file that is not the
    /// input spec.
    pub fn output_path(&self, spec: &Spec, write: Option<&Path>) -> Result<PathBuf> {
        let name = self.output_name(spec);
        if !crate::experiment::spec::is_plain_name(&name) {
            bail!("--name must be a plain folder name (no `/`, not empty, `.` or `..`), got {name:?}");
        }
        let path = write.map_or_else(|| PathBuf::from(format!("experiments/{name}.json")), Path::to_path_buf);
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!(
                "the calibrated spec would be written to {}, but folder {} does not exist here: run from the \
                 repository root, or pass --write PATH",
                path.display(),
                parent.display()
            );
        }
        crate::files::check_output_not_input(&path, &[&spec.path], "--write")?;
        Ok(path)
    }
}

/// One pilot lambda of one transfer, over the pilot seeds, and what it ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pilot {
    pub lambda: f64,
    /// The run folders, one per seed.
    pub dirs: Vec<PathBuf>,
    /// Mean classification loss over the window, pooled over the seeds.
    pub class_loss: f64,
    /// `lambda` x the mean CORAL loss over the window, pooled over the seeds.
    pub weighted_coral_loss: f64,
    /// `weighted_coral_loss / class_loss`; infinite when a seed diverged.
    pub ratio: f64,
    /// Each seed's own ratio, in the order of `dirs`.
    pub seed_ratios: Vec<f64>,
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
    /// The fraction of the steps at the end of each pilot that the rule read.
    pub window: f64,
    pub pilot_iterations: usize,
    pub seeds: Vec<u64>,
    pub transfers: Vec<TransferCalibration>,
}

/// The pilots' experiment: the spec's settings on a (possibly shorter) schedule, every step
/// logged, the target evaluated at the start and the end only, the pilot seeds.
fn pilot_spec(spec: &Spec, opts: &CalibrateOptions) -> Spec {
    let mut train = spec.train.clone();
    if let Some(n) = opts.pilot_iterations {
        let frac = |k: usize| ((k as f64) * n as f64 / train.iterations as f64).round().max(1.0) as usize;
        train.lr_step = frac(train.lr_step);
        train.iterations = n;
    }
    train.eval_every = train.iterations;
    train.log_steps = true;
    Spec {
        name: format!("{}-calibrate", spec.name),
        description: format!("pilot runs of `deep-coral calibrate` for {}", spec.name),
        train,
        transfers: Vec::new(),
        seeds: opts.seeds.clone(),
        paper_table: None,
        paper_curves: None,
        ..spec.clone()
    }
}

/// Reads how the pilot runs `dirs` (one per seed, at `lambda`) ended.
fn read_pilot(dirs: &[PathBuf], lambda: f64, window: f64) -> Result<Pilot> {
    let mut windows = Vec::new();
    let mut seed_ratios = Vec::new();
    for dir in dirs {
        let record = RunRecord::read(&dir.join("run.json"))?;
        if record.status == Status::Diverged {
            seed_ratios.push(f64::INFINITY);
            continue;
        }
        let w = WindowLosses::of_run(dir, &record, window)?
            .with_context(|| format!("pilot {}: its steps do not cover the last {window} of the run", dir.display()))?;
        seed_ratios.push(finite_or_inf(rule::ratio(lambda, &[w])));
        windows.push(w);
    }
    let diverged = windows.len() < dirs.len();
    let pooled = |f: fn(&WindowLosses) -> f64| {
        let steps: usize = windows.iter().map(|w| w.steps).sum();
        windows.iter().map(|w| f(w) * w.steps as f64).sum::<f64>() / steps as f64
    };
    let (class_loss, coral_loss) =
        if windows.is_empty() { (f64::NAN, f64::NAN) } else { (pooled(|w| w.class_loss), pooled(|w| w.align_loss)) };
    Ok(Pilot {
        lambda,
        dirs: dirs.to_vec(),
        class_loss,
        weighted_coral_loss: lambda * coral_loss,
        ratio: if diverged { f64::INFINITY } else { finite_or_inf(rule::ratio(lambda, &windows)) },
        seed_ratios,
    })
}

/// A ratio that is not a finite number (a zero class loss) counts as "too large".
fn finite_or_inf(r: f64) -> f64 {
    if r.is_finite() {
        r
    } else {
        f64::INFINITY
    }
}

/// The next lambda to try after `pilots`, or `None` when the last one is within `factor`, or
/// when the rule cannot be reached (`unreachable`).
fn next_lambda(pilots: &[Pilot], factor: f64) -> Option<f64> {
    let last = pilots.last()?;
    if rule::holds(last.ratio, factor) || unreachable(pilots) {
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

/// Whether the pilots show the rule out of reach: below `r = 1`, a larger lambda gave a
/// smaller ratio (the class loss grew faster than `lambda * l_CORAL`), so raising lambda, the
/// only way up the search knows, leads away from it. Seen with SqueezeNet on A->D and A->W,
/// where `lambda * l_CORAL` saturates near 0.1 while the class loss climbs until the run
/// diverges.
pub fn unreachable(pilots: &[Pilot]) -> bool {
    let mut below: Vec<&Pilot> = pilots.iter().filter(|p| p.ratio < 1.0).collect();
    below.sort_by(|a, b| a.lambda.total_cmp(&b.lambda));
    below.windows(2).any(|w| w[1].ratio < w[0].ratio) && pilots.iter().all(|p| p.ratio < 1.0)
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
    opts.validate()?;
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
        let runs = round_spec.runs(results_root);
        // A pilot that diverges fails its sweep, and is still evidence ("lambda too large"):
        // a sweep would run it again, so only the pilots that have not ended are swept.
        let mut to_sweep = round_spec.clone();
        to_sweep.transfers.retain(|t| {
            runs.iter().any(|r| r.config.source == t.source && r.config.target == t.target && !pilot_ended(&r.dir))
        });
        let swept = match to_sweep.transfers.is_empty() {
            true => Ok(None),
            false => sweep::sweep_spec(&to_sweep, results_root, launcher, exe).map(|s| s.interrupted_by),
        };
        if let Ok(Some(sig)) = swept {
            bail!("calibration stopped by signal {sig}; run it again to resume the pilots");
        }
        for (i, lambda) in todo {
            let t = &spec.transfers[i];
            // This transfer's one lambda, every seed.
            let dirs: Vec<PathBuf> = runs
                .iter()
                .filter(|r| r.config.source == t.source && r.config.target == t.target)
                .map(|r| r.dir.clone())
                .collect();
            for dir in &dirs {
                if !pilot_ended(dir) {
                    let why = swept.as_ref().err().map_or(String::new(), |e| format!(" ({e:#})"));
                    bail!("pilot {} did not finish{why}; see {}", dir.display(), dir.join("train.log").display());
                }
            }
            let pilot = read_pilot(&dirs, lambda, opts.window)?;
            let per_seed: Vec<String> = pilot.seed_ratios.iter().map(|r| format!("{r:.3}")).collect();
            eprintln!(
                "  {}: lambda {} -> class {:.4}, lambda*coral {:.4}, ratio {:.3} (seeds: {})",
                t.name(),
                lambda,
                pilot.class_loss,
                pilot.weighted_coral_loss,
                pilot.ratio,
                per_seed.join(", ")
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
                within_factor: rule::holds(chosen.ratio, opts.factor),
                pilots: ps.clone(),
            }
        })
        .collect();
    let calibration = Calibration {
        factor: opts.factor,
        window: opts.window,
        pilot_iterations: base.train.iterations,
        seeds: opts.seeds.clone(),
        transfers,
    };
    let dir = results_root.join(&base.name);
    write_atomic(&dir.join("calibration.json"), (serde_json::to_string_pretty(&calibration)? + "\n").as_bytes())?;
    write_atomic(&dir.join("calibration.md"), markdown(&calibration, spec).as_bytes())?;
    Ok(calibration)
}

/// A pilot run that finished or diverged: either is evidence, and neither is run again.
fn pilot_ended(dir: &Path) -> bool {
    RunState::read(dir) == RunState::Done
        || RunRecord::read(&dir.join("run.json")).is_ok_and(|r| r.status == Status::Diverged)
}

/// The evidence as a markdown table: every pilot of every transfer.
pub fn markdown(c: &Calibration, spec: &Spec) -> String {
    let seeds: Vec<String> = c.seeds.iter().map(|s| s.to_string()).collect();
    let mut s = format!(
        "# Lambda by the paper's rule: {}\n\nPilots of {} iterations, seeds {}; accepted when lambda x {loss} \
         and the classification loss agree within a factor {}, both the mean over the last {}% of the steps (iteration \
         {} on), pooled over the seeds. Per seed: each seed's own ratio.\n\n\
         | transfer | lambda | class loss | lambda x {loss} | ratio | per seed | chosen |\n|---|---|---|---|---|---|---|\n",
        spec.name,
        c.pilot_iterations,
        seeds.join(", "),
        c.factor,
        100.0 * c.window,
        rule::window_start(c.pilot_iterations, c.window),
        loss = spec.train.method.loss_name(),
    );
    for t in &c.transfers {
        for p in &t.pilots {
            let mark = if p.lambda == t.lambda {
                if t.within_factor {
                    "yes"
                } else if unreachable(&t.pilots) {
                    "closest (the rule is out of reach: the ratio falls as lambda grows)"
                } else {
                    "closest (outside the factor)"
                }
            } else {
                ""
            };
            let per_seed: Vec<String> = p.seed_ratios.iter().map(|r| format!("{r:.3}")).collect();
            let _ = writeln!(
                s,
                "| {}->{} | {} | {:.4} | {:.4} | {:.3} | {} | {mark} |",
                t.source,
                t.target,
                p.lambda,
                p.class_loss,
                p.weighted_coral_loss,
                p.ratio,
                per_seed.join(", ")
            );
        }
    }
    s
}

/// `spec` with each transfer's lambdas set to `[0, calibrated]`, renamed, its description
/// saying where the lambdas come from.
pub fn calibrated_spec(spec: &Spec, c: &Calibration, opts: &CalibrateOptions, evidence: &Path) -> Spec {
    let mut out = spec.clone();
    out.name = opts.output_name(spec);
    for (t, tc) in out.transfers.iter_mut().zip(&c.transfers) {
        t.lambdas = vec![0.0, tc.lambda];
    }
    let list: Vec<String> = c.transfers.iter().map(|t| format!("{}->{} {}", t.source, t.target, t.lambda)).collect();
    let seeds: Vec<String> = c.seeds.iter().map(|s| s.to_string()).collect();
    out.description = format!(
        "{} Lambda per transfer by the paper's rule (deep-coral calibrate: lambda x {loss} against the class loss, \
         means over the last {}% of {}-iteration pilots pooled over seeds {}, within a factor {}; evidence in {}): {}.",
        spec.description,
        100.0 * c.window,
        c.pilot_iterations,
        seeds.join(", "),
        c.factor,
        evidence.display(),
        list.join(", "),
        loss = spec.train.method.loss_name(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pilot(lambda: f64, ratio: f64) -> Pilot {
        Pilot { lambda, dirs: Vec::new(), class_loss: 1.0, weighted_coral_loss: ratio, ratio, seed_ratios: vec![ratio] }
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
        // Below 1, a larger lambda with a smaller ratio: out of reach, the search stops.
        let falling = [pilot(0.53, 0.43), pilot(1.2, 0.11)];
        assert!(unreachable(&falling));
        assert_eq!(next_lambda(&falling, 2.0), None);
        assert!(!unreachable(&[pilot(0.1, 0.1), pilot(1.0, 0.5)]));
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
        // The target is evaluated at the start and the end only; every step is logged.
        assert_eq!((p.train.iterations, p.train.lr_step, p.train.eval_every), (100, 75, 100));
        assert!(p.train.log_steps);
        assert_eq!((p.name.as_str(), p.seeds.as_slice()), ("x-calibrate", &[1, 2][..]));
        // By default the pilots are as long as the real runs.
        let p = pilot_spec(&spec, &CalibrateOptions::default());
        assert_eq!((p.train.iterations, p.train.lr_step, p.train.eval_every), (300, 225, 300));
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let bad = |o: CalibrateOptions| o.validate().unwrap_err().to_string();
        assert!(bad(CalibrateOptions { factor: 1.0, ..Default::default() }).contains("--factor"));
        assert!(bad(CalibrateOptions { window: 0.0, ..Default::default() }).contains("--window"));
        assert!(bad(CalibrateOptions { window: 1.5, ..Default::default() }).contains("--window"));
        assert!(bad(CalibrateOptions { seeds: vec![], ..Default::default() }).contains("--seeds"));
        assert!(bad(CalibrateOptions { max_pilots: 0, ..Default::default() }).contains("--max-pilots"));
        CalibrateOptions::default().validate().unwrap();
    }
}
