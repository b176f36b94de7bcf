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
    /// Every file, sorted by (class, file name), with its label. A symbolic link to an image
    /// is listed under the link's own path (decoding follows it).
    pub files: Vec<(PathBuf, i64)>,
    /// Entries that cannot be read as an image or a class folder, sorted, with why: a link that
    /// dangles, loops or points to something that is neither a regular file nor a folder, and
    /// special files (FIFOs, sockets, devices). They are not in `files` (nor their classes in
    /// `classes`); the caller refuses them or, skipping bad images, warns and leaves them out.
    pub broken: Vec<(PathBuf, String)>,
}

impl Domain {
    /// Finds `<data_root>/<name>` (and its `images/` subfolder, if present) and lists its classes
    /// and files. Hidden files are ignored; every other file is taken as an image (a file that
    /// does not decode is reported when decoding). Symbolic links are followed: a link to an
    /// image is an image, a link to a folder is a class folder; broken ones are listed in
    /// [`Domain::broken`], for the caller to refuse or skip.
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
        let mut broken = Vec::new();
        let classes = class_folders(&dir, &mut broken)?;
        if classes.is_empty() {
            if let Some((link, why)) = broken.first() {
                bail!("domain folder {} holds no class folders; {}: {why}", dir.display(), link.display());
            }
            bail!("domain folder {} holds no class folders (expected <class>/<image files>)", dir.display());
        }
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let class_dir = dir.join(class);
            let mut names = Vec::new();
            let mut class_broken = Vec::new();
            for entry in std::fs::read_dir(&class_dir)
                .with_context(|| format!("reading class folder {}", class_dir.display()))?
            {
                let entry = entry.with_context(|| format!("reading class folder {}", class_dir.display()))?;
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = entry.path();
                match classify(&path, entry.file_type().ok()) {
                    Entry::File => names.push(path),
                    Entry::Folder => {}
                    Entry::Broken(why) => class_broken.push((path, why)),
                }
            }
            if names.is_empty() {
                match class_broken.first() {
                    Some((link, why)) => bail!(
                        "class folder {} holds no images: {} of its entries cannot be read ({}: {why})",
                        class_dir.display(),
                        class_broken.len(),
                        link.display()
                    ),
                    None => bail!("class folder {} holds no images", class_dir.display()),
                }
            }
            names.sort();
            files.extend(names.into_iter().map(|p| (p, label as i64)));
            broken.extend(class_broken);
        }
        broken.sort();
        Ok(Domain { name: name.to_string(), dir, classes, files, broken })
    }

    /// The broken entries of `domains` as one error, each named with why (for a link, its
    /// target), or `None` when there are none.
    pub fn broken_error(domains: &[&Domain]) -> Option<anyhow::Error> {
        let all: Vec<String> = domains
            .iter()
            .flat_map(|d| d.broken.iter())
            .map(|(path, why)| format!("  {}: {why}", path.display()))
            .collect();
        if all.is_empty() {
            return None;
        }
        Some(anyhow::anyhow!(
            "{} dataset entr{} cannot be read as images or class folders:\n{}\nfix or remove them, or pass \
             --skip-bad-images to leave them out",
            all.len(),
            if all.len() == 1 { "y" } else { "ies" },
            all.join("\n")
        ))
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

/// Every image file under `dir`, recursively, sorted: as in a class folder, hidden entries are
/// passed over and every other file (or link to one) is an image; broken entries are returned
/// apart, with why.
pub fn files_under(dir: &Path) -> Result<(Vec<PathBuf>, Vec<(PathBuf, String)>)> {
    let (mut files, mut broken) = (Vec::new(), Vec::new());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading folder {}", d.display()))? {
            let entry = entry.with_context(|| format!("reading folder {}", d.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            match classify(&path, entry.file_type().ok()) {
                Entry::File => files.push(path),
                Entry::Folder => stack.push(path),
                Entry::Broken(why) => broken.push((path, why)),
            }
        }
    }
    files.sort();
    broken.sort();
    Ok((files, broken))
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

/// Names of the non-hidden class folders of `dir` (links to folders included), sorted; broken
/// links and special files among them go to `broken` (a regular file beside the class folders
/// is ignored, as ever).
fn class_folders(dir: &Path, broken: &mut Vec<(PathBuf, String)>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading folder {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        match classify(&path, entry.file_type().ok()) {
            Entry::Folder => out.push(name),
            Entry::File => {}
            Entry::Broken(why) => broken.push((path, why)),
        }
    }
    out.sort();
    Ok(out)
}

/// What a folder entry is, links followed.
enum Entry {
    /// A regular file, or a link to one.
    File,
    /// A folder, or a link to one.
    Folder,
    /// Neither, with why.
    Broken(String),
}

/// Classifies `path` (whose own type, not following a link, is `own` when known).
fn classify(path: &Path, own: Option<std::fs::FileType>) -> Entry {
    let own = match own {
        Some(t) => t,
        None => match std::fs::symlink_metadata(path) {
            Ok(m) => m.file_type(),
            Err(e) => return Entry::Broken(format!("cannot be read ({e})")),
        },
    };
    if own.is_file() {
        return Entry::File;
    }
    if own.is_dir() {
        return Entry::Folder;
    }
    if !own.is_symlink() {
        return Entry::Broken(format!("is a {}, not a regular file", kind_name(own)));
    }
    let target = match std::fs::read_link(path) {
        Ok(t) => t,
        Err(e) => return Entry::Broken(format!("symbolic link that cannot be read ({e})")),
    };
    let link = format!("symbolic link to {}", target.display());
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Entry::File,
        Ok(m) if m.is_dir() => Entry::Folder,
        Ok(m) => Entry::Broken(format!("{link}, which is a {}, not a regular file", kind_name(m.file_type()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Entry::Broken(format!("{link}, which does not exist (a dangling link)"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Entry::Broken(format!("{link}: a loop of symbolic links ({e})"))
        }
        Err(e) => Entry::Broken(format!("{link}, which cannot be read ({e})")),
    }
}

/// "FIFO", "socket", "character device", ... for a message.
fn kind_name(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_dir() {
        "folder"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
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

    #[test]
    fn links_are_followed_and_broken_ones_listed() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        touch(&store.join("real.jpg"));
        touch(&store.join("pens/p1.jpg"));
        touch(&tmp.path().join("d/mug/a.jpg"));
        symlink(store.join("real.jpg"), tmp.path().join("d/mug/linked.jpg")).unwrap();
        symlink(store.join("pens"), tmp.path().join("d/pen")).unwrap();
        symlink(tmp.path().join("nowhere.jpg"), tmp.path().join("d/mug/dangling.jpg")).unwrap();
        symlink(tmp.path().join("d/mug/loop2.jpg"), tmp.path().join("d/mug/loop1.jpg")).unwrap();
        symlink(tmp.path().join("d/mug/loop1.jpg"), tmp.path().join("d/mug/loop2.jpg")).unwrap();
        symlink("/dev/null", tmp.path().join("d/mug/null.jpg")).unwrap();
        symlink(tmp.path().join("gone"), tmp.path().join("d/lost")).unwrap();
        let d = Domain::scan(tmp.path(), "d").unwrap();
        assert_eq!(d.classes, ["mug", "pen"]);
        let names: Vec<_> = d.files.iter().map(|(p, l)| (p.file_name().unwrap().to_str().unwrap(), *l)).collect();
        assert_eq!(names, [("a.jpg", 0), ("linked.jpg", 0), ("p1.jpg", 1)]);
        let broken: Vec<_> =
            d.broken.iter().map(|(p, why)| (p.file_name().unwrap().to_str().unwrap(), why.as_str())).collect();
        assert_eq!(broken.len(), 5, "{broken:?}");
        assert_eq!(broken[0].0, "lost");
        assert!(broken[0].1.contains("gone") && broken[0].1.contains("does not exist"), "{broken:?}");
        assert_eq!(broken[1].0, "dangling.jpg");
        assert!(broken[1].1.contains("nowhere.jpg") && broken[1].1.contains("dangling"), "{broken:?}");
        assert!(broken[2].0 == "loop1.jpg" && broken[2].1.contains("loop"), "{broken:?}");
        assert!(broken[3].0 == "loop2.jpg" && broken[3].1.contains("loop"), "{broken:?}");
        assert!(broken[4].0 == "null.jpg" && broken[4].1.contains("/dev/null"), "{broken:?}");
        assert!(broken[4].1.contains("character device, not a regular file"), "{broken:?}");
        let err = Domain::broken_error(&[&d]).unwrap().to_string();
        assert!(err.contains("5 dataset entries") && err.contains("dangling.jpg") && err.contains("--skip-bad-images"));
        // A class folder of broken links only holds no images, and says why.
        std::fs::create_dir_all(tmp.path().join("e/mug")).unwrap();
        symlink(tmp.path().join("nowhere.jpg"), tmp.path().join("e/mug/x.jpg")).unwrap();
        let err = Domain::scan(tmp.path(), "e").unwrap_err().to_string();
        assert!(err.contains("holds no images") && err.contains("x.jpg") && err.contains("nowhere.jpg"), "{err}");
        assert!(Domain::broken_error(&[&Domain::scan(tmp.path(), "store").unwrap()]).is_none());
    }
}
