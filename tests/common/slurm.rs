//! Helpers of the Slurm tests (`tests/slurm.rs` on a real cluster, `tests/slurm_cli.rs` without
//! one): a private single-node cluster per test, tiny domains and specs, the sweep's record.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;

/// One cluster test at a time.
pub static TURN: Mutex<()> = Mutex::new(());

pub fn cluster_sh() -> PathBuf {
    root().join("scripts/slurm/cluster.sh")
}

/// Why the Slurm daemons cannot run here, if they cannot.
pub fn missing_slurm() -> Option<String> {
    let on_path = |b: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).chain([PathBuf::from("/usr/sbin")]).any(|d| d.join(b).is_file()))
            .unwrap_or(false)
    };
    let missing: Vec<&str> = ["slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "scancel"]
        .into_iter()
        .filter(|b| !on_path(b))
        .collect();
    (!missing.is_empty()).then(|| format!("not installed: {} (run `make slurm-deps`)", missing.join(", ")))
}

/// A private cluster in its own temporary folder (0755: munged checks every parent), stopped
/// by `stop` or, also when a test panics, by Drop. Its `work/` folder holds the test's data and
/// results, so a leftover `train` of the cluster shows up in `pgrep -f <dir>` too.
pub struct Cluster {
    _turn: MutexGuard<'static, ()>,
    tmp: TempDir,
    pub conf: PathBuf,
    stopped: bool,
}

impl Cluster {
    /// The cluster, or None (test skipped, reason printed) where Slurm is not installed and CI
    /// is not set.
    pub fn start() -> Option<Cluster> {
        Cluster::start_with(&[])
    }

