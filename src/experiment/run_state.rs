//! Where a run stands, read from its folder alone (DomainBed's job states): the one type the
//! sweep and its launchers share.

use std::path::Path;

use serde::Deserialize;

use crate::files::RunLock;
use crate::train::metrics::Status;

/// Where a run stands, read from its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `run.json` says `"status": "done"`.
    Done,
    /// Not done, and another process (this pid) holds the folder's lock (`<dir>/lock`, see
    /// `files::RunLock`): a `train` of another sweep, or any other writer. Left alone.
    InUse(u32),
    /// The directory exists but the run did not finish (killed, failed, diverged, interrupted)
    /// and nothing holds its lock: also a run.json that still says "running", left by a
    /// process killed without a chance to write (the kernel releases the lock of a dead one).
    Incomplete,
    /// No directory yet.
    New,
}

/// The status `dir`'s run.json records (`running`, `done`, ...); None without a readable one.
pub fn recorded_status(dir: &Path) -> Option<Status> {
    #[derive(Deserialize)]
    struct StatusOnly {
        status: Status,
    }
    let text = std::fs::read_to_string(dir.join("run.json")).ok()?;
    serde_json::from_str::<StatusOnly>(&text).ok().map(|r| r.status)
}

impl RunState {
    /// Reads the state of the run in `dir`.
    pub fn read(dir: &Path) -> RunState {
        if recorded_status(dir) == Some(Status::Done) {
            RunState::Done
        } else if !dir.exists() {
            RunState::New
        } else if let Some(pid) = RunLock::holder(dir) {
            RunState::InUse(pid)
        } else {
            RunState::Incomplete
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RunState::Done => "done",
            RunState::InUse(_) => "in-use",
            RunState::Incomplete => "incomplete",
            RunState::New => "new",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_the_folder_and_its_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        assert_eq!(RunState::read(&dir), RunState::New);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(RunState::read(&dir), RunState::Incomplete);
        // Killed by the kernel: run.json says running, but nothing holds the lock.
        std::fs::write(dir.join("run.json"), r#"{"status": "running"}"#).unwrap();
        std::fs::write(dir.join("lock"), "12345").unwrap();
        assert_eq!(RunState::read(&dir), RunState::Incomplete);
        let lock = RunLock::acquire(&dir).unwrap();
        assert_eq!(RunState::read(&dir), RunState::InUse(std::process::id()));
        // A done run is done, whoever still holds its lock (a train writes "done" last).
        std::fs::write(dir.join("run.json"), r#"{"status": "done"}"#).unwrap();
        assert_eq!(RunState::read(&dir), RunState::Done);
        drop(lock);
        assert_eq!(RunState::name(RunState::InUse(1)), "in-use");
    }
}
