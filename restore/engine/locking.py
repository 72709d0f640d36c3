"""Claims: two runs pointed at one output folder split the work instead of colliding.

A claim is an OS file lock (flock on Linux/macOS, LockFileEx on Windows, via filelock)
on `_done/.locks/<id>.lock`. The OS drops it when its process dies, even by SIGKILL or
a power cut, so a crashed run never leaves a song locked: a claim that cannot be taken
means a live run holds it, and one that can means nobody works on that song.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from filelock import FileLock, Timeout

from restore.faults import checkpoint


def lock_path(out_dir: Path, key: str) -> Path:
    return out_dir / "_done" / ".locks" / (hashlib.sha1(key.encode("utf-8")).hexdigest()[:20] + ".lock")


def try_claim(path: Path, wait: float | None = 0.0) -> FileLock | None:
    """The held lock, or None if another run holds it (after waiting `wait` seconds for it;
    None: as long as the other run lives). Release with `.release()`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=-1 if wait is None else wait)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def wait_for_free(paths: list[Path], stop: threading.Event | None = None, poll_s: float = 0.5) -> None:
    """Block while live runs hold every claim at `paths`; return once one is free (its run
    finished or died) or `stop` is set. Polls the locks (the OS says nothing when a lock is
    freed), `poll_s` apart."""
    checkpoint("waiting-for-claim")
    stop = stop or threading.Event()
    while not stop.is_set():
        for path in paths:
            lock = try_claim(path)
            if lock is not None:
                lock.release()
                return
        stop.wait(poll_s)
