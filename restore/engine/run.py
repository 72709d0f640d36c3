"""Run: scan -> plan -> each work item (a song, or one variant of a song) through
`engine/song.py`, in the plan's order, with each model loaded once and released after the
last item that needs it; then the summary and the compare report. One song's failure is
one line in the summary and its log; the batch goes on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
import time
import traceback
from pathlib import Path

from restore.engine import localcluster
from restore.engine.config import RunConfig
from restore.engine.locking import wait_for_free
from restore.engine.logs import LogFile, run_log
from restore.engine.markers import read_marker
from restore.engine.plan import Plan, make_plan
from restore.engine.scan import Track, scan
from restore.engine.song import SongDone, SongRun, job_lock
from restore.engine.summary import JobResult, RunSummary
from restore.errors import RestoreError, SetupError, describe_failure, describe_os_error, path_of, printable
from restore.events import Message, NullReporter, Reporter, RunStarted, SongFinished, SongStarted
from restore.io.writers import remove_stale_temps
from restore.models.cache import ModelCache
from restore.models.devices import choose_device, device_line
from restore.stages import StageEnv
from restore.stages.base import ModelStage


def plan_run(config: RunConfig) -> Plan:
    """Scan and plan; reads markers, writes nothing. Raises UsageError for bad inputs."""
    out_dir = config.out_dir.resolve()
    found = scan(config.inputs, skip_dirs=[out_dir])
    return make_plan(found, config.variants, out_dir, config.verify, config.redo, run_env(config))


def run_env(config: RunConfig) -> StageEnv:
    """The stages' environment for a run: its models folder, options and trusted files."""
    options = dict(config.stage_options)
    if config.stems_from is not None:  # the stems_from stage reads them, in place of Demucs (plan.stems_from_files)
        options["stems_from"] = {**options.get("stems_from", {}), "folder": str(config.stems_from)}
    return StageEnv(models_dir=config.models_dir, options=options,
                    trusted_model_files=tuple(config.trusted_model_files))


class RunModels:
    """The run's model-backed stages: the device is chosen and the cache made on first use,
    so a run without such stages never imports torch. Each stage is released after the
    last work item that needs it."""

    def __init__(self, config: RunConfig, stages, work: list, log):
        self.config, self.stages, self.log = config, stages, log
        self.cache: ModelCache | None = None
        # A stage that runs others inside it (route) keeps them loaded as long as itself.
        self.last_use = {step: i for i, (_, jobs) in enumerate(work) for job in jobs
                         for step in stages.steps_with_uses(job.variant)}

    def get(self, step: str):
        if self.cache is None:
            device = choose_device(self.config.device)
            self.log(f"device: {device.describe()}")
            self.cache = ModelCache(device, self.log)
        return self.cache.get(step, lambda: self.stages[step])

    def finished(self, index: int) -> None:
        for step, last in self.last_use.items():
            if last == index and self.cache is not None and step in self.cache.loaded:
                self.log(f"releasing {step}: no later song needs it")
                self.cache.release(step)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.release_all()


