//! `make data` (scripts/fetch_office31.sh) for real, without the internet: the download from
//! a local stand-in for Google Drive (tests/data/office31_server.py, which serves a small
//! archive in the real layout with the real image counts, a nested variant, a truncated copy
//! and Drive's HTML answers), and existing copies in each accepted layout. Every bad answer
//! must be named, exit 1, and leave nothing a rerun would take for the archive.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const COUNTS: [(&str, usize); 3] = [("amazon", 2817), ("dslr", 498), ("webcam", 795)];
const KNOWN_SHA1: &str = "7aa25a86f3880b6e79283227816f9d4d8506d636";

/// The local server; killed when dropped, also when a test panics.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(common::python())
            .arg(common::root().join("tests/data/office31_server.py"))
            .arg("serve")
            .arg(dir.path())
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tests/data/office31_server.py");
        let mut server = Server { child, port: 0, dir };
        common::wait_for(30, "the server's port file", || {
            if let Some(status) = server.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
                panic!("the server exited ({status}):\n{log}");
            }
            port_file.exists()
        });
        server.port = std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// /stats: requests per path so far and the archives' SHA-1.
    fn stats(&self) -> Value {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.write_all(b"GET /stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        serde_json::from_str(body).unwrap()
    }

    fn requests(&self, path: &str) -> u64 {
        self.stats()["requests"][path].as_u64().unwrap_or(0)
    }
}

/// A temporary folder for the cases, on tmpfs where there is one: each case creates some 4000
/// files, which on this disk take a second or more each time.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("fetch_data-").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// `bash scripts/fetch_office31.sh [DIR]` with OFFICE31_DEST=`dest` and OFFICE31_URL=`url`.
fn fetch(dest: &Path, url: Option<&str>, dir: Option<&Path>) -> Run {
    let mut cmd = Command::new("bash");
    cmd.arg(common::root().join("scripts/fetch_office31.sh"));
    if let Some(d) = dir {
        cmd.arg(d);
    }
    prepare(&mut cmd, dest, url);
    output(cmd)
}

/// The same script with gdown's requests to drive.google.com and drive.usercontent.google.com
/// sent to `server`: Google Drive's own flow, confirmation step included.
fn fetch_via_drive(server: &Server, dest: &Path, url: Option<&str>) -> Run {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::root().join("tests/data/office31_server.py"))
        .arg("drive-client")
        .arg(server.port.to_string())
        .arg(common::root().join("scripts/fetch_office31.py"));
    prepare(&mut cmd, dest, url);
    output(cmd)
}

fn prepare(cmd: &mut Command, dest: &Path, url: Option<&str>) {
    cmd.current_dir(common::root())
        .env("OFFICE31_DEST", dest)
        .env("PYTHON", common::python())
        // gdown keeps Drive's cookies under ~/.cache/gdown: not the user's home.
        .env("HOME", dest.parent().unwrap())
        .env_remove("OFFICE31_URL")
        .stdin(Stdio::null());
    // Straight to the local server, whatever proxy the caller's environment names.
    for var in ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        cmd.env_remove(var);
    }
    if let Some(u) = url {
        cmd.env("OFFICE31_URL", u);
    }
}

fn output(mut cmd: Command) -> Run {
    let out = cmd.output().expect("spawn");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("Traceback"), "a Python traceback, not a message: {run:?}");
    run
}

/// Names in `dest`, sorted (hidden ones too: temporary folders and files).
fn entries(dest: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dest)
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn root_of(dest: &Path) -> PathBuf {
    dest.join("domain_adaptation_images")
}

fn archive_of(dest: &Path) -> PathBuf {
    dest.join("domain_adaptation_images.tar.gz")
}

/// A failed run: exit 1, stderr holding every one of `words` (case-insensitive), and nothing
/// left in `dest`: no archive, no .part, no half-made folder.
fn assert_refused(run: &Run, dest: &Path, words: &[&str]) {
    assert_eq!(run.code, Some(1), "{run:?}");
    let err = run.stderr.to_lowercase();
    for w in words {
        assert!(err.contains(&w.to_lowercase()), "stderr lacks {w:?}: {run:?}");
    }
    assert_eq!(entries(dest), Vec::<String>::new(), "left behind in {}: {run:?}", dest.display());
}

/// A successful run: exit 0 and the three counts printed.
fn assert_counts(run: &Run) {
    assert_eq!(run.code, Some(0), "{run:?}");
    for (d, n) in COUNTS {
        assert!(run.stdout.contains(&format!("{d}: {n} images")), "no count for {d}: {run:?}");
    }
}

/// `root` holds the three domains as the archive unpacks them, with the real counts.
fn assert_installed(root: &Path) {
    for (d, n) in COUNTS {
        let classes = root.join(d).join("images");
        assert!(classes.join("back_pack/frame_0001.jpg").is_file(), "{}", classes.display());
        let jpgs =
            common::files_under(&root.join(d)).iter().filter(|p| p.extension().is_some_and(|e| e == "jpg")).count();
        assert_eq!(jpgs, n, "{d}");
    }
}

