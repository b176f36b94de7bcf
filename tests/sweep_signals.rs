//! `deep-coral sweep` stopped by signals and sharing run folders with other processes, through
//! the real binary on tiny synthetic images and the real SqueezeNet weights: SIGTERM or SIGINT
//! to the sweep's pid alone, or Ctrl-C to its process group, stops its runs after a whole row
//! and a checkpoint (no orphaned `train`), the sweep exits 143 / 130 and says which runs were
//! interrupted, and a second sweep resumes them; a run folder locked by another process is
//! skipped, one left "running" by a killed process is resumed.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{rows_so_far, tiny_data, wait_for};
use deep_coral::files::RunLock;
use deep_coral::train::metrics::{RunRecord, Status};

/// Iterations of each run: enough to be mid-run when the signal comes.
const ITERATIONS: usize = 40;

/// A spec of `lambdas` on the tiny domains (src -> tgt, seed 1), a checkpoint every iteration
/// (lr 1e-4: at the default, batches of 2 can diverge within 40 iterations),
/// and its results root, in one temporary folder.
struct Fixture {
    tmp: tempfile::TempDir,
    spec: PathBuf,
    results: PathBuf,
}

impl Fixture {
    fn new(lambdas: &[f64], iterations: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let data = tiny_data(tmp.path());
        let spec = tmp.path().join("sig.json");
        let text = serde_json::json!({
            "name": "sig",
            "train": { "backbone": "squeezenet1_1", "data_root": data, "weights": common::squeezenet_weights(),
                       "iterations": iterations, "batch_size": 2, "lr": 0.00001, "eval_every": 2, "checkpoint_every": 1,
                       "device": "cpu", "threads": 1 },
            "transfers": [ { "source": "src", "target": "tgt", "lambdas": lambdas } ],
            "seeds": [1]
        });
        std::fs::write(&spec, serde_json::to_string_pretty(&text).unwrap()).unwrap();
        let results = tmp.path().join("results");
        Fixture { tmp, spec, results }
    }

    fn run(&self, lambda: &str) -> PathBuf {
        self.results.join(format!("sig/src_tgt/lambda_{lambda}/seed_1"))
    }

    fn sweep(&self, jobs: usize) -> Command {
        let mut cmd = common::bin();
        cmd.arg("sweep").arg(&self.spec).arg("--out").arg(&self.results).arg("--jobs").arg(jobs.to_string());
        cmd
    }

    /// Starts a sweep with its stderr going to `<tmp>/<name>.err` (a file, not a pipe nobody
    /// reads while it runs).
    fn spawn(&self, cmd: &mut Command, name: &str) -> (Child, PathBuf) {
        let err = self.tmp.path().join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn the sweep");
        (child, err)
    }

    /// A sweep run to its end: exit code and stderr.
    fn sweep_to_end(&self, jobs: usize) -> (Option<i32>, String) {
        let (child, err) = self.spawn(&mut self.sweep(jobs), "again");
        self.finish(child, &err, 600)
    }

