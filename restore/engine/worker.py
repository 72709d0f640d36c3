"""A cluster worker's side of a run: one song per task, through the same `SongRun` as a
local run (its claims, one decode, shared steps, atomic writers, markers), so that a
worker dying mid-song leaves exactly what a local run killed there leaves, and the
song is simply redone elsewhere.

What a worker keeps between tasks, per process: the run's stages and the model cache, so
each model is loaded once per worker process however many songs it gets. Songs in one
process run one at a time (the models are shared): start workers with `--nthreads 1`
and as many processes (`--nworkers`) as the machine should run songs at once.

Everything here runs inside a Dask worker process; `distributed` is imported only there
(and on the client in cluster mode), never by a local run.
"""
from __future__ import annotations

import hashlib
import os
import json
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from restore.engine.config import RunConfig
from restore.engine.plan import Stages, make_plan, stems_from_files
from restore.engine.scan import ScanResult, Track
from restore.engine.locking import wait_for_free
from restore.engine.song import SongRun, job_lock
from restore.engine.summary import JobResult
from restore.engine.variants import Variant
from restore.errors import describe_failure
from restore.events import Message, SongProgress, SongStarted

EVENT_TOPIC = "mp3restore-events-"   # + the run's id: what workers send, the client shows
STOP_EVENT = "mp3restore-stop-"      # + the run's id: set by the client to stop at the next block


@dataclass(frozen=True)
class WorkerSettings:
    """The run's configuration as a worker needs it: paths already mapped to the worker's
    names, as strings (a pickled WindowsPath cannot be rebuilt on Linux)."""

    run_id: str
    out_dir: str
    variants: tuple[Variant, ...]     # the run's variants, as the client planned them
    verify: str = "quick"
    redo: bool = False
    accept_damaged: bool = False
    debug: bool = False
    device: str = "auto"
    models_dir: str | None = None     # None: the worker's own $MP3RESTORE_MODELS or cache
    stems_from: str | None = None
    stage_options: dict = field(default_factory=dict)
    trusted_model_files: tuple[str, ...] = ()
    tag_codepage: str | None = None

    def key(self) -> str:
        """What decides the stages a worker builds: a new key releases the old run's models."""
        data = {k: v for k, v in asdict(self).items() if k != "run_id"}
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()

    def run_config(self) -> RunConfig:
        return RunConfig(inputs=[], out_dir=Path(self.out_dir), variants=list(self.variants), verify=self.verify,
                         redo=self.redo, accept_damaged=self.accept_damaged, debug=self.debug, device=self.device,
                         models_dir=Path(self.models_dir) if self.models_dir else None, report=False,
                         stems_from=Path(self.stems_from) if self.stems_from else None,
                         stage_options=dict(self.stage_options),
                         trusted_model_files=tuple(Path(p) for p in self.trusted_model_files),
                         tag_codepage=self.tag_codepage)


@dataclass(frozen=True)
class SongTask:
    """One song for a worker: its MP3 (the worker's path) and its relative name."""

    index: int            # 1-based in the plan's order
    input: str
    rel: str              # POSIX relative path: Artist/Album/Song.mp3
    variants: tuple[str, ...]  # the variants still to do for this song (names)
    wait_for_claims: bool = False  # a retry of a song another run held: wait for its claims


@dataclass
class TaskOutcome:
    """What a task returns to the client."""

    worker: str
    results: list[JobResult]
    model_loads: dict[str, int]   # this worker process's loads so far, per stage
    stopped: bool = False         # the client asked to stop; the song was cleaned up, not finished