#[test]
fn html_answers_are_named_and_never_kept() {
    let server = Server::start();
    let tmp = scratch();
    let cases: [(&str, &[&str]); 5] = [
        ("confirm", &["virus-scan confirmation page", "unset OFFICE31_URL", "nothing was kept"]),
        ("quota", &["quota page", "too many users", "24 hours", "OFFICE31_URL"]),
        ("signin", &["sign-in page", "not public", "OFFICE31_URL"]),
        ("page", &["an HTML page", "Mirror index", "check OFFICE31_URL"]),
        ("missing", &["answered 404"]),
    ];
    for (path, words) in cases {
        let dest = tmp.path().join(path).join("office31");
        let url = server.url(path);
        let run = fetch(&dest, Some(&url), None);
        // Every message names the URL and the ways around it.
        let mut words = words.to_vec();
        words.extend([url.as_str(), "make data OFFICE31="]);
        assert_refused(&run, &dest, &words);
        assert_eq!(server.requests(&format!("/{path}")), 1, "{path}: downloaded once");
    }
}

#[test]
fn truncated_archive_is_named_and_not_kept() {
    let server = Server::start();
    let tmp = scratch();
    let dest = tmp.path().join("office31");
    let url = server.url("truncated.tar.gz");
    let run = fetch(&dest, Some(&url), None);
    assert_refused(&run, &dest, &["truncated or damaged gzip'd tar", &url, "run again"]);
}

#[test]
fn valid_archive_installs_and_a_rerun_downloads_nothing() {
    let server = Server::start();
    let tmp = scratch();
    let dest = tmp.path().join("office31");
    let run = fetch(&dest, Some(&server.url("valid.tar.gz")), None);
    assert_counts(&run);
    let sha1 = server.stats()["sha1"]["valid"].as_str().unwrap().to_string();
    assert!(run.stdout.contains(&format!("SHA-1 {sha1}")), "{run:?}");
    assert!(run.stderr.contains("warning: SHA-1 differs") && run.stderr.contains(KNOWN_SHA1), "{run:?}");
    assert_installed(&root_of(&dest));
    assert_eq!(entries(&dest), ["domain_adaptation_images", "domain_adaptation_images.tar.gz"]);
    assert_eq!(server.requests("/valid.tar.gz"), 1);

    // Data already right: counts printed, nothing downloaded or extracted.
    let again = fetch(&dest, Some(&server.url("valid.tar.gz")), None);
    assert_counts(&again);
    assert!(!again.stdout.contains("downloading") && !again.stdout.contains("extracting"), "{again:?}");
    assert_eq!(server.requests("/valid.tar.gz"), 1, "a rerun downloaded again");

    // The images gone, the archive kept: it is checked and extracted again, not downloaded.
    std::fs::remove_dir_all(root_of(&dest)).unwrap();
    let again = fetch(&dest, Some(&server.url("valid.tar.gz")), None);
    assert_counts(&again);
    assert!(again.stdout.contains("present, not downloading"), "{again:?}");
    assert_eq!(server.requests("/valid.tar.gz"), 1, "the archive was downloaded again");
    assert_installed(&root_of(&dest));
}

#[test]
fn nested_archive_installs() {
    let server = Server::start();
    let tmp = scratch();
    let dest = tmp.path().join("office31");
    let run = fetch(&dest, Some(&server.url("nested.tar.gz")), None);
    assert_counts(&run);
    assert!(run.stdout.contains("under domain_adaptation_images/"), "{run:?}");
    assert_installed(&root_of(&dest));
    assert_eq!(entries(&dest), ["domain_adaptation_images", "domain_adaptation_images.tar.gz"]);
}

#[test]
fn stale_html_archive_is_named_removed_and_replaced() {
    let server = Server::start();
    let tmp = scratch();
    let dest = tmp.path().join("office31");
    std::fs::create_dir_all(&dest).unwrap();
    // What the old script kept: Drive's quota page saved as the archive.
    std::fs::write(
        archive_of(&dest),
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>\
         <p class=\"uc-error-subcaption\">Too many users have viewed or downloaded this file recently.</p></body></html>",
    )
    .unwrap();
    let run = fetch(&dest, Some(&server.url("valid.tar.gz")), None);
    assert_counts(&run);
    let err = run.stderr.to_lowercase();
    assert!(err.contains("quota page") && err.contains("deleting it and downloading again"), "{run:?}");
    assert_eq!(server.requests("/valid.tar.gz"), 1);
    assert_eq!(&std::fs::read(archive_of(&dest)).unwrap()[..2], b"\x1f\x8b", "the archive is the download now");
    assert_installed(&root_of(&dest));
}

