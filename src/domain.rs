//! A domain on disk: a folder of class folders of images, in either layout
//! `<root>/<domain>/images/<class>/*` (the Office-31 archive) or `<root>/<domain>/<class>/*`
//! (Office-Caltech10, as in ../shared/data/office-caltech10). Classes are sorted by name, so
//! label `k` is the same class in every domain.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The image files of one domain, with labels.
#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    /// The folder that holds the class folders.
    pub dir: PathBuf,
    /// Class names, sorted; a label is an index into this list.
    pub classes: Vec<String>,
    /// Every file, sorted by (class, file name), with its label.
    pub files: Vec<(PathBuf, i64)>,
}

impl Domain {
    /// Finds `<data_root>/<name>` (and its `images/` subfolder, if present) and lists its classes
    /// and files. Hidden files are ignored; every other file is taken as an image (a file that
    /// does not decode is reported when decoding).
    pub fn scan(data_root: &Path, name: &str) -> Result<Domain> {
        if !data_root.is_dir() {
            bail!("data root {} does not exist or is not a folder", data_root.display());
        }
        let top = data_root.join(name);
        if !top.is_dir() {
            let found = subfolders(data_root).unwrap_or_default();
            bail!(
                "domain folder {} does not exist (domains under {}: {})",
                top.display(),
                data_root.display(),
                found.join(", ")
            );
        }
        let dir = if top.join("images").is_dir() { top.join("images") } else { top };
        let classes = subfolders(&dir)?;
        if classes.is_empty() {
            bail!("domain folder {} holds no class folders (expected <class>/<image files>)", dir.display());
        }
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let class_dir = dir.join(class);
            let mut names: Vec<PathBuf> = std::fs::read_dir(&class_dir)
                .with_context(|| format!("reading class folder {}", class_dir.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect();
            if names.is_empty() {
                bail!("class folder {} holds no images", class_dir.display());
            }
            names.sort();
            files.extend(names.into_iter().map(|p| (p, label as i64)));
        }
        Ok(Domain { name: name.to_string(), dir, classes, files })
    }

    /// Source and target must label the same classes, or label k would mean two things.
    pub fn check_same_classes(source: &Domain, target: &Domain) -> Result<()> {
        if source.classes == target.classes {
            return Ok(());
        }
        let only = |a: &Domain, b: &Domain| -> Vec<String> {
            a.classes.iter().filter(|c| !b.classes.contains(c)).cloned().collect()
        };
        bail!(
            "source {} and target {} have different classes: only in {}: [{}]; only in {}: [{}]",
            source.dir.display(),
            target.dir.display(),
            source.name,
            only(source, target).join(", "),
            target.name,
            only(target, source).join(", ")
        )
    }
}

/// Names of the non-hidden subfolders, sorted.
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading folder {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn both_layouts_and_sorted_classes() {
        let tmp = tempfile::tempdir().unwrap();
        touch(&tmp.path().join("amazon/images/mug/b.jpg"));
        touch(&tmp.path().join("amazon/images/mug/a.jpg"));
        touch(&tmp.path().join("amazon/images/bike/c.jpg"));
        touch(&tmp.path().join("webcam/mug/x.jpg"));
        touch(&tmp.path().join("webcam/bike/.DS_Store"));
        touch(&tmp.path().join("webcam/bike/y.jpg"));
        let a = Domain::scan(tmp.path(), "amazon").unwrap();
        assert_eq!(a.classes, ["bike", "mug"]);
        let names: Vec<_> = a.files.iter().map(|(p, l)| (p.file_name().unwrap().to_str().unwrap(), *l)).collect();
        assert_eq!(names, [("c.jpg", 0), ("a.jpg", 1), ("b.jpg", 1)]);
        let w = Domain::scan(tmp.path(), "webcam").unwrap();
        assert_eq!(w.files.len(), 2);
        Domain::check_same_classes(&a, &w).unwrap();
    }

    #[test]
    fn errors_name_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        touch(&tmp.path().join("amazon/mug/a.jpg"));
        std::fs::create_dir_all(tmp.path().join("amazon/bike")).unwrap();
        std::fs::create_dir_all(tmp.path().join("empty")).unwrap();
        let err = Domain::scan(tmp.path(), "amazon").unwrap_err().to_string();
        assert!(err.contains("amazon/bike") && err.contains("no images"), "{err}");
        let err = Domain::scan(tmp.path(), "dslr").unwrap_err().to_string();
        assert!(err.contains("dslr") && err.contains("amazon"), "{err}");
        let err = Domain::scan(tmp.path(), "empty").unwrap_err().to_string();
        assert!(err.contains("no class folders"), "{err}");
        let err = Domain::scan(&tmp.path().join("nope"), "amazon").unwrap_err().to_string();
        assert!(err.contains("data root") && err.contains("nope"), "{err}");
    }

    #[test]
    fn different_class_sets_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        touch(&tmp.path().join("a/mug/1.jpg"));
        touch(&tmp.path().join("a/bike/1.jpg"));
        touch(&tmp.path().join("b/mug/1.jpg"));
        touch(&tmp.path().join("b/pen/1.jpg"));
        let (a, b) = (Domain::scan(tmp.path(), "a").unwrap(), Domain::scan(tmp.path(), "b").unwrap());
        let err = Domain::check_same_classes(&a, &b).unwrap_err().to_string();
        assert!(err.contains("only in a: [bike]") && err.contains("only in b: [pen]"), "{err}");
    }
}
