"""Run: scan -> plan -> for each song, claim its jobs, decode once, run each variant's
stages, write through the writers, then the marker. One song's failure is one line in
the summary and its log; the batch goes on.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
import traceback
from pathlib import Path

from restore.audio import frames_at_rate
from restore.engine.config import RunConfig
from restore.errors import RestoreError, SetupError, describe_os_error, printable
from restore.events import NullReporter, Reporter, RunStarted, SongFinished, SongProgress, SongStarted
from restore.faults import checkpoint
from restore.engine.locking import lock_path, try_claim
from restore.engine.logs import LogFile, run_log, song_log
from restore.engine.markers import check_marker, file_record, write_marker
from restore.engine.plan import Job, Plan, make_plan
from restore.engine.scan import Track, scan
from restore.models.cache import ModelCache
from restore.models.devices import choose_device
from restore.stages import StageContext, StageEnv, get_stage
from restore.audio import BlockBuffer
from restore.engine.summary import JobResult, RunSummary
from restore.io.tags import read_id3
from restore.io.writers import TMP_MARK, flac_writer, remove_stale_temps, write_flac


def plan_run(config: RunConfig) -> Plan:
    """Scan and plan; reads markers, writes nothing. Raises UsageError for bad inputs."""
    out_dir = config.out_dir.resolve()
    found = scan(config.inputs, skip_dirs=[out_dir])
    return make_plan(found, config.variants, out_dir, config.verify, config.redo, _env(config))


def _env(config: RunConfig) -> StageEnv:
    return StageEnv(models_dir=config.models_dir, options=config.stage_options,
                    trusted_model_files=tuple(config.trusted_model_files))


class RunModels:
    """The run's model-backed stages: the device is chosen and the cache made on first use,
    so a run without such stages never imports torch. Each stage is released after the
    last work item that needs it."""

    def __init__(self, config: RunConfig, work: list, log):
        self.config, self.log = config, log
        self.cache: ModelCache | None = None
        self.last_use = {step: i for i, (_, jobs) in enumerate(work) for job in jobs for step in job.variant.steps}

    def get(self, step: str):
        if self.cache is None:
            device = choose_device(self.config.device)
            self.log(f"device: {device.describe()}")
            self.cache = ModelCache(device, self.log)
        return self.cache.get(step, lambda: get_stage(step, _env(self.config)))

    def finished(self, index: int) -> None:
        for step, last in self.last_use.items():
            if last == index and self.cache is not None and step in self.cache.loaded:
                self.log(f"releasing {step}: no later song needs it")
                self.cache.release(step)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.release_all()


def run(config: RunConfig, reporter: Reporter | None = None) -> RunSummary:
    """Execute the run described by `config`. With dry_run, only plan.
    Raises UsageError (bad inputs) or SetupError (output folder unusable) before any song
    starts; everything that goes wrong with one song ends up in the summary instead.
    KeyboardInterrupt propagates after the song in progress is cleaned up (its temporary
    files removed, its claims released) and the partial summary is written."""
    reporter = reporter or NullReporter()
    plan = plan_run(config)
    summary = RunSummary(plan.out_dir, dry_run=config.dry_run)
    summary.results += [JobResult(printable(p), None, "failed", reason) for p, reason in plan.problems]
    summary.results += [JobResult(j.track.rel.as_posix(), j.variant.name, "skipped", "already done", output=str(j.output))
                        for j in plan.done_jobs]
    summary.results += [JobResult(j.track.rel.as_posix(), j.variant.name, "unavailable", j.reason)
                        for j in plan.unavailable_jobs]
    songs = plan.work(config.order)
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
    for reason in sorted({j.reason for j in plan.unavailable_jobs}):
        runlog.write(f"unavailable: {reason}")
    reporter.handle(RunStarted(len(songs), sum(len(j) for _, j in songs), len(plan.done_jobs)))
    decoder = get_stage("decode")
    decoder.load()
    models = RunModels(config, songs, runlog.write)
    try:
        for index, (track, jobs) in enumerate(songs, 1):
            t0 = time.monotonic()
            reporter.handle(SongStarted(index, track.rel.as_posix()))
            results = _run_song(track, jobs, config, plan.out_dir, decoder, models, reporter)
            models.finished(index - 1)
            summary.results += results
            for r in results:
                runlog.write(f"{r.status} {r.song} [{r.variant}]" + (f": {r.reason}" if r.reason else ""))
            reporter.handle(SongFinished(track.rel.as_posix(), *_song_status(results), time.monotonic() - t0))
    except KeyboardInterrupt:
        summary.interrupted = True
        runlog.write("interrupted by the user")
        raise
    finally:
        if models.cache is not None:
            summary.model_loads = dict(models.cache.loads)
        models.close()
        summary.seconds = time.time() - summary.started
        try:
            summary_path = plan.out_dir / "_report" / "last_run.json"
            remove_stale_temps(summary_path)  # left by a run killed while writing it
            summary.write(summary_path)
        except RestoreError as exc:
            runlog.write(f"could not write the summary: {exc.one_line()}")
        runlog.write(f"finished in {summary.seconds:.1f} s: {summary.counts()}")
    if config.report:
        _write_report(plan.out_dir, config, runlog)
    return summary


def _write_report(out_dir: Path, config: RunConfig, runlog: LogFile) -> None:
    """The compare report: a failure here is a line in the run log, never a failed run."""
    try:
        from restore.report.build import build_report
        index = build_report(out_dir, config.reference, log=runlog.write)
        runlog.write(f"report: {index}")
    except Exception as exc:
        runlog.write(f"could not write the report: {exc.__class__.__name__}: {printable(exc)}")
        runlog.write(traceback.format_exc())


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
        raise SetupError(f"cannot write to the output folder, {reason}", out_dir, hint) from exc


def _song_status(results: list[JobResult]) -> tuple[str, str]:
    failed = [r for r in results if r.status == "failed"]
    if failed:
        return "failed", failed[0].reason
    if all(r.status == "busy" for r in results):
        return "busy", results[0].reason
    return "done", ""


def _run_song(track: Track, jobs: list[Job], config: RunConfig, out_dir: Path, decoder, models: RunModels,
              reporter: Reporter) -> list[JobResult]:
    song = track.rel.as_posix()
    log = song_log(out_dir, track.rel)
    results: list[JobResult] = []
    claimed: list[tuple[Job, object]] = []
    for job in jobs:
        try:
            lock = try_claim(lock_path(out_dir, f"{job.variant.name}/{song}"))
        except OSError as exc:
            results.append(JobResult(song, job.variant.name, "failed", _reason(exc, "claiming the song", log, config.debug)))
            continue
        if lock is None:
            results.append(JobResult(song, job.variant.name, "busy", "another run is working on it"))
            continue
        # Another run may have finished it between our plan and our claim.
        if not config.redo and check_marker(job.marker, track.path, out_dir, job.config_hash, job.versions, config.verify).done:
            lock.release()
            results.append(JobResult(song, job.variant.name, "skipped", "finished by another run", output=str(job.output)))
            continue
        claimed.append((job, lock))
    if not claimed:
        return results

    log.write(f"start {track.path} -> {', '.join(j.variant.name for j, _ in claimed)} (reason: {claimed[0][0].reason})")
    jobs = [job for job, _ in claimed]
    streamed = [job for job in jobs if not job.variant.steps]  # written block by block as the decode runs
    staged = [job for job in jobs if job.variant.steps]        # need the whole song in memory
    share = 0.5 if staged else 1.0
    ctx = StageContext(
        options={"accept_damaged": config.accept_damaged},
        log=log.write,
        progress=lambda f: reporter.handle(SongProgress(song, share * f, "decode")),
    )
    t0 = time.monotonic()
    try:
        try:
            for job in jobs:
                stale = remove_stale_temps(job.output) + remove_stale_temps(job.marker) + (
                    _remove_stem_temps(job.output) if job.variant.stems else 0)
                if stale:
                    log.write(f"removed {stale} temporary file(s) left by an interrupted run")
            source_record = file_record(track.path)  # before decoding: what the markers vouch for
            tags = read_id3(track.path)
            if tags.warning:
                log.write(f"warning: {tags.warning}")
            decoding = decoder.stream(track.path, ctx)
            records, audio = _decode_once(decoding, streamed, bool(staged), tags)
            facts = decoding.facts()
        except Exception as exc:  # bad input, a full disk, or a library failing in a new way: the batch goes on
            reason = _reason(exc, "decoding" if not streamed else "decoding and writing", log, config.debug)
            return results + [JobResult(song, job.variant.name, "failed", reason) for job in jobs]
        log.write(f"decoded {facts['duration']:.2f} s, {facts['rate']} Hz, {decoding.channels} ch, "
                  f"{facts['bitrate_kbps']} kbps{' VBR' if facts['vbr'] else ''}, encoder {facts['encoder'] or 'unknown'}, "
                  f"cutoff {facts['cutoff_hz'] or 'none found'} Hz")
        for job in streamed:
            results.append(_finish_job(job, [records[job.variant.name]], facts, source_record, out_dir, log, config, t0))
        shared = SharedSteps(audio, [job.variant.steps for job in staged])
        for n, job in enumerate(staged):
            def progress(f: float, n: int = n, name: str = job.variant.name) -> None:
                reporter.handle(SongProgress(song, 0.5 + 0.5 * (n + f) / len(staged), name))
            stage_ctx = StageContext(options={"cutoff_hz": facts["cutoff_hz"]}, log=log.write, progress=progress)
            results.append(_run_staged_job(job, shared, facts, tags, source_record, out_dir, log, config, models, stage_ctx))
            shared.finished(job.variant.steps)
        return results
    finally:
        for _, lock in claimed:
            lock.release()


def _remove_stem_temps(folder: Path) -> int:
    """Temporary stem files left in a song's stems folder by an interrupted run (the stem
    names depend on the model, so sweep the folder rather than name them)."""
    removed = 0
    for path in folder.glob(f"*{TMP_MARK}*") if folder.is_dir() else ():
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def _tags_for(job: Job, tags):
    tagset = tags if job.variant.keeps_loudness else tags.without_loudness_tags()
    return tagset.with_provenance(job.variant.name, job.track.path.name)


def _decode_once(decoding, streamed: list[Job], keep_audio: bool, tags):
    """One pass over the decode: each block goes to every streamed job's FLAC writer and,
    when a staged job needs it, into one in-memory buffer. Returns ({variant: writer
    record}, Audio or None). Any failure aborts every writer (no file appears)."""
    buffer = BlockBuffer(decoding.channels, decoding.max_frames) if keep_audio else None
    with contextlib.ExitStack() as stack:
        sinks = {job.variant.name: stack.enter_context(
                     flac_writer(job.output, decoding.rate, decoding.channels, _tags_for(job, tags), job.variant.bits))
                 for job in streamed}
        for block in decoding:
            for sink in sinks.values():
                sink.write(block)
            if buffer is not None:
                buffer.append(block)
    return {name: sink.record for name, sink in sinks.items()}, (buffer.audio(decoding.rate) if buffer else None)


class SharedSteps:
    """The intermediate results of one song that more than one of its variants start
    with: `10_denoise_audiosr` (denoise, bwe_audiosr) reuses the denoise `09_denoised`
    made. A result is kept only while a later variant of the song still needs it, so
    memory holds at most the decode plus the shared prefixes in use."""

    def __init__(self, decoded, pipelines: list[tuple[str, ...]]):
        self.results: dict[tuple[str, ...], tuple[object, dict]] = {(): (decoded, {})}
        self.pending = list(pipelines)

    def start(self, steps: tuple[str, ...]) -> tuple[int, object, dict]:
        """(how many of `steps` are already done, their result, the facts they recorded)."""
        for k in range(len(steps), -1, -1):
            if steps[:k] in self.results:
                audio, facts = self.results[steps[:k]]
                return k, audio, dict(facts)
        raise AssertionError("the decode is always kept")

    def keep(self, prefix: tuple[str, ...], audio, facts: dict) -> None:
        """Keep a step's result if a variant still to run starts with the same steps."""
        if any(p[:len(prefix)] == prefix for p in self.pending[1:]):
            self.results[prefix] = (audio, dict(facts))

    def finished(self, steps: tuple[str, ...]) -> None:
        self.pending.remove(steps)
        for prefix in [p for p in self.results if p]:
            if not any(q[:len(prefix)] == prefix for q in self.pending):
                del self.results[prefix]


