//! `sweep --launcher slurm` against a real single-node Slurm cluster (slurmctld, slurmd and munged
//! from Debian's packages, started per test by scripts/slurm/cluster.sh in a temporary folder and
//! always stopped again), on tiny real runs: synthetic image domains, the real SqueezeNet 1.1
//! weights, batch 2, one thread, a few iterations.
//!
//! Where slurmctld is not installed these tests fail when `CI` is set (CI installs it: `make
//! slurm-deps`) and are skipped with a printed reason otherwise. The tests that need no cluster
//! are in `tests/slurm_cli.rs`. The cluster tests take turns (one cluster at a time: their runs
//! share the 2 cores).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::slurm::*;
use common::*;
use deep_coral::experiment::run_state::RunState;
use serde_json::{json, Value};

#[test]
fn a_slurm_sweep_matches_the_local_one_holds_its_throttle_and_names_its_failures() {
    let Some(cluster) = Cluster::start() else { return };
    let t0 = Instant::now();
    let work = cluster.work();
    let data = domains(&work);
    let spec = work.join("exp.json");
    // 6 runs in grid order: src->tgt lambda 0 and 1, then src->bad (fails), for seeds 1 and 2.
    let transfers = json!([{"source": "src", "target": "tgt", "lambdas": [0, 1]}, {"source": "src", "target": "bad", "lambdas": [1]}]);
    write_spec(&spec, "exp", &data, transfers, &[1, 2], 10, 2, None);

    // The local launcher's results, for comparison (its two src->bad runs fail too).
    let local = work.join("local");
    let out = bin().arg("sweep").arg(&spec).arg("--out").arg(&local).args(["--jobs", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));

    let results = work.join("results");
    let exp = results.join("exp");
    let out = cluster.sweep(&spec, &results, &["--launcher", "slurm", "--max-parallel", "2"]);
    let text = out_text(&out);
    assert!(out.status.success(), "{text}");
    let subs = submissions(&exp);
    assert_eq!(subs.len(), 1, "{text}");
    let job = subs[0].0.clone();
    assert!(text.contains(&format!("as Slurm job array {job}")) && text.contains("at most 2 at once"), "{text}");
    assert!(text.contains(&exp.join("slurm").display().to_string()) && text.contains("train.log"), "{text}");
    // The commands it prints can be pasted as they are: they name the spec and --out.
    let base = format!("deep-coral sweep {} --out {}", spec.display(), results.display());
    for c in ["--status", "--wait", "--cancel"] {
        assert!(text.contains(&format!("{base} {c}")), "{c} in {text}");
    }
    // The job is named for the experiment (squeue shows the name's first characters).
    assert_eq!(cluster.text("squeue", &["-h", "-j", &job, "-o", "%j"]).lines().next().map(str::trim), Some("exp"));
    let dirs = runs(&results, &spec);
    assert_eq!(subs[0].1, dirs, "array index -> run folder, in grid order");
    let watch = RunningWatch::new(&cluster, &job);

    // A second sweep while the array is queued and running submits nothing.
    let out = cluster.sweep(&spec, &results, &["--launcher", "slurm", "--max-parallel", "2"]);
    let again = out_text(&out);
    assert!(out.status.success(), "{again}");
    assert!(again.contains("nothing to submit"), "{again}");
    assert!(again.contains(&format!("already pending or running in Slurm job {job}")), "{again}");
    // One tally: nothing launched, nothing skipped; the runs on the cluster counted as such.
    let tally = again.lines().find(|l| l.starts_with("exp: 6 runs:")).unwrap_or_else(|| panic!("{again}"));
    assert!(
        tally.contains(" 0 launched, 0 failed, ") && tally.ends_with("already pending or running on Slurm"),
        "{tally}"
    );
    assert!(!tally.contains("skipped"), "{tally}");
    assert_eq!(submissions(&exp).len(), 1, "{again}");

    // --wait: until the array has finished, then the failed runs with exit code and logs.
    let out = cluster.sweep(&spec, &results, &["--wait"]);
    let waited = out_text(&out);
    assert_eq!(out.status.code(), Some(1), "{waited}");
    let most = watch.most();
    assert!((1..=2).contains(&most), "at most 2 tasks may run at once (--max-parallel 2), squeue showed {most}");
    let bad: Vec<&PathBuf> = dirs.iter().filter(|d| d.to_string_lossy().contains("src_bad")).collect();
    assert_eq!(bad.len(), 2);
    assert!(waited.contains("2 of 6 runs of exp did not finish"), "{waited}");
    for d in &bad {
        assert!(waited.contains(&d.join("train.log").display().to_string()), "{waited}");
        assert!(std::fs::read_to_string(d.join("train.log")).unwrap().contains("corrupt"), "the log says why");
    }
    assert!(waited.contains("exit code 1 (FAILED)"), "{waited}");
    // Not on a terminal: a line per change of state, and the final tally of the whole grid.
    assert!(waited.lines().any(|l| l.starts_with("running    ") || l.starts_with("pending    ")), "{waited}");
    assert!(waited.contains("exp: 6 runs: 4 done, 2 failed"), "{waited}");
    assert!(waited.contains(&format!("`{base} --launcher slurm --max-parallel 2` submits them again")), "{waited}");
    assert!(cluster.tasks(&job).iter().all(|(_, state, _)| state == "COMPLETED" || state == "FAILED"));

    // Every good run is done, with the local launcher's metrics.csv (all but elapsed_s).
    for d in dirs.iter().filter(|d| !bad.contains(d)) {
        assert_eq!(RunState::read(d), RunState::Done, "{}", d.display());
        let rel = d.strip_prefix(&results).unwrap();
        assert_eq!(metrics_sans_elapsed(d), metrics_sans_elapsed(&local.join(rel)), "{}", rel.display());
        let log = std::fs::read_to_string(d.join("train.log")).unwrap();
        assert!(log.contains("==== deep-coral sweep") && log.contains(&format!("==== Slurm job {job}_")), "{log}");
    }
    // Each task output has a link beside it that names its run.
    let (i, d) = dirs.iter().enumerate().last().unwrap();
    let label = d.strip_prefix(&exp).unwrap().display().to_string().replace('/', "-");
    let link = exp.join(format!("slurm/{job}_{i}.{label}.out"));
    assert_eq!(std::fs::read_link(&link).unwrap(), PathBuf::from(format!("{job}_{i}.out")), "{}", link.display());

    // --status: done, and failed with exit code and log path.
    let out = cluster.sweep(&spec, &results, &["--status"]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "failed runs: {}", out_text(&out));
    for d in &dirs {
        let line = status_line(&status, d);
        if bad.contains(&d) {
            assert!(line.starts_with("failed") && line.contains("exit code 1") && line.contains("run.json"), "{line}");
            assert!(line.contains(&d.join("train.log").display().to_string()) && line.contains(".out"), "{line}");
        } else {
            assert!(line.starts_with("done"), "{line}");
        }
    }
    assert!(status.contains("exp: 6 runs: 4 done, 2 failed"), "{status}");

    // The sweep again, without flags: only the two failed runs go again, and it says so, with
    // the settings the first array was submitted with; --wait ends with the grid's tally.
    let out = cluster.sweep(&spec, &results, &["--launcher", "slurm", "--wait"]);
    let retry = out_text(&out);
    assert_eq!(out.status.code(), Some(1), "{retry}");
    assert!(retry.contains("submitting again 2 runs that failed, were cancelled or were lost"), "{retry}");
    assert!(retry.contains(&format!("those Slurm job {job} was submitted with (--max-parallel 2)")), "{retry}");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(exp.join("slurm/submissions.json")).unwrap()).unwrap();
    assert!(record["submissions"][1]["sbatch"].as_array().unwrap().contains(&json!("--array=0-1%2")), "{record}");
    assert_eq!(record["submissions"][1]["flags"], json!({"max_parallel": 2}));
    let subs = submissions(&exp);
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1].1, bad.iter().map(|d| d.to_path_buf()).collect::<Vec<_>>());
    assert!(retry.contains("2 of 6 runs of exp did not finish"), "{retry}");
    let last = retry.lines().filter(|l| l.starts_with("exp: 6 runs:")).last().unwrap_or_else(|| panic!("{retry}"));
    assert!(last.starts_with("exp: 6 runs: 4 done, 2 failed (Slurm jobs "), "the final tally last: {last}");
    eprintln!("slurm sweep test: {:.1} s", t0.elapsed().as_secs_f64());
    cluster.stop();
}