    /// Waits up to `secs` for `child` and returns its exit code and stderr; on a timeout kills
    /// it and whatever it left running under this fixture's folder, and fails.
    fn finish(&self, mut child: Child, err: &Path, secs: u64) -> (Option<i32>, String) {
        let end = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > end {
                child.kill().ok();
                child.wait().ok();
                for pid in processes_naming(self.tmp.path()) {
                    // SAFETY: kill(2) on a process this test started (its command line names
                    // the test's own temporary folder).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                panic!("the sweep did not end within {secs} s:\n{}", std::fs::read_to_string(err).unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.code(), std::fs::read_to_string(err).unwrap())
    }
}

/// Pids of the processes whose command line mentions `path` (this test's own process aside).
fn processes_naming(path: &Path) -> Vec<i32> {
    let needle = path.display().to_string();
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if pid != me && cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

fn record(dir: &Path) -> RunRecord {
    RunRecord::read(&dir.join("run.json")).unwrap()
}

/// metrics.csv ends in a whole row: newline-terminated, every line as many fields as the
/// header. Returns the data rows.
fn assert_whole_rows(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(text.ends_with('\n'), "metrics.csv ends mid-line: {text:?}");
    let fields = text.lines().next().unwrap().split(',').count();
    for line in text.lines() {
        assert_eq!(line.split(',').count(), fields, "not a whole row: {line:?}");
    }
    text.lines().count() - 1
}

/// What a signalled run leaves: run.json "interrupted" part-way, whole rows (one per eval up
/// to where it stopped), a checkpoint, and no process left writing to it.
fn assert_interrupted(dir: &Path) {
    let rec = record(dir);
    assert_eq!(rec.status, Status::Interrupted, "{}", dir.display());
    assert!(rec.iterations_done < ITERATIONS, "the signal came too late to test anything");
    let rows = assert_whole_rows(dir);
    assert!(rows >= 2 && rows <= rec.iterations_done / 2 + 2, "{rows} rows at iteration {}", rec.iterations_done);
    assert!(dir.join("checkpoint/state.json").is_file(), "{}", dir.display());
    assert_eq!(processes_naming(dir), Vec::<i32>::new(), "a process still names {}", dir.display());
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on our own child (or, negative, its process group).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid} {sig}");
}

/// SIGTERM to the sweep's pid alone, two runs training (--jobs 2) and one waiting: both runs
/// stop after a whole row and checkpoint, the third never starts, the sweep exits 143 naming
/// them; a second sweep resumes the two and runs the third.
#[test]
fn sigterm_to_the_sweep_alone_stops_its_runs_cleanly_and_a_second_sweep_finishes_them() {
    let fx = Fixture::new(&[0.0, 1.0, 0.5], ITERATIONS);
    let (a, b, c) = (fx.run("0"), fx.run("1"), fx.run("0.5"));
    let (sweep, err) = fx.spawn(&mut fx.sweep(2), "first");
    wait_for(300, "both runs' first rows", || rows_so_far(&a) >= 2 && rows_so_far(&b) >= 2);
    signal(sweep.id() as i32, libc::SIGTERM);
    let (code, err) = fx.finish(sweep, &err, 300);
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("SIGTERM: stopping the sweep"), "{err}");
    assert!(err.contains("stopped by SIGTERM: 0 finished, 2 interrupted, 0 failed, 1 not started"), "{err}");
    assert!(err.contains(&format!("  interrupted  {}", a.display())), "{err}");
    assert!(err.contains(&format!("  not started  {}", c.display())), "{err}");
    assert!(err.contains("sig: 3 runs: 0 done before, 3 launched, 0 failed, 2 interrupted"), "{err}");
    assert_interrupted(&a);
    assert_interrupted(&b);
    assert!(c.join("config.json").is_file() && !c.join("run.json").exists(), "the third run never started");
    assert_eq!(processes_naming(fx.tmp.path()), Vec::<i32>::new(), "no orphaned train");
    common::assert_no_tmp(&fx.results);

    let (code, err) = fx.sweep_to_end(2);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("sig: 3 runs: 0 done before, 3 launched, 0 failed"), "{err}");
    for dir in [&a, &b] {
        let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
        assert!(log.contains("--resume") && log.contains("resuming"), "{log}");
    }
    for dir in [&a, &b, &c] {
        let rec = record(dir);
        assert_eq!((rec.status, rec.iterations_done), (Status::Done, ITERATIONS), "{}", dir.display());
        assert_eq!(assert_whole_rows(dir), ITERATIONS / 2 + 1, "one row per eval, none twice");
    }
}

/// SIGINT to the sweep's pid alone: the same, exit 130.
#[test]
fn sigint_to_the_sweep_alone_stops_its_run_and_exits_130() {
    let fx = Fixture::new(&[1.0], ITERATIONS);
    let run = fx.run("1");
    let (sweep, err) = fx.spawn(&mut fx.sweep(1), "first");
    wait_for(300, "the run's first rows", || rows_so_far(&run) >= 2);
    signal(sweep.id() as i32, libc::SIGINT);
    let (code, err) = fx.finish(sweep, &err, 300);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("stopped by SIGINT: 0 finished, 1 interrupted, 0 failed, 0 not started"), "{err}");
    assert_interrupted(&run);
}

