"""Cluster runs (`--cluster tcp://HOST:8786`): the plan's songs as Dask tasks, one per song
(all its variants, so that its decode and shared steps stay on one machine), the same
claims, markers and atomic writes as a local run (`engine/worker.py` runs `SongRun`).

The client plans, checks that every worker sees the inputs and the output folder (through
the path map), sends the songs in the plan's order, shows the workers' progress as its
own and yields each song's results as it finishes; `engine/run.py` writes the logs, the
summary and the report as for a local run. A worker that dies mid-song leaves what a
killed local run leaves (nothing half-written) and Dask gives the song to another worker.

`distributed` is imported here only, and only when `--cluster` is given.
"""
from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import restore
from restore.engine.config import RunConfig
from restore.engine.pathmap import PathMap
from restore.engine.plan import Plan
from restore.engine.scan import Track
from restore.engine.song import SongDone
from restore.engine.summary import JobResult
from restore.engine.worker import EVENT_TOPIC, STOP_EVENT, SongTask, TaskOutcome, WorkerSettings, probe, run_song
from restore.errors import SetupError, UsageError, describe_failure
from restore.events import Message, Reporter, SongProgress, SongStarted
from restore.faults import checkpoint
from restore.io.writers import write_bytes_atomic
from restore.stages.base import ModelStage

WAIT_FOR_WORKERS_S = 60.0
INSTALL_HINT = 'pip install "mp3restore[cluster]" on this machine and every worker'