class LocalSongs:
    """The songs of a plan, run here in the plan's order; then the steps another run held,
    each as its claim frees up (waited for while that run lives). Iterate for SongDone."""

    def __init__(self, config: RunConfig, plan: Plan, songs: list, reporter: Reporter,
                 stop: threading.Event | None, log):
        self.config, self.plan, self.songs, self.reporter, self.stop, self.log = config, plan, songs, reporter, stop, log
        self.decoder = plan.stages["decode"]
        self.decoder.load()
        self.models = RunModels(config, plan.stages, songs, log)
        self.left: list[tuple[int, Track, list]] = []  # songs with jobs whose claim another run held
        self.current: SongRun | None = None

    def __iter__(self):
        for index, (track, jobs) in enumerate(self.songs, 1):
            yield self._song(index, track, jobs)
            self.models.finished(index - 1)
        while self.left:  # claims another run held: retried as they free up
            paths = [job_lock(self.plan.out_dir, j) for _, _, jobs in self.left for j in jobs]
            line = f"waiting for another run working on {len(paths)} step(s) of this run"
            self.log(line)
            self.reporter.handle(Message("info", f"{line} ({self.left[0][1].rel.as_posix()}"
                                                 f"{', ...' if len(paths) > 1 else ''})"))
            wait_for_free(paths, self.stop)
            if self.stop is not None and self.stop.is_set():
                raise KeyboardInterrupt
            for item in list(self.left):
                self.left.remove(item)  # back in the list if still held
                yield self._song(*item)

    def _song(self, index: int, track: Track, jobs: list) -> SongDone:
        t0 = time.monotonic()
        self.reporter.handle(SongStarted(index, track.rel.as_posix()))
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt
        self.current = SongRun(track, self.config, self.plan.out_dir, self.reporter, self.stop)
        results = self.current.run(jobs, self.decoder, self.models)
        self.current = None
        busy = {r.variant for r in results if r.status == "busy"}
        if busy:
            self.left.append((index, track, [job for job in jobs if job.variant.name in busy]))
            self.reporter.handle(Message("info", f"{track.rel.as_posix()}: another run is working on it; "
                                                 "tried again after the other songs"))
        return SongDone(track, [r for r in results if r.status != "busy"], time.monotonic() - t0, not busy)

    def unsettled(self) -> list[JobResult]:
        """After a Ctrl+C: the steps the interrupted song finished (their markers are
        written) and those still left to another run."""
        done = self.current.results if self.current is not None else []
        return done + [JobResult(t.rel.as_posix(), j.variant.name, "busy", "another run was working on it "
                                 "when this run stopped") for _, t, jobs in self.left for j in jobs]

    def model_loads(self) -> dict[str, int]:
        return dict(self.models.cache.loads) if self.models.cache is not None else {}

    def close(self) -> None:
        self.models.close()


class RunInterrupted(KeyboardInterrupt):
    """A Ctrl+C ended the run: `summary` is what it did until then, as last_run.json has it."""

    def __init__(self, summary: RunSummary):
        super().__init__()
        self.summary = summary


def run(config: RunConfig, reporter: Reporter | None = None, stop: threading.Event | None = None) -> RunSummary:
    """Execute the run described by `config`. With dry_run, only plan.
    Raises UsageError (bad inputs) or SetupError (output folder unusable) before any song
    starts; everything that goes wrong with one song ends up in the summary instead.
    A Ctrl+C raises RunInterrupted (a KeyboardInterrupt) after the song in progress is
    cleaned up (its temporary files removed, its claims released) and the partial summary,
    which it carries, is written. `stop`, once
    set (a first Ctrl+C), ends the run the same way at the next decoded block, model chunk
    or step, without killing anything mid-write."""
    reporter = reporter or NullReporter()
    plan = plan_run(config)
    summary = RunSummary(plan.out_dir, dry_run=config.dry_run, strict=config.strict and config.variants is not None)
    summary.results += [JobResult(printable(p), None, "failed", reason) for p, reason in plan.problems]
    summary.warnings = [f"{printable(p)}: {why}" for p, why in plan.warnings]
    summary.results += [JobResult(j.track.rel.as_posix(), j.variant.name, "skipped", "already done", output=str(j.output))
                        for j in plan.done_jobs]
    summary.results += [JobResult(j.track.rel.as_posix(), j.variant.name, "unavailable", j.reason)
                        for j in plan.unavailable_jobs]
    side_by_side = bool(config.cluster) or (config.jobs > 1 and len(plan.work("song")) > 1)
    songs = plan.work("song" if side_by_side else config.order)  # a cluster task is a whole song
    if not config.cluster:  # a cluster's workers choose their own devices (--jobs' are on this machine)
        _announce_device(plan, songs, config, reporter)
    _announce_estimate(plan, songs, reporter, side_by_side)
    if not side_by_side:
        _suggest_jobs(plan, songs, reporter)
    if config.dry_run:
        summary.results += [JobResult(t.rel.as_posix(), j.variant.name, "planned", j.reason, output=str(j.output))
                            for t, jobs in songs for j in jobs]
        return summary

    _prepare_out_dir(plan.out_dir)
    runlog = run_log(plan.out_dir)
    runlog.write(f"run: {len(songs)} songs with work, {len(plan.done_jobs)} steps already done, "
                 f"variants {', '.join(v.name for v in plan.variants)}, out {plan.out_dir}")
    for path in config.trusted_model_files:
        runlog.write(f"warning: --trust-model-file {path}: loaded even if it is not the published file, "
                     "unpickled in full if it needs it (that runs whatever the file names)")
    for path, reason in plan.problems:
        runlog.write(f"failed {path}: {reason}")
    for line in summary.warnings:
        runlog.write(f"warning: {line}")
    for reason in sorted({j.reason for j in plan.unavailable_jobs}):
        runlog.write(f"unavailable: {reason}")
    reporter.handle(RunStarted(len(songs), sum(len(j) for _, j in songs), len(plan.done_jobs)))
    with contextlib.ExitStack() as cluster:
        source = _song_source(config, plan, songs, reporter, stop, runlog, cluster, side_by_side)
        _run_songs(source, summary, reporter, runlog)
    if config.report:
        summary.report_error = _write_report(plan.out_dir, config, runlog, reporter)
        if summary.report_error:  # the summary says so too
            _write_summary(plan.out_dir, summary, runlog)
    return summary


