"""Sample-level measures in one pass: peak, energy, crest factor, clipping, stereo
correlation and width (float64 sums of float32 blocks). PeakMeter is the streaming peak the
decode feeds block by block."""
from __future__ import annotations

import math

import numpy as np

from restore.audio import Audio

from restore.analysis.blocks import dot, ratio_db, spans

class PeakMeter:
    """Sample peak and the count of samples beyond full scale, fed block by block."""

    def __init__(self) -> None:
        self.peak = 0.0
        self.over = 0

    def feed(self, block: np.ndarray) -> None:
        if block.size:
            a = np.abs(block)
            self.peak = max(self.peak, float(a.max()))
            self.over += int(np.count_nonzero(a > 1.0))

    @property
    def peak_dbfs(self) -> float:
        return float(20 * np.log10(self.peak)) if self.peak > 0 else float("-inf")




class Levels:
    """One pass over the song for the sample-level measures: peak, energy, clipping and
    the sums behind the stereo measures (float64 sums of float32 blocks)."""

    def __init__(self, audio: Audio, threshold: float = 0.999):
        x, frames = audio.samples, audio.frames
        self.peak, self.energy, self.clipped, self.count, self.frames = 0.0, 0.0, 0, x.size, frames
        self.stereo = audio.channels >= 2
        self.sums = np.zeros(5)  # L, R, LL, RR, LR over the first two channels
        for start, stop in spans(frames):
            block = x[:, start:stop]
            self.peak = max(self.peak, float(np.abs(block).max()))
            wide = block.astype(np.float64)
            self.energy += dot(wide, wide)
            # a run needs a neighbour: look one sample past each side of the block (past
            # the song's ends there is none: counts as not clipped)
            hot = np.zeros((block.shape[0], stop - start + 2), bool)
            lo, hi = max(start - 1, 0), min(stop + 1, frames)
            hot[:, lo - start + 1:hi - start + 1] = np.abs(x[:, lo:hi]) >= threshold
            self.clipped += int(np.count_nonzero(hot[:, 1:-1] & (hot[:, :-2] | hot[:, 2:])))
            if self.stereo:
                left, right = wide[0], wide[1]
                self.sums += (left.sum(), right.sum(), dot(left, left), dot(right, right), dot(left, right))

    def crest_db(self) -> float | None:
        return ratio_db(self.peak / math.sqrt(self.energy / self.count), 20) if self.energy > 0 else None

    def correlation(self) -> float | None:
        if not self.stereo:
            return None
        n = max(self.frames, 1)
        sl, sr, ll, rr, lr = self.sums
        var_l, var_r = ll - sl * sl / n, rr - sr * sr / n
        if var_l <= 0 or var_r <= 0:
            return None
        return float(np.clip((lr - sl * sr / n) / math.sqrt(var_l * var_r), -1.0, 1.0))

    def width_db(self) -> float | None:
        if not self.stereo:
            return None
        _, _, ll, rr, lr = self.sums
        mid, side = ll + rr + 2 * lr, ll + rr - 2 * lr  # 4x the energies of (L+R)/2 and (L-R)/2
        return ratio_db(max(side, 0.0) / mid) if mid > 0 else None




def crest_factor_db(audio: Audio) -> float | None:
    """Sample peak over RMS (all channels together), in dB; None for silence."""
    return Levels(audio).crest_db()


def stereo_correlation(audio: Audio) -> float | None:
    """Pearson correlation of left and right over the whole song: 1 for mono in two
    channels, -1 for one channel inverted, about 0 for unrelated channels. None for mono
    and for a silent channel. More than two channels: the first two."""
    return Levels(audio).correlation()


def stereo_width(audio: Audio) -> float | None:
    """Side energy over mid energy, 10*log10(E_side / E_mid) with mid = (L+R)/2 and
    side = (L-R)/2: FLOOR_DB for mono in two channels, 0 dB for unrelated channels, above
    0 for out-of-phase material. None for mono, silence, or no mid at all."""
    return Levels(audio).width_db()


def clipped_samples(audio: Audio, threshold: float = 0.999) -> int:
    """Samples at or beyond +-threshold that belong to a run of at least two in their
    channel: a lone full-scale peak is a peak, two in a row are a flat top."""
    return Levels(audio, threshold).clipped