def _run_staged_job(job: Job, shared: SharedSteps, facts: dict, tags, source_record: dict, out_dir: Path,
                    log: LogFile, config: RunConfig, models: RunModels, ctx: StageContext) -> JobResult:
    """Run a variant's stages on the decoded song (starting after the steps another variant
    of the song already ran), write it, then its marker."""
    t0 = time.monotonic()
    steps = job.variant.steps
    try:
        done, audio, ctx.facts = shared.start(steps)
        if done:
            log.write(f"{job.variant.name}: reusing {', '.join(steps[:done])} from an earlier variant of this song")
        for k, step in enumerate(steps[done:], done + 1):
            before = audio
            audio = models.get(step).process(audio, ctx)
            for out in (audio.values() if isinstance(audio, dict) else (audio,)):
                if out.channels != before.channels or out.frames != frames_at_rate(before.frames, before.rate, out.rate):
                    raise RuntimeError(f"stage {step} changed the channels or the duration: {before.channels} ch, "
                                       f"{before.frames} frames at {before.rate} Hz -> {out.channels} ch, "
                                       f"{out.frames} frames at {out.rate} Hz")
            if isinstance(audio, dict) and k < len(steps):
                raise RuntimeError(f"stage {step} returned stems, so it must be the last step of {job.variant.name}")
            shared.keep(steps[:k], audio, ctx.facts)
        if job.variant.stems:
            records = _write_stems(job, audio, _tags_for(job, tags), log)
        else:
            if isinstance(audio, dict):
                raise RuntimeError(f"{job.variant.name} is not a stems variant, but its last stage returned stems")
            records = [write_flac(audio, job.output, _tags_for(job, tags), job.variant.bits)]
    except Exception as exc:  # one variant failing must not stop the others or the batch
        return JobResult(job.track.rel.as_posix(), job.variant.name, "failed",
                         _reason(exc, f"making {job.variant.name}", log, config.debug), time.monotonic() - t0)
    return _finish_job(job, records, facts, source_record, out_dir, log, config, t0, ctx.facts)


