"""Named crash points for the crash tests: the real process really dies there.

With MP3RESTORE_CRASH_AT=<name>[:<n>] in the environment, the n-th (default first)
time the code passes `checkpoint(name)` the process kills itself with SIGKILL (on
Windows, which has none, it exits at once without cleanup). Unset, a checkpoint
costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def checkpoint(name: str) -> None:
    spec = os.environ.get("MP3RESTORE_CRASH_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)
