//! Inputs that must neither be silently misread nor corrupt anything, through the real binary:
//! datasets assembled from symbolic links (followed; broken ones refused by name, or skipped
//! by name with --skip-bad-images), pretrained weights holding NaN or infinity (refused at
//! load, naming the tensor), and `weights import-caffe -o` aimed at a device, a folder or the
//! input itself (refused, nothing replaced), its output taking the umask's mode. No case panics,
//! and a refused run leaves no run folder.

mod common;

use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{run_fails, tiny_train, write_domain};
use deep_coral::train::metrics::{RunRecord, Status};
use sha2::{Digest, Sha256};
use tch::Tensor;

/// The flags of a very short run (2 iterations, one evaluation).
const SHORT: [&str; 4] = ["--iterations", "2", "--eval-every", "2"];

fn assert_has(err: &str, wants: &[&str]) {
    for want in wants {
        assert!(err.contains(want), "{want:?} not in:\n{err}");
    }
}

fn assert_no_panic(err: &str) {
    assert!(!err.contains("panicked"), "the binary panicked:\n{err}");
}

/// A short `train` that must fail with exit 1, leave `out` unwritten and not panic; its stderr.
fn train_fails(data: &Path, out: &Path, extra: &[&str]) -> String {
    let args: Vec<&str> = SHORT.iter().chain(extra).copied().collect();
    let err = run_fails(&mut tiny_train(data, out, &args), 1);
    assert_no_panic(&err);
    assert!(!out.exists(), "a refused run wrote {}: {:?}", out.display(), common::files_under(out));
    err
}

/// A short `train` that must succeed without panicking; its record and stderr.
fn train_ok(data: &Path, out: &Path, extra: &[&str]) -> (RunRecord, String) {
    let args: Vec<&str> = SHORT.iter().chain(extra).copied().collect();
    let res = common::run_ok(&mut tiny_train(data, out, &args));
    let err = common::stderr(&res);
    assert_no_panic(&err);
    let rec = RunRecord::read(&out.join("run.json")).unwrap();
    assert_eq!(rec.status, Status::Done, "{err}");
    (rec, err)
}

// ---------------------------------------------------------------------------------------------
// A. Symbolic links in datasets.

/// `src`: 10 images in classes a and b, 6 of them links to images kept elsewhere (`pool`);
/// `tgt`: class a real, class b a link to a class folder elsewhere, 3 images each.
fn linked_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    let pool = root.join("pool");
    write_domain(&pool, "imgs", &["a", "b"], 3);
    write_domain(&pool, "classes", &["b"], 3);
    write_domain(&data, "src", &["a", "b"], 2);
    for class in ["a", "b"] {
        for i in 0..3 {
            let target = pool.join("imgs").join(class).join(format!("{i}.png"));
            symlink(&target, data.join("src").join(class).join(format!("linked{i}.png"))).unwrap();
        }
    }
    write_domain(&data, "tgt", &["a"], 3);
    symlink(pool.join("classes/b"), data.join("tgt/b")).unwrap();
    data
}

