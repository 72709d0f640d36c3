"""Songs measured side by side (`--jobs N`): the report's metrics and pictures, the library's
loudness. Measuring a song (numpy, soxr, matplotlib, the FLAC decoder) uses one core, and
with songs restored N at a time, measuring them one at a time would take longer than the run.

`in_processes(fn, calls, jobs)` gives fn(*call) for each call, in the calls' order, computed
in up to `jobs` processes that start at once (or here, one by one, for `jobs` 1 or a single
call). The callers keep their order of work and of log lines, so what they write reads the
same however it was measured; each call must write only its own files. A process that dies
(out of memory on an hour-long song) costs nothing: the calls it lost are made here, after
`lost` has said so.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, TypeVar

from restore.faults import checkpoint

T = TypeVar("T")
WINDOWS_MAX_WORKERS = 61  # ProcessPoolExecutor's limit there (WaitForMultipleObjects' 63 handles, less its own)


@contextlib.contextmanager
def in_processes(fn: Callable[..., T], calls: list[tuple], jobs: int,
                 lost: Callable[[int, BaseException], object] = lambda index, exc: None) -> Iterator[Iterator[T]]:
    """Yield an iterator of fn(*call) per call, in order. `fn` must be a module-level
    function (it is pickled by name); `lost(index, exception)` is told of each call whose
    process failed before it is made here instead. The processes stop when the block ends."""
    workers = min(jobs, len(calls), WINDOWS_MAX_WORKERS if sys.platform == "win32" else jobs)
    if workers < 2:
        yield (fn(*call) for call in calls)
        return
    # spawn everywhere: what Windows does, and no forked copy of a parent's threads or locks
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_ctrl_c)
    try:
        futures = [pool.submit(_in_child, fn, call) for call in calls]

        def results() -> Iterator[T]:
            for index, (call, future) in enumerate(zip(calls, futures)):
                try:
                    result = future.result()
                except Exception as exc:  # its process died (BrokenProcessPool), or it failed there
                    lost(index, exc)
                    result = fn(*call)
                yield result

        yield results()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_child(fn: Callable[..., T], call: tuple) -> T:
    checkpoint("measuring-process")  # where the tests kill a measuring process
    return fn(*call)


def _ignore_ctrl_c() -> None:
    """In a measuring process: a Ctrl+C is the parent's to handle (it stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