#[test]
fn usr1_checkpoints_requeues_and_the_run_resumes_to_the_uninterrupted_metrics() {
    let Some(cluster) = Cluster::start() else { return };
    let t0 = Instant::now();
    let work = cluster.work();
    let data = domains(&work);
    let spec = work.join("one.json");
    write_spec(&spec, "one", &data, json!([{"source": "src", "target": "tgt", "lambdas": [1]}]), &[1], 40, 4, None);

    let reference = work.join("reference");
    run_ok(bin().arg("sweep").arg(&spec).arg("--out").arg(&reference));

    let results = work.join("results");
    ok(cluster.sweep(&spec, &results, &["--launcher", "slurm"]));
    let exp = results.join("one");
    let job = submissions(&exp)[0].0.clone();
    let dir = runs(&results, &spec).remove(0);
    wait_for(120, "the run to log 2 rows", || rows_so_far(&dir) >= 2);
    assert_eq!(cluster.tasks(&job)[0].1, "RUNNING");
    let out = cluster.cmd("scancel").args(["--signal=USR1", "--batch", &format!("{job}_0")]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(60, "the task to requeue", || cluster.tasks(&job).first().is_some_and(|t| t.2 == 1));
    // Resumed, it is requeued once more by someone else (`scontrol requeue`, as an admin or a
    // preemption in requeue mode would): its SIGTERM finds the job being requeued, and it says so.
    wait_for(120, "the resumed run to log 6 rows", || rows_so_far(&dir) >= 6);
    let out = cluster.cmd("scontrol").args(["requeue", &format!("{job}_0")]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.sweep(&spec, &results, &["--wait"]);
    assert!(out.status.success(), "{}", out_text(&out));

    assert_eq!(RunState::read(&dir), RunState::Done);
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    assert!(log.contains("stopped by SIGUSR1: checkpointed at iteration"), "{log}");
    assert!(log.contains(&format!("requeued Slurm job {job}_0 (requeue 1 of at most 3)")), "{log}");
    assert!(log.contains(&format!("--out {} --resume", dir.display())), "the requeued task resumed:\n{log}");
    assert!(log.contains(&format!("==== Slurm job {job}_0, restart 1")), "{log}");
    assert!(log.contains("stopped by SIGTERM as Slurm requeues the job") && !log.contains("not requeued"), "{log}");
    assert!(log.contains(&format!("==== Slurm job {job}_0, restart 2")), "{log}");
    assert_eq!(assert_whole_rows(&dir), 11);
    assert_eq!(metrics_sans_elapsed(&dir), metrics_sans_elapsed(&reference.join("one/src_tgt/lambda_1/seed_1")));
    let task_out = std::fs::read_to_string(exp.join(format!("slurm/{job}_0.out"))).unwrap();
    assert!(task_out.contains("restart 0 of at most 3") && task_out.contains("restart 1 of at most 3"), "{task_out}");
    assert_eq!(cluster.tasks(&job), vec![(0, "COMPLETED".to_string(), 2)]);

    // After completion a sweep submits nothing, and asks sbatch nothing (not even --test-only:
    // an sbatch that fails, first on PATH, is never run).
    let fake = work.join("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    let called = work.join("sbatch-called");
    std::fs::write(fake.join("sbatch"), format!("#!/bin/sh\ntouch {}\nexit 1\n", called.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fake.join("sbatch"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    let out = cluster
        .deep_coral()
        .env("PATH", path)
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&results)
        .args(["--launcher", "slurm"])
        .output()
        .unwrap();
    let again = out_text(&out);
    assert!(out.status.success() && again.contains("nothing to submit"), "{again}");
    assert!(!called.exists(), "sbatch was run: {again}");
    let out = cluster.sweep(&spec, &results, &["--status"]);
    assert_eq!(out.status.code(), Some(0), "every run done: {}", out_text(&out));
    assert_eq!(submissions(&exp).len(), 1);
    eprintln!("slurm requeue test: {:.1} s", t0.elapsed().as_secs_f64());
    cluster.stop();
}

#[test]
fn cancel_stops_only_this_sweeps_array_and_marks_no_unfinished_run_done() {
    let Some(cluster) = Cluster::start() else { return };
    let t0 = Instant::now();
    let work = cluster.work();
    let data = domains(&work);
    let spec = work.join("cx.json");
    let slurm = json!({"max_parallel": 1});
    write_spec(
        &spec,
        "cx",
        &data,
        json!([{"source": "src", "target": "tgt", "lambdas": [0, 1]}]),
        &[1],
        // Long enough that the first run is still running through the checks below (a few
        // seconds), however fast the machine; --cancel ends it long before its end.
        400,
        4,
        Some(slurm),
    );
    // A job of someone else, which --cancel must leave alone.
    let other = cluster.text("sbatch", &["--parsable", "--wrap", "sleep 300", "-o", "/dev/null"]).trim().to_string();

    let results = work.join("results");
    ok(cluster.sweep(&spec, &results, &["--launcher", "slurm"]));
    let exp = results.join("cx");
    let job = submissions(&exp)[0].0.clone();
    let dirs = runs(&results, &spec);
    wait_for(120, "the first run to log 2 rows", || rows_so_far(&dirs[0]) >= 2);
    assert_eq!(cluster.running(&job), 1, "max_parallel 1 from the spec's slurm block");

    // A local sweep refuses the runs the array has on the cluster, naming them.
    let out = bin()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&results)
        .env("SLURM_CONF", &cluster.conf)
        .current_dir(cluster.work())
        .output()
        .unwrap();
    let text = out_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("2 runs of cx are pending or running on Slurm"), "{text}");
    assert!(
        text.contains(&format!("`deep-coral sweep {} --out {} --wait`", spec.display(), results.display())),
        "{text}"
    );
    for (i, d) in dirs.iter().enumerate() {
        assert!(text.contains(&format!("{} (Slurm job {job}_{i})", d.display())), "{text}");
    }

    // Ctrl-C on --wait stops the waiting, not the jobs.
    let waiting = cluster
        .deep_coral()
        .arg("sweep")
        .arg(&spec)
        .arg("--out")
        .arg(&results)
        .arg("--wait")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    unsafe { libc::kill(waiting.id() as i32, libc::SIGINT) };
    let out = waiting.wait_with_output().unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("stopped waiting; the Slurm jobs go on") && text.contains("--cancel"), "{text}");
    assert_eq!(cluster.running(&job), 1, "the job still runs");

    let out = cluster.sweep(&spec, &results, &["--cancel"]);
    let text = out_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("cancelled Slurm job {job} (2 runs pending or running)")), "{text}");
    assert!(
        cluster.tasks(&job).iter().all(|(_, state, restarts)| state == "CANCELLED" && *restarts == 0),
        "{:?}",
        cluster.tasks(&job)
    );
    let other_state = cluster.text("squeue", &["-h", "-j", &other, "-o", "%T"]);
    assert_eq!(other_state.trim(), "RUNNING", "the other job is not this sweep's");

    // The running run checkpointed and says interrupted; the pending one never started; none is done.
    assert_ne!(RunState::read(&dirs[0]), RunState::Done);
    let record = std::fs::read_to_string(dirs[0].join("run.json")).unwrap();
    assert!(record.contains("\"interrupted\""), "{record}");
    assert!(dirs[0].join("checkpoint/state.json").is_file());
    assert!(rows_so_far(&dirs[0]) < 101, "the cancelled run did not finish its 400 iterations");
    let log = std::fs::read_to_string(dirs[0].join("train.log")).unwrap();
    assert!(log.contains("not requeued"), "{log}");
    assert_ne!(RunState::read(&dirs[1]), RunState::Done);
    let out = cluster.sweep(&spec, &results, &["--status"]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "cancelled runs: {status}");
    for d in &dirs {
        assert!(status_line(&status, d).starts_with("cancelled"), "{status}");
    }
    // A dry run shows both would go again.
    let out = cluster.sweep(&spec, &results, &["--launcher", "slurm", "--dry-run"]);
    let text = out_text(&out);
    assert!(
        text.contains("submitting again 2 runs that failed, were cancelled or were lost")
            && text.contains("would submit 2 runs"),
        "{text}"
    );
    assert_eq!(submissions(&exp).len(), 1);
    eprintln!("slurm cancel test: {:.1} s", t0.elapsed().as_secs_f64());
    cluster.stop();
}

