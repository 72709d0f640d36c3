"""One song's work: claim its jobs, decode once, run each variant's stages (sharing the steps
variants start with), write through the writers, then the markers. A staged variant's files
and marker are written on a thread while the next variant computes (engine/writebehind.py).

`SongRun` holds what every step of the song needs (the track, its log, its tags, the
record of the input the markers vouch for, the decode's facts) so that no step passes them
around by hand; `engine/run.py` decides the order and the models' lifetime around it.
"""
from __future__ import annotations

import contextlib
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from restore.audio import Audio, BlockBuffer, frames_at_rate
from restore.engine.config import RunConfig
from restore.engine.locking import lock_path, try_claim
from restore.engine.logs import LogFile, song_log
from restore.engine.markers import check_marker, file_record, write_marker
from restore.engine.plan import Job
from restore.engine.scan import Track
from restore.engine.summary import JobResult
from restore.engine.writebehind import WriteBehind
from restore.errors import RestoreError, describe_failure
from restore.events import Message, Reporter, SongProgress
from restore.faults import checkpoint
from restore.io.tags import TagSet, read_id3
from restore.io.writers import flac_writer, remove_stale_temps, remove_temps_in, write_flac, TMP_MARK
from restore.stages import StageContext


# A variant's output is written behind (engine/writebehind.py) while the next variant computes
# only if the song's other variants keep it anyway or it is at most this big: beside the next
# variant's work it is one more copy of the song in memory (a 20-minute song with 09 and 11:
# peak RSS 1230 -> 1635 MiB when written behind). 512 MiB is about 25 minutes of stereo
# 44.1 kHz float32; a longer song's variants are written in line, as before.
WRITE_BEHIND_BYTES = 512 << 20


def _nbytes(output) -> int:
    """Bytes of a stage's output: Audio, or {stem: Audio}."""
    return sum(a.samples.nbytes for a in output.values()) if isinstance(output, dict) else output.samples.nbytes


@dataclass
class SongDone:
    """What a song source yields: a song's settled results. `finished` is False while some
    of its steps wait for another run's claim (they come in a later SongDone)."""

    track: Track
    results: list[JobResult]
    seconds: float
    finished: bool = True


def job_lock(out_dir: Path, job: Job) -> Path:
    """Where the claim of one (song, variant) job lives."""
    return lock_path(out_dir, f"{job.variant.name}/{job.track.rel.as_posix()}")


