"""Loudness (ITU-R BS.1770-4 integrated loudness, EBU Tech 3342 loudness range) and true peak
(BS.1770-4 Annex 2, 4x oversampling), measured block by block. None for silence."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from restore.audio import Audio

from restore.analysis.blocks import ratio_db, spans

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


def k_energy(audio: Audio) -> tuple[np.ndarray, np.ndarray]:
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


def gating_blocks(at_edges: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The mean square of every 400 ms gating block (75 % overlap), channels summed: what
    integrated loudness is gated from. An album's loudness is `gated_loudness` of all its
    tracks' blocks together (BS.1770-4 measures a programme, not an average of tracks)."""
    return _window_power(at_edges, edges, 4)


def integrated_from(at_edges: np.ndarray, edges: np.ndarray) -> float | None:
    return gated_loudness(gating_blocks(at_edges, edges))


def gated_loudness(power: np.ndarray) -> float | None:
    """Integrated loudness (LUFS) of gating blocks' mean squares: gated at -70 LUFS, then
    10 LU under the mean of what passed. None when nothing passes."""
    power = np.asarray(power, dtype=np.float64)
    loud = _lufs(power)
    keep = loud > _ABS_GATE
    if not keep.any():
        return None
    keep &= loud > float(_lufs(power[keep].mean())) - 10.0
    return float(_lufs(power[keep].mean()))


def loudness_range_from(at_edges: np.ndarray, edges: np.ndarray) -> float | None:
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
    return integrated_from(*k_energy(audio))


def loudness_range_lu(audio: Audio) -> float | None:
    """Loudness range in LU, EBU Tech 3342: short-term loudness (3 s windows, 10 per
    second) gated at -70 LUFS and 20 LU under their mean; the spread from the 10th to the
    95th percentile. None for silence or audio shorter than 3 s."""
    return loudness_range_from(*k_energy(audio))




def true_peak_dbtp(audio: Audio) -> float | None:
    """True peak in dBTP: the peak of the signal upsampled 4x (soxr, linear phase), as
    BS.1770-4 Annex 2 asks; never below the sample peak. None for silence."""
    import soxr

    stream = soxr.ResampleStream(audio.rate, audio.rate * 4, audio.channels, dtype="float32", quality="HQ")
    peak = 0.0
    for start, stop in spans(audio.frames):
        block = np.ascontiguousarray(audio.samples[:, start:stop].T)
        up = stream.resample_chunk(block, last=stop == audio.frames)
        peak = max(peak, float(np.abs(block).max()), float(np.abs(up).max()) if up.size else 0.0)
    return ratio_db(peak, 20) if peak > 0 else None