/// Ctrl-C in a terminal: SIGINT to the whole process group, so the train child gets it from
/// the terminal and again from the sweep. It still stops once, cleanly, and the sweep exits 130
/// after it, starting nothing more.
#[test]
fn ctrl_c_to_the_process_group_stops_the_run_once_and_exits_130() {
    let fx = Fixture::new(&[0.0, 1.0], ITERATIONS);
    let (first, second) = (fx.run("0"), fx.run("1"));
    let (sweep, err) = fx.spawn(fx.sweep(1).process_group(0), "first");
    wait_for(300, "the first run's first rows", || rows_so_far(&first) >= 2);
    signal(-(sweep.id() as i32), libc::SIGINT);
    let (code, err) = fx.finish(sweep, &err, 300);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("stopped by SIGINT: 0 finished, 1 interrupted, 0 failed, 1 not started"), "{err}");
    assert_interrupted(&first);
    assert!(!second.join("run.json").exists(), "nothing started after the signal");
    let log = std::fs::read_to_string(first.join("train.log")).unwrap();
    assert_eq!(log.matches("==== deep-coral sweep").count(), 1, "{log}");
    assert_eq!(log.matches("Interrupted: ").count(), 1, "one stop, one final line: {log}");
}

/// Kills the process on drop (a `flock --no-fork`, which holds a run's lock itself: a forking
/// flock would leave its `sleep` holding it).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// A run folder whose lock another process holds is skipped (named, counted, left untouched);
/// one whose run.json says "running" with nobody holding its lock (a train killed by the
/// kernel) is resumed from its checkpoint.
#[test]
fn a_sweep_skips_a_locked_run_and_resumes_a_killed_one() {
    let fx = Fixture::new(&[0.0, 1.0], 12);
    let (locked, killed) = (fx.run("0"), fx.run("1"));

    // A train killed without a word: SIGKILL once it has checkpointed.
    let data = fx.tmp.path().join("data");
    let mut train = common::tiny_train(&data, &killed, &["--iterations", "12", "--checkpoint-every", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = killed.join("checkpoint/state.json");
    wait_for(300, "a checkpoint", || {
        std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["iteration"].as_u64() >= Some(2))
    });
    train.kill().unwrap();
    train.wait().unwrap();
    assert_eq!(record(&killed).status, Status::Running, "a killed run cannot write its status");
    assert_eq!(RunLock::holder(&killed), None, "the kernel released the dead run's lock");

    // Another process holds the other run's folder.
    std::fs::create_dir_all(&locked).unwrap();
    let holder = KillOnDrop(
        Command::new("flock").arg("--no-fork").arg(locked.join("lock")).arg("sleep").arg("120").spawn().unwrap(),
    );
    let pid = holder.0.id();
    wait_for(30, "flock to take the lock", || RunLock::holder(&locked).is_some());
    // flock(1) writes no pid into the file; RunLock's holders do.
    std::fs::write(locked.join("lock"), pid.to_string()).unwrap();

    let (code, err) = fx.sweep_to_end(1);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains(&format!("skipping {}: in use by process {pid}", locked.display())), "{err}");
    assert!(err.contains("sig: 2 runs: 0 done before, 1 launched, 0 failed, 1 skipped (in use"), "{err}");
    let names: Vec<String> =
        std::fs::read_dir(&locked).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["lock"], "nothing written into a folder in use");
    let log = std::fs::read_to_string(killed.join("train.log")).unwrap();
    assert!(log.contains("--resume") && log.contains("resuming"), "{log}");
    assert_eq!(record(&killed).status, Status::Done);
    assert_whole_rows(&killed);

    drop(holder);
    let (code, err) = fx.sweep_to_end(1);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("sig: 2 runs: 1 done before, 1 launched, 0 failed\n"), "{err}");
    assert_eq!(record(&locked).status, Status::Done);
}