#[test]
fn google_drive_flow_through_gdown() {
    let server = Server::start();
    let tmp = scratch();

    // The default URL, the real file id: gdown answers the virus-scan confirmation page.
    let dest = tmp.path().join("drive").join("office31");
    let run = fetch_via_drive(&server, &dest, None);
    assert_counts(&run);
    assert!(run.stdout.contains("https://drive.google.com/uc?id=0B4IapRTv9pJ1WGZVd1VDMmhwdlE"), "{run:?}");
    assert_eq!(server.requests("/download"), 1, "the confirmation page");
    assert_eq!(server.requests("/download+confirm"), 1, "the confirmed download");
    assert_installed(&root_of(&dest));

    // Drive's quota page: gdown's FileURLRetrievalError, named as the quota page.
    let dest = tmp.path().join("quota").join("office31");
    let run = fetch_via_drive(&server, &dest, Some("https://drive.google.com/uc?id=QUOTA"));
    assert_refused(&run, &dest, &["quota page", "too many users", "24 hours", "OFFICE31_URL", "uc?id=QUOTA"]);

    // A page without a download link (sign-in): gdown's error, said plainly.
    let dest = tmp.path().join("signin").join("office31");
    let run = fetch_via_drive(&server, &dest, Some("https://drive.google.com/uc?id=SIGNIN"));
    assert_refused(&run, &dest, &["Google Drive did not hand out the file", "uc?id=SIGNIN", "sign-in", "OFFICE31_URL"]);
}

/// A copy of Office-31 with the real counts, each image a hard link to one tiny file:
/// `<base>/<domain>/images/<class>/` or, without `images`, `<base>/<domain>/<class>/`.
fn write_copy(base: &Path, images: bool) {
    let seed = base.parent().unwrap().join(format!("seed-{}.jpg", std::process::id()));
    std::fs::create_dir_all(seed.parent().unwrap()).unwrap();
    if !seed.exists() {
        std::fs::write(&seed, b"\xff\xd8\xff\xe0 tiny").unwrap();
    }
    for (d, n) in COUNTS {
        for i in 0..n {
            let mut dir = base.join(d);
            if images {
                dir.push("images");
            }
            dir.push(["bike", "mug", "ruler"][i % 3]);
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("frame_{i:04}.JPG"));
            if std::fs::hard_link(&seed, &file).is_err() {
                std::fs::copy(&seed, &file).unwrap();
            }
        }
    }
}

#[test]
fn existing_copies_in_three_layouts() {
    let tmp = scratch();
    let dest = tmp.path().join("office31");
    let archive_layout = tmp.path().join("as-unpacked");
    let nested = tmp.path().join("nested");
    let flat = tmp.path().join("flat");
    write_copy(&archive_layout, true);
    write_copy(&nested.join("domain_adaptation_images"), true);
    write_copy(&flat, false);
    let cases = [
        (&archive_layout, archive_layout.clone()),
        (&nested, nested.join("domain_adaptation_images")),
        (&flat, flat.clone()),
    ];
    // No URL can be reached: the copy must be used without any download.
    let nowhere = "http://127.0.0.1:9/nothing-listens-here.tar.gz";
    for (dir, domains) in cases {
        let run = fetch(&dest, Some(nowhere), Some(dir));
        assert_counts(&run);
        let link = std::fs::read_link(root_of(&dest)).unwrap();
        assert_eq!(link, domains.canonicalize().unwrap(), "{run:?}");
        assert!(!archive_of(&dest).exists());
        // Without DIR the linked copy is taken as it is.
        let again = fetch(&dest, Some(nowhere), None);
        assert_counts(&again);
        assert!(!again.stdout.contains("downloading"), "{again:?}");
    }

    // A folder that holds none of the layouts, and one that is not there: named, with what was
    // expected; the link stays as it was.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for bad in [empty.clone(), tmp.path().join("absent")] {
        let run = fetch(&dest, Some(nowhere), Some(&bad));
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(run.stderr.contains(&format!("OFFICE31={}", bad.display())), "{run:?}");
        assert!(run.stderr.contains("amazon/ dslr/ webcam/"), "{run:?}");
    }
    assert_eq!(std::fs::read_link(root_of(&dest)).unwrap(), flat.canonicalize().unwrap());

    // A real folder at the destination is never replaced.
    let dest2 = tmp.path().join("office31-real");
    std::fs::create_dir_all(root_of(&dest2).join("amazon")).unwrap();
    let run = fetch(&dest2, Some(nowhere), Some(&flat));
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("exists and is not a link; move it away first"), "{run:?}");
    assert!(root_of(&dest2).join("amazon").is_dir());
}

#[test]
fn old_extraction_beside_the_archive_is_moved_into_place() {
    // The old script unpacked the archive straight into data/office31.
    let tmp = scratch();
    let dest = tmp.path().join("office31");
    write_copy(&dest, true);
    let run = fetch(&dest, Some("http://127.0.0.1:9/nothing-listens-here.tar.gz"), None);
    assert_counts(&run);
    assert!(!run.stdout.contains("downloading"), "{run:?}");
    assert_eq!(entries(&dest), ["domain_adaptation_images"]);
    assert!(root_of(&dest).join("amazon/images/bike").is_dir());
}

#[test]
fn unreachable_url_is_named() {
    let tmp = scratch();
    let dest = tmp.path().join("office31");
    let url = "http://127.0.0.1:9/domain_adaptation_images.tar.gz";
    let run = fetch(&dest, Some(url), None);
    assert_refused(&run, &dest, &["could not download from 127.0.0.1:9", "make data OFFICE31="]);
}