    /// The cluster with `scripts/slurm/cluster.sh`'s knobs (`SLURM_TEST_MIN_JOB_AGE`) set.
    pub fn start_with(env: &[(&str, &str)]) -> Option<Cluster> {
        if let Some(why) = missing_slurm() {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but the Slurm tests cannot run: {why}");
            }
            eprintln!("skipping this Slurm test: {why}");
            return None;
        }
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::Builder::new().prefix("deep-coral-slurm.").tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut dir = tmp.path().parent();
        while let Some(d) = dir {
            let mode = d.metadata().unwrap().permissions().mode();
            assert!(mode & 0o001 != 0, "{} is not world-executable (mode {mode:o}): munged refuses it", d.display());
            dir = d.parent();
        }
        let out = Command::new("bash")
            .arg(cluster_sh())
            .arg("start")
            .arg(tmp.path())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let mut cluster = Cluster { _turn: turn, conf: PathBuf::new(), tmp, stopped: false };
        assert!(out.status.success(), "cluster.sh start failed:\n{}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let conf = stdout.lines().find_map(|l| l.strip_prefix("export SLURM_CONF=")).expect("SLURM_CONF exported");
        cluster.conf = PathBuf::from(conf);
        std::fs::create_dir_all(cluster.work()).unwrap();
        Some(cluster)
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn work(&self) -> PathBuf {
        self.dir().join("work")
    }

    /// `program` with this cluster's SLURM_CONF.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `deep-coral` with this cluster's SLURM_CONF, polling the scheduler twice a second.
    pub fn deep_coral(&self) -> Command {
        let mut c = bin();
        c.env("SLURM_CONF", &self.conf).env("DEEP_CORAL_SLURM_POLL_SECONDS", "0.5").current_dir(self.work());
        c
    }

    /// `deep-coral sweep SPEC --out RESULTS ARGS...` on this cluster, run to its end.
    pub fn sweep(&self, spec: &Path, results: &Path, args: &[&str]) -> Output {
        self.deep_coral().arg("sweep").arg(spec).arg("--out").arg(results).args(args).output().unwrap()
    }

    pub fn text(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The tasks of array `job` as `index -> "JobState Restarts"`.
    pub fn tasks(&self, job: &str) -> Vec<(usize, String, u32)> {
        let text = self.text("scontrol", &["-o", "show", "job", job]);
        let mut tasks: Vec<(usize, String, u32)> = text
            .lines()
            .filter_map(|l| {
                let get = |k: &str| l.split_whitespace().find_map(|t| t.strip_prefix(k)).map(str::to_string);
                Some((get("ArrayTaskId=")?.parse().ok()?, get("JobState=")?, get("Restarts=")?.parse().ok()?))
            })
            .collect();
        tasks.sort();
        tasks
    }

    /// Tasks of `job` that squeue lists as running.
    pub fn running(&self, job: &str) -> usize {
        self.text("squeue", &["-h", "-j", job, "-t", "R", "-o", "%i"]).lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// Stops the cluster and checks that no process of it (daemon, slurmstepd, job) is left.
    pub fn stop(mut self) {
        self.stopped = true;
        let out = Command::new("bash").arg(cluster_sh()).arg("stop").arg(self.dir()).output().unwrap();
        assert!(out.status.success(), "cluster.sh stop failed:\n{}", stderr(&out));
        let left = Command::new("pgrep").args(["-a", "-r", "R,S,D,T", "-f"]).arg(self.dir()).output().unwrap();
        let left = String::from_utf8_lossy(&left.stdout);
        assert!(left.trim().is_empty(), "processes of the fixture left running:\n{left}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = Command::new("bash").arg(cluster_sh()).arg("stop").arg(self.dir()).stdout(Stdio::null()).status();
        }
    }
}

/// Domains `src` and `tgt` (classes a, b; 3 images each) and `bad`: `tgt` with one image that
/// is no image, so a run on it fails when it decodes its data.
pub fn domains(root: &Path) -> PathBuf {
    let data = root.join("data");
    for d in ["src", "tgt", "bad"] {
        write_domain(&data, d, &["a", "b"], 3);
    }
    std::fs::write(data.join("bad/a/0.png"), b"not a png").unwrap();
    data
}

/// A spec of tiny SqueezeNet runs on `data` (one thread, batch 2, a row every `eval_every`).
pub fn write_spec(
    path: &Path,
    name: &str,
    data: &Path,
    transfers: Value,
    seeds: &[u64],
    iterations: usize,
    eval_every: usize,
    slurm: Option<Value>,
) {
    let mut spec = json!({
        "name": name,
        "train": { "backbone": "squeezenet1_1", "weights": squeezenet_weights(), "data_root": data,
                   "iterations": iterations, "eval_every": eval_every, "batch_size": 2, "lr": 1e-5, "threads": 1,
                   "device": "cpu" },
        "transfers": transfers,
        "seeds": seeds,
    });
    if let Some(s) = slurm {
        spec["slurm"] = s;
    }
    std::fs::write(path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
}

/// `out`'s text, after checking that it succeeded.
pub fn ok(out: Output) -> String {
    let text = out_text(&out);
    assert!(out.status.success(), "{text}");
    text
}

pub fn out_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The record's submissions: (job id, run folders by index).
pub fn submissions(exp: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let text = std::fs::read_to_string(exp.join("slurm/submissions.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let runs = s["runs"].as_array().unwrap().iter().map(|r| PathBuf::from(r.as_str().unwrap())).collect();
            (s["job_id"].as_str().unwrap().to_string(), runs)
        })
        .collect()
}

/// The run folders of an experiment in grid order (seeds, transfers, lambdas).
pub fn runs(results: &Path, spec: &Path) -> Vec<PathBuf> {
    deep_coral::experiment::spec::load(spec).unwrap().runs(results).into_iter().map(|r| r.dir).collect()
}

pub fn status_line<'a>(status: &'a str, dir: &Path) -> &'a str {
    let dir = dir.display().to_string();
    status
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(dir.as_str()))
        .unwrap_or_else(|| panic!("{dir} in {status}"))
}

/// Polls squeue while it lives, keeping the most tasks of `job` seen running at once.
pub struct RunningWatch {
    most: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningWatch {
    pub fn new(cluster: &Cluster, job: &str) -> RunningWatch {
        let (most, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (m, d, conf, job) = (Arc::clone(&most), Arc::clone(&done), cluster.conf.clone(), job.to_string());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                let out = Command::new("squeue")
                    .env("SLURM_CONF", &conf)
                    .args(["-h", "-j", &job, "-t", "R", "-o", "%i"])
                    .output();
                if let Ok(out) = out {
                    let n = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count();
                    m.fetch_max(n, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RunningWatch { most, done, thread: Some(thread) }
    }

    pub fn most(mut self) -> usize {
        self.done.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.most.load(Ordering::SeqCst)
    }
}
