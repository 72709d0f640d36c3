"""Measures of audio, in one place for the whole project (stages, the report and the
evaluation harness use these).

All functions take `Audio` ([channels, frames] float32, rate in Hz) and return plain
numbers, dicts of them or None, so that results go to JSON as they are:
- None means "not defined here": silence, a mono file's stereo width, a band above Nyquist.
- A level ratio whose numerator is zero (a silent ghost, identical channels' side) reads
  FLOOR_DB (-200 dB) rather than -inf, which JSON cannot hold.
- Whole-song measures work through the song in blocks, on float32, so that an hour-long
  song costs no full-size float64 copy; the spectral ones look at up to 600 windows.

Song measures: integrated_lufs, loudness_range_lu, true_peak_dbtp, crest_factor_db,
stereo_correlation, stereo_width, energy_above_db, top_band_flatness, clipped_samples,
effective_cutoff_hz; song_metrics gathers them (and deltas against a baseline).
Against a lossless reference: align, lsd_db, si_sdr_db, band_energy_error_db, visqol;
reference_metrics gathers them.
"""
from __future__ import annotations

import math
from functools import lru_cache

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
    top of the music's own band. It is the highest frequency with a cliff of at least 30 dB
    to everything above it (looked at 250 Hz higher up, so that the filter's slope counts).
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
    # The highest run of bins with such a cliff, and in it the deepest cliff: the top of a
    # steep filter's skirt (a brickwall's leakage falling -76, -90, -100 dB) has a 30 dB
    # cliff of its own, but the edge of the band is where the cliff is deepest.
    hit, deepest = None, 0.0
    for k in range(n - gap - 2, lowest, -1):
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


# ---- Shared helpers ---------------------------------------------------------------------

FLOOR_DB = -200.0        # what a zero level reads as a ratio in dB (JSON has no -inf)
BAND_EDGES = (0, 250, 1000, 4000, 8000, 12000, 16000, 20000, 24000)  # Hz, for per-band figures
_BLOCK = 1 << 16         # frames per block in whole-song passes: bounds the temporary copies


def ratio_db(ratio: float, unit: float = 10.0) -> float:
    """unit * log10(ratio) (10 for energies, 20 for amplitudes); FLOOR_DB for zero."""
    return max(unit * math.log10(ratio), FLOOR_DB) if ratio > 0 else FLOOR_DB


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of a * b over all elements, in float64. einsum, not BLAS: BLAS threads spin and
    stall while another process holds the cores (a 4-minute song took seconds, not ms)."""
    return float(np.einsum("i,i->", a.ravel(), b.ravel(), dtype=np.float64))


def _spans(frames: int, size: int = _BLOCK):
    for start in range(0, frames, size):
        yield start, min(start + size, frames)


def _band_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def _bands(edges, rate: int) -> list[tuple[str, float, float]]:
    """(label, lo, hi) for each band that starts below Nyquist; the top one is cut at Nyquist
    (its label keeps the nominal edges, so that songs at 44.1 and 48 kHz share keys)."""
    nyquist = rate / 2
    return [(_band_label(lo, hi), lo, min(hi, nyquist)) for lo, hi in zip(edges[:-1], edges[1:]) if lo < nyquist]


def resample(audio: Audio, rate: int) -> Audio:
    """`audio` at `rate` Hz (soxr, very high quality, linear phase); the same object if it is
    already there."""
    if audio.rate == rate:
        return audio
    import soxr

    out = soxr.resample(np.ascontiguousarray(audio.samples.T), audio.rate, rate, quality="VHQ")
    return Audio(np.ascontiguousarray(np.asarray(out, np.float32).reshape(-1, audio.channels).T), rate)


# ---- Loudness: ITU-R BS.1770-4 and EBU Tech 3342 ----------------------------------------

_STEPS_PER_S = 10        # gating blocks and short-term windows move in 100 ms steps
_ABS_GATE = -70.0        # LUFS


def k_weighting(rate: int) -> tuple[tuple[float, float, float], ...]:
    """The two BS.1770 K-weighting biquads at `rate` Hz as (b1, a1, b2, a2): the head's high
    shelf (+4 dB above about 1.7 kHz), then the RLB highpass (38 Hz). Derived from their
    analog prototypes by the bilinear transform (as libebur128 does), so any rate works; at
    48 kHz they are the coefficients printed in BS.1770-4."""
    k = math.tan(math.pi * 1681.974450955533 / rate)
    q = 0.7071752369554196
    vh = 10 ** (3.999843853973347 / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    b1 = ((vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0)
    a1 = (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0)
    k = math.tan(math.pi * 38.13547087602444 / rate)
    q = 0.5003270373238773
    a0 = 1 + k / q + k * k
    return b1, a1, (1.0, -2.0, 1.0), (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0)


@lru_cache(maxsize=8)
def _k_weighting_ir(rate: int) -> np.ndarray:
    """The K-weighting filter's impulse response, cut where it has decayed below 1e-13:
    numpy has no IIR filter, so the filter runs as an FFT convolution with this, equal to
    the recursion within float rounding."""
    b1, a1, b2, a2 = k_weighting(rate)
    pole = math.sqrt(a2[2])                  # the highpass's double pole: the slowest decay
    n = int(math.ceil(40 / (1 - pole)))      # n * pole**n < 1e-13
    x = [1.0] + [0.0] * (n - 1)
    for b, a in ((b1, a1), (b2, a2)):
        y, x1, x2, y1, y2 = [], 0.0, 0.0, 0.0, 0.0
        for v in x:
            out = b[0] * v + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
            y.append(out)
            x1, x2, y1, y2 = v, x1, out, y1
        x = y
    return np.array(x)


def _k_energy(audio: Audio) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative K-weighted energy (sum of squares) per channel at each 100 ms step:
    ([channels, steps + 1] float64, the steps' frame positions [steps + 1]). Only whole
    steps count. Overlap-save FFT convolution in blocks: memory is a block's worth."""
    rate, channels = audio.rate, audio.channels
    steps = audio.frames * _STEPS_PER_S // rate
    edges = np.arange(steps + 1, dtype=np.int64) * rate // _STEPS_PER_S
    at_edges = np.zeros((channels, steps + 1))
    if steps == 0:
        return at_edges, edges
    h = _k_weighting_ir(rate)
    m = len(h)
    nfft = 1 << max(16, math.ceil(math.log2(4 * m)))
    spectrum = np.fft.rfft(h, nfft)
    history = np.zeros((channels, m - 1))
    running = np.zeros(channels)
    k = 1
    end = int(edges[-1])
    for start in range(0, end, nfft - m + 1):
        stop = min(start + nfft - m + 1, end)
        buf = np.concatenate([history, audio.samples[:, start:stop]], axis=1)
        y = np.fft.irfft(np.fft.rfft(buf, nfft) * spectrum, nfft)[:, m - 1:buf.shape[1]]
        cum = np.cumsum(y * y, axis=1) + running[:, None]
        k_stop = int(np.searchsorted(edges, stop, side="right"))
        at_edges[:, k:k_stop] = cum[:, edges[k:k_stop] - start - 1]
        running, k = cum[:, -1], k_stop
        history = buf[:, buf.shape[1] - (m - 1):]
    return at_edges, edges


def _window_power(at_edges: np.ndarray, edges: np.ndarray, steps: int) -> np.ndarray:
    """Mean square of every window `steps` long (moving one step), summed over channels:
    BS.1770 weights L, R (and mono) 1.0; MP3s have no surround channels."""
    if at_edges.shape[1] <= steps:
        return np.zeros(0)
    sums = (at_edges[:, steps:] - at_edges[:, :-steps]).sum(axis=0)
    return np.maximum(sums, 0.0) / (edges[steps:] - edges[:-steps])


def _lufs(power: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(power)


def _integrated(at_edges: np.ndarray, edges: np.ndarray) -> float | None:
    power = _window_power(at_edges, edges, 4)        # 400 ms blocks, 75 % overlap
    loud = _lufs(power)
    keep = loud > _ABS_GATE
    if not keep.any():
        return None
    keep &= loud > float(_lufs(power[keep].mean())) - 10.0
    return float(_lufs(power[keep].mean()))


def _loudness_range(at_edges: np.ndarray, edges: np.ndarray) -> float | None:
    power = _window_power(at_edges, edges, 30)       # 3 s short-term windows, 10 per second
    loud = _lufs(power)
    keep = loud > _ABS_GATE
    if not keep.any():
        return None
    keep &= loud > float(_lufs(power[keep].mean())) - 20.0
    low, high = np.percentile(loud[keep], [10, 95])
    return float(high - low)


def integrated_lufs(audio: Audio) -> float | None:
    """Integrated loudness in LUFS, ITU-R BS.1770-4: K-weighted, 400 ms blocks with 75 %
    overlap, gated at -70 LUFS and then 10 LU under the gated mean. None for silence or
    audio shorter than 400 ms."""
    return _integrated(*_k_energy(audio))


def loudness_range_lu(audio: Audio) -> float | None:
    """Loudness range in LU, EBU Tech 3342: short-term loudness (3 s windows, 10 per
    second) gated at -70 LUFS and 20 LU under their mean; the spread from the 10th to the
    95th percentile. None for silence or audio shorter than 3 s."""
    return _loudness_range(*_k_energy(audio))


# ---- Peaks and levels --------------------------------------------------------------------


def true_peak_dbtp(audio: Audio) -> float | None:
    """True peak in dBTP: the peak of the signal upsampled 4x (soxr, linear phase), as
    BS.1770-4 Annex 2 asks; never below the sample peak. None for silence."""
    import soxr

    stream = soxr.ResampleStream(audio.rate, audio.rate * 4, audio.channels, dtype="float32", quality="HQ")
    peak = 0.0
    for start, stop in _spans(audio.frames):
        block = np.ascontiguousarray(audio.samples[:, start:stop].T)
        up = stream.resample_chunk(block, last=stop == audio.frames)
        peak = max(peak, float(np.abs(block).max()), float(np.abs(up).max()) if up.size else 0.0)
    return ratio_db(peak, 20) if peak > 0 else None


class _Levels:
    """One pass over the song for the sample-level measures: peak, energy, clipping and
    the sums behind the stereo measures (float64 sums of float32 blocks)."""

    def __init__(self, audio: Audio, threshold: float = 0.999):
        x, frames = audio.samples, audio.frames
        self.peak, self.energy, self.clipped, self.count, self.frames = 0.0, 0.0, 0, x.size, frames
        self.stereo = audio.channels >= 2
        self.sums = np.zeros(5)  # L, R, LL, RR, LR over the first two channels
        for start, stop in _spans(frames):
            block = x[:, start:stop]
            self.peak = max(self.peak, float(np.abs(block).max()))
            wide = block.astype(np.float64)
            self.energy += _dot(wide, wide)
            # a run needs a neighbour: look one sample past each side of the block (past
            # the song's ends there is none: counts as not clipped)
            hot = np.zeros((block.shape[0], stop - start + 2), bool)
            lo, hi = max(start - 1, 0), min(stop + 1, frames)
            hot[:, lo - start + 1:hi - start + 1] = np.abs(x[:, lo:hi]) >= threshold
            self.clipped += int(np.count_nonzero(hot[:, 1:-1] & (hot[:, :-2] | hot[:, 2:])))
            if self.stereo:
                left, right = wide[0], wide[1]
                self.sums += (left.sum(), right.sum(), _dot(left, left), _dot(right, right), _dot(left, right))

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


def energy(audio: Audio) -> float:
    """Sum of squares over all channels and frames (float64, in blocks)."""
    x = audio.samples
    return sum(_dot(x[:, s:e], x[:, s:e]) for s, e in _spans(audio.frames))


def crest_factor_db(audio: Audio) -> float | None:
    """Sample peak over RMS (all channels together), in dB; None for silence."""
    return _Levels(audio).crest_db()


def stereo_correlation(audio: Audio) -> float | None:
    """Pearson correlation of left and right over the whole song: 1 for mono in two
    channels, -1 for one channel inverted, about 0 for unrelated channels. None for mono
    and for a silent channel. More than two channels: the first two."""
    return _Levels(audio).correlation()


def stereo_width(audio: Audio) -> float | None:
    """Side energy over mid energy, 10*log10(E_side / E_mid) with mid = (L+R)/2 and
    side = (L-R)/2: FLOOR_DB for mono in two channels, 0 dB for unrelated channels, above
    0 for out-of-phase material. None for mono, silence, or no mid at all."""
    return _Levels(audio).width_db()


def clipped_samples(audio: Audio, threshold: float = 0.999) -> int:
    """Samples at or beyond +-threshold that belong to a run of at least two in their
    channel: a lone full-scale peak is a peak, two in a row are a flat top."""
    return _Levels(audio, threshold).clipped


# ---- The top of the spectrum -------------------------------------------------------------

_FLATNESS_GROUP = 16      # bins averaged before the flatness is taken: a raw periodogram of
                          # white noise has a flatness of only 0.56 (its bins scatter)
_EMPTY_BAND = 1e-10       # a window's band this far (-100 dB) under the window holds nothing


class _TopBand(SpectrumAccumulator):
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


def _top_band(audio: Audio, lo_hz: float) -> _TopBand:
    acc = _TopBand(audio, lo_hz)
    acc.feed(audio.samples)
    return acc


def energy_above_db(audio: Audio, hz: float = 16000.0) -> float | None:
    """Energy above `hz` relative to the whole spectrum's, in dB (long-term average over up
    to 600 windows). None for silence or when hz is at or above Nyquist."""
    return _top_band(audio, hz).energy_above_db(hz)


def top_band_flatness(audio: Audio, lo_hz: float = 16000.0) -> float | None:
    """Spectral flatness (geometric over arithmetic mean of the power, 0..1) of the band
    above lo_hz, per window (power averaged over groups of 16 bins first), averaged over the
    windows where the band holds anything (within 100 dB of the window). Hiss reads near 1,
    tones and an encoder's empty band edge near 0. None if the band is empty everywhere or
    lies above Nyquist."""
    return _top_band(audio, lo_hz).flatness()


# ---- All of them for one song ------------------------------------------------------------

_FACTS = ("rate", "channels")  # facts, not measures: no delta


def song_metrics(audio: Audio, baseline: Audio | None = None, baseline_metrics: dict | None = None) -> dict:
    """Every song measure, JSON-ready (floats rounded to 4 decimals):
    duration_s, rate, channels, integrated_lufs, loudness_range_lu, true_peak_dbtp,
    peak_dbfs, crest_factor_db, stereo_correlation, stereo_width_db, energy_above_16k_db,
    top_band_flatness, clipped_samples, cutoff_hz.
    With a baseline (or its song_metrics, to measure it once for many variants):
    length_matches_baseline (durations within 1 ms) and delta_<name> = this minus the
    baseline for every measure above except rate and channels (None where either is None)."""
    energy = _k_energy(audio)
    levels = _Levels(audio)
    top = _top_band(audio, 16000.0)
    measures = {
        "duration_s": audio.duration,
        "rate": audio.rate,
        "channels": audio.channels,
        "integrated_lufs": _integrated(*energy),
        "loudness_range_lu": _loudness_range(*energy),
        "true_peak_dbtp": true_peak_dbtp(audio),
        "peak_dbfs": ratio_db(levels.peak, 20) if levels.peak > 0 else None,
        "crest_factor_db": levels.crest_db(),
        "stereo_correlation": levels.correlation(),
        "stereo_width_db": levels.width_db(),
        "energy_above_16k_db": top.energy_above_db(16000.0),
        "top_band_flatness": top.flatness(),
        "clipped_samples": levels.clipped,
        "cutoff_hz": cutoff_from_spectrum(top.spectrum_db(), audio.rate),
    }
    out = {k: round(v, 4) if isinstance(v, float) else v for k, v in measures.items()}
    if baseline is not None or baseline_metrics is not None:
        base = baseline_metrics if baseline_metrics is not None else song_metrics(baseline)
        out["length_matches_baseline"] = abs(audio.duration - base["duration_s"]) <= 0.001
        for key, value in measures.items():
            if key not in _FACTS:
                other = base.get(key)
                out[f"delta_{key}"] = None if value is None or other is None else round(value - other, 4)
    return out


# ---- Against a lossless reference --------------------------------------------------------

_ALIGN_EXCERPT = 1 << 19  # frames correlated (~12 s at 44.1 kHz): enough to find a lag
_STFT_N, _STFT_HOP = 2048, 512
_BIN_FLOOR = 1e-10        # -100 dB per bin re a full-scale sine: differences below it do not count


def align(test: Audio, reference: Audio, max_lag_s: float = 0.1) -> tuple[int, float | None]:
    """(lag, gain) that line `test` up with `reference`: test[n + lag] ~ gain * reference[n].

    test is first resampled to the reference's rate; lag is in frames at that rate,
    positive when test is late (an MP3 decode without a gapless tag: 1105 for LAME), within
    +-max_lag_s. Found by FFT cross-correlation of the channel sums over the loudest
    ~12 s of the reference. gain is the least-squares level over the whole overlap, taken so
    that test / gain is the best fit to the reference (a copy at 0.7 reads 0.7). gain is None
    when the two share no signal (silence, or an inverted or unrelated test)."""
    test = resample(test, reference.rate)
    max_lag = max(0, int(round(max_lag_s * reference.rate)))
    length = min(reference.frames, _ALIGN_EXCERPT)
    if length == 0 or test.frames == 0:
        return 0, None
    chunk = max(length // 4, 1)
    energy = [float(np.square(reference.samples[:, s:e].sum(axis=0, dtype=np.float64)).sum())
              for s, e in _spans(reference.frames, chunk)]
    window = np.convolve(energy, np.ones(4), mode="valid") if len(energy) >= 4 else np.array([sum(energy)])
    start = min(int(np.argmax(window)) * chunk, reference.frames - length)
    ref = reference.samples[:, start:start + length].sum(axis=0, dtype=np.float64)
    lo, hi = start - max_lag, start + length + max_lag
    seg = np.zeros(hi - lo)
    a, b = max(lo, 0), min(hi, test.frames)
    if b > a:
        seg[a - lo:b - lo] = test.samples[:, a:b].sum(axis=0, dtype=np.float64)
    nfft = 1 << math.ceil(math.log2(len(seg) + length))
    corr = np.fft.irfft(np.fft.rfft(seg, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)[:2 * max_lag + 1]
    if not corr.size or corr.max() <= 0:
        return 0, None
    lag = int(np.argmax(corr)) - max_lag
    tt = tr = 0.0
    first, last = max(0, -lag), min(reference.frames, test.frames - lag)
    for s, e in _spans(max(last - first, 0)):
        t = test.samples[:, first + s + lag:first + e + lag].astype(np.float64)
        tt += _dot(t, t)
        tr += _dot(t, reference.samples[:, first + s:first + e].astype(np.float64))
    return lag, (tt / tr if tr > 0 else None)


def apply_alignment(test: Audio, lag: int, gain: float, frames: int) -> Audio:
    """`test` moved `lag` frames earlier and divided by `gain`, cut or zero-padded to
    `frames`: what lines up with the reference sample for sample (see align)."""
    out = np.zeros((test.channels, frames), np.float32)
    a, b = max(0, -lag), min(frames, test.frames - lag)
    if b > a:
        out[:, a:b] = test.samples[:, a + lag:b + lag] / np.float32(gain)
    return Audio(out, test.rate)


def _stft_power(*signals: np.ndarray, batch: int = 128):
    """Power spectra of same-shaped [channels, frames] float32 signals, batch by batch:
    yields one [channels, frames_in_batch, 1025] array per signal. Hann 2048, hop 512;
    n_fft - hop zeros padded at both ends so that every sample is seen by four frames
    (Hann squared then adds up to a constant: band energies keep Parseval's proportions).
    Scaled so that a full-scale sine's bin reads 1.0 (0 dB)."""
    n = signals[0].shape[1]
    pad = _STFT_N - _STFT_HOP
    total = (n + pad - 1) // _STFT_HOP + 1 if n else 0
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_STFT_N) / _STFT_N)).astype(np.float32)
    norm = np.float32((window.sum() / 2) ** 2)
    for f0 in range(0, total, batch):
        f1 = min(total, f0 + batch)
        lo, hi = f0 * _STFT_HOP - pad, (f1 - 1) * _STFT_HOP + _STFT_N - pad
        a, b = max(lo, 0), min(hi, n)
        out = []
        for x in signals:
            seg = np.zeros((x.shape[0], hi - lo), np.float32)
            seg[:, a - lo:b - lo] = x[:, a:b]
            frames = np.lib.stride_tricks.sliding_window_view(seg, _STFT_N, axis=1)[:, ::_STFT_HOP]
            out.append(np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2 / norm)
        yield out


def _common(test: Audio, reference: Audio) -> tuple[np.ndarray, np.ndarray]:
    """Both at the reference's rate, cut to the shorter length."""
    test = resample(test, reference.rate)
    if test.channels != reference.channels:
        raise ValueError(f"cannot compare {test.channels} channels with {reference.channels}")
    n = min(test.frames, reference.frames)
    return test.samples[:, :n], reference.samples[:, :n]


def _band_masks(rate: int, edges) -> list[tuple[str, np.ndarray]]:
    """(label, bins of the 2048-point STFT) per band of _bands; the top band takes Nyquist's bin."""
    freqs = np.fft.rfftfreq(_STFT_N, 1 / rate)
    return [(label, (freqs >= lo) & ((freqs < hi) if hi < rate / 2 else True)) for label, lo, hi in _bands(edges, rate)]


def _compare(test: Audio, reference: Audio, ranges, edges=BAND_EDGES):
    """One STFT pass over an aligned pair: the LSD for each (lo_hz, hi_hz) range (None:
    open) and each band's energy in both, as ([lsd or None], {label: (test, ref)})."""
    x, y = _common(test, reference)
    freqs = np.fft.rfftfreq(_STFT_N, 1 / reference.rate)
    masks = [(freqs >= (lo or 0.0)) & ((freqs < hi) if hi else True) for lo, hi in ranges]
    bands = _band_masks(reference.rate, edges)
    lsd_sum, lsd_n = np.zeros(len(masks)), 0
    energy = np.zeros((len(bands), 2))
    for pt, pr in _stft_power(x, y):
        live = pr.max(axis=-1) > _BIN_FLOOR          # [channels, frames]: the reference sounds
        d = np.square(10 * np.log10((pr + _BIN_FLOOR) / (pt + _BIN_FLOOR)))
        for i, m in enumerate(masks):
            if m.any():
                lsd_sum[i] += float(np.sqrt(d[..., m].mean(axis=-1))[live].sum())
        lsd_n += int(live.sum())
        for i, (_, m) in enumerate(bands):
            energy[i] += (float(pt[..., m].sum()), float(pr[..., m].sum()))
    lsd = [float(s / lsd_n) if lsd_n and m.any() else None for s, m in zip(lsd_sum, masks)]
    return lsd, {label: tuple(e) for (label, _), e in zip(bands, energy)}


def lsd_db(test: Audio, reference: Audio, lo_hz: float | None = None, hi_hz: float | None = None) -> float | None:
    """Log-spectral distance in dB between two aligned signals, as in the AudioSR and NU-Wave
    papers: STFT Hann 2048/512 at the reference's rate (test resampled to it), per frame
    sqrt(mean over the bins in [lo_hz, hi_hz] of (10*log10(P_ref / P_test))^2), averaged
    over channels and frames, skipping frames where the reference is silent. Both powers
    get a floor of -100 dB per bin. 0 for identical signals; None if no bin is in the band
    or the reference is silent. Use align/apply_alignment first for an MP3 decode."""
    return _compare(test, reference, [(lo_hz, hi_hz)])[0][0]


def band_energy_error_db(test: Audio, reference: Audio, edges=BAND_EDGES) -> dict[str, float | None]:
    """Energy of the test over the reference's, in dB, per band {"0-250": ..., ...} (bands
    starting below the reference's Nyquist; see _bands). None where the reference's band is
    empty; FLOOR_DB where the test's is."""
    _, energy = _compare(test, reference, [], edges)
    return {label: (ratio_db(t / r) if r > 0 else None) for label, (t, r) in energy.items()}


def band_energies(audio: Audio, edges=BAND_EDGES) -> dict[str, float]:
    """Energy per band (STFT Hann 2048/512 power, summed; a full-scale sine's bin is 1.0),
    {"0-250": ..., ...} for the bands starting below Nyquist. Units cancel in a ratio of two
    such figures at one rate."""
    bands = _band_masks(audio.rate, edges)
    energy = np.zeros(len(bands))
    for (power,) in _stft_power(audio.samples):
        energy += [float(power[..., m].sum()) for _, m in bands]
    return {label: float(e) for (label, _), e in zip(bands, energy)}


def si_sdr_db(test: Audio, reference: Audio) -> float | None:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019) of an aligned
    test against the reference, all channels together, means removed. Capped at 200 dB (a
    scaled copy reads 140 or more in float32); None for a silent reference."""
    x, y = _common(test, reference)
    n = x.shape[1]
    if n == 0:
        return None
    tr = rr = tt = 0.0
    for c in range(x.shape[0]):
        sums = np.zeros(5)
        for s, e in _spans(n):
            t, r = x[c, s:e].astype(np.float64), y[c, s:e].astype(np.float64)
            sums += (t.sum(), r.sum(), _dot(t, r), _dot(r, r), _dot(t, t))
        st, sr, xy, yy, xx = sums
        tr, rr, tt = tr + xy - st * sr / n, rr + yy - sr * sr / n, tt + xx - st * st / n
    if rr <= 0:
        return None
    target = tr * tr / rr
    noise = max(tt - target, target * 1e-20)
    return ratio_db(target / noise) if target > 0 else FLOOR_DB


@lru_cache(maxsize=1)
def _visqol_api():
    try:
        from visqol import VisqolApi
    except ImportError:
        return None
    api = VisqolApi()
    api.create(mode="audio")
    return api


def visqol(test: Audio, reference: Audio) -> float | None:
    """ViSQOL v3 MOS-LQO (1..5) in audio mode: both resampled to 48 kHz and mixed to mono,
    as ViSQOL's audio model expects; the test should be aligned first. None when the
    optional visqol-python package is not installed."""
    api = _visqol_api()
    if api is None:
        return None
    t, r = resample(test, 48000), resample(reference, 48000)
    n = min(t.frames, r.frames)
    result = api.measure_from_arrays(r.samples[:, :n].mean(axis=0, dtype=np.float64),
                                     t.samples[:, :n].mean(axis=0, dtype=np.float64), 48000)
    return float(result.moslqo)


def reference_metrics(test: Audio, reference: Audio, with_visqol: bool = True) -> dict:
    """How close `test` comes to a lossless reference, JSON-ready. The test is resampled to
    the reference's rate, aligned (lag_samples, lag_ms: how late it was; gain, gain_db: its
    level) and the lag and gain removed, so that a level change shows once, in gain_db and
    loudness_diff_lu, not in every band. Then: lsd_full, lsd_below_16k, lsd_above_16k (dB),
    si_sdr (dB), band_error_db {band: dB}, visqol (MOS-LQO or None), loudness_diff_lu
    (integrated loudness of the test as it came, minus the reference's). ViSQOL is slow
    (pure Python: about as long as the audio lasts); with_visqol=False leaves it None.
    About 2 s for a 4-minute stereo song without it."""
    test = resample(test, reference.rate)
    lag, gain = align(test, reference)
    aligned = apply_alignment(test, lag, gain or 1.0, reference.frames)
    (full, above, below), energy = _compare(aligned, reference, [(None, None), (16000.0, None), (None, 16000.0)])
    if reference.rate / 2 <= 16000:
        above = None
    lufs_test, lufs_ref = integrated_lufs(test), integrated_lufs(reference)
    out = {
        "rate": reference.rate,
        "lag_samples": lag,
        "lag_ms": 1000 * lag / reference.rate,
        "gain": gain,
        "gain_db": ratio_db(gain, 20) if gain else None,
        "lsd_full": full,
        "lsd_below_16k": below,
        "lsd_above_16k": above,
        "si_sdr": si_sdr_db(aligned, reference),
        "band_error_db": {label: (ratio_db(t / r) if r > 0 else None) for label, (t, r) in energy.items()},
        "visqol": visqol(aligned, reference) if with_visqol else None,
        "loudness_diff_lu": None if lufs_test is None or lufs_ref is None else lufs_test - lufs_ref,
    }
    return _rounded(out)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value