#[test]
fn an_unknown_partition_or_a_refused_sbatch_argument_is_named_and_nothing_is_written() {
    let Some(cluster) = Cluster::start() else { return };
    let work = cluster.work();
    let data = domains(&work);
    let spec = work.join("bad.json");
    write_spec(&spec, "bad", &data, json!([{"source": "src", "target": "tgt", "lambdas": [0]}]), &[1], 2, 2, None);
    let results = work.join("results");
    let sweep = |extra: &[&str]| {
        let mut c = cluster.deep_coral();
        c.arg("sweep").arg(&spec).arg("--out").arg(&results).args(["--launcher", "slurm"]).args(extra);
        run_fails(&mut c, 1)
    };
    let e = sweep(&["--partition", "nosuchpartition"]);
    assert!(
        e.contains("invalid partition specified: nosuchpartition") && e.contains("--partition nosuchpartition"),
        "{e}"
    );
    assert!(e.contains("nothing was submitted"), "{e}");
    let e = sweep(&["--sbatch-arg=--no-such-option"]);
    assert!(e.contains("sbatch refused") && e.contains("--no-such-option"), "{e}");
    let e = sweep(&["--gpus-per-run", "1"]);
    assert!(e.contains("sbatch refused") && e.contains("gres"), "a node without GPUs: {e}");
    assert!(!results.exists(), "nothing written: {:?}", files_under(&results));
    assert!(cluster.text("squeue", &["-h"]).trim().is_empty(), "nothing submitted");
    cluster.stop();
}

