"""Keep the computer from going to sleep while a run works: an overnight batch on a laptop
must not stop when the power plan puts it to sleep after 30 idle minutes (the screen may
still turn off; only system sleep is held off). Released when the run ends, however it
ends, and by the operating system when the process dies.

- Windows: SetThreadExecutionState(ES_CONTINUOUS | ES_SYSTEM_REQUIRED), cleared at the end.
- macOS: `caffeinate -i -w PID`.
- Linux: a `systemd-inhibit --what=sleep:idle` lock held by a child that lives as long as
  its stdin, a pipe from this process (so it also ends if this process is killed), where
  logind answers (`systemd-inhibit --list`).
Where none works, the run goes on as before: `keep_awake` yields None.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
from typing import Iterator

ES_CONTINUOUS = 0x80000000
ES_SYSTEM_REQUIRED = 0x00000001
WHY = "restoring MP3s (mp3restore run)"


@contextlib.contextmanager
def keep_awake() -> Iterator[str | None]:
    """Hold off system sleep inside the block; yields how (a short phrase) or None."""
    if sys.platform == "win32":
        api = ctypes.windll.kernel32  # type: ignore[attr-defined]
        api.SetThreadExecutionState.argtypes = [ctypes.c_uint32]  # EXECUTION_STATE is a DWORD
        api.SetThreadExecutionState.restype = ctypes.c_uint32
        holder = _windows(api)
    elif sys.platform == "darwin":
        holder = _child(["caffeinate", "-i", "-w", str(os.getpid())], "caffeinate")
    else:
        holder = _child(["systemd-inhibit", "--what=sleep:idle", "--who=mp3restore", f"--why={WHY}",
                         "--mode=block", sys.executable, "-c", "import sys; sys.stdin.read()"], "systemd-inhibit",
                        check=["systemd-inhibit", "--list"])
    with holder as how:
        yield how


@contextlib.contextmanager
def _windows(kernel32) -> Iterator[str | None]:
    """`kernel32`: the Windows API (ctypes.windll.kernel32)."""
    if not kernel32.SetThreadExecutionState(ES_CONTINUOUS | ES_SYSTEM_REQUIRED):
        yield None
        return
    try:
        yield "SetThreadExecutionState"
    finally:
        kernel32.SetThreadExecutionState(ES_CONTINUOUS)


@contextlib.contextmanager
def _child(argv: list[str], name: str, check: list[str] | None = None) -> Iterator[str | None]:
    """Run `argv` (a program that holds the lock while it runs) for the block's length."""
    if shutil.which(argv[0]) is None:
        yield None
        return
    try:
        if check and subprocess.run(check, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=10).returncode != 0:
            yield None  # no logind to talk to (a container, a system without systemd)
            return
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        yield None
        return
    try:
        yield name
    finally:
        child.stdin.close()  # a systemd-inhibit child ends with its stdin
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
