#!/usr/bin/env python3
"""`make data`: puts Office-31 at $OFFICE31_DEST/domain_adaptation_images/<domain>/ (default
data/office31) and checks the per-domain image counts (amazon 2817, dslr 498, webcam 795).
Run through scripts/fetch_office31.sh, which documents the arguments and environment.

  fetch_office31.py          download the archive (gdown; Google Drive by default)
  fetch_office31.py DIR      link an existing copy: DIR holds amazon/ dslr/ webcam/, or
                             domain_adaptation_images/ with them inside

The real archive, domain_adaptation_images.tar.gz, unpacks with no enclosing folder to
amazon/images/<class>/frame_NNNN.jpg, dslr/images/..., webcam/images/...; an archive with the
three domains under domain_adaptation_images/ is accepted too. A download goes to a .part
file and becomes the archive only once it is a whole gzip'd tar holding the three domains;
anything else (Drive's HTML pages, a truncated file) is named and deleted. Extraction goes to
a temporary folder beside the destination and is renamed into place only when complete.
"""

import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse

DOMAINS = {"amazon": 2817, "dslr": 498, "webcam": 795}
NESTED = "domain_adaptation_images"
# The archive the Office-31 authors distribute (Saenko et al., ECCV 2010), on Google Drive.
DRIVE_ID = "0B4IapRTv9pJ1WGZVd1VDMmhwdlE"
DEFAULT_URL = f"https://drive.google.com/uc?id={DRIVE_ID}"
# The SHA-1 a third-party public mirror script checks; not published by the authors, so a
# mismatch is only a warning and the image counts decide.
KNOWN_SHA1 = "7aa25a86f3880b6e79283227816f9d4d8506d636"
GDOWN_PIN = "gdown==6.5.1"


class Failure(Exception):
    """An error for the user: printed as `error: ...`, exit status 1."""


def say(msg=""):
    print(msg, flush=True)


