"""The short-time Fourier transform the offline restore (variant 11) works in.

Hann window of N_FFT frames, hop N_FFT / 4, float32 throughout (numpy >= 2 transforms
float32 as float32). A block of x [channels, n] is padded with N_FFT - HOP zeros at both
ends, so that every sample is seen by exactly four frames, and the window's square then
sums to the constant 1.5 everywhere in [0, n): istft(stft(x)) == x within float rounding.

Scale: |X|^2 / NORM reads 1.0 (0 dB) for a full-scale sine's bin, as restore.metrics'
STFT does, so that levels here and in the quality measures are the same numbers.
"""
from __future__ import annotations

import numpy as np

N_FFT = 1024                  # 23 ms at 44.1 kHz: short enough to follow a hi-hat
HOP = N_FFT // 4
PAD = N_FFT - HOP
WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
NORM = float((WINDOW.sum() / 2) ** 2)
_WSUM = float((WINDOW ** 2).sum() / HOP)   # 1.5: sum of the squared windows over the hops


def frame_count(n: int) -> int:
    """Frames the STFT of n samples has (0 for n == 0)."""
    return (n + PAD - 1) // HOP + 1 if n else 0


def stft(x: np.ndarray) -> np.ndarray:
    """x: float32 [channels, n] -> complex64 [channels, frames, N_FFT // 2 + 1]; frame t
    starts at sample t * HOP - PAD."""
    channels, n = x.shape
    frames = frame_count(n)
    seg = np.zeros((channels, (frames - 1) * HOP + N_FFT), np.float32)
    seg[:, PAD:PAD + n] = x
    view = np.lib.stride_tricks.sliding_window_view(seg, N_FFT, axis=1)[:, ::HOP]
    return np.fft.rfft(view * WINDOW, axis=-1).astype(np.complex64, copy=False)


def istft(spec: np.ndarray, n: int) -> np.ndarray:
    """The inverse of stft (weighted overlap-add): complex [channels, frames, bins] ->
    float32 [channels, n]."""
    channels, frames, _ = spec.shape
    out = np.zeros((channels, (frames - 1) * HOP + N_FFT), np.float32)
    blocks = np.fft.irfft(spec, n=N_FFT, axis=-1).astype(np.float32, copy=False) * (WINDOW / np.float32(_WSUM))
    # Four interleaved passes: within a pass the frames do not overlap, so one reshape adds them.
    for phase in range(4):
        sel = blocks[:, phase::4]
        count = sel.shape[1]
        if count:
            start = phase * HOP
            out[:, start:start + count * N_FFT] += sel.reshape(channels, count * N_FFT)
    return out[:, PAD:PAD + n]
