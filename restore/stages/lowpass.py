"""Low-pass at the song's MP3 cutoff before AudioSR (variant 03_audiosr_lp).

AudioSR was trained on band-limited audio with a clean cliff, not on MP3's spectral
holes and the scattered bits above the encoder's lowpass; its authors advise a low-pass
first. The cut is at the cutoff the decode measured (`ctx.options["cutoff_hz"]`), or at
16 kHz, the seed's fixed fallback, when none was found; the stage logs which and records
it in ctx.facts (`lowpass_hz`, `lowpass_source`).

`lowpass()` is AudioSR 0.0.7's own filter (audiosr/lowpass.py `lowpass_filter`), written
here so that librosa is not needed: an IIR low-pass run forwards and backwards (zero
phase), a hard cut by resampling to twice the cutoff and back, and the IIR again. The
AudioSR stage uses it for the low-passed input its model is conditioned on.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from restore.audio import Audio, fit_frames
from restore.stages.base import Stage, StageContext

FALLBACK_HZ = 16000
ORDER = 8                      # AudioSR's own (utils.lowpass_filtering_prepare_inference)
FILTER_TYPES = ("butter", "cheby1", "ellip", "bessel")


def lowpass(x: np.ndarray, cutoff_hz: float, rate: int, ftype: str = "butter", order: int = ORDER) -> np.ndarray:
    """x: float [frames] or [channels, frames] at `rate` Hz -> float32, same shape, with
    nothing above int(cutoff_hz). A cutoff at or above Nyquist returns x unchanged."""
    from scipy.signal import bessel, butter, cheby1, ellip, resample_poly, sosfiltfilt

    x = np.asarray(x, dtype=np.float64)
    cutoff = int(cutoff_hz)
    if cutoff >= rate // 2:
        return x.astype(np.float32)
    hi = cutoff / (0.5 * rate)
    design = {"butter": lambda: butter(order, hi, btype="low", output="sos"),
              "cheby1": lambda: cheby1(order, 0.1, hi, btype="low", output="sos"),
              "ellip": lambda: ellip(order, 0.1, 60, hi, btype="low", output="sos"),
              "bessel": lambda: bessel(order, hi, btype="low", output="sos")}
    if ftype not in design:
        raise ValueError(f"unknown filter type {ftype!r}; known: {', '.join(design)}")
    sos = design[ftype]()
    n = x.shape[-1]
    y = sosfiltfilt(sos, x, axis=-1)
    # The hard cut: down to 2 x cutoff and back up (AudioSR's stft_hard_lowpass).
    down = int(hi * rate)
    y = resample_poly(resample_poly(y, down, rate, axis=-1), rate, down, axis=-1)
    y = fit_frames(y, n)
    y = sosfiltfilt(sos, y, axis=-1)
    return fit_frames(y, n).astype(np.float32)


class LowpassStage(Stage):
    """The low-pass before AudioSR (03_audiosr_lp). No options: the cutoff is the song's."""

    name = "lowpass"
    revision = 1

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("scipy") is None:
            return 'scipy is not installed (pip install -e ".[audiosr]", see README)'
        return None

    libraries = ("scipy", "numpy")

    def config(self) -> dict:
        # The cutoff itself is a fact of the song (the decode's), recorded in the marker's facts.
        return {"filter": "butter", "order": ORDER, "hard_cut": "resample", "fallback_hz": FALLBACK_HZ}

    def process(self, audio: Audio, ctx: StageContext) -> Audio:
        """[C, T] at any rate -> [C, T] at the same rate, nothing above the cutoff."""
        detected = ctx.options.get("cutoff_hz")
        cutoff, source = (int(detected), "detected MP3 cutoff") if detected else (FALLBACK_HZ, "fallback (no cutoff detected)")
        ctx.facts["lowpass_hz"] = cutoff
        ctx.facts["lowpass_source"] = source
        if cutoff >= audio.rate // 2:
            ctx.log(f"lowpass: {cutoff} Hz ({source}) is at or above Nyquist ({audio.rate // 2} Hz): nothing to cut")
            return audio
        ctx.log(f"lowpass: {cutoff} Hz ({source}), Butterworth order {ORDER} zero-phase + hard cut")
        return Audio(lowpass(audio.samples, cutoff, audio.rate), audio.rate)