#[test]
fn a_task_slurm_has_forgotten_is_lost_and_neither_wait_nor_status_passes_it() {
    // Ended jobs are forgotten 5 s after they end (slurmctld purges about once a minute).
    let Some(cluster) = Cluster::start_with(&[("SLURM_TEST_MIN_JOB_AGE", "5")]) else { return };
    let t0 = Instant::now();
    let work = cluster.work();
    let data = domains(&work);
    let spec = work.join("lost.json");
    write_spec(&spec, "lost", &data, json!([{"source": "src", "target": "tgt", "lambdas": [1]}]), &[1], 400, 4, None);
    let results = work.join("results");
    ok(cluster.sweep(&spec, &results, &["--launcher", "slurm"]));
    let job = submissions(&results.join("lost"))[0].0.clone();
    let dir = runs(&results, &spec).remove(0);
    wait_for(120, "the run to log 2 rows", || rows_so_far(&dir) >= 2);
    // As the kernel's OOM killer would: SIGKILL to the task and its train, no word to anyone.
    let pids = Command::new("pgrep").arg("-f").arg(&dir).output().unwrap();
    let pids: Vec<i32> = String::from_utf8_lossy(&pids.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(!pids.is_empty(), "the task and its train");
    for pid in pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_for(150, "Slurm to forget the job", || {
        !cluster.cmd("scontrol").args(["-o", "show", "job", &job]).output().unwrap().status.success()
    });
    assert!(std::fs::read_to_string(dir.join("run.json")).unwrap().contains("\"running\""));

    let out = cluster.sweep(&spec, &results, &["--status"]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", out_text(&out));
    let line = status_line(&status, &dir);
    assert!(line.starts_with("lost") && line.contains("no longer on the cluster"), "{line}");
    assert!(
        line.contains("no accounting") || line.contains("sacct"),
        "what accounting says, or that there is none: {line}"
    );
    assert!(
        line.contains("run.json \"running\"") && line.contains(&dir.join("train.log").display().to_string()),
        "{line}"
    );
    assert!(status.contains("lost: 1 runs: 1 lost"), "{status}");

    let out = cluster.sweep(&spec, &results, &["--wait"]);
    let waited = out_text(&out);
    assert_eq!(out.status.code(), Some(1), "--wait never passes a run that did not finish: {waited}");
    assert!(
        waited.contains("1 of 1 runs of lost did not finish") && waited.contains("lost: 1 runs: 1 lost"),
        "{waited}"
    );
    assert!(waited.contains(&format!("lost {}", dir.display())) && waited.contains("run.json \"running\""), "{waited}");

    // The next sweep submits it again, saying why.
    let out = cluster.sweep(&spec, &results, &["--launcher", "slurm", "--dry-run"]);
    let text = out_text(&out);
    assert!(text.contains("submitting again 1 runs") && text.contains(&format!("Slurm job {job}_0 lost")), "{text}");
    eprintln!("slurm lost-task test: {:.1} s", t0.elapsed().as_secs_f64());
    cluster.stop();
}
