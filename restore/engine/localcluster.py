"""`--jobs N`: N songs at once on this machine, each in a worker process of a private Dask
cluster that lives as long as the run and listens on 127.0.0.1 only.

The songs go through engine/cluster.py as on any cluster (the same SongRun, claims, markers
and crash promises; a worker that dies gives its song to another). What is local: the
scheduler and N single-threaded worker processes (numpy, libFLAC and the MP3 decoder each
use one core per song, so N processes use N cores). Only the first worker offers the
MODELS resource, and a song with a model stage asks for it: such songs run one at a time,
in one process that keeps its models loaded, so one set of models is in memory and no two
songs fight for the GPU's memory; songs without one (01, 09, 11) take the other workers.

`distributed` is imported here only, and only when `--jobs` is over 1.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
from typing import Iterator

from restore.errors import UsageError

MODEL_RESOURCE = "MODELS"
INSTALL_HINT = 'pip install "mp3restore[cluster]" (Dask distributed runs the songs side by side)'


def available() -> bool:
    """Whether Dask distributed is installed (without importing it)."""
    return importlib.util.find_spec("distributed") is not None


@contextlib.contextmanager
def local_cluster(jobs: int) -> Iterator[str]:
    """Start a scheduler and `jobs` worker processes on 127.0.0.1; yield the scheduler's
    address; stop them all on the way out (a Ctrl+C and an error included)."""
    try:
        from distributed import Nanny, Scheduler, SpecCluster
    except ImportError as exc:
        raise UsageError(f"--jobs {jobs} needs Dask distributed, which is not installed", None, INSTALL_HINT) from exc
    quiet = logging.ERROR  # the workers' start-up chatter is not the run's; failures still reach the run
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "port": 0, "dashboard": False,
                                               "dashboard_address": None}}
    workers = {f"song-{i + 1}": {"cls": Nanny, "options": {
                   "nthreads": 1, "host": "127.0.0.1", "silence_logs": quiet,
                   "resources": {MODEL_RESOURCE: 1} if i == 0 else {}}}
               for i in range(jobs)}
    with SpecCluster(workers=workers, scheduler=scheduler, silence_logs=quiet, name="mp3restore") as cluster:
        yield cluster.scheduler_address
