//! The Slurm settings of a sweep, declared once: [`Settings`] is both the spec's `slurm` block
//! (serde) and the sweep's Slurm flags (clap). A flag given on the command line overrides the
//! spec's key of the same name ([`Settings::resolve`]); the settings a submission used are
//! recorded with it and reused by the next one unless new flags are given
//! (`scheduler::Record::flags_for`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::experiment::launcher::shell::shell_quote;

/// Seconds before the time limit at which Slurm sends the warning signal, unless set.
pub const DEFAULT_SIGNAL_SECONDS: u32 = 120;
/// Requeues per run before it fails as one that cannot fit its time limit, unless set.
pub const DEFAULT_MAX_REQUEUES: u32 = 3;

/// How a run asks for its GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GpuOption {
    /// `--gres=gpu:N`.
    Gres,
    /// `--gpus-per-task=N`.
    GpusPerTask,
}

/// How a sweep runs on a Slurm cluster: the resources of one run (one task of the sweep's job
/// array) and how the array is submitted. The spec's `slurm` block and the sweep's flags are this
/// one type: every key optional (a missing one leaves Slurm's or the site's default), unknown
/// keys and wrong types errors at load naming the key (`slurm.partiton`), values checked by
/// [`Settings::resolve`] before anything is submitted.
///
/// ```json
/// "slurm": { "partition": "gpu", "gpus_per_run": 1, "cpus_per_run": 4, "mem": "16G",
///            "time": "01:00:00", "max_parallel": 20, "sbatch_args": ["--constraint=a100"] }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Slurm (--launcher slurm; each flag overrides the spec's `slurm` key)")]
pub struct Settings {
    /// Partition of the runs (sbatch --partition).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// GPUs per run (sbatch --gres=gpu:N, or --gpus-per-task=N under --gpu-option gpus-per-task).
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_per_run: Option<u32>,
    /// CPUs per run (sbatch --cpus-per-task); also each run's libtorch threads when the spec's
    /// `train.threads` is 0 (default 1).
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus_per_run: Option<u32>,
    /// Memory per run (sbatch --mem), e.g. 16G.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    /// Time limit of one attempt of a run (sbatch --time), e.g. 01:30:00; a run warned before it
    /// checkpoints and requeues itself.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// sbatch --account.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// sbatch --qos.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// At most K runs at once (the array's %K).
    #[arg(long, value_name = "K")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Seconds before the time limit at which a run is warned (sbatch --signal=B:USR1@N) [default: 120].
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_seconds: Option<u32>,
    /// Requeues per run before it fails as one that cannot fit its time limit [default: 3].
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requeues: Option<u32>,
    /// How --gpus-per-run asks for the GPUs: gres (--gres=gpu:N) or gpus-per-task (--gpus-per-task=N) [default: gres].
    #[arg(long, value_enum, value_name = "HOW")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_option: Option<GpuOption>,
    /// Write each task's stderr to its own file (<experiment>/slurm/<job>_<index>.err) instead
    /// of beside its stdout.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub separate_stderr: bool,
    /// One more sbatch argument, passed through as it is (repeatable), e.g.
    /// --sbatch-arg=--constraint=a100 or --sbatch-arg=--job-name=mine.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch_args: Vec<String>,
}

/// sbatch options the launcher sets itself; `sbatch_args` may not set them.
const OWN_OPTIONS: [&str; 13] = [
    "--array",
    "-a",
    "--output",
    "-o",
    "--error",
    "-e",
    "--open-mode",
    "--parsable",
    "--signal",
    "--requeue",
    "--no-requeue",
    "--chdir",
    "--wrap",
];

impl Settings {
    /// True when no setting is given.
    pub fn is_empty(&self) -> bool {
        *self == Settings::default()
    }

    /// The keys that are set, as JSON (`sbatch_args` as a list).
    fn keys(&self) -> serde_json::Map<String, Value> {
        match serde_json::to_value(self).expect("Settings serialise") {
            Value::Object(map) => map,
            _ => unreachable!("Settings serialise to an object"),
        }
    }

