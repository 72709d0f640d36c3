"""Named checkpoints for the crash tests: the real process really dies there, or says it
got there so that a test can kill it from outside at a known moment.

- MP3RESTORE_CRASH_AT=<name>[:<n>]: the n-th (default first) time the code passes
  `checkpoint(name)` the process kills itself with SIGKILL (on Windows, which has none, it
  exits at once without cleanup).
- MP3RESTORE_CHECKPOINT_LOG=<file>: every checkpoint passed appends "<name> <n>" to the
  file, flushed, so a test can wait for a point before it acts (never for a fixed time).
Unset, a checkpoint costs two dictionary lookups.
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def checkpoint(name: str) -> None:
    crash, log = os.environ.get("MP3RESTORE_CRASH_AT"), os.environ.get("MP3RESTORE_CHECKPOINT_LOG")
    if not crash and not log:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{name} {_counts[name]}\n")
    target, _, nth = (crash or "").partition(":")
    if target == name and _counts[name] == int(nth or 1):
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)
