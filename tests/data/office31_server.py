#!/usr/bin/env python3
"""A local stand-in for the Office-31 download, for tests/fetch_data.rs.

  office31_server.py serve WORKDIR PORTFILE
      Builds, in WORKDIR, a small archive in the real layout (no enclosing folder:
      amazon/images/<class>/frame_NNNN.jpg, dslr/..., webcam/..., 2817/498/795 tiny identical
      JPEGs), the same nested under domain_adaptation_images/, and the first half of the
      first; serves them on 127.0.0.1 (port 0, written to PORTFILE once listening) with
      Google Drive's HTML answers:
        /valid.tar.gz /nested.tar.gz /truncated.tar.gz   the archives
        /confirm /quota /signin /page                     Drive's virus-scan confirmation page,
                                                          its quota page, a Google sign-in page,
                                                          some other HTML page (all status 200)
        /uc?id=ID, /download?id=ID[&confirm=t&uuid=U]     Drive's own flow (see drive-client):
                                                          /uc redirects to /download, which
                                                          answers the confirmation page, then
                                                          with confirm= the archive; ID QUOTA
                                                          gets the quota page, SIGNIN the
                                                          sign-in page
        /stats                                            JSON: requests per path so far
                                                          (/download with confirm= counted as
                                                          /download+confirm), the archives'
                                                          SHA-1
  office31_server.py drive-client PORT SCRIPT [ARGS...]
      Runs SCRIPT with requests' sessions sending https://drive.google.com/... and
      https://drive.usercontent.google.com/... to http://127.0.0.1:PORT/...: gdown then takes
      the server for Google Drive and goes through its confirmation step.
"""

import collections
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = {"amazon": 2817, "dslr": 498, "webcam": 795}
CLASSES = ["back_pack", "bike", "calculator", "headphones", "keyboard"]
DRIVE_ID = "0B4IapRTv9pJ1WGZVd1VDMmhwdlE"

CONFIRM = (
    '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>'
    '<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head>\n'
    '<body><div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive '
    "can't scan this file for viruses.</p><p class=\"uc-warning-subcaption\"><span "
    'class="uc-name-size"><a href="/open?id={id}">domain_adaptation_images.tar.gz</a> (77M)'
    "</span> is too large for Google to scan for viruses. Would you still like to download "
    "this file?</p>\n"
    '<form id="download-form" action="https://drive.usercontent.google.com/download" '
    'method="get"><input type="submit" id="uc-download-link" value="Download anyway"/>'
    '<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" '
    'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
    'name="uuid" value="5e1d9c1a-0000-4000-8000-000000000000"></form>\n'
    "</div></div></body></html>\n"
)
QUOTA = (
    "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>\n"
    '<body><div class="uc-main"><div id="uc-text">\n'
    '<p class="uc-error-caption">Sorry, you can&#39;t view or download this file at this '
    "time.</p>\n"
    '<p class="uc-error-subcaption">Too many users have viewed or downloaded this file '
    "recently. Please try accessing the file again later. If the file you are trying to "
    "access is particularly large or is shared with many people, it may take up to 24 hours "
    "to be able to view or download the file. If you still can't access a file after 24 "
    "hours, contact your domain administrator.</p>\n"
    '</div></div><a href="https://drive.google.com/">Google Drive</a></body></html>\n'
)
SIGNIN = (
    "<!doctype html><html lang=\"en\"><head><title>Sign in - Google Accounts</title></head>\n"
    '<body><form action="https://accounts.google.com/v3/signin/_/AccountsSignInUi/data/'
    'batchexecute" method="post"><h1>Sign in</h1><span>to continue to Google Drive</span>'
    '<input type="email" name="identifier"><a href="https://accounts.google.com/ServiceLogin'
    '?service=wise">Next</a></form></body></html>\n'
)
PAGE = "<html><head><title>Mirror index</title></head><body>nothing here</body></html>\n"


