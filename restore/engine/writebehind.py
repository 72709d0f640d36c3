"""A song's finished variants written on a thread while its next variant computes.

Writing a variant (24-bit FLAC encode, tags, hash, fsync, the atomic replace, the marker) is
a few per cent of a song's time on a CPU and much more beside a GPU, and the encoder, the
hash and the fsync let go of the GIL: done beside the next variant's stages, it costs
almost nothing. What stays as it was:
- at most one write is in flight: memory holds at most one finished output more than
  writing in line would (SongRun writes a long song's output in line unless a later variant
  keeps it anyway: song.WRITE_BEHIND_BYTES), and the writes (files, markers, crash
  checkpoints, log lines) keep the jobs' order;
- every write is atomic as before (restore.io.writers): a crash leaves the old file or none;
- the song's claims are released only after its last write ended, a Ctrl+C included
  (SongRun.run waits for it), so no other run takes over a file still being written.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class WriteBehind(Generic[T]):
    """One worker thread (started on first use) and at most one job in flight. A job is a
    callable that settles one variant and returns its result; it must not raise (a write's
    failure is part of its result)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def submit(self, job: Callable[[], T]) -> None:
        """Start `job` on the thread. The one in flight must have been collected (`wait`)."""
        if self._pending is not None:
            raise RuntimeError("a write is still in flight: collect it with wait() first")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mp3restore-write")
        self._pending = self._pool.submit(job)

    def wait(self) -> T | None:
        """The result of the job in flight once it has ended (None when there is none)."""
        if self._pending is None:
            return None
        future, self._pending = self._pending, None
        return future.result()

    def close(self) -> T | None:
        """Wait for the job in flight, stop the thread; returns that job's result or None."""
        try:
            return self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
