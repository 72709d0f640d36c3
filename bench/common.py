"""What the bench scripts share: printing, showing commands, describing the machine."""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def say(section: str, text: str) -> None:
    print(f"[{section}] {text}", flush=True)


def cmd_text(args: list[str], work: Path | None = None) -> str:
    """The command as a person would type it from the repo root; paths inside the
    benchmark's temporary folder `work` are shown as $WORK/..."""
    shown = ["python" if a == sys.executable else a for a in args]
    if work is not None:
        shown = [a.replace(str(work), "$WORK") for a in shown]
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


def add_common_args(parser, parts: tuple[str, ...]) -> None:
    """--only PART (repeatable), --work DIR, --keep."""
    parser.add_argument("--only", action="append", choices=parts, help="run only this part (repeatable)")
    parser.add_argument("--work", type=Path, help="make the temporary folder under this folder (default: the system temp)")
    parser.add_argument("--keep", action="store_true", help="leave the generated files")


@contextlib.contextmanager
def work_folder(prefix: str, parent: Path | None, keep: bool):
    """A fresh temporary folder for one benchmark run, removed afterwards unless `keep`."""
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    print(f"[work] {work}; before starting: {load()}", flush=True)
    try:
        yield work
    finally:
        if keep:
            print(f"[work] kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_parts(parts: list[tuple[str, Callable[[], object]]], chosen: list[str]) -> None:
    """Run the chosen parts in order, each followed by its duration and the machine's load."""
    for name, fn in parts:
        if name in chosen:
            t0 = time.perf_counter()
            fn()
            say(name, f"(part took {time.perf_counter() - t0:.0f} s; {load()})")


def vm_hwm_mib() -> float:
    """Peak resident memory of this process in MiB (Linux /proc/self/status VmHWM; reset by
    exec, so a child's figure is its own); NaN where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
