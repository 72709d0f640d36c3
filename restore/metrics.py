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


class SpectrumAccumulator:
    """Long-term average power spectrum, fed block by block (so a streamed song needs no
    full copy in memory). Windows of n_fft frames sit at up to `max_windows` positions spread
    evenly over `total_frames` (an estimate is fine: windows past the real end are never
    filled); the power of all channels is summed; windows quieter than about -100 dBFS are
    skipped. Feeding the whole song as one block gives the same result as feeding it in
    blocks of any size."""

    def __init__(self, total_frames: int, channels: int, n_fft: int = _N_FFT, max_windows: int = _MAX_WINDOWS):
        self.n_fft = n_fft
        count = min(max_windows, total_frames // (n_fft // 2)) if total_frames >= n_fft else 0
        self.starts = np.unique(np.linspace(0, total_frames - n_fft, num=count, dtype=np.int64)) if count else np.zeros(0, np.int64)
        self.next = 0
        self.carry = np.zeros((channels, 0), np.float32)  # the last n_fft-1 frames seen
        self.carry_start = 0                               # absolute frame of carry[:, 0]
        self.window = np.blackman(n_fft).astype(np.float32)  # low leakage: a cliff is not smeared upward
        self.power = np.zeros(n_fft // 2 + 1, dtype=np.float64)
        self.used = 0

    def feed(self, block: np.ndarray) -> None:
        """block: float32 [channels, n], the frames that follow the previous block."""
        buf = block if self.carry.shape[1] == 0 else np.concatenate([self.carry, block], axis=1)
        buf_start, buf_end = self.carry_start, self.carry_start + buf.shape[1]
        stop = self.next
        while stop < len(self.starts) and self.starts[stop] + self.n_fft <= buf_end:
            stop += 1
        for batch in np.array_split(self.starts[self.next:stop], max(1, (stop - self.next) // 64)):
            if len(batch):
                self._add(np.stack([buf[:, s - buf_start:s - buf_start + self.n_fft] for s in batch]))
        self.next = stop
        keep = min(self.n_fft - 1, buf.shape[1])
        self.carry = np.array(buf[:, buf.shape[1] - keep:], dtype=np.float32)
        self.carry_start = buf_end - keep

    def _add(self, seg: np.ndarray) -> None:  # seg: [windows, channels, n_fft]
        rms = np.sqrt(np.mean(seg.astype(np.float64) ** 2, axis=(1, 2)))
        seg = seg[rms > _SILENT_RMS]
        if len(seg):
            self.power += (np.abs(np.fft.rfft(seg * self.window, axis=-1)) ** 2).sum(axis=(0, 1))
            self.used += len(seg)

    def band_power(self, rate: int, lo_hz: float, hi_hz: float) -> float:
        """Mean power in [lo_hz, hi_hz) per window, comparable across sample rates for the
        same n_fft and window (a sum of |X|^2 over the band, independent of the bin width)."""
        if not self.used:
            return 0.0
        freqs = np.arange(len(self.power)) * rate / self.n_fft
        return float(self.power[(freqs >= lo_hz) & (freqs < hi_hz)].sum() / self.used)

    def spectrum_db(self) -> np.ndarray | None:
        """n_fft // 2 + 1 bins from 0 to rate/2, in dB; None if every window was silent."""
        return 10 * np.log10(self.power / self.used + 1e-30) if self.used else None


def average_spectrum_db(audio: Audio, n_fft: int = _N_FFT, max_windows: int = _MAX_WINDOWS) -> np.ndarray | None:
    """Long-term average power spectrum of a whole song in dB (see SpectrumAccumulator)."""
    acc = SpectrumAccumulator(audio.frames, audio.channels, n_fft, max_windows)
    acc.feed(audio.samples)
    return acc.spectrum_db()


def band_power(audio: Audio, lo_hz: float, hi_hz: float) -> float:
    """Power of `audio` between lo_hz and hi_hz (see SpectrumAccumulator.band_power); the
    ratio of two such figures is a level difference, whatever the two sample rates."""
    acc = SpectrumAccumulator(audio.frames, audio.channels)
    acc.feed(audio.samples)
    return acc.band_power(audio.rate, lo_hz, hi_hz)


def effective_cutoff_hz(audio: Audio) -> float | None:
    """The frequency above which the spectrum falls away (see cutoff_from_spectrum)."""
    return cutoff_from_spectrum(average_spectrum_db(audio), audio.rate)


def cutoff_from_spectrum(s_db: np.ndarray | None, rate: int) -> float | None:
    """The frequency above which the spectrum falls away: the MP3 encoder's lowpass, or the
    top of the music's own band. It is the highest frequency with a cliff of at least 30 dB
    to everything above it (looked at 250 Hz higher up, so that the filter's slope counts).
    None when there is no such cliff (full band up to Nyquist) or the track is silent.
    Resolution is about 20 Hz; measured -345..+220 Hz from LAME 3.100's nominal lowpass at 96-320 kbps."""
    if s_db is None:
        return None
    bin_hz = rate / (2 * (len(s_db) - 1))
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
