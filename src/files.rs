//! Files that no reader, crash, second process or planted link can corrupt: every output of
//! the project goes through here.
//! - whole files (run.json, checkpoints, the feature cache, weights imports) are written under a
//!   temporary name and renamed ([`write_atomic_with`]); the temporary file never outlives its
//!   writer, also when the write fails;
//! - appended files (metrics.csv) are opened without following a link ([`open_append`]);
//! - a run folder has one writer at a time ([`RunLock`], an advisory `flock` the kernel releases
//!   when the process dies);
//! - errors name the file that failed, and say so when the disk is full ([`io_context`]).
//!
//! The lowest module of the crate: it uses nothing else of it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What an I/O error on `path` means to a user: the file, what was being done, and a plain
/// "the disk is full" (or over quota) when that is the cause.
pub fn io_context(e: std::io::Error, doing: &str, path: &Path) -> anyhow::Error {
    let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    if full {
        anyhow::anyhow!("{doing} {}: the disk is full ({e})", path.display())
    } else {
        anyhow::anyhow!("{doing} {}: {e}", path.display())
    }
}

/// Refuses `path` when it is a symbolic link (a link planted in a run folder would make the
/// run write outside it) or exists but is not a regular file (a device, a folder).
pub fn check_writable_target(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!("{} is a symbolic link; refusing to write through it (remove it first)", path.display())
        }
        Ok(m) if !m.file_type().is_file() => {
            bail!("{} exists and is not a regular file; refusing to replace it", path.display())
        }
        _ => Ok(()),
    }
}

/// Refuses a folder `path` that is a symbolic link: a link planted where a run keeps a folder
/// of its own (`checkpoint/`, `plots/`) would make it write, and delete, outside its folder.
pub fn check_own_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link; refusing to write or delete through it (remove the link first)",
            path.display()
        ),
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a folder", path.display()),
        _ => Ok(()),
    }
}

/// Makes the folder `path` inside an existing parent (never the parent itself: a parent that
/// vanished is an error, not something to recreate), refusing a link (`check_own_dir`).
pub fn create_own_dir(path: &Path) -> Result<()> {
    check_own_dir(path)?;
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_own_dir(path),
        Err(e) => Err(io_context(e, "creating", path)),
    }
}

/// `output` must be writable as a whole new file (`check_writable_target`) and must not be one
/// of the files the command reads (`inputs`; compared as files, so another name of the same
/// file is caught too): writing it would destroy what the command was given. `what` names the
/// flag that chose `output` in the message.
pub fn check_output_not_input(output: &Path, inputs: &[&Path], what: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(o) = std::fs::metadata(output) {
        for input in inputs {
            if let Ok(i) = std::fs::metadata(input) {
                if (i.dev(), i.ino()) == (o.dev(), o.ino()) {
                    bail!(
                        "{what} {} is the input {} itself, which this command reads; refusing to overwrite it (choose \
                         another {what})",
                        output.display(),
                        input.display()
                    );
                }
            }
        }
    }
    check_writable_target(output)
}

/// Opens `path` for appending, creating it (mode 0666 less the umask) if needed, without
/// following a symbolic link at `path` (`O_NOFOLLOW`).
pub fn open_append(path: &Path) -> Result<File> {
    check_writable_target(path)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_context(e, "opening", path))
}

/// Creates (or truncates) `path` for writing, without following a symbolic link at `path`.
pub fn create_nofollow(path: &Path) -> Result<File> {
    check_writable_target(path)?;
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_context(e, "creating", path))
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = create_nofollow(tmp)?;
        f.write_all(bytes).map_err(|e| io_context(e, "writing", path))?;
        f.sync_all().map_err(|e| io_context(e, "writing", path))?;
        Ok(())
    })
}

/// Has `write` fill a temporary file beside `path`, then renames it over `path`, so a reader
/// or a crash never sees half a file. The temporary name carries this process's id
/// (`<name>.<pid>.tmp`): two processes writing the same file at once (two runs of a sweep
/// building one feature cache) each rename a whole file of their own.
///
/// `path` itself must not be a symbolic link or a non-regular file (refused, naming it). On any
/// failure the temporary file is removed and the error names `path` (not the temporary name),
/// saying when the disk is full. The file gets mode 0666 less the umask, whatever mode the
/// writer created it with (libtorch writes 0600).
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    check_writable_target(path)?;
    let tmp = path.with_file_name(format!("{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = write(&tmp).and_then(|()| {
        set_default_mode(&tmp).map_err(|e| io_context(e, "writing", path))?;
        std::fs::rename(&tmp, path).map_err(|e| io_context(e, "writing", path))
    });
    if let Err(e) = result {
        std::fs::remove_file(&tmp).ok();
        let full = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()) == Some(libc::ENOSPC)
                || c.to_string().contains("No space left on device")
        });
        if full && !format!("{e:#}").contains("disk is full") {
            return Err(e.context(format!("writing {}: the disk is full", path.display())));
        }
        return Err(e.context(format!("writing {}", path.display())));
    }
    Ok(())
}