    /// `block` (the spec's `slurm` block, from `file`) with `flags` on top, checked. The
    /// `sbatch_args` of both are kept, the block's first. Errors name the flag (`--time`) or the
    /// spec key (`slurm.time` in the spec file) the bad value came from.
    pub fn resolve(block: &Settings, flags: &Settings, file: &str) -> Result<Settings> {
        let mut keys = block.keys();
        let mut from: BTreeMap<String, String> =
            keys.keys().map(|k| (k.clone(), format!("`slurm.{k}` in spec {file}"))).collect();
        for (k, v) in flags.keys() {
            if k == "sbatch_args" {
                continue;
            }
            from.insert(k.clone(), format!("--{}", k.replace('_', "-")));
            keys.insert(k, v);
        }
        keys.remove("sbatch_args");
        let mut merged: Settings = serde_json::from_value(Value::Object(keys)).expect("a merge of two Settings");
        merged.sbatch_args = block.sbatch_args.iter().chain(&flags.sbatch_args).cloned().collect();
        let from = |k: &str| from.get(k).cloned().unwrap_or_else(|| k.to_string());
        merged.check(&from, &block.sbatch_args, file)?;
        Ok(merged)
    }

    fn check(&self, from: &dyn Fn(&str) -> String, block_args: &[String], file: &str) -> Result<()> {
        for (key, v) in [
            ("partition", &self.partition),
            ("mem", &self.mem),
            ("account", &self.account),
            ("qos", &self.qos),
            ("time", &self.time),
        ] {
            if let Some(v) = v {
                if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    bail!("{}: {v:?} must be one word, without spaces", from(key));
                }
            }
        }
        let limit = match &self.time {
            Some(t) => {
                time_limit_seconds(t).with_context(|| format!("{}: {t:?} is not a Slurm time limit", from("time")))?
            }
            None => None,
        };
        for (key, v) in [("cpus_per_run", self.cpus_per_run), ("max_parallel", self.max_parallel)] {
            if v == Some(0) {
                bail!("{}: must be at least 1, got 0", from(key));
            }
        }
        if let Some(s) = self.signal_seconds.filter(|s| !(1..=65535).contains(s)) {
            bail!("{}: must be 1 to 65535 seconds, got {s}", from("signal_seconds"));
        }
        let signal_seconds = self.signal_seconds();
        if let (Some(limit), Some(t)) = (limit, &self.time) {
            if u64::from(signal_seconds) >= limit {
                bail!(
                    "time limit {t} ({limit} s) is not longer than the warning {signal_seconds} s before it (signal_seconds): \
                     a run would be told to checkpoint as it starts; give a longer --time or a smaller --signal-seconds"
                );
            }
        }
        for (i, arg) in self.sbatch_args.iter().enumerate() {
            let from = if i < block_args.len() {
                format!("`slurm.sbatch_args` in spec {file}")
            } else {
                "--sbatch-arg".into()
            };
            let option = arg.split('=').next().unwrap_or_default();
            if arg.trim().is_empty() {
                bail!("{from}: an empty argument");
            }
            if OWN_OPTIONS.contains(&option) {
                bail!(
                    "{from}: {arg:?}: deep-coral sets {option} itself (array, output, requeue and signal make the \
                     sweep's runs resumable); use the sweep's own flags"
                );
            }
        }
        Ok(())
    }

    /// GPUs per run (0 unless set).
    pub fn gpus(&self) -> u32 {
        self.gpus_per_run.unwrap_or(0)
    }

    /// The warning's seconds before the time limit (120 unless set).
    pub fn signal_seconds(&self) -> u32 {
        self.signal_seconds.unwrap_or(DEFAULT_SIGNAL_SECONDS)
    }

    /// Requeues per run before it fails (3 unless set).
    pub fn max_requeues(&self) -> u32 {
        self.max_requeues.unwrap_or(DEFAULT_MAX_REQUEUES)
    }

    /// The settings as the sweep's flags, in a form a shell takes as it is:
    /// `--mem 500M --time 00:05:00 --sbatch-arg=--exclusive`.
    pub fn as_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for (k, v) in self.keys() {
            let flag = format!("--{}", k.replace('_', "-"));
            match v {
                Value::Bool(true) => flags.push(flag),
                Value::Array(args) => {
                    for a in args.iter().filter_map(Value::as_str) {
                        flags.push(shell_quote(format!("--sbatch-arg={a}").as_ref()));
                    }
                }
                Value::String(s) => flags.extend([flag, shell_quote(s.as_ref())]),
                other => flags.extend([flag, other.to_string()]),
            }
        }
        // serde_json's map is sorted; the sbatch args read best last.
        let (mut rest, args): (Vec<String>, Vec<String>) =
            flags.into_iter().partition(|f| !f.contains("--sbatch-arg="));
        rest.extend(args);
        rest
    }

    /// sbatch's arguments (all but the script, which goes to its stdin) for an array of `runs`
    /// tasks named `job_name` whose output goes to `out_dir/%A_%a.out`, run in `chdir`.
    pub fn sbatch_args(&self, job_name: &str, runs: usize, out_dir: &Path, chdir: &Path) -> Vec<String> {
        let mut array = if runs <= 1 { "0".to_string() } else { format!("0-{}", runs - 1) };
        if let Some(k) = self.max_parallel {
            array += &format!("%{k}");
        }
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={job_name}"),
            format!("--array={array}"),
            format!("--output={}", out_dir.join("%A_%a.out").display()),
        ];
        if self.separate_stderr {
            args.push(format!("--error={}", out_dir.join("%A_%a.err").display()));
        }
        args.extend([
            "--open-mode=append".into(),
            "--requeue".into(),
            format!("--signal=B:USR1@{}", self.signal_seconds()),
            format!("--chdir={}", chdir.display()),
        ]);
        let mut opt = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                args.push(format!("--{name}={v}"));
            }
        };
        opt("partition", &self.partition);
        opt("mem", &self.mem);
        opt("time", &self.time);
        opt("account", &self.account);
        opt("qos", &self.qos);
        if self.gpus() > 0 {
            args.push(match self.gpu_option.unwrap_or(GpuOption::Gres) {
                GpuOption::Gres => format!("--gres=gpu:{}", self.gpus()),
                GpuOption::GpusPerTask => format!("--gpus-per-task={}", self.gpus()),
            });
        }
        if let Some(c) = self.cpus_per_run {
            args.push(format!("--cpus-per-task={c}"));
        }
        args.extend(self.sbatch_args.iter().cloned());
        args
    }
}