@dataclass
class SongRun:
    """One song of a run, from its claims to its markers."""

    track: Track
    config: RunConfig
    out_dir: Path
    reporter: Reporter
    stop: threading.Event | None = None  # set by a first Ctrl+C: stop at the next block, chunk or step
    log: LogFile = field(init=False)
    tags: TagSet | None = None        # read from the MP3 before decoding
    source_record: dict | None = None  # the input as the markers vouch for it (size, mtime, hash)
    facts: dict = field(default_factory=dict)  # what the decode found (rate, cutoff, encoder, ...)
    step: str = ""                    # the stage at work now, for progress
    results: list[JobResult] = field(default_factory=list)  # settled so far: kept if a Ctrl+C ends the song
    _thread: threading.Thread = field(init=False)   # the one that may talk to the reporter
    _held: list = field(default_factory=list)       # events from the writing thread, reported when its job settles

    def __post_init__(self) -> None:
        self.log = song_log(self.out_dir, self.track.rel)
        self._thread = threading.current_thread()

    @property
    def name(self) -> str:
        return self.track.rel.as_posix()

    # -- claims ----------------------------------------------------------------------------

    def claim(self, jobs: list[Job]) -> tuple[list[tuple[Job, object]], list[JobResult]]:
        """Claim each job's lock: (claimed jobs with their locks, results for the others:
        busy in another run, finished by another run since the plan, or unclaimable)."""
        claimed, results = [], []
        for job in jobs:
            try:
                lock = try_claim(job_lock(self.out_dir, job))
            except OSError as exc:
                results.append(self.result(job, "failed", self.failure(exc, "claiming the song")))
                continue
            if lock is None:
                results.append(self.result(job, "busy", "another run is working on it"))
                continue
            # Another run may have finished it between our plan and our claim.
            if not self.config.redo and check_marker(job.marker, self.track.path, self.out_dir, job.config_hash,
                                                     job.versions, self.config.verify).done:
                lock.release()
                results.append(self.result(job, "skipped", "finished by another run", output=str(job.output)))
                continue
            claimed.append((job, lock))
        return claimed, results

    # -- the work --------------------------------------------------------------------------

    def run(self, jobs: list[Job], decoder, models) -> list[JobResult]:
        """Every claimed job of the song: decode once (streamed variants written as it goes),
        then each staged variant. One variant failing never stops the others."""
        claimed, self.results = self.claim(jobs)
        if not claimed:
            return self.results
        behind: WriteBehind[JobResult] = WriteBehind()
        try:
            jobs = [job for job, _ in claimed]
            self.log.write(f"start {self.track.path} -> {', '.join(j.variant.name for j in jobs)} "
                           f"(reason: {jobs[0].reason})")
            self._run_claimed(jobs, decoder, models, behind)
        finally:
            try:
                # The write in flight ends (file and marker) before the claims go, after a Ctrl+C too.
                self._settle(behind.close())
            finally:
                for _, lock in claimed:
                    lock.release()
        return self.results

    def _run_claimed(self, jobs: list[Job], decoder, models, behind: WriteBehind) -> None:
        """Add each job's result to `self.results` as soon as it is settled (a staged one's
        once its files are written: on `behind`'s thread, while the next one computes)."""
        streamed = [job for job in jobs if not job.variant.steps]  # written block by block as the decode runs
        staged = [job for job in jobs if job.variant.steps]        # need the whole song in memory
        share = 0.5 if staged else 1.0
        ctx = StageContext(options={"accept_damaged": self.config.accept_damaged}, log=self.say,
                           progress=lambda f: self.progress(share * f, "decode"))
        t0 = time.monotonic()
        try:
            for job in jobs:
                stale = remove_stale_temps(job.output) + remove_stale_temps(job.marker) + (
                    remove_temps_in(job.output) if job.variant.stems else 0)
                if stale:
                    self.log.write(f"removed {stale} temporary file(s) left by an interrupted run")
            self.source_record = file_record(self.track.path)  # before decoding: what the markers vouch for
            self.tags = read_id3(self.track.path, self.config.tag_codepage)
            if self.tags.warning:
                self.say(f"warning: {self.tags.warning}")
            decoding = decoder.stream(self.track.path, ctx)
            records, audio = self._decode_once(decoding, streamed, keep_audio=bool(staged))
            self.facts = decoding.facts()
        except Exception as exc:  # bad input, a full disk, or a library failing in a new way: the batch goes on
            reason = self.failure(exc, "decoding" if not streamed else "decoding and writing")
            self.results += [self.result(job, "failed", reason) for job in jobs]
            return
        f = self.facts
        self.log.write(f"decoded {f['duration']:.2f} s, {f['rate']} Hz, {decoding.channels} ch, "
                       f"{f['bitrate_kbps']} kbps{' VBR' if f['vbr'] else ''}, encoder {f['encoder'] or 'unknown'}, "
                       + (f"cutoff {f['cutoff_hz']} Hz" if f["cutoff_hz"] else "no cutoff found"))
        for job in streamed:
            self.results.append(self.finish(job, [records[job.variant.name]], t0))
        shared = SharedSteps(audio, [job.variant.steps for job in staged])
        for n, job in enumerate(staged):
            self.stopping()
            def progress(fraction: float, n: int = n, name: str = job.variant.name) -> None:
                self.progress(0.5 + 0.5 * (n + fraction) / len(staged), f"{name}: {self.step} {100 * fraction:.0f}%")
            stage_ctx = StageContext(options={"cutoff_hz": f["cutoff_hz"], "bitrate_kbps": f["bitrate_kbps"], "song": self.name},
                                     log=self.say, progress=progress, source=audio, loaded=models.get)
            made = self._run_stages(job, shared, models, stage_ctx)
            shared.finished(job.variant.steps)
            self._settle(behind.wait())          # the previous variant's write, which ran beside this one's stages
            if isinstance(made, JobResult):
                self.results.append(made)
            elif n + 1 < len(staged) and (shared.holds(made[0]) or _nbytes(made[0]) <= WRITE_BEHIND_BYTES):
                behind.submit(lambda job=job, made=made, facts=stage_ctx.facts: self._write(job, *made, facts))
            else:  # the last variant (nothing to overlap), or a long song's output: held no longer than in line
                self.results.append(self._write(job, *made, stage_ctx.facts))

    def _decode_once(self, decoding, streamed: list[Job], keep_audio: bool):
        """One pass over the decode: each block goes to every streamed job's FLAC writer and,
        when a staged job needs it, into one in-memory buffer. Returns ({variant: writer
        record}, Audio or None). Any failure aborts every writer (no file appears)."""
        buffer = BlockBuffer(decoding.channels, decoding.max_frames) if keep_audio else None
        with contextlib.ExitStack() as stack:
            sinks = {job.variant.name: stack.enter_context(
                         flac_writer(job.output, decoding.rate, decoding.channels, self.tags_for(job), job.variant.bits))
                     for job in streamed}
            for block in decoding:
                for sink in sinks.values():
                    sink.write(block)
                if buffer is not None:
                    buffer.append(block)
        return {name: sink.record for name, sink in sinks.items()}, (buffer.audio(decoding.rate) if buffer else None)

    def _run_stages(self, job: Job, shared: "SharedSteps", models, ctx: StageContext):
        """Run a variant's stages on the decoded song (starting after the steps another variant
        of the song already ran): (its output, the time it started), or its failed result."""
        t0 = time.monotonic()
        steps = job.variant.steps
        try:
            done, audio, ctx.facts = shared.start(steps)
            if done:
                self.log.write(f"{job.variant.name}: reusing {', '.join(steps[:done])} from an earlier variant of this song")
            for k, step in enumerate(steps[done:], done + 1):
                self.step = step
                before = audio
                audio = models.get(step).process(audio, ctx)
                _check_shape(step, before, audio, ctx.source)
                shared.keep(steps[:k], audio, ctx.facts)
            if job.variant.stems and (not isinstance(audio, dict) or not audio):
                raise RuntimeError(f"{job.variant.name} is a stems variant, but its last stage returned no stems")
            if not job.variant.stems and isinstance(audio, dict):
                raise RuntimeError(f"{job.variant.name} is not a stems variant, but its last stage returned stems")
        except Exception as exc:  # one variant failing must not stop the others or the batch
            return self.result(job, "failed", self.failure(exc, f"making {job.variant.name}"), time.monotonic() - t0)
        return audio, t0

    def _write(self, job: Job, audio, t0: float, facts: dict) -> JobResult:
        """Write a variant's output (Audio, or {stem: Audio}), then its marker; never raises
        (it runs on the write-behind thread)."""
        try:
            records = (self._write_stems(job, audio) if job.variant.stems
                       else [write_flac(audio, job.output, self.tags_for(job), job.variant.bits)])
        except Exception as exc:  # a full disk, a file held open: this variant fails, the batch goes on
            return self.result(job, "failed", self.failure(exc, f"writing {job.variant.name}"), time.monotonic() - t0)
        return self.finish(job, records, t0, facts)

    def _settle(self, result: JobResult | None) -> None:
        """A job from the write-behind thread is settled: its result, then what it had to say."""
        if result is not None:
            self.results.append(result)
        held, self._held = self._held, []
        for event in held:
            self.reporter.handle(event)

    def _write_stems(self, job: Job, stems: dict) -> list[dict]:
        """Write {stem: Audio} as <song folder>/<stem>.flac, each atomically. Stems an earlier
        run wrote that this one does not (another model's guitar and piano) are removed once
        the new set is in place, so the folder never mixes two separations."""
        tags = self.tags_for(job)
        records = [write_flac(stem, job.output / f"{name}.flac", tags.with_stem(name), job.variant.bits)
                   for name, stem in stems.items()]
        wanted = {f"{name}.flac" for name in stems}
        for old in sorted(job.output.glob("*.flac")):
            if old.name not in wanted and TMP_MARK not in old.name:
                old.unlink()
                self.log.write(f"removed {old.name}: a stem of an earlier separation")
        return records

    def progress(self, fraction: float, doing: str) -> None:
        """Report progress; every report (each decoded block, each model chunk) is also where a
        stop request takes effect: KeyboardInterrupt, cleaned up like a Ctrl+C."""
        self.reporter.handle(SongProgress(self.name, fraction, doing))
        self.stopping()

    def stopping(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise KeyboardInterrupt

    def say(self, line: str) -> None:
        """A line for the song's log (what stages say through ctx.log); a warning also goes to
        the reporter, so the person sees it during the run, not only in the log."""
        self.log.write(line)
        if line.startswith("warning:"):
            self._report(Message("warning", f"{self.name}: {line}"))

    def _report(self, event) -> None:
        """To the reporter, from the song's own thread; from the write-behind thread the event
        waits until its job is settled (a reporter drives a terminal or a cluster's event log,
        from one thread)."""
        if threading.current_thread() is self._thread:
            self.reporter.handle(event)
        else:
            self._held.append(event)

    # -- endings ---------------------------------------------------------------------------

    def tags_for(self, job: Job) -> TagSet:
        tagset = self.tags if job.variant.keeps_loudness else self.tags.without_loudness_tags()
        return tagset.with_provenance(job.variant.name, job.track.path.name)

    def finish(self, job: Job, records: list[dict], t0: float, stage_facts: dict | None = None) -> JobResult:
        """The output is in place: write the marker that makes it count as done."""
        clipped = sum(r["clipped"] for r in records)
        if clipped:
            self.say(f"warning: {clipped} samples above full scale were clipped in {job.variant.name}")
        try:
            checkpoint("after-output")
            write_marker(job.marker, variant=job.variant.name, rel=job.track.rel, source_record=self.source_record,
                         cfg_hash=job.config_hash, config=job.config, versions=job.versions, libraries=job.libraries, outputs=records,
                         out_dir=self.out_dir, facts={**self.facts, "clipped_on_write": clipped},
                         seconds=time.monotonic() - t0, stage_facts=stage_facts)
        except Exception as exc:
            return self.result(job, "failed", self.failure(exc, f"writing the marker of {job.variant.name}"))
        self.log.write(f"done {job.variant.name} -> {job.output}")
        return self.result(job, "done", "", time.monotonic() - t0, str(job.output), {**self.facts, **(stage_facts or {})})

    def result(self, job: Job, status: str, reason: str, seconds: float = 0.0, output: str | None = None,
               facts: dict | None = None) -> JobResult:
        return JobResult(self.name, job.variant.name, status, reason, seconds, output, facts)

    def failure(self, exc: BaseException, doing: str) -> str:
        """One line for the summary; the song's log gets it and, for surprises, the traceback,
        which also goes to the reporter as a debug Message under --debug."""
        reason = describe_failure(exc, doing)
        self.log.write(f"failed: {reason}")
        if not isinstance(exc, RestoreError):
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.log.write(tb)
            if self.config.debug:
                self._report(Message("debug", tb))
        return reason


def _check_shape(step: str, before, after, source: Audio) -> None:
    """A stage keeps the channel count and the duration (frames scale with the rate). Stems
    flow between steps as {stem: Audio}: a separating step (Audio -> stems) keeps them for
    each stem, a step on stems (stems -> stems) keeps the set of stems and each one's
    shape against what it was given (its rate may change: a bandwidth extension to 48 kHz),
    and a step that joins them (stems -> Audio) returns the song's shape: the decode's."""
    if isinstance(before, dict) and isinstance(after, dict):
        if set(after) != set(before):
            raise RuntimeError(f"stage {step} changed the set of stems: {', '.join(before)} -> {', '.join(after)}")
        pairs = [(before[name], out, f" (stem {name})") for name, out in after.items()]
    elif isinstance(before, dict):
        pairs = [(source, after, "")]
    else:
        pairs = [(before, out, f" (stem {name})" if isinstance(after, dict) else "")
                 for name, out in (after.items() if isinstance(after, dict) else [("", after)])]
    if isinstance(after, dict) and not after:
        raise RuntimeError(f"stage {step} returned no stems")
    for ref, out, which in pairs:
        if not isinstance(out, Audio):
            raise RuntimeError(f"stage {step} returned {type(out).__name__}{which}, not audio")
        if out.channels != ref.channels or out.frames != frames_at_rate(ref.frames, ref.rate, out.rate):
            raise RuntimeError(f"stage {step} changed the channels or the duration{which}: {ref.channels} ch, "
                               f"{ref.frames} frames at {ref.rate} Hz -> {out.channels} ch, "
                               f"{out.frames} frames at {out.rate} Hz")


class SharedSteps:
    """The intermediate results of one song that more than one of its variants start
    with: `10_denoise_audiosr` (denoise, bwe_audiosr) reuses the denoise `09_denoised`
    made, and 05/06/07 the separation and the routes 04/05 made. A result is kept only
    while it is the longest shared start of a variant of the song still to run, so memory
    holds at most the decode plus the shared prefixes in use (after 05 has routed the
    stems, 06 needs the routed ones, not the separation's)."""

    def __init__(self, decoded, pipelines: list[tuple[str, ...]]):
        self.results: dict[tuple[str, ...], tuple[object, dict]] = {(): (decoded, {})}
        self.pending = list(pipelines)

    def start(self, steps: tuple[str, ...]) -> tuple[int, object, dict]:
        """(how many of `steps` are already done, their result, the facts they recorded)."""
        k, prefix = self._longest(steps)
        audio, facts = self.results[prefix]
        return k, audio, dict(facts)

    def _longest(self, steps: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        for k in range(len(steps), -1, -1):
            if steps[:k] in self.results:
                return k, steps[:k]
        raise AssertionError("the decode is always kept")

    def holds(self, output) -> bool:
        """Whether `output` is kept for a variant still to run (then writing it behind costs no memory)."""
        return any(kept is output for kept, _ in self.results.values())

    def keep(self, prefix: tuple[str, ...], audio, facts: dict) -> None:
        """Keep a step's result if a variant still to run starts with the same steps."""
        if any(p[:len(prefix)] == prefix for p in self.pending[1:]):
            self.results[prefix] = (audio, dict(facts))
            self._prune(self.pending[1:])

    def finished(self, steps: tuple[str, ...]) -> None:
        self.pending.remove(steps)
        self._prune(self.pending)

    def _prune(self, still: list[tuple[str, ...]]) -> None:
        """Drop every kept result (but the decode) that is not the longest kept start of a
        variant in `still`."""
        wanted = {self._longest(q)[1] for q in still}
        for prefix in [p for p in self.results if p and p not in wanted]:
            del self.results[prefix]
