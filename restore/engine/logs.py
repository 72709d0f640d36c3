"""Plain-text logs: `_logs/run-<time>-<pid>.log` per run, `_logs/<song path>.log` per song
(appended across runs). Logging never stops a batch: a failed log write is dropped."""
from __future__ import annotations

import threading
import time
from pathlib import Path, PurePosixPath

from restore.errors import printable


class LogFile:
    """Appends time-stamped lines; safe to call from two threads (a song's and its
    write-behind thread): a line is never split by another."""

    def __init__(self, path: Path):
        self.path = path
        self._broken = False
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        if self._broken:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        text = "\n".join(f"{stamp} {printable(part)}" for part in str(line).split("\n"))
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(text + "\n")
        except OSError:
            self._broken = True  # e.g. disk full: the summary still reports the song


def run_log(out_dir: Path) -> LogFile:
    import os
    return LogFile(out_dir / "_logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def song_log(out_dir: Path, rel: PurePosixPath) -> LogFile:
    return LogFile(out_dir / "_logs" / Path(*rel.parts).with_suffix(".log"))