/// The process's umask (read by setting it and setting it back).
pub fn umask() -> u32 {
    // SAFETY: umask only swaps the process's mask; it is set back at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old as u32
    }
}

/// Sets `path`'s permission bits to 0666 less the umask, as `open(2)` would have.
fn set_default_mode(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666 & !umask()))
}

/// The one writer of a run folder: an exclusive `flock` on `<dir>/lock`, held while this value
/// lives and released by the kernel when the process ends (also by a kill). The file holds the
/// holder's pid, so a refused second writer can name it.
pub struct RunLock {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    /// The folder's (device, inode) when the lock was taken.
    dir_id: (u64, u64),
}

impl RunLock {
    /// The name of the lock file inside a run folder.
    pub const FILE: &'static str = "lock";

    /// Takes `dir`'s lock, or fails naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(Self::FILE);
        check_writable_target(&path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io_context(e, "opening", &path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = read_pid(&mut file).map_or("another process".to_string(), |p| format!("process {p}"));
            bail!(
                "{} is in use by {holder} (it holds {}); one run folder takes one writer at a time",
                dir.display(),
                path.display()
            );
        }
        file.set_len(0).and_then(|()| file.rewind()).map_err(|e| io_context(e, "writing", &path))?;
        write!(file, "{}", std::process::id()).map_err(|e| io_context(e, "writing", &path))?;
        file.flush().ok();
        let dir_id = file_id(&std::fs::metadata(dir).map_err(|e| io_context(e, "reading", dir))?);
        Ok(RunLock { file, path, dir: dir.to_path_buf(), dir_id })
    }

    /// Fails when the run folder is no longer the one this lock was taken in: removed (`rm -rf`
    /// during the run) or replaced by another folder of the same name, or its lock file is no
    /// longer this one. Whatever the run writes after that would be lost or land in a folder
    /// that is not its own, so it must stop instead of reporting success.
    pub fn check_in_place(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let here = std::fs::symlink_metadata(&self.dir).ok().map(|m| file_id(&m));
        let lock_here = std::fs::symlink_metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        let lock_held = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
        if here != Some(self.dir_id) {
            bail!(
                "the run folder {} was {} during the run; its files are gone, so the run stops without a record",
                self.dir.display(),
                if here.is_none() { "removed" } else { "replaced by another folder" }
            );
        }
        if lock_here.is_none() || lock_here != lock_held {
            bail!(
                "the lock file {} was removed or replaced during the run (was the folder emptied?); the run stops",
                self.path.display()
            );
        }
        Ok(())
    }

    /// The pid of the process holding `dir`'s lock, if one does (the lock is not taken).
    pub fn holder(dir: &Path) -> Option<u32> {
        let path = dir.join(Self::FILE);
        let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
        // SAFETY: flock on a descriptor this function owns; a shared lock taken here is
        // released when `file` closes.
        let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            None
        } else {
            Some(read_pid(&mut file).unwrap_or(0))
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A file's (device, inode): the same file under any name.
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("run.json");
        write_atomic(&p, b"{}").unwrap();
        write_atomic(&p, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // The temporary file is this process's own (two runs writing one file never share it).
        let mut used = None;
        write_atomic_with(&p, |t| {
            used = Some(t.to_path_buf());
            Ok(std::fs::write(t, b"[]")?)
        })
        .unwrap();
        assert_eq!(used.unwrap(), tmp.path().join(format!("run.json.{}.tmp", std::process::id())));
        // A failing writer leaves no temporary file, and the error names the real file.
        let err = write_atomic_with(&p, |t| {
            std::fs::write(t, b"half")?;
            bail!("simulated failure")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("run.json"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[]");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn links_and_devices_are_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside.txt");
        std::fs::write(&outside, b"keep").unwrap();
        let link = tmp.path().join("metrics.csv");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let err = open_append(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link") && err.contains("metrics.csv"), "{err}");
        let err = write_atomic(&link, b"x").unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        let err = write_atomic(Path::new("/dev/null"), b"x").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn files_get_the_umask_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("w.safetensors");
        write_atomic_with(&p, |t| {
            std::fs::write(t, b"x")?;
            std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o600))?;
            Ok(())
        })
        .unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask());
    }

    #[test]
    fn one_lock_per_run_folder() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(RunLock::holder(tmp.path()), None);
        let lock = RunLock::acquire(tmp.path()).unwrap();
        // flock locks belong to the open file: a second open in this process is refused too.
        let err = RunLock::acquire(tmp.path()).err().expect("second writer").to_string();
        assert!(err.contains(&format!("process {}", std::process::id())), "{err}");
        assert_eq!(RunLock::holder(tmp.path()), Some(std::process::id()));
        drop(lock);
        assert_eq!(RunLock::holder(tmp.path()), None);
        RunLock::acquire(tmp.path()).unwrap();
    }
}