def _song_source(config: RunConfig, plan: Plan, songs: list, reporter: Reporter, stop, runlog: LogFile,
                 cluster: contextlib.ExitStack, side_by_side: bool):
    """Where the songs run: here one by one, on --cluster's workers, or (--jobs N) on worker
    processes of a private cluster on this machine, which `cluster` stops at the end."""
    if not side_by_side:
        return LocalSongs(config, plan, songs, reporter, stop, runlog.write)
    from restore.engine.cluster import ClusterSongs  # imports Dask: only for --cluster and --jobs
    if config.cluster:
        return ClusterSongs(config, plan, songs, reporter, stop, runlog.write)
    address = cluster.enter_context(localcluster.local_cluster(min(config.jobs, len(songs))))
    return ClusterSongs(dataclasses.replace(config, cluster=address), plan, songs, reporter, stop, runlog.write,
                        model_resource=localcluster.MODEL_RESOURCE, local=True)


def _run_songs(source, summary: RunSummary, reporter: Reporter, runlog: LogFile) -> None:
    """Collect each song's results from `source` into the summary and the run log; on a
    Ctrl+C add what the stopped songs settled and raise RunInterrupted."""
    try:
        for done in source:
            summary.results += done.results
            for r in done.results:
                runlog.write(f"{r.status} {r.song} [{r.variant}]" + (f" on {r.worker}" if r.worker else "")
                             + (f": {r.reason}" if r.reason else ""))
            if done.finished:  # else it is counted when the steps another run held are done
                reporter.handle(SongFinished(done.track.rel.as_posix(), *_song_status(done.results), done.seconds))
    except KeyboardInterrupt:
        settled = {(r.song, r.variant) for r in summary.results}
        summary.results += [r for r in source.unsettled() if (r.song, r.variant) not in settled]
        summary.interrupted = True
        runlog.write("interrupted by the user")
        raise RunInterrupted(summary) from None
    finally:
        summary.model_loads = source.model_loads()
        source.close()
        summary.seconds = time.time() - summary.started
        _write_summary(summary.out_dir, summary, runlog)


def _write_summary(out_dir: Path, summary: RunSummary, runlog: LogFile) -> None:
    """_report/last_run.json; a failure is a line in the run log."""
    try:
        summary_path = out_dir / "_report" / "last_run.json"
        remove_stale_temps(summary_path, shared=True)  # left by a run killed while writing it
        summary.write(summary_path)
    except RestoreError as exc:
        runlog.write(f"could not write the summary: {exc.one_line()}")
    runlog.write(f"finished in {summary.seconds:.1f} s: {summary.counts()}"
                 + (f"; the compare report failed: {summary.report_error}" if summary.report_error else ""))


def _announce_device(plan: Plan, songs: list, config: RunConfig, reporter: Reporter) -> None:
    """Say where the model stages of this run will compute, before any song (and in a dry
    run): the GPU and its free memory or the CPU, the torch build, and how to fix a CPU-only
    torch beside an NVIDIA GPU. Said only when a model stage has work (it imports torch)."""
    steps = {step for _, jobs in songs for job in jobs for step in job.variant.steps}
    if any(isinstance(plan.stages[step], ModelStage) for step in steps):
        line, warning = device_line(config.device)
        reporter.handle(Message("info", f"model stages run on {line}"))
        if warning:
            reporter.handle(Message("warning", warning))