def undo_dask_malloc_trim() -> bool:
    """Give this worker process glibc's usual heap behaviour back; True if it was changed.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back
    to the OS). Setting it turns off glibc's adaptive mmap threshold, so every large numpy
    temporary becomes a fresh mmap with its pages zeroed again: measured here, the offline
    restore took 0.9 s per 30 s song instead of 0.4 s (a local run with the variable set
    alike is as slow). Raising the mmap threshold to its 32 MiB ceiling and the trim
    threshold to 64 MiB restores the local speed (0.37 s). Linux/glibc only; elsewhere
    the variable means nothing."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): no such variable there either
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 64 << 20))


class _WorkerRun:
    """A worker process's state for one run configuration."""

    def __init__(self, settings: WorkerSettings, reporter: "_Forwarder"):
        self.reporter = reporter  # the song at work's: set again for each task
        if undo_dask_malloc_trim():
            self.log("glibc's adaptive heap restored (Dask sets MALLOC_TRIM_THRESHOLD_, which doubles numpy stages' time)")
        from restore.engine.run import RunModels, run_env  # the local run's own model lifetime rules
        self.config = settings.run_config()
        self.env = run_env(self.config)
        self.variants = stems_from_files(self.config.variants, self.env)
        self.stages = Stages(self.variants, self.env)
        self.decoder = self.stages["decode"]
        self.decoder.load()
        self.models = RunModels(self.config, self.stages, [], self.log)  # no work list: keep every model loaded

    def log(self, line: str) -> None:
        """A line for the client's run log (model loads and releases)."""
        self.reporter.say("debug", line)

    def close(self) -> None:
        self.models.close()


_state: dict[str, _WorkerRun] = {}
_one_song_at_a_time = threading.Lock()


def worker_name() -> str:
    """How the summary names this worker: host/name (`dask worker --name`, else its number)."""
    from distributed import get_worker
    return f"{socket.gethostname()}/{get_worker().name}"


def run_song(settings: WorkerSettings, task: SongTask) -> TaskOutcome:
    """The Dask task: plan this one song here (markers, availability: this machine's
    models) and run what is still to do. A failure of the song is in its results; only a
    bug escapes as an exception."""
    from distributed import get_worker
    name = worker_name()
    reporter = _Forwarder(get_worker(), EVENT_TOPIC + settings.run_id, name)
    stop = _StopFlag(STOP_EVENT + settings.run_id)
    with _one_song_at_a_time:
        state = _state.get(settings.key())
        if state is None:
            for old in _state.values():   # another run's models: make room
                old.close()
            _state.clear()
            state = _state[settings.key()] = _WorkerRun(settings, reporter)
        state.reporter = reporter  # a later run with the same settings reuses the models, not the topic
        reporter.handle(SongStarted(task.index, task.rel))
        results: list[JobResult] = []
        try:
            _run(state, task, reporter, stop, name, results)
            stopped = False
        except KeyboardInterrupt:  # the client asked to stop: SongRun cleaned up (temporaries, claims)
            stopped = True
        loads = dict(state.models.cache.loads) if state.models.cache is not None else {}
        for r in results:
            r.worker = name
        return TaskOutcome(name, results, loads, stopped)


def _run(state: _WorkerRun, task: SongTask, reporter, stop, name: str, results: list[JobResult]) -> None:
    """Plan and run the song, adding each step's result to `results` as it is settled (a
    stop raises KeyboardInterrupt with those kept). With `wait_for_claims`, steps another
    run holds are waited for while it lives (its claims polled), then run."""
    variants = [v for v in state.variants if v.name in task.variants]
    path = Path(task.input)
    try:
        st = path.stat()
    except OSError as exc:
        reason = describe_failure(exc, f"reading the input on {name}")
        results += [JobResult(task.rel, v.name, "failed", reason) for v in variants]
        return
    track = Track(path, PurePosixPath(task.rel), st.st_size, st.st_mtime_ns)
    plan = make_plan(ScanResult([track], []), variants, state.config.out_dir, state.config.verify,
                     state.config.redo, state.env, stages=state.stages)
    results += [JobResult(task.rel, v.name, "failed", f"on {name}: {why}") for _, why in plan.problems for v in variants]
    results += [JobResult(task.rel, j.variant.name, "skipped", "finished by another run", output=str(j.output))
                for j in plan.done_jobs]
    results += [JobResult(task.rel, j.variant.name, "unavailable", f"on {name}: {j.reason}")
                for j in plan.unavailable_jobs]
    for track, jobs in plan.work("song"):
        while jobs:
            song = SongRun(track, state.config, state.config.out_dir, reporter, stop)
            try:
                done = song.run(jobs, state.decoder, state.models)
            except KeyboardInterrupt:
                results += song.results  # the steps it finished before the stop
                raise
            busy = {r.variant for r in done if r.status == "busy"}
            results += [r for r in done if r.status != "busy" or not task.wait_for_claims]
            jobs = [j for j in jobs if j.variant.name in busy] if task.wait_for_claims else []
            if jobs:
                wait_for_free([job_lock(state.config.out_dir, j) for j in jobs], stop)
                if stop.is_set():
                    raise KeyboardInterrupt


