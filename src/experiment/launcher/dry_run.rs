//! `DryRun`: lists the sweep's runs and runs nothing.

use anyhow::Result;
use indicatif::ProgressBar;

use super::{Failure, Job, Launcher};

/// Prints one line per job (state, directory, command) and runs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DryRun;

impl Launcher for DryRun {
    fn launch(&self, jobs: Vec<Job>, _progress: &ProgressBar) -> Result<Vec<Failure>> {
        for job in &jobs {
            println!("{:<10} {}  $ {}", job.state.name(), job.dir.display(), job.command_line());
        }
        Ok(Vec::new())
    }

    fn executes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_only_lists() {
        assert_eq!(DryRun.threads_per_run(), None);
        assert!(!DryRun.executes());
    }
}
