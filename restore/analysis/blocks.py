"""Block-wise arithmetic over whole songs and the dB conventions every measure shares.

Whole-song passes work in blocks of BLOCK frames on float32 so that an hour-long song costs
no full-size float64 copy. A level ratio whose numerator is zero reads FLOOR_DB (-200 dB)
rather than -inf, which JSON cannot hold. Imports only restore.audio.
"""
from __future__ import annotations

import math

import numpy as np

from restore.audio import Audio

FLOOR_DB = -200.0        # what a zero level reads as a ratio in dB (JSON has no -inf)
BAND_EDGES = (0, 250, 1000, 4000, 8000, 12000, 16000, 20000, 24000)  # Hz, for per-band figures
BLOCK = 1 << 16         # frames per block in whole-song passes: bounds the temporary copies


def ratio_db(ratio: float, unit: float = 10.0) -> float:
    """unit * log10(ratio) (10 for energies, 20 for amplitudes); FLOOR_DB for zero."""
    return max(unit * math.log10(ratio), FLOOR_DB) if ratio > 0 else FLOOR_DB


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of a * b over all elements, in float64. einsum, not BLAS: BLAS threads spin and
    stall while another process holds the cores (a 4-minute song took seconds, not ms)."""
    return float(np.einsum("i,i->", a.ravel(), b.ravel(), dtype=np.float64))


def spans(frames: int, size: int = BLOCK):
    for start in range(0, frames, size):
        yield start, min(start + size, frames)


def band_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def bands(edges, rate: int) -> list[tuple[str, float, float]]:
    """(label, lo, hi) for each band that starts below Nyquist; the top one is cut at Nyquist
    (its label keeps the nominal edges, so that songs at 44.1 and 48 kHz share keys)."""
    nyquist = rate / 2
    return [(band_label(lo, hi), lo, min(hi, nyquist)) for lo, hi in zip(edges[:-1], edges[1:]) if lo < nyquist]


def resample(audio: Audio, rate: int) -> Audio:
    """`audio` at `rate` Hz (soxr, very high quality, linear phase); the same object if it is
    already there."""
    if audio.rate == rate:
        return audio
    import soxr

    out = soxr.resample(np.ascontiguousarray(audio.samples.T), audio.rate, rate, quality="VHQ")
    return Audio(np.ascontiguousarray(np.asarray(out, np.float32).reshape(-1, audio.channels).T), rate)



def energy(audio: Audio) -> float:
    """Sum of squares over all channels and frames (float64, in blocks)."""
    x = audio.samples
    return sum(dot(x[:, s:e], x[:, s:e]) for s, e in spans(audio.frames))
