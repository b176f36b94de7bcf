//! What a run was trained on, recorded in `run.json` at its start, so that `--resume` can check
//! it continues on the same data: per domain its classes, image count and a SHA-256 over every
//! file's name (relative to the domain), size and label. Names and sizes, not contents: cheap
//! on Office-31's 4,110 files, and enough to catch another data root, other classes, or images
//! added, removed, renamed or re-encoded.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::domain::Domain;

/// One domain's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainFingerprint {
    pub name: String,
    pub classes: Vec<String>,
    pub images: usize,
    /// Hex SHA-256 over (relative name, size in bytes, label) of every file, in scan order.
    pub files_sha256: String,
}

impl DomainFingerprint {
    pub fn of(domain: &Domain) -> Result<DomainFingerprint> {
        let mut h = Sha256::new();
        for (path, label) in &domain.files {
            let name = path.strip_prefix(&domain.dir).unwrap_or(path);
            let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
            let name = name.to_string_lossy();
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(size.to_le_bytes());
            h.update(label.to_le_bytes());
        }
        Ok(DomainFingerprint {
            name: domain.name.clone(),
            classes: domain.classes.clone(),
            images: domain.files.len(),
            files_sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// What differs from `now`, in words (empty when nothing does).
    fn differences(&self, now: &DomainFingerprint, role: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.classes != now.classes {
            out.push(format!(
                "{role} domain {}: classes were [{}], now [{}]",
                self.name,
                self.classes.join(", "),
                now.classes.join(", ")
            ));
        } else if self.images != now.images {
            out.push(format!(
                "{role} domain {}: {} images were recorded, {} are there now",
                self.name, self.images, now.images
            ));
        } else if self.files_sha256 != now.files_sha256 {
            out.push(format!("{role} domain {}: the same number of images, but other file names or sizes", self.name));
        }
        out
    }
}

/// Both domains of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub source: DomainFingerprint,
    pub target: DomainFingerprint,
}

impl DataFingerprint {
    pub fn of(source: &Domain, target: &Domain) -> Result<DataFingerprint> {
        Ok(DataFingerprint { source: DomainFingerprint::of(source)?, target: DomainFingerprint::of(target)? })
    }

    /// Refuses to continue a run recorded as `self` on the data `now` if anything differs,
    /// naming each difference.
    pub fn check_same(&self, now: &DataFingerprint, data_root: &Path) -> Result<()> {
        let diffs: Vec<String> = self
            .source
            .differences(&now.source, "source")
            .into_iter()
            .chain(self.target.differences(&now.target, "target"))
            .collect();
        anyhow::ensure!(
            diffs.is_empty(),
            "the data under {} is not what this run started on: {}; resume it on its own data, or start a new run",
            data_root.display(),
            diffs.join("; ")
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(root: &Path, files: &[(&str, &str, usize)]) -> Domain {
        for (class, name, size) in files {
            std::fs::create_dir_all(root.join("d").join(class)).unwrap();
            std::fs::write(root.join("d").join(class).join(name), vec![0u8; *size]).unwrap();
        }
        Domain::scan(root, "d").unwrap()
    }

    #[test]
    fn names_sizes_and_classes_count() {
        let a = tempfile::tempdir().unwrap();
        let base = [("cat", "1.jpg", 10), ("cat", "2.jpg", 11), ("dog", "1.jpg", 12)];
        let fp = DataFingerprint::of(&domain(a.path(), &base), &domain(a.path(), &base)).unwrap();
        let same = tempfile::tempdir().unwrap();
        let now = DataFingerprint::of(&domain(same.path(), &base), &domain(same.path(), &base)).unwrap();
        fp.check_same(&now, same.path()).unwrap();

        let resized = [("cat", "1.jpg", 10), ("cat", "2.jpg", 99), ("dog", "1.jpg", 12)];
        let b = tempfile::tempdir().unwrap();
        let now = DataFingerprint::of(&domain(b.path(), &resized), &domain(b.path(), &resized)).unwrap();
        let err = fp.check_same(&now, b.path()).unwrap_err().to_string();
        assert!(err.contains("other file names or sizes"), "{err}");

        let other = [("cat", "1.jpg", 10), ("cow", "2.jpg", 11), ("dog", "1.jpg", 12)];
        let c = tempfile::tempdir().unwrap();
        let now = DataFingerprint::of(&domain(c.path(), &other), &domain(c.path(), &other)).unwrap();
        let err = fp.check_same(&now, c.path()).unwrap_err().to_string();
        assert!(err.contains("classes were [cat, dog], now [cat, cow, dog]"), "{err}");
    }
}
