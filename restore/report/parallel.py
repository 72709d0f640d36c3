"""Measuring a report's songs, one after another or (`jobs` over 1: `--jobs N`) side by side,
each in its own process: a song's metrics and pictures (numpy, soxr, matplotlib) use one
core, and with songs restored N at a time a serial report would take longer than the run.

Either way the records come back in the songs' order and each song's log lines with its
record, so a report's log reads the same however it was measured. Each song writes only its
own files (its cache entry and pictures), so the processes never touch one another's. A
process that dies (out of memory on an hour-long song) costs nothing: the songs it left
are measured here, one at a time, and the log says so.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

from restore.errors import describe_failure
from restore.faults import checkpoint
from restore.report.discover import Song
from restore.report.measure import Log, measure_song


class SongMeasurer:
    """`record(song, reference)`: the song's record (report/measure.py), its log lines said."""

    def __init__(self, out_dir: Path, fingerprint: str, log: Log, futures: dict[str, Future] | None = None):
        self.out_dir, self.fingerprint, self.log = out_dir, fingerprint, log
        self.futures = futures or {}

    def record(self, song: Song, reference: Path | None) -> dict:
        future = self.futures.pop(song.key, None)
        if future is not None:
            try:
                record, lines = future.result()
            except Exception as exc:  # its process died (BrokenProcessPool), or it failed there
                self.log(f"report: measuring {song.key} in its own process failed "
                         f"({describe_failure(exc)}); measured here instead")
            else:
                for line in lines:
                    self.log(line)
                return record
        return measure_song(song, self.out_dir, reference, self.fingerprint, self.log)


@contextlib.contextmanager
def song_measurer(found: list[tuple[Song, Path | None]], out_dir: Path, fingerprint: str, jobs: int,
                  log: Log) -> Iterator[SongMeasurer]:
    """A measurer for the songs `found` (song, its reference or None): with `jobs` over 1
    (and more than one song), their measuring starts now in up to `jobs` processes."""
    workers = min(jobs, len(found))
    if workers < 2:
        yield SongMeasurer(out_dir, fingerprint, log)
        return
    # spawn everywhere: what Windows does, and no forked copy of a parent's threads or locks
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_ctrl_c)
    try:
        futures = {song.key: pool.submit(_measure, song, out_dir, reference, fingerprint) for song, reference in found}
        yield SongMeasurer(out_dir, fingerprint, log, futures)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_ctrl_c() -> None:
    """In a measuring process: a Ctrl+C is the parent's to handle (it stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _measure(song: Song, out_dir: Path, reference: Path | None, fingerprint: str) -> tuple[dict, list[str]]:
    """In a measuring process: the song's record and what it said."""
    checkpoint("report-song-process")
    lines: list[str] = []
    return measure_song(song, out_dir, reference, fingerprint, lines.append), lines