#[test]
fn images_and_class_folders_behind_symlinks_are_used() {
    let tmp = tempfile::tempdir().unwrap();
    let data = linked_data(tmp.path());
    let (rec, err) = train_ok(&data, &tmp.path().join("run"), &[]);
    assert_eq!((rec.images.source, rec.images.target), (10, 6), "{err}");
    assert_eq!(rec.classes, ["a", "b"]);
    assert!(rec.skipped_images.is_empty());
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn broken_links_are_refused_by_name_or_skipped_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = linked_data(tmp.path());
    let out = tmp.path().join("run");
    // A dangling link in the source.
    let nowhere = tmp.path().join("deleted.png");
    let dangling = data.join("src/a/dangling.png");
    symlink(&nowhere, &dangling).unwrap();
    let err = train_fails(&data, &out, &[]);
    assert_has(&err, &[&dangling.display().to_string(), &nowhere.display().to_string(), "does not exist"]);
    assert_has(&err, &["--skip-bad-images"]);

    // In the target, a loop of two links and a link to a device: all three are named at once.
    let (loop1, loop2) = (data.join("tgt/a/loop1.png"), data.join("tgt/a/loop2.png"));
    symlink(&loop2, &loop1).unwrap();
    symlink(&loop1, &loop2).unwrap();
    let null = data.join("tgt/b/null.png");
    symlink("/dev/null", &null).unwrap();
    let err = train_fails(&data, &out, &[]);
    assert_has(&err, &["4 dataset entries", "dangling.png", "loop1.png", "loop2.png", "loop of symbolic links"]);
    assert_has(&err, &["null.png", "/dev/null", "character device, not a regular file"]);
    // null.png sits in the linked class folder pool/classes/b, and is named through the link.
    assert_has(&err, &[&null.display().to_string()]);

    // With --skip-bad-images each is named in a warning and left out; the good images are used.
    let (rec, err) = train_ok(&data, &out, &["--skip-bad-images"]);
    for bad in [&dangling, &loop1, &loop2, &null] {
        assert_has(&err, &[&format!("warning: skipping {}", bad.display())]);
    }
    assert_eq!((rec.images.source, rec.images.target), (10, 6), "{err}");

    // A class folder linked to a folder that is gone is refused too (its label would vanish).
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_file(&dangling).unwrap();
    for p in [&loop1, &loop2, &null] {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::remove_dir_all(tmp.path().join("pool/classes/b")).unwrap();
    let err = train_fails(&data, &out, &[]);
    assert_has(&err, &[&data.join("tgt/b").display().to_string(), "does not exist"]);
    // Skipped, the target has one class less than the source: refused by the class check.
    let err = train_fails(&data, &out, &["--skip-bad-images"]);
    assert_has(&err, &["warning: skipping", "different classes", "only in src: [b]"]);
}

// ---------------------------------------------------------------------------------------------
// B. Weights holding NaN or infinity.

#[test]
fn weights_with_nan_or_inf_are_refused_at_load_naming_the_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::tiny_data(tmp.path());
    let out = tmp.path().join("run");
    let mut tensors = Tensor::read_safetensors(common::squeezenet_weights()).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let poison = |tensors: &mut Vec<(String, Tensor)>, name: &str, value: f64| {
        let (_, t) = tensors.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}"));
        let copy = t.copy();
        let _ = copy.view(-1).get(1).fill_(value);
        *t = copy;
    };
    poison(&mut tensors, "features.3.expand3x3.weight", f64::NAN);
    poison(&mut tensors, "features.12.squeeze.bias", f64::INFINITY);
    let bad = tmp.path().join("poisoned.safetensors");
    Tensor::write_safetensors(&tensors, &bad).unwrap();
    let w = bad.to_str().unwrap();

    let err = train_fails(&data, &out, &["--weights", w]);
    assert_has(&err, &["poisoned.safetensors", "not finite", "2 tensors"]);
    assert_has(&err, &["features.3.expand3x3.weight", "1 NaN", "features.12.squeeze.bias", "1 infinite"]);
    // Refused before anything is written, whether checkpoints are asked for or not, and under
    // --finetune last (whose feature cache would be built from the loaded trunk) as well.
    let err = train_fails(&data, &out, &["--weights", w, "--checkpoint-every", "1"]);
    assert_has(&err, &["features.3.expand3x3.weight"]);
    let cache = tmp.path().join("cache");
    let err =
        train_fails(&data, &out, &["--weights", w, "--finetune", "last", "--feature-cache", cache.to_str().unwrap()]);
    assert_has(&err, &["features.3.expand3x3.weight"]);
    assert!(!cache.exists(), "a feature cache was built from bad weights: {:?}", common::files_under(&cache));

    // A NaN in the pretrained 1000-way last layer, which is replaced, does not matter.
    let mut tensors = Tensor::read_safetensors(common::squeezenet_weights()).unwrap();
    poison(&mut tensors, "classifier.1.weight", f64::NAN);
    let last = tmp.path().join("last.safetensors");
    Tensor::write_safetensors(&tensors, &last).unwrap();
    train_ok(&data, &out, &["--weights", last.to_str().unwrap()]);
}

// ---------------------------------------------------------------------------------------------
// C. `weights import-caffe -o`.