def warn(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Counting and finding the domains


def count_images(folder):
    n = 0
    for _, _, files in os.walk(folder, followlinks=True):
        n += sum(1 for f in files if f.lower().endswith(".jpg"))
    return n


def counts_of(root):
    return {d: count_images(os.path.join(root, d)) for d in DOMAINS}


def counts_ok(counts):
    return all(counts[d] == want for d, want in DOMAINS.items())


def report_counts(root, counts):
    """Prints the counts; returns True when they are Office-31's."""
    ok = True
    for d, want in DOMAINS.items():
        if counts[d] == want:
            say(f"{d}: {counts[d]} images")
        else:
            warn(f"error: {os.path.join(root, d)} holds {counts[d]} images, Office-31 has {want}")
            ok = False
    return ok


def has_domains(folder):
    return all(os.path.isdir(os.path.join(folder, d)) for d in DOMAINS)


def domains_folder(folder):
    """The folder holding amazon/ dslr/ webcam/: `folder` itself or its
    domain_adaptation_images/; None when neither."""
    if has_domains(folder):
        return folder
    nested = os.path.join(folder, NESTED)
    if has_domains(nested):
        return nested
    return None


# ---------------------------------------------------------------------------------------------
# What a file is: the archive, or something else named for what it is


def html_kind(text):
    """Names an HTML page Google Drive (or a mirror) answered with, and what to do."""
    t = text.lower()
    if "too many users have viewed or downloaded" in t or "quota exceeded" in t:
        return ("Google Drive's quota page (\"Too many users have viewed or downloaded this "
                "file recently\")",
                "Drive lifts the block within a day: wait (up to 24 hours) and run again, or "
                "download from a mirror with OFFICE31_URL=<URL of "
                "domain_adaptation_images.tar.gz>")
    if 'id="download-form"' in t or "virus scan warning" in t or "scan this file for viruses" in t:
        return ("Google Drive's virus-scan confirmation page (\"Download anyway\")",
                "This URL served Drive's confirmation step instead of the file; gdown answers "
                "it only for drive.google.com URLs: unset OFFICE31_URL (or give the Drive "
                "link, https://drive.google.com/uc?id=...), or a direct link to the file")
    if ("accounts.google.com" in t and ("sign in" in t or "servicelogin" in t)) or \
            "<title>sign in" in t:
        return ("a Google sign-in page",
                "The file is not public at this URL: download it in a browser signed in to "
                "Google and place it as the archive, or use a mirror via OFFICE31_URL")
    title = ""
    lo = t.find("<title>")
    if lo >= 0:
        hi = t.find("</title>", lo)
        title = text[lo + 7:hi if hi > 0 else lo + 100].strip()
    what = f"an HTML page (title: \"{title}\")" if title else "an HTML page"
    return (what, "This URL does not serve the archive: check OFFICE31_URL")


def inspect_archive(path):
    """(None, top) when `path` is a whole gzip'd tar holding the three domains (top: "" or
    "domain_adaptation_images/"); otherwise (what it is, what to do)."""
    with open(path, "rb") as f:
        head = f.read(65536)
    if not head:
        return ("an empty file", "The download gave nothing: run again"), None
    if head[:2] != b"\x1f\x8b":
        text = head.decode("utf-8", "replace")
        stripped = text.lstrip().lower()
        if stripped.startswith("<?xml") and "<html" not in stripped[:2000]:
            return (f"an XML document (starting {text.strip()[:80]!r})",
                    "This URL does not serve the archive: check OFFICE31_URL"), None
        if stripped.startswith(("<!doctype html", "<html", "<head", "<body", "<")) or "<html" in stripped[:2000]:
            return html_kind(text), None
        if len(head) >= 262 and head[257:262] == b"ustar":
            return ("an uncompressed tar, not the gzip'd archive", "Give the .tar.gz itself"), None
        return (f"not a gzip file (it starts {head[:16]!r})",
                "This is not domain_adaptation_images.tar.gz: check the URL or file"), None
    firsts = set()
    try:
        with gzip.open(path, "rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|") as tar:
                for m in tar:
                    parts = [p for p in m.name.split("/") if p not in ("", ".")]
                    if parts:
                        firsts.add(parts[0])
                    if len(parts) > 1 and parts[0] == NESTED:
                        firsts.add(NESTED + "/" + parts[1])
            # The tar's end marker can come before the gzip stream's: read it to its end, so
            # that the CRC and length at the end are checked too.
            while gz.read(1 << 20):
                pass
    except (OSError, EOFError, tarfile.TarError, ValueError) as e:
        return (f"a truncated or damaged gzip'd tar (reading it failed: {e})",
                "The download was cut off or corrupted: run again"), None
    if all(d in firsts for d in DOMAINS):
        return None, ""
    if all(f"{NESTED}/{d}" in firsts for d in DOMAINS):
        return None, NESTED + "/"
    top = ", ".join(sorted(f for f in firsts if "/" not in f)[:8]) or "nothing"
    return (f"a gzip'd tar without amazon/ dslr/ webcam/ (its top level holds: {top})",
            "This is not the Office-31 archive: check the URL or file"), None


def sha1_of(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------------
# Downloading


def alternatives(archive):
    return (f"Or place domain_adaptation_images.tar.gz at {archive} by hand, or unpack it "
            "anywhere and run: make data OFFICE31=/path/to/it")


def download(url, part, archive):
    """Downloads `url` into `part` with gdown (which answers Google Drive's confirmation step
    for Drive URLs). Raises Failure, with `part` removed, when that fails."""
    try:
        import gdown
        import requests
    except ImportError as e:
        raise Failure(f"cannot download: {e}; gdown is missing from {sys.executable}: run "
                      f"`make setup` (or `{sys.executable} -m pip install {GDOWN_PIN}`). "
                      + alternatives(archive))
    host = urllib.parse.urlsplit(url).netloc or url
    say(f"downloading Office-31 from {url}")
    say(f"  to {part}")
    try:
        with open(part, "wb") as f:
            # A file object as output: gdown writes no temporary file of its own.
            gdown.download(url, output=f, quiet=not sys.stderr.isatty(), timeout=(10, 120),
                           log_messages={"start": "", "output": ""})
    except gdown.exceptions.FileURLRetrievalError as e:
        remove(part)
        text = str(e)
        if "too many users" in text.lower():
            what, todo = html_kind("Too many users have viewed or downloaded")
            raise Failure(f"{url} answered with {what}, not the archive. {todo}. "
                          + alternatives(archive))
        raise Failure(f"Google Drive did not hand out the file at {url} (gdown: "
                      f"{' '.join(text.split())}). The file may need a sign-in, or Drive's "
                      "download quota for it may be spent (then wait up to a day); a mirror "
                      "can be given as OFFICE31_URL. " + alternatives(archive))
    except requests.exceptions.HTTPError as e:
        remove(part)
        raise Failure(f"{url} answered {e.response.status_code if e.response is not None else e}"
                      f", not the archive ({e}). " + alternatives(archive))
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        remove(part)
        raise Failure(f"could not download from {host} ({type(e).__name__}: {e}): no internet "
                      "here, or the host is down. " + alternatives(archive))
    except (requests.exceptions.RequestException, gdown.exceptions.DownloadError, OSError) as e:
        remove(part)
        raise Failure(f"downloading {url} failed ({type(e).__name__}: {e}). "
                      + alternatives(archive))
    except BaseException:
        remove(part)
        raise


def obtain_archive(url, archive):
    """Makes `archive` a valid Office-31 archive (validating one already there, downloading
    otherwise); returns its top folder prefix."""
    if os.path.exists(archive):
        (problem, top) = inspect_archive(archive)
        if problem is None:
            say(f"{archive}: present, not downloading")
            return top
        warn(f"{archive} is {problem[0]} ({os.path.getsize(archive)} bytes), not the Office-31 "
             "archive (perhaps left by an earlier download): deleting it and downloading again")
        remove(archive)
    part = archive + ".part"
    remove(part)
    download(url, part, archive)
    try:
        (problem, top) = inspect_archive(part)
    except BaseException:
        remove(part)
        raise
    if problem is not None:
        size = os.path.getsize(part)
        remove(part)
        raise Failure(f"{url} answered with {problem[0]} ({size} bytes), not the archive "
                      f"(a gzip'd tar holding amazon/ dslr/ webcam/); nothing was kept. "
                      f"{problem[1]}. " + alternatives(archive))
    os.replace(part, archive)
    return top


# ---------------------------------------------------------------------------------------------
# The three ways in


def use_existing(arg, root):
    src = os.path.abspath(arg)
    if not os.path.isdir(src):
        raise Failure(f"OFFICE31={arg} is not a folder (expected a folder holding amazon/ dslr/ "
                      "webcam/, or domain_adaptation_images/ with them inside)")
    found = domains_folder(src)
    if found is None:
        present = ", ".join(sorted(os.listdir(src))[:8]) or "nothing"
        raise Failure(f"OFFICE31={arg} holds neither amazon/ dslr/ webcam/ nor "
                      f"{NESTED}/amazon, dslr, webcam (it holds: {present}); each domain as "
                      "<domain>/images/<class>/*.jpg or <domain>/<class>/*.jpg")
    found = os.path.realpath(found)
    if os.path.islink(root):
        os.remove(root)
    elif os.path.exists(root):
        if os.path.realpath(root) != found:
            raise Failure(f"{root} exists and is not a link; move it away first")
    if not os.path.exists(root):
        os.symlink(found, root)
        say(f"{root} -> {found}")
    if not report_counts(root, counts_of(root)):
        raise Failure(f"OFFICE31={arg} does not hold Office-31's images")


def extract(archive, dest, root):
    """Extracts into a temporary folder beside `root`, checks the counts there, then renames
    the folder holding the domains to `root`."""
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest)
    try:
        say(f"extracting {archive}")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp)
        except (OSError, EOFError, tarfile.TarError) as e:
            raise Failure(f"extracting {archive} into {tmp} failed: {e}")
        found = domains_folder(tmp)
        if found is None:
            raise Failure(f"{archive} unpacked without amazon/ dslr/ webcam/ (top level: "
                          f"{', '.join(sorted(os.listdir(tmp))) or 'nothing'})")
        counts = counts_of(found)
        if not counts_ok(counts):
            remove(archive)
            got = ", ".join(f"{d} {counts[d]}" for d in DOMAINS)
            want = ", ".join(f"{d} {n}" for d, n in DOMAINS.items())
            raise Failure(f"{archive} holds {got} images, Office-31 has {want}: not the "
                          "published archive; deleted it. Use another source (OFFICE31_URL) "
                          "or an existing copy (make data OFFICE31=DIR)")
        os.rename(found, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def adopt_old_extraction(dest, root):
    """The old fetch script unpacked the archive straight into `dest` (amazon/ dslr/ webcam/
    beside the archive): moves such a complete copy into `root` instead of downloading."""
    if not has_domains(dest) or not counts_ok(counts_of(dest)):
        return False
    say(f"{dest} holds amazon/ dslr/ webcam/ from an earlier extraction: moving them into {root}")
    tmp = tempfile.mkdtemp(prefix=".adopt-", dir=dest)
    for d in DOMAINS:
        os.rename(os.path.join(dest, d), os.path.join(tmp, d))
    os.rename(tmp, root)
    return True


def main(argv):
    dest = os.environ.get("OFFICE31_DEST") or "data/office31"
    url = os.environ.get("OFFICE31_URL") or DEFAULT_URL
    root = os.path.join(dest, NESTED)
    archive = os.path.join(dest, NESTED + ".tar.gz")
    os.makedirs(dest, exist_ok=True)
    arg = argv[1] if len(argv) > 1 else ""
    if arg:
        use_existing(arg, root)
        return
    if os.path.lexists(root):
        counts = counts_of(root)
        if counts_ok(counts):
            report_counts(root, counts)
            return
        report_counts(root, counts)
        raise Failure(f"{root} exists but does not hold Office-31; move it away (or delete it) "
                      "and run again")
    if adopt_old_extraction(dest, root):
        report_counts(root, counts_of(root))
        return
    top = obtain_archive(url, archive)
    sha1 = sha1_of(archive)
    if sha1 == KNOWN_SHA1:
        say(f"{archive}: SHA-1 {sha1}, the known SHA-1 of the Office-31 archive")
    else:
        say(f"{archive}: SHA-1 {sha1}")
        warn(f"warning: SHA-1 differs from {KNOWN_SHA1}, the one a public mirror script checks; "
             "the image counts decide")
    if top:
        say(f"{archive}: the domains sit under {top}")
    extract(archive, dest, root)
    if not report_counts(root, counts_of(root)):
        raise Failure(f"{root} does not hold Office-31's images")


if __name__ == "__main__":
    try:
        main(sys.argv)
    except Failure as e:
        warn(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        warn("interrupted")
        sys.exit(130)
