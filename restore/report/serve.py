"""`mp3restore report OUT --serve`: the report over http://127.0.0.1 so that its pages can
save the person's choices straight into `OUT/_report/choices.json`.

What it serves, read-only (GET and HEAD): files under `OUT/_report/` and under the variant
folders (`OUT/NN_name/`, the FLACs the players play). Nothing else of OUT (markers, logs)
and nothing outside it: a path is resolved (symbolic links followed) and must lie inside one
of those folders, else 404. One endpoint writes: `POST /_report/choices` with
{"song": KEY, "entry": {...}} merges that song's entry into choices.json (atomically, one
request at a time, the song and variant checked against the report's songs) and answers
the whole file. It binds to 127.0.0.1 only: nothing on the network can reach it.
"""
from __future__ import annotations

import io
import json
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from restore.errors import RestoreError, UsageError
from restore.report.choices import CHOICES, load_choices, save_choice
from restore.report.discover import find_songs, variant_folders
from restore.report.html import REPORT_DIR

HOST = "127.0.0.1"
CHOICES_ENDPOINT = f"/{REPORT_DIR}/choices"
_MAX_BODY = 1 << 20


class ReportHandler(SimpleHTTPRequestHandler):
    """Files from the allowed folders only; one POST endpoint for the choices."""

    server: "ReportServer"

    def translate_path(self, path: str) -> str:
        """The file a URL path names, or a path that does not exist when it is outside the
        allowed folders (SimpleHTTPRequestHandler then answers 404)."""
        rel = unquote(urlsplit(path).path)
        parts = [p for p in rel.split("/") if p]
        nowhere = str(self.server.out_dir / REPORT_DIR / ".not-served")
        if not parts or parts[0] not in self.server.allowed() or any(p in (".", "..") or "\\" in p or ":" in p for p in parts):
            return nowhere
        target = (self.server.out_dir / Path(*parts)).resolve()
        root = (self.server.out_dir / parts[0]).resolve()
        if target != root and root not in target.parents:
            return nowhere  # a link out of the folder
        return str(target)

    def list_directory(self, path):
        self.send_error(HTTPStatus.NOT_FOUND, "no folder listings")
        return None

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # choices.json and rebuilt pages are never stale
        super().end_headers()

    def send_head(self):
        """choices.json before any choice is made: an empty one (not a 404 in the console)."""
        if urlsplit(self.path).path == f"/{REPORT_DIR}/{CHOICES}" and not (self.server.out_dir / REPORT_DIR / CHOICES).is_file():
            return io.BytesIO(self._send_json({"version": 1, "songs": {}}, body=False))  # do_GET copies it
        return super().send_head()

    def _send_json(self, data, body: bool = True) -> bytes:
        raw = json.dumps(data).encode("utf-8")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if body:
            self.wfile.write(raw)
        return raw

    def do_POST(self) -> None:
        if urlsplit(self.path).path != CHOICES_ENDPOINT:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            self.send_error(HTTPStatus.BAD_REQUEST, "a JSON body of at most 1 MiB")
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("not an object")
            with self.server.lock:
                songs = save_choice(self.server.out_dir, body.get("song"), body.get("entry"), self.server.known())
        except ValueError as exc:
            self.send_error(HTTPStatus.BAD_REQUEST, f"not JSON: {exc}")
            return
        except RestoreError as exc:
            self.send_error(HTTPStatus.BAD_REQUEST if isinstance(exc, UsageError) else HTTPStatus.INTERNAL_SERVER_ERROR,
                            exc.one_line())
            return
        self.server.log(f"report: saved the choice for {body.get('song')}")
        self._send_json({"version": 1, "songs": songs})

    def log_message(self, format: str, *args) -> None:  # requests are not news; errors are
        if args and str(args[0]).startswith(("4", "5")) and len(args) >= 2:
            self.server.log(f"report server: {format % args}")


class ReportServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, out_dir: Path, port: int = 0, log=lambda line: None):
        self.out_dir = Path(out_dir).resolve()
        self.lock = threading.Lock()
        self.log = log
        super().__init__((HOST, port), partial(ReportHandler, directory=str(self.out_dir)))

    def allowed(self) -> set[str]:
        return {REPORT_DIR, *variant_folders(self.out_dir)}

    def known(self) -> dict[str, set[str]]:
        """Song key -> its variants (files and stems), as the report sees them now."""
        return {s.key: set(s.files) | set(s.stems) for s in find_songs(self.out_dir)}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/{REPORT_DIR}/index.html"


def serve(out_dir: Path, port: int = 0, log=lambda line: None, ready=lambda server: None) -> None:
    """Serve until Ctrl+C (KeyboardInterrupt, which returns normally). `ready(server)` is
    called once it listens (it knows its url and port)."""
    server = ReportServer(out_dir, port, log)
    try:
        ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["CHOICES", "HOST", "ReportServer", "load_choices", "serve"]