def _announce_estimate(plan: Plan, songs: list, reporter: Reporter, side_by_side: bool = False,
                       sample: int = 50) -> None:
    """Estimate the run's duration from what this output folder's finished steps cost on this
    machine: per variant, the seconds its markers record per byte of MP3 (up to `sample`
    markers a variant), times the MP3 bytes still to do. Said only where some variant to run
    has finished songs to learn from; variants without any are counted, not guessed. Songs
    run side by side (--jobs, --cluster) take less: the estimate says it is the time of one
    at a time."""
    rate: dict[str, float] = {}
    learnt_from: dict[str, int] = {}
    for variant in {job.variant.name for _, jobs in songs for job in jobs}:
        seconds = size = 0.0
        done = [j for j in plan.done_jobs if j.variant.name == variant][:sample]
        for job in done:
            marker, _ = read_marker(job.marker)
            if marker is not None and isinstance(marker.get("seconds"), (int, float)):
                seconds += marker["seconds"]
                size += marker["input"]["size"]
                learnt_from[variant] = learnt_from.get(variant, 0) + 1
        if size > 0:
            rate[variant] = seconds / size
    todo = [(track, job) for track, jobs in songs for job in jobs]
    known = [rate[job.variant.name] * track.size for track, job in todo if job.variant.name in rate]
    if not known:
        return
    unknown = len(todo) - len(known)
    total = sum(known)
    when = f"{total / 60:.0f} min" if total >= 90 else f"{total:.0f} s"
    reporter.handle(Message("info", f"estimated time: about {when} for {len(known)} step(s)"
                                    + (" one song at a time (side by side: less)" if side_by_side else "")
                                    + f", from what {sum(learnt_from.values())} finished step(s) here took"
                                    + (f"; {unknown} step(s) of variants not run here before are not counted" if unknown else "")))


SUGGEST_JOBS_SONGS = 8  # a batch this long or longer, of songs without a model stage, gets the tip


def _suggest_jobs(plan: Plan, songs: list, reporter: Reporter) -> None:
    """A tip where a one-at-a-time run leaves cores idle: 4 cores or more and a batch of
    songs that run no model stage (those would run one at a time anyway)."""
    cores = os.cpu_count() or 1
    stages = plan.stages
    cpu_only = [t for t, jobs in songs
                if not any(isinstance(stages[s], ModelStage) for j in jobs for s in stages.steps_with_uses(j.variant))]
    if cores >= 4 and len({t.rel for t in cpu_only}) >= SUGGEST_JOBS_SONGS:
        missing = not localcluster.available()
        reporter.handle(Message("info", f"tip: this machine has {cores} cores and a run uses about one; "
                                        f"--jobs {cores - 1} restores up to {cores - 1} songs at once"
                                        + (' (after pip install "mp3restore[cluster]")' if missing else "")))


def _write_report(out_dir: Path, config: RunConfig, runlog: LogFile, reporter: Reporter) -> str | None:
    """The compare report; returns why it failed (the songs stay done), or None. What it
    does (each song it measures, the end) goes to the run log and, as its progress, to the
    reporter; a failure's traceback to the run log."""
    def say(line: str) -> None:
        runlog.write(line)
        reporter.handle(Message("info", line))
    try:
        from restore.report.build import build_report
        reporter.handle(Message("info", "report: building the compare report"))
        index = build_report(out_dir, config.reference, log=say, jobs=config.jobs)
        runlog.write(f"report: {index}")
    except Exception as exc:
        runlog.write(f"could not write the report: {exc.__class__.__name__}: {printable(exc)}")
        runlog.write(traceback.format_exc())
        return exc.one_line() if isinstance(exc, RestoreError) else describe_failure(exc, "building the compare report")
    return None


def _prepare_out_dir(out_dir: Path) -> None:
    """Create the output folder and prove it is writable, or raise SetupError."""
    try:
        for sub in ("_done", "_logs"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".mp3restore-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        reason, hint = describe_os_error(exc)
        raise SetupError(f"cannot write to the output folder, {reason}", path_of(exc, out_dir), hint) from exc


def _song_status(results: list[JobResult]) -> tuple[str, str]:
    failed = [r for r in results if r.status == "failed"]
    if failed:
        return "failed", failed[0].reason
    if all(r.status == "busy" for r in results):
        return "busy", results[0].reason
    return "done", ""
