"""What the bench scripts share: printing, showing commands, describing the machine."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def say(section: str, text: str) -> None:
    print(f"[{section}] {text}", flush=True)


def cmd_text(args: list[str]) -> str:
    """The command as a person would type it from the repo root."""
    shown = ["python" if a == sys.executable else a for a in args]
    shown = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in shown]
    return " ".join(shown)


def load() -> str:
    """Other work on the machine skews timings: say how busy it was."""
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"
    except OSError:
        return "load average unknown"


def machine_line() -> str:
    """Python, cores, CPU model and RAM, as one line."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", RAM {kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"[machine] python {platform.python_version()}, {os.cpu_count()} cores (nproc), CPU {model}{mem}, "
            f"{platform.system()} {platform.release()}")
