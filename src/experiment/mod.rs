//! The experiment stage: grids of runs and what is made of their results. It owns experiment
//! specs, sweeps and their launchers (one file per launcher), the report (reading runs,
//! statistics, rendering) and the training-curve plots.
//!
//! It reaches training only through the `deep-coral train` processes it launches and the
//! files they write (plus the record and row types of `train::metrics`).

/// Lambda by the paper's rule: pilot runs per transfer, a calibrated spec.
pub mod calibrate;
/// Launchers that execute a sweep's runs: `Local { jobs }` subprocesses, `DryRun` listing,
/// `Slurm` job arrays (with `--status`, `--wait` and `--cancel`).
pub mod launcher;
/// Training curves from the run records, like the paper's Fig. 3: accuracies, losses and the
/// CORAL distance against iteration, as PNG and SVG.
pub mod plot;
/// The sweep's progress bar: runs ended, each running run's iteration, an ETA from their rates.
pub mod progress;
/// Tables from the run records: `run.json` + `metrics.csv` -> mean ± sd over seeds ->
/// `summary.csv` and `table.md`, beside the paper's Table 1.
pub mod report;
/// The paper's rule for lambda as one number: lambda x CORAL loss over the class loss, means
/// over the last 20% of the steps; read by `calibrate` and `report`.
pub mod rule;
/// A run's identity in a grid and its folder, written and parsed in one place.
pub mod run_id;
/// Where a run stands, read from its folder: done / incomplete / new.
pub mod run_state;
/// `deep-coral shallow-coral` over an experiment's source-only runs.
pub mod shallow;
/// Experiment specs (JSON): a grid of transfers x lambdas x seeds, and each run's directory.
pub mod spec;
/// Sweeps: run state from disk, skip finished runs, launch the rest.
pub mod sweep;