class _Forwarder:
    """A Reporter that sends events to the client through the scheduler's event log
    (msgpack: plain dicts). Progress is sent at most twice a second."""

    def __init__(self, worker, topic: str, name: str):
        self.worker, self.topic, self.name = worker, topic, name
        self.last_progress = 0.0

    def handle(self, event: object) -> None:
        if isinstance(event, SongProgress):
            now = time.monotonic()
            if now - self.last_progress < 0.5:
                return
            self.last_progress = now
        self.worker.log_event(self.topic, {"event": type(event).__name__, "by": self.name, **asdict(event)})

    def say(self, level: str, text: str) -> None:
        self.handle(Message(level, f"{self.name}: {text}"))


class _StopFlag:
    """`is_set()` of the client's stop Event, asked of the scheduler at most once a second
    (SongRun asks at every decoded block and model chunk); `wait()` as threading.Event's."""

    def __init__(self, name: str):
        self.name, self.checked, self.value = name, 0.0, False

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self.value and now - self.checked >= 1.0:
            from distributed import Event
            self.checked = now
            try:
                self.value = Event(self.name).is_set()
            except Exception:  # the scheduler is gone: the client is gone too, finish the song
                self.value = False
        return self.value

    def wait(self, seconds: float) -> bool:
        time.sleep(seconds)  # a poll interval of wait_for_free: nothing to wake it sooner
        return self.is_set()


def probe(out_dir: str, token_file: str, token: str, inputs: list[tuple[str, int]], models_dir: str | None,
          version: str) -> list[str]:
    """Run on every worker before any work (`Client.run`): what this worker cannot see or
    use, one line each ([] when all is well). `token_file` is a file the client just
    wrote in the output folder: reading back its `token` proves the worker sees the same
    folder, not a same-named one of its own. `inputs` are (worker path, size) of one MP3
    per input folder."""
    import restore
    problems = []
    if restore.__version__ != version:
        problems.append(f"runs mp3restore {restore.__version__}, the client {version}: install the same version "
                        "on every machine")
    try:
        seen = Path(token_file).read_text(encoding="utf-8")
        if seen != token:
            problems.append(f"sees a different output folder at {out_dir} (its check file holds other text)")
    except OSError as exc:
        problems.append(f"cannot see the output folder {out_dir}: {exc.strerror or exc} "
                        "(share it, or map the path with --path-map CLIENT=WORKER)")
    else:
        probe_file = Path(out_dir) / "_done" / f".probe-{token[:8]}-{socket.gethostname()[:20]}-{os.getpid()}"  # one per worker process
        try:
            probe_file.write_bytes(b"")
            probe_file.unlink()
        except OSError as exc:
            problems.append(f"cannot write to the output folder {out_dir}: {exc.strerror or exc}")
    for path, size in inputs:
        try:
            st = Path(path).stat()
            if st.st_size != size:
                problems.append(f"sees {path} with {st.st_size} bytes, the client {size}: not the same file")
        except OSError as exc:
            problems.append(f"cannot see the input {path}: {exc.strerror or exc} "
                            "(share it, or map the path with --path-map CLIENT=WORKER)")
    if models_dir is not None and not Path(models_dir).is_dir():
        problems.append(f"has no models folder {models_dir}")
    return problems