def connect(address: str):
    """A Dask client connected to the scheduler at `address`, or a clear error."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise UsageError("--cluster needs Dask distributed, which is not installed", None, INSTALL_HINT) from exc
    try:
        return Client(address, timeout="20s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SetupError(f"cannot reach the Dask scheduler at {address} ({exc})", None,
                         "start it with `dask scheduler` and check the address and the firewall") from exc


class ClusterSongs:
    """The songs of a plan, run on a Dask cluster. Iterate for SongDone as each song
    finishes, in whatever order they finish. `model_loads()` totals the workers'
    loads; `close()` disconnects."""

    def __init__(self, config: RunConfig, plan: Plan, songs: list[tuple[Track, list]], reporter: Reporter,
                 stop, log, model_resource: str = "GPU", local: bool = False):
        """`model_resource`: the worker resource a song with a model stage asks for, when some
        worker offers it. `local`: the cluster is `--jobs`' own (engine/localcluster.py)."""
        self.config, self.plan, self.songs, self.reporter, self.stop, self.log = config, plan, songs, reporter, stop, log
        self.model_resource, self.local = model_resource, local
        self.paths = PathMap.parse(config.path_map)
        self.run_id = uuid.uuid4().hex[:12]
        self.loads: dict[str, dict[str, int]] = {}   # worker -> its process's loads per stage
        self.client = connect(config.cluster)
        self.events: queue.Queue = queue.Queue()
        self.stopped_results: list[JobResult] = []
        try:
            self._check_workers()
        except BaseException:
            self.client.close()
            raise
        self.settings = WorkerSettings(
            run_id=self.run_id, out_dir=self.paths.to_worker(plan.out_dir), variants=tuple(plan.variants),
            verify=config.verify, redo=config.redo, accept_damaged=config.accept_damaged, debug=config.debug,
            device=config.device, models_dir=self._mapped(config.models_dir), stems_from=self._mapped(config.stems_from),
            stage_options=config.stage_options,
            trusted_model_files=tuple(self.paths.to_worker(p) for p in config.trusted_model_files),
            tag_codepage=config.tag_codepage)

    def _mapped(self, path) -> str | None:
        return None if path is None else self.paths.to_worker(Path(path).resolve())

    # -- before any work -------------------------------------------------------------------

    def _check_workers(self) -> None:
        """Wait for a worker, then ask every worker whether it sees the output folder (a file
        written here, read there), one input per input folder, and the models folder; raise
        SetupError naming each worker and what it cannot see. Notes whether any offers a GPU."""
        try:
            self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except TimeoutError as exc:
            raise SetupError(f"no worker joined the Dask scheduler at {self.config.cluster} in "
                             f"{WAIT_FOR_WORKERS_S:.0f} s", None,
                             f"start one: dask worker {self.config.cluster} --nthreads 1") from exc
        workers = self.client.scheduler_info()["workers"]
        token = uuid.uuid4().hex
        token_file = self.plan.out_dir / "_logs" / f".cluster-check-{self.run_id}"
        write_bytes_atomic(token_file, token.encode(), "writing the cluster check file")
        roots: dict[Path, Track] = {}
        for track, _ in self.songs:
            roots.setdefault(track.path.parents[len(track.rel.parts) - 1], track)
        inputs = [(self.paths.to_worker(t.path), t.size) for t in roots.values()]
        try:
            answers = self.client.run(probe, self.paths.to_worker(self.plan.out_dir), self.paths.to_worker(token_file),
                                      token, inputs, self._mapped(self.config.models_dir), restore.__version__,
                                      on_error="return")
        finally:
            token_file.unlink(missing_ok=True)
        problems = []
        for address, lines in sorted(answers.items()):
            if isinstance(lines, BaseException):  # e.g. mp3restore is not installed there
                lines = [f"cannot run mp3restore ({type(lines).__name__}: {lines}): {INSTALL_HINT}"]
            problems += [f"worker {_name(workers, address)}: {line}" for line in lines]
        if problems:
            raise SetupError("some cluster workers cannot run this batch: " + "; ".join(problems), None,
                             "every worker must see the inputs and the output folder at the same path, "
                             "or give --path-map CLIENT_PATH=WORKER_PATH")
        offering = [a for a, w in workers.items() if w.get("resources", {}).get(self.model_resource)]
        self.gpu_offered = bool(offering)
        if self.local:
            line = (f"{len(workers)} songs at once (worker processes on this machine, {self.config.cluster}); "
                    "songs with a model stage one at a time")
            self.log(line)
            self.reporter.handle(Message("info", line))
            return
        self.log(f"cluster {self.config.cluster}: {len(workers)} worker(s), {len(offering)} with a GPU resource")
        self.reporter.handle(Message("info", f"cluster {self.config.cluster}: {len(workers)} worker(s), "
                                             f"{len(offering)} offering a GPU"))

    def _resources(self, jobs: list) -> dict | None:
        """A song with a model stage asks for a GPU when some worker offers one; any other
        song runs on any worker."""
        return {self.model_resource: 1} if self.gpu_offered and self._needs_model(jobs) else None

    # -- the work --------------------------------------------------------------------------

    def __iter__(self):
        from distributed import Event, Future
        # One queue for what the workers say and for finished tasks, so the loop wakes for
        # either; the timeout is only for noticing a stop request (Ctrl+C).
        self.client.subscribe_topic(EVENT_TOPIC + self.run_id, lambda event: self.events.put(event[1]))
        if not self.gpu_offered and any(self._needs_model(jobs) for _, jobs in self.songs):
            self.reporter.handle(Message("warning", "no cluster worker offers a GPU (dask worker ... --resources GPU=1): "
                                                    "model stages run on whichever worker gets the song"))
        pending = {}
        for index, (track, jobs) in enumerate(self.songs, 1):
            pending[self._submit(index, track, jobs)] = _Sent(index, track, jobs, time.monotonic())
        stopping = False
        while pending:
            if self.stop is not None and self.stop.is_set() and not stopping:
                stopping = True
                Event(STOP_EVENT + self.run_id, client=self.client).set()
                self._cancel_queued(pending)
            try:
                item = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if not isinstance(item, Future):
                self._show(item)
                continue
            if item not in pending:
                continue
            sent = pending.pop(item)
            outcome = self._outcome(item, sent.track, sent.jobs)
            if outcome.stopped:  # the steps it finished before the stop count; the rest is for a rerun
                self.stopped_results += sent.earlier + outcome.results
                continue
            self.loads[outcome.worker] = outcome.model_loads
            busy = [r for r in outcome.results if r.status == "busy"]
            if busy and not sent.retry and not stopping:
                # Another run held it: ask again, waiting for the claims while their holder
                # lives (the OS frees a claim when its run dies), behind the songs queued.
                wanted = {r.variant for r in busy}
                again = [j for j in sent.jobs if j.variant.name in wanted]
                kept = [r for r in outcome.results if r.status != "busy"]
                future = self._submit(sent.index, sent.track, again, wait=True, after=len(self.songs))
                pending[future] = _Sent(sent.index, sent.track, again, sent.t0, kept, retry=True)
                continue
            checkpoint("cluster-song-done")
            yield SongDone(sent.track, sent.earlier + outcome.results, time.monotonic() - sent.t0)
        while not self.events.empty():
            item = self.events.get_nowait()
            if not isinstance(item, Future):
                self._show(item)
        if stopping:
            raise KeyboardInterrupt

    def _needs_model(self, jobs: list) -> bool:
        """Whether a step of these jobs (or a stage one runs inside it) is a model stage."""
        stages = self.plan.stages
        return any(isinstance(stages[s], ModelStage) for job in jobs for s in stages.steps_with_uses(job.variant))

    def _submit(self, index: int, track: Track, jobs: list, wait: bool = False, after: int = 0):
        task = SongTask(index, self.paths.to_worker(track.path), track.rel.as_posix(),
                        tuple(j.variant.name for j in jobs), wait_for_claims=wait)
        future = self.client.submit(run_song, self.settings, task, key=f"mp3restore-{self.run_id}-{index}-{int(wait)}",
                                    resources=self._resources(jobs), priority=-(index + after), pure=False)
        future.add_done_callback(self.events.put)
        return future

    def _outcome(self, future, track: Track, jobs: list) -> "TaskOutcome":
        """The task's outcome, its outputs named as the client sees them; a task that failed
        as a whole (its worker died too often, a bug) fails each of its variants."""
        song = track.rel.as_posix()
        if future.cancelled():
            return TaskOutcome("", [], {}, stopped=True)
        try:
            outcome: TaskOutcome = future.result()
        except Exception as exc:
            from distributed.scheduler import KilledWorker
            if isinstance(exc, KilledWorker):
                reason = ("every worker that took it died (the song may crash the engine or exhaust memory); "
                          "see the workers' logs")
            else:
                reason = describe_failure(exc, "running it on the cluster")
            self.log(f"failed {song} on the cluster: {reason}")
            return TaskOutcome("", [JobResult(song, j.variant.name, "failed", reason) for j in jobs], {})
        outcome.results = [replace(r, output=self.paths.to_client(r.output)) if r.output else r for r in outcome.results]
        return outcome

    def _cancel_queued(self, pending: dict) -> None:
        """Cancel the songs no worker has started; the running ones stop at their next block."""
        running = {key for keys in self.client.processing().values() for key in keys}
        queued = [f for f in pending if f.key not in running]
        if queued:
            self.client.cancel(queued)

    def _show(self, data: dict) -> None:
        """Show an event a worker sent, as a local run's own."""
        data = dict(data)
        kind, worker = data.pop("event"), data.pop("by")
        data.pop("worker", None)  # the address distributed adds
        if kind == "SongStarted":
            self.log(f"{worker}: started {data['song']}")
            self.reporter.handle(SongStarted(**data))
        elif kind == "SongProgress":
            self.reporter.handle(SongProgress(**data))
        elif kind == "Message":
            if data["level"] == "debug":
                self.log(data["text"])
            if data["level"] != "debug" or self.config.debug:
                self.reporter.handle(Message(**data))

    # -- after -----------------------------------------------------------------------------

    def unsettled(self) -> list[JobResult]:
        """After a stop: the steps the stopped songs finished (their markers are written)."""
        return list(self.stopped_results)

    def model_loads(self) -> dict[str, int]:
        """Loads per stage, summed over the workers (each keeps its models across songs)."""
        total: dict[str, int] = {}
        for loads in self.loads.values():
            for stage, n in loads.items():
                total[stage] = total.get(stage, 0) + n
        return total

    def close(self) -> None:
        for worker, loads in sorted(self.loads.items()):
            if loads:
                self.log(f"{worker}: model loads {loads}")
        try:
            self.client.unsubscribe_topic(EVENT_TOPIC + self.run_id)
        except Exception:
            pass
        self.client.close()


@dataclass
class _Sent:
    """A song sent to the cluster, as the client remembers it until its results come."""

    index: int
    track: Track
    jobs: list
    t0: float
    earlier: list[JobResult] = field(default_factory=list)  # results of a first try, when retried
    retry: bool = False


def _name(workers: dict, address: str) -> str:
    info = workers.get(address, {})
    return f"{info.get('host', address)}/{info.get('name', '?')} ({address})"