fn lenet() -> PathBuf {
    common::shared().join("weights/caffe-lenet-mnist/lenet_iter_10000.caffemodel")
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// `deep-coral weights import-caffe INPUT -o OUTPUT`, run in `dir`.
fn import(dir: &Path, input: &Path, output: &Path) -> Command {
    let mut cmd = common::bin();
    cmd.current_dir(dir).args(["weights", "import-caffe"]).arg(input).arg("-o").arg(output);
    cmd
}

fn import_fails(cmd: &mut Command) -> String {
    let err = run_fails(cmd, 1);
    assert_no_panic(&err);
    err
}

#[test]
fn import_caffe_refuses_devices_and_folders() {
    let tmp = tempfile::tempdir().unwrap();
    // A folder first, then a device of our own (where mknod is allowed), so that a regression
    // fails on them before it could replace /dev/null.
    let folder = tmp.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let err = import_fails(&mut import(tmp.path(), &lenet(), &folder));
    assert_has(&err, &["folder", "not a regular file"]);
    assert!(folder.is_dir());

    let own = tmp.path().join("null");
    let c = std::ffi::CString::new(own.to_str().unwrap()).unwrap();
    // SAFETY: mknod(2) on a NUL-terminated path; the device numbers are those of /dev/null.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0;
    if made {
        let err = import_fails(&mut import(tmp.path(), &lenet(), &own));
        assert_has(&err, &[&own.display().to_string(), "not a regular file"]);
        assert!(std::fs::symlink_metadata(&own).unwrap().file_type().is_char_device());
    }

    let dev_null = Path::new("/dev/null");
    let err = import_fails(&mut import(tmp.path(), &lenet(), dev_null));
    assert_has(&err, &["/dev/null", "not a regular file"]);
    assert!(std::fs::symlink_metadata(dev_null).unwrap().file_type().is_char_device(), "/dev/null was replaced");

    // Nothing else was made (no temporary file either).
    let mut left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.retain(|n| n != "null");
    assert_eq!(left, ["folder"]);
}

#[test]
fn import_caffe_refuses_to_overwrite_its_input_under_any_spelling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A copy of the real caffemodel: a regression overwrites the copy, not ../shared.
    let input = dir.join("lenet.caffemodel");
    std::fs::copy(lenet(), &input).unwrap();
    let want = sha256(&input);
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let link = dir.join("link.caffemodel");
    symlink(&input, &link).unwrap();
    let hard = dir.join("hard.caffemodel");
    std::fs::hard_link(&input, &hard).unwrap();
    let spellings: [(&Path, PathBuf); 6] = [
        (&input, input.clone()),
        (Path::new("lenet.caffemodel"), "./lenet.caffemodel".into()),
        (Path::new("lenet.caffemodel"), sub.join("../lenet.caffemodel")),
        (&input, dir.join("./sub/../lenet.caffemodel")),
        (&input, link.clone()),
        (&input, hard.clone()),
    ];
    for (i, o) in &spellings {
        let err = import_fails(&mut import(dir, i, o));
        assert_has(&err, &["is the input", &o.display().to_string()]);
        assert_eq!(sha256(&input), want, "-o {} changed the input", o.display());
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }
    // The input through a link is still the input.
    let err = import_fails(&mut import(dir, &link, &input));
    assert_has(&err, &["is the input"]);
    assert_eq!(sha256(&input), want);
    let mut left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["hard.caffemodel", "lenet.caffemodel", "link.caffemodel", "sub"]);
}

/// `import` with the child's umask set to `mask`.
fn import_with_umask(dir: &Path, output: &Path, mask: libc::mode_t) -> Output {
    let mut cmd = import(dir, &lenet(), output);
    // SAFETY: umask(2) is async-signal-safe and touches only the child's own mask.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
    common::run_ok(&mut cmd)
}

#[test]
fn import_caffe_output_takes_the_umask_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for (mask, want) in [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)] {
        let out = tmp.path().join(format!("lenet-{mask:o}.safetensors"));
        let res = import_with_umask(tmp.path(), &out, mask);
        assert_no_panic(&common::stderr(&res));
        assert_eq!(mode(&out), want, "umask {mask:o}");
        // Replacing an existing file gives the umask's mode too (not the old file's).
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
        import_with_umask(tmp.path(), &out, mask);
        assert_eq!(mode(&out), want, "umask {mask:o}, replacing");
        let tensors = Tensor::read_safetensors(&out).unwrap();
        assert_eq!(tensors.len(), 8);
    }
    // A bare file name lands in the working folder.
    import_with_umask(tmp.path(), Path::new("bare.safetensors"), 0o022);
    assert_eq!(mode(&tmp.path().join("bare.safetensors")), 0o644);
    common::assert_no_tmp(tmp.path());
}