def _write_stems(job: Job, stems, tags, log: LogFile) -> list[dict]:
    """Write {stem: Audio} as <song folder>/<stem>.flac, each atomically. Stems an earlier
    run wrote that this one does not (another model's guitar and piano) are removed once
    the new set is in place, so the folder never mixes two separations."""
    if not isinstance(stems, dict) or not stems:
        raise RuntimeError(f"{job.variant.name} is a stems variant, but its last stage returned no stems")
    records = []
    for name, stem in stems.items():
        records.append(write_flac(stem, job.output / f"{name}.flac", tags.with_stem(name), job.variant.bits))
    wanted = {f"{name}.flac" for name in stems}
    for old in sorted(job.output.glob("*.flac")):
        if old.name not in wanted and TMP_MARK not in old.name:
            old.unlink()
            log.write(f"removed {old.name}: a stem of an earlier separation")
    return records


def _finish_job(job: Job, records: list[dict], facts: dict, source_record: dict, out_dir: Path, log: LogFile,
                config: RunConfig, t0: float | None = None, stage_facts: dict | None = None) -> JobResult:
    """The output is in place: write the marker that makes it count as done."""
    song, name = job.track.rel.as_posix(), job.variant.name
    t0 = time.monotonic() if t0 is None else t0
    clipped = sum(r["clipped"] for r in records)
    if clipped:
        log.write(f"warning: {clipped} samples above full scale were clipped in {name}")
    try:
        checkpoint("after-output")
        write_marker(job.marker, variant=name, rel=job.track.rel, source_record=source_record,
                     cfg_hash=job.config_hash, config=job.config, versions=job.versions, outputs=records,
                     out_dir=out_dir, facts={**facts, "clipped_on_write": clipped},
                     seconds=time.monotonic() - t0, stage_facts=stage_facts)
    except Exception as exc:
        return JobResult(song, name, "failed", _reason(exc, f"writing the marker of {name}", log, config.debug))
    log.write(f"done {name} -> {job.output}")
    return JobResult(song, name, "done", "", time.monotonic() - t0, str(job.output), {**facts, **(stage_facts or {})})


def _reason(exc: BaseException, doing: str, log: LogFile, debug: bool) -> str:
    """One line for the summary; the song's log gets the line and, for surprises, the traceback."""
    if isinstance(exc, RestoreError):
        reason = exc.reason()
    elif isinstance(exc, MemoryError):
        reason = f"out of memory while {doing}"
    elif isinstance(exc, OSError):
        what, hint = describe_os_error(exc)
        reason = f"{doing} failed, {what}" + (f" ({hint})" if hint else "")
    else:
        reason = f"internal error while {doing}: {exc.__class__.__name__}: {printable(exc)}"
    log.write(f"failed: {reason}")
    if not isinstance(exc, RestoreError):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.write(tb)
        if debug:
            print(tb)
    return reason
