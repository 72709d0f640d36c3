"""Named checkpoints for the crash tests: the real process really dies there, or says it
got there so that a test can kill it from outside at a known moment.

- MP3RESTORE_CRASH_AT=<name>[:<n>]: the n-th (default first) time the code passes
  `checkpoint(name)` the process kills itself with SIGKILL (on Windows, which has none, it
  exits at once without cleanup).
- MP3RESTORE_CHECKPOINT_LOG=<file>: every checkpoint passed appends "<name> <n>" to the
  file, flushed, so a test can wait for a point before it acts (never for a fixed time).
- MP3RESTORE_HOLD_AT=<name> (with the log): the first process of all that share the log
  to pass `checkpoint(name)` appends "hold <name> <pid>" and waits there (up to 10 min),
  so that a test can kill exactly that process mid-step (a cluster worker: its restarted
  process and the others pass on).
Unset, a checkpoint costs three dictionary lookups.
"""
from __future__ import annotations

import os
import signal
import threading

_counts: dict[str, int] = {}


def checkpoint(name: str) -> None:
    crash, log = os.environ.get("MP3RESTORE_CRASH_AT"), os.environ.get("MP3RESTORE_CHECKPOINT_LOG")
    if not crash and not log:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{name} {_counts[name]}\n")
        if os.environ.get("MP3RESTORE_HOLD_AT") == name:
            _hold(name, log)
    target, _, nth = (crash or "").partition(":")
    if target == name and _counts[name] == int(nth or 1):
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)


def _hold(name: str, log: str) -> None:
    try:  # exclusive creation: one process of all those sharing the log holds, once
        os.close(os.open(log + ".held", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"hold {name} {os.getpid()}\n")
    threading.Event().wait(600)