def tiny_jpeg():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def build_archive(path, prefix, jpeg):
    """A .tar.gz in the real archive's layout, under `prefix` ("" or "domain_adaptation_images/")."""

    def add_dir(tar, name):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1300000000
        tar.addfile(info)

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        if prefix:
            add_dir(tar, prefix.rstrip("/"))
        for domain, n in COUNTS.items():
            add_dir(tar, f"{prefix}{domain}")
            add_dir(tar, f"{prefix}{domain}/images")
            for c, cls in enumerate(CLASSES):
                add_dir(tar, f"{prefix}{domain}/images/{cls}")
                # n images spread over the classes, numbered per class from 1 as the real ones.
                for i in range(n // len(CLASSES) + (c < n % len(CLASSES))):
                    info = tarfile.TarInfo(f"{prefix}{domain}/images/{cls}/frame_{i + 1:04d}.jpg")
                    info.size, info.mode, info.mtime = len(jpeg), 0o644, 1300000000
                    tar.addfile(info, io.BytesIO(jpeg))


def serve(workdir, portfile):
    jpeg = tiny_jpeg()
    files = {}
    for name, prefix in [("valid", ""), ("nested", "domain_adaptation_images/")]:
        path = os.path.join(workdir, f"{name}.tar.gz")
        build_archive(path, prefix, jpeg)
        with open(path, "rb") as f:
            files[name] = f.read()
    files["truncated"] = files["valid"][: len(files["valid"]) // 2]
    sha1 = {k: hashlib.sha1(v).hexdigest() for k, v in files.items()}
    pages = {"/confirm": CONFIRM.format(id=DRIVE_ID), "/quota": QUOTA, "/signin": SIGNIN,
             "/page": PAGE}
    requests = collections.Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, body, ctype, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(u.query)
            key = u.path + ("+confirm" if u.path == "/download" and "confirm" in q else "")
            if u.path != "/stats":
                with lock:
                    requests[key] += 1
            name = u.path.lstrip("/").removesuffix(".tar.gz")
            html = "text/html; charset=utf-8"
            if u.path == "/stats":
                with lock:
                    body = json.dumps({"requests": dict(requests), "sha1": sha1})
                self.send(200, body.encode(), "application/json")
            elif u.path.endswith(".tar.gz") and name in files:
                self.send(200, files[name], "application/x-gzip")
            elif u.path in pages:
                self.send(200, pages[u.path].encode(), html)
            elif u.path == "/uc":
                # Drive sends /uc?id= on to drive.usercontent.google.com.
                target = ("https://drive.usercontent.google.com/download?id="
                          + urllib.parse.quote(q.get("id", [""])[0]) + "&export=download")
                self.send(303, b"", html, [("Location", target)])
            elif u.path == "/download":
                file_id = q.get("id", [""])[0]
                if file_id == "QUOTA":
                    self.send(200, QUOTA.encode(), html)
                elif file_id == "SIGNIN":
                    self.send(200, SIGNIN.encode(), html)
                elif file_id != DRIVE_ID:
                    self.send(404, b"<html><body>Not Found</body></html>", html)
                elif "confirm" not in q:
                    self.send(200, CONFIRM.format(id=DRIVE_ID).encode(), html)
                else:
                    self.send(200, files["valid"], "application/octet-stream", [
                        ("Content-Disposition",
                         'attachment; filename="domain_adaptation_images.tar.gz"')])
            else:
                self.send(404, b"<html><body>Not Found</body></html>", html)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, portfile)
    server.serve_forever()


def drive_client(port, script, args):
    import runpy

    import requests
    from requests.adapters import HTTPAdapter

    class ToLocal(HTTPAdapter):
        def send(self, request, **kwargs):
            u = urllib.parse.urlsplit(request.url)
            request.url = urllib.parse.urlunsplit(("http", f"127.0.0.1:{port}", u.path, u.query, ""))
            return super().send(request, **kwargs)

    init = requests.Session.__init__

    def patched(self, *a, **k):
        init(self, *a, **k)
        for host in ("https://drive.google.com", "https://drive.usercontent.google.com",
                     "https://docs.google.com"):
            self.mount(host, ToLocal())

    requests.Session.__init__ = patched
    sys.argv = [script] + args
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "drive-client":
        drive_client(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