/// A Slurm time limit in seconds (`None`: unlimited): minutes, MM:SS, HH:MM:SS, D-HH,
/// D-HH:MM or D-HH:MM:SS, or UNLIMITED / INFINITE.
pub fn time_limit_seconds(t: &str) -> Result<Option<u64>> {
    if ["unlimited", "infinite"].contains(&t.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    let number = |s: &str| -> Result<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            bail!("expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS");
        }
        s.parse().context("number too large")
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, t),
    };
    let parts: Vec<u64> = rest.split(':').map(number).collect::<Result<_>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => bail!("expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"),
    };
    if secs == 0 {
        bail!("a time limit of 0");
    }
    Ok(Some(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_in_slurm_formats() {
        assert_eq!(time_limit_seconds("90").unwrap(), Some(5400));
        assert_eq!(time_limit_seconds("10:30").unwrap(), Some(630));
        assert_eq!(time_limit_seconds("01:00:00").unwrap(), Some(3600));
        assert_eq!(time_limit_seconds("2-12").unwrap(), Some(2 * 86400 + 12 * 3600));
        assert_eq!(time_limit_seconds("1-00:30").unwrap(), Some(86400 + 1800));
        assert_eq!(time_limit_seconds("1-00:00:10").unwrap(), Some(86410));
        assert_eq!(time_limit_seconds("UNLIMITED").unwrap(), None);
        for bad in ["", "2h", "1:2:3:4", "-5", "1-", "0"] {
            assert!(time_limit_seconds(bad).is_err(), "{bad}");
        }
    }

    fn block(json: &str) -> Settings {
        serde_json::from_str(json).unwrap()
    }

    fn resolve(b: &str, flags: &Settings) -> Result<Settings> {
        Settings::resolve(&block(b), flags, "exp/t.json")
    }

    #[test]
    fn flags_override_the_spec_and_bad_values_are_named() {
        let b = r#"{"partition": "cpu", "time": "01:00:00", "max_parallel": 4, "sbatch_args": ["--exclusive"]}"#;
        let flags = Settings {
            partition: Some("gpu".into()),
            gpus_per_run: Some(1),
            sbatch_args: vec!["--nice=5".into()],
            ..Default::default()
        };
        let s = resolve(b, &flags).unwrap();
        assert_eq!(
            (s.partition.as_deref(), s.time.as_deref(), s.max_parallel, s.gpus()),
            (Some("gpu"), Some("01:00:00"), Some(4), 1)
        );
        let args = s.sbatch_args("t", 6, Path::new("/r/t/slurm"), Path::new("/w"));
        for a in [
            "--array=0-5%4",
            "--output=/r/t/slurm/%A_%a.out",
            "--open-mode=append",
            "--requeue",
            "--signal=B:USR1@120",
            "--chdir=/w",
            "--partition=gpu",
            "--time=01:00:00",
            "--gres=gpu:1",
            "--exclusive",
            "--nice=5",
        ] {
            assert!(args.contains(&a.to_string()), "{a} in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--error")));
        let s = Settings { gpu_option: Some(GpuOption::GpusPerTask), separate_stderr: true, ..s };
        let args = s.sbatch_args("t", 1, Path::new("/r/t/slurm"), Path::new("/w"));
        assert!(args.contains(&"--gpus-per-task=1".to_string()) && !args.iter().any(|a| a.starts_with("--gres")));
        assert!(args.contains(&"--error=/r/t/slurm/%A_%a.err".to_string()), "{args:?}");

        let err = |b: &str, flags: &Settings| format!("{:#}", resolve(b, flags).unwrap_err());
        let e = err(r#"{"time": "2 hours"}"#, &Settings::default());
        assert!(e.contains("`slurm.time` in spec exp/t.json") && e.contains("2 hours"), "{e}");
        let e = err(b, &Settings { time: Some("2h".into()), ..Default::default() });
        assert!(e.contains("--time") && e.contains("2h"), "{e}");
        let e = err(r#"{"max_parallel": 0}"#, &Settings::default());
        assert!(e.contains("`slurm.max_parallel`"), "{e}");
        let e = err(r#"{"sbatch_args": ["--array=0-3"]}"#, &Settings::default());
        assert!(e.contains("--array") && e.contains("`slurm.sbatch_args`"), "{e}");
        let e = err("{}", &Settings { sbatch_args: vec!["--error=x".into()], ..Default::default() });
        assert!(e.contains("--sbatch-arg") && e.contains("--error"), "{e}");
        let e = err(r#"{"time": "2:00"}"#, &Settings::default());
        assert!(e.contains("signal_seconds"), "{e}");
    }

    #[test]
    fn settings_read_back_as_the_flags_that_give_them() {
        let s = Settings {
            mem: Some("500M".into()),
            time: Some("00:05:00".into()),
            max_parallel: Some(1),
            gpu_option: Some(GpuOption::GpusPerTask),
            separate_stderr: true,
            sbatch_args: vec!["--constraint=a100 b".into(), "--exclusive".into()],
            ..Default::default()
        };
        let flags = s.as_flags();
        assert_eq!(
            flags.join(" "),
            "--gpu-option gpus-per-task --max-parallel 1 --mem 500M --separate-stderr --time 00:05:00 \
             '--sbatch-arg=--constraint=a100 b' --sbatch-arg=--exclusive"
        );
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            s: Settings,
        }
        // The shell's words, unquoted as a shell would.
        let words: Vec<String> = flags.iter().map(|f| f.trim_matches('\'').to_string()).collect();
        let parsed = Cli::try_parse_from(std::iter::once("x".to_string()).chain(words)).unwrap();
        assert_eq!(parsed.s, s);
        assert!(Settings::default().as_flags().is_empty() && Settings::default().is_empty());
    }
}
