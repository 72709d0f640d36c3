"""Spectra of whole songs: the long-term average spectrum, band powers, the cutoff an MP3
encoder's lowpass left, and the top band's level and flatness. What the stages use (the
decode measures the cutoff while it streams; bandwidth extensions match levels with it).

All take `Audio` ([channels, frames] float32, rate in Hz) and return plain numbers or None
(silence, a band above Nyquist). The spectral measures look at up to 600 windows.
"""
from __future__ import annotations

import math

import numpy as np

from restore.audio import Audio

from restore.analysis.blocks import ratio_db

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
            power = np.abs(np.fft.rfft(seg * self.window, axis=-1)) ** 2  # [windows, channels, bins]
            self.power += power.sum(axis=(0, 1))
            self.used += len(seg)
            self._windows(power)

    def _windows(self, power: np.ndarray) -> None:
        """Hook for measures that need each window's spectrum, not only the average."""

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


def level_match_gain(before: Audio, after: Audio, top_hz: float, bottom_hz: float = 40.0) -> float:
    """One gain for all channels that gives `after` the power `before` has between
    bottom_hz and top_hz (the band an MP3 kept): how a bandwidth extension keeps loudness.
    1.0 when either is silent there. The rates may differ."""
    p_before, p_after = band_power(before, bottom_hz, top_hz), band_power(after, bottom_hz, top_hz)
    if p_before <= 0 or p_after <= 0:
        return 1.0
    return float(np.sqrt(p_before / p_after))


def effective_cutoff_hz(audio: Audio) -> float | None:
    """The frequency above which the spectrum falls away (see cutoff_from_spectrum)."""
    return cutoff_from_spectrum(average_spectrum_db(audio), audio.rate)


def cutoff_from_spectrum(s_db: np.ndarray | None, rate: int) -> float | None:
    """The frequency above which the spectrum falls away: the MP3 encoder's lowpass, or the
    top of the music's own band. It is the lowest frequency with a cliff of at least 30 dB
    to everything above it (looked at 250 Hz higher up, so that the filter's slope counts),
    the deepest such cliff where several bins in a row have one; a floor further down that
    ends higher up (a resampler's) is not band.
    None when there is no such cliff (full band up to Nyquist) or the track is silent.
    Resolution is about 20 Hz; measured -388..+134 Hz from LAME 3.100's nominal lowpass at 96-320 kbps (two songs, 8 bitrates)."""
    if s_db is None:
        return None
    bin_hz = rate / (2 * (len(s_db) - 1))
    # Pad with the edge values, not zeros: a zero is 0 dB here, loud enough to make the top
    # bins of a quiet spectrum look like a band that comes back up (a false "ceiling").
    smooth = np.convolve(np.pad(s_db, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    n = len(smooth)
    below_w = max(2, int(300 / bin_hz))      # the level just under a candidate
    gap = max(1, int(250 / bin_hz))          # the filter's transition band
    # Running maximum of everything above each bin: "stays down up to Nyquist".
    ceiling_above = np.maximum.accumulate(smooth[::-1])[::-1]
    lowest = int(2000 / bin_hz)
    # The lowest run of bins with such a cliff, and in it the deepest cliff. The lowest: a
    # cliff means everything above stays at least 30 dB down, so a higher cliff can only be
    # one in that remainder (a noise floor's own end, such as a 48 kHz model's resampler
    # cutting the floor at 21 kHz: a denoised MP3 would read 21.2 kHz where its band stops
    # at 16.7 kHz). The deepest in the run: the top of a steep filter's skirt (a
    # brickwall's leakage falling -76, -90, -100 dB) has a 30 dB cliff of its own, but the
    # edge of the band is where the cliff is deepest.
    hit, deepest = None, 0.0
    for k in range(lowest + 1, n - gap - 1):
        cliff = np.median(smooth[k - below_w:k]) - ceiling_above[k + gap]
        if cliff >= _CLIFF_DB:
            if cliff > deepest:
                hit, deepest = k, cliff
        elif hit is not None:
            break
    if hit is None:
        return None
    # Refine: the last bin near the hit still within 15 dB of the level below it.
    below = np.median(smooth[hit - below_w:hit])
    window = smooth[hit - below_w:hit + gap]
    loud = np.nonzero(window >= below - 15.0)[0]
    edge = hit - below_w + (loud[-1] if len(loud) else below_w)
    return float(round(edge * bin_hz, 1))




_FLATNESS_GROUP = 16      # bins averaged before the flatness is taken: a raw periodogram of
                          # white noise has a flatness of only 0.56 (its bins scatter)
_EMPTY_BAND = 1e-10       # a window's band this far (-100 dB) under the window holds nothing


class TopBand(SpectrumAccumulator):
    """The cutoff's spectrum accumulator, also taking the spectral flatness of the band
    above lo_hz in every window it reads (same windows, same FFTs)."""

    def __init__(self, audio: Audio, lo_hz: float):
        super().__init__(audio.frames, audio.channels)
        freqs = np.arange(self.n_fft // 2 + 1) * audio.rate / self.n_fft
        band = np.nonzero((freqs >= lo_hz) & (freqs < audio.rate / 2))[0]
        groups = len(band) // _FLATNESS_GROUP
        self.band = slice(band[0], band[0] + groups * _FLATNESS_GROUP) if groups >= 2 else None
        self.flatness_sum, self.flatness_used = 0.0, 0
        self.rate = audio.rate

    def _windows(self, power: np.ndarray) -> None:
        if self.band is None:
            return
        p = power.sum(axis=1)                                          # [windows, bins]
        band = p[:, self.band].reshape(len(p), -1, _FLATNESS_GROUP).sum(axis=-1)
        live = band.sum(axis=1) > _EMPTY_BAND * p.sum(axis=1)
        if live.any():
            b = band[live]
            flat = np.exp(np.log(b + 1e-300).mean(axis=1)) / b.mean(axis=1)
            self.flatness_sum += float(flat.sum())
            self.flatness_used += int(live.sum())

    def flatness(self) -> float | None:
        return self.flatness_sum / self.flatness_used if self.flatness_used else None

    def energy_above_db(self, hz: float) -> float | None:
        total = self.band_power(self.rate, 0.0, math.inf)
        if hz >= self.rate / 2 or total <= 0:
            return None
        return ratio_db(self.band_power(self.rate, hz, math.inf) / total)


def top_band(audio: Audio, lo_hz: float) -> TopBand:
    acc = TopBand(audio, lo_hz)
    acc.feed(audio.samples)
    return acc


def energy_above_db(audio: Audio, hz: float = 16000.0) -> float | None:
    """Energy above `hz` relative to the whole spectrum's, in dB (long-term average over up
    to 600 windows). None for silence or when hz is at or above Nyquist."""
    return top_band(audio, hz).energy_above_db(hz)


def top_band_flatness(audio: Audio, lo_hz: float = 16000.0) -> float | None:
    """Spectral flatness (geometric over arithmetic mean of the power, 0..1) of the band
    above lo_hz, per window (power averaged over groups of 16 bins first), averaged over the
    windows where the band holds anything (within 100 dB of the window). Hiss reads near 1,
    tones and an encoder's empty band edge near 0. None if the band is empty everywhere or
    lies above Nyquist."""
    return top_band(audio, lo_hz).flatness()
