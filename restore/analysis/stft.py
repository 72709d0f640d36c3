"""The one short-time Fourier transform: periodic Hann window of n_fft frames, hop
n_fft / 4, the signal padded with n_fft - hop zeros before and after, so that every sample
is seen by exactly four frames and the squared windows sum to the constant 1.5:
istft(stft(x), n) == x within rounding. The offline restore works in it at 1024 points in
float32 (`OFFLINE`); the ghost at 2048 points in float64 (`GHOST`), a batch of frames at a
time for long songs.

Scale: |X|^2 / norm reads 1.0 (0 dB) for a full-scale sine's bin, as the quality
measures' STFT does, so that levels here and there are the same numbers.
"""
from __future__ import annotations

import numpy as np


class Stft:
    """Frame t of a signal starts at sample t * hop - pad (pad = n_fft - hop)."""

    def __init__(self, n_fft: int, dtype=np.float32):
        if n_fft % 4:
            raise ValueError(f"n_fft must be a multiple of 4, got {n_fft}")
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.pad = n_fft - self.hop
        self.dtype = np.dtype(dtype)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(self.dtype)
        self.norm = float((self.window.sum() / 2) ** 2)
        self.wola = float((self.window ** 2).sum() / self.hop)   # 1.5: the squared windows' sum over the hops

    def frame_count(self, n: int) -> int:
        """Frames the STFT of n samples has (0 for n == 0)."""
        return (n + self.pad - 1) // self.hop + 1 if n else 0

    def padded(self, channels: int, n: int, dtype=None) -> np.ndarray:
        """Zeros to overlap-add the frames of an n-sample signal into (padded coordinates)."""
        return np.zeros((channels, (self.frame_count(n) - 1) * self.hop + self.n_fft if n else 0), dtype or self.dtype)

    def analyse(self, x: np.ndarray, f0: int, f1: int) -> np.ndarray:
        """Spectra of frames f0..f1-1 of x [channels, n] (zero-padded):
        complex [channels, f1 - f0, n_fft // 2 + 1]."""
        n = x.shape[1]
        lo, hi = f0 * self.hop - self.pad, (f1 - 1) * self.hop + self.n_fft - self.pad
        seg = np.zeros((x.shape[0], hi - lo), self.dtype)
        a, b = max(lo, 0), min(hi, n)
        if b > a:
            seg[:, a - lo:b - lo] = x[:, a:b]
        frames = np.lib.stride_tricks.sliding_window_view(seg, self.n_fft, axis=1)[:, ::self.hop]
        return np.fft.rfft(frames * self.window, axis=-1)

    def overlap_add(self, spec: np.ndarray, f0: int, out: np.ndarray) -> None:
        """The windowed inverse of frames f0.. (complex [channels, count, bins]) added into
        `out` [channels, padded length] (see `padded`)."""
        channels, count, _ = spec.shape
        blocks = np.fft.irfft(spec, n=self.n_fft, axis=-1).astype(self.dtype, copy=False)
        blocks = blocks * (self.window / self.dtype.type(self.wola))
        # Four interleaved passes: within a pass the frames do not overlap, so one reshape adds them.
        for phase in range(4):
            sel = blocks[:, phase::4]
            if sel.shape[1]:
                start = (f0 + phase) * self.hop
                out[:, start:start + sel.shape[1] * self.n_fft] += sel.reshape(channels, -1)

    def stft(self, x: np.ndarray) -> np.ndarray:
        """x [channels, n] -> complex [channels, frames, n_fft // 2 + 1]."""
        return self.analyse(x, 0, self.frame_count(x.shape[1]))

    def istft(self, spec: np.ndarray, n: int) -> np.ndarray:
        """The inverse of `stft` (weighted overlap-add): [channels, n] in this STFT's dtype."""
        out = self.padded(spec.shape[0], n)
        self.overlap_add(spec, 0, out)
        return out[:, self.pad:self.pad + n]


OFFLINE = Stft(1024, np.float32)   # 23 ms at 44.1 kHz: short enough to follow a hi-hat
GHOST = Stft(2048, np.float64)
