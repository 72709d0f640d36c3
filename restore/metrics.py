"""Measures of audio, in one place for the whole project (stages and report use these).

All functions take `Audio` ([channels, frames] float32) and return plain numbers.
"""
from __future__ import annotations

import numpy as np

from .audio import Audio

_N_FFT = 4096
_MAX_WINDOWS = 600     # enough for a stable average; bounds the cost on an hour-long track
_SILENT_RMS = 1e-5     # about -100 dBFS: windows quieter than this say nothing about bandwidth
_CLIFF_DB = 30.0       # an encoder's lowpass drops at least this far within a few hundred Hz


def average_spectrum_db(audio: Audio, n_fft: int = _N_FFT, max_windows: int = _MAX_WINDOWS) -> np.ndarray | None:
    """Long-term average power spectrum in dB (n_fft // 2 + 1 bins, 0..rate/2), the power of
    all channels summed, over up to `max_windows` windows spread evenly across the track and
    skipping silent ones. None when the track is (nearly) silent or shorter than one window."""
    x = audio.samples
    if audio.frames < n_fft:
        return None
    starts = np.linspace(0, audio.frames - n_fft, num=min(max_windows, audio.frames // (n_fft // 2)), dtype=np.int64)
    window = np.blackman(n_fft).astype(np.float32)  # low leakage: a real cliff is not smeared upward
    power = np.zeros(n_fft // 2 + 1, dtype=np.float64)
    used = 0
    for batch in np.array_split(starts, max(1, len(starts) // 64)):
        seg = np.stack([x[:, s:s + n_fft] for s in batch])          # [windows, channels, n_fft]
        rms = np.sqrt(np.mean(seg.astype(np.float64) ** 2, axis=(1, 2)))
        seg = seg[rms > _SILENT_RMS]
        if len(seg):
            spec = np.fft.rfft(seg * window, axis=-1)
            power += (np.abs(spec) ** 2).sum(axis=(0, 1))
            used += len(seg)
    if used == 0:
        return None
    return 10 * np.log10(power / used + 1e-30)


def effective_cutoff_hz(audio: Audio) -> float | None:
    """The frequency above which the spectrum falls away: the MP3 encoder's lowpass, or the
    top of the music's own band. It is the highest frequency with a cliff of at least 30 dB
    to everything above it (looked at 250 Hz higher up, so that the filter's slope counts).
    None when there is no such cliff (full band up to Nyquist) or the track is silent.
    Resolution is about 20 Hz; measured within 300 Hz of LAME 3.100's nominal lowpass at 128-320 kbps."""
    s_db = average_spectrum_db(audio)
    if s_db is None:
        return None
    bin_hz = audio.rate / _N_FFT
    smooth = np.convolve(s_db, np.ones(5) / 5, mode="same")
    n = len(smooth)
    below_w = max(2, int(300 / bin_hz))      # the level just under a candidate
    gap = max(1, int(250 / bin_hz))          # the filter's transition band
    # Running maximum of everything above each bin: "stays down up to Nyquist".
    ceiling_above = np.maximum.accumulate(smooth[::-1])[::-1]
    lowest = int(2000 / bin_hz)
    for k in range(n - gap - 2, lowest, -1):
        below = np.median(smooth[k - below_w:k])
        if below - ceiling_above[k + gap] >= _CLIFF_DB:
            # Refine: the last bin near k still within 15 dB of the level below it.
            window = smooth[k - below_w:k + gap]
            loud = np.nonzero(window >= below - 15.0)[0]
            edge = k - below_w + (loud[-1] if len(loud) else below_w)
            return float(round(edge * bin_hz, 1))
    return None


def peak_dbfs(audio: Audio) -> float:
    """Sample peak in dBFS (not true peak)."""
    peak = float(np.max(np.abs(audio.samples))) if audio.frames else 0.0
    return float(20 * np.log10(peak)) if peak > 0 else float("-inf")


def samples_over_full_scale(audio: Audio) -> int:
    """Samples outside +-1.0, which an integer file must clip."""
    return int(np.count_nonzero(np.abs(audio.samples) > 1.0))
