"""Measures for the report and the quality harness: every song measure with deltas against
the baseline (song_metrics), and how close a variant comes to a lossless reference (align,
lsd_db, si_sdr_db, band_energy_error_db, visqol; reference_metrics gathers them).

Results are JSON-ready: None means "not defined here" (silence, a mono file's width).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from restore.audio import Audio

from restore.analysis.blocks import BAND_EDGES, FLOOR_DB, bands, dot, ratio_db, resample, spans
from restore.analysis.levels import Levels
from restore.analysis.loudness import integrated_from, integrated_lufs, k_energy, loudness_range_from, true_peak_dbtp
from restore.analysis.spectrum import cutoff_from_spectrum, top_band

_FACTS = ("rate", "channels")  # facts, not measures: no delta


def song_metrics(audio: Audio, baseline: Audio | None = None, baseline_metrics: dict | None = None) -> dict:
    """Every song measure, JSON-ready (floats rounded to 4 decimals):
    duration_s, rate, channels, integrated_lufs, loudness_range_lu, true_peak_dbtp,
    peak_dbfs, crest_factor_db, stereo_correlation, stereo_width_db, energy_above_16k_db,
    top_band_flatness, clipped_samples, cutoff_hz.
    With a baseline (or its song_metrics, to measure it once for many variants):
    length_matches_baseline (durations within 1 ms) and delta_<name> = this minus the
    baseline for every measure above except rate and channels (None where either is None)."""
    energy = k_energy(audio)
    levels = Levels(audio)
    top = top_band(audio, 16000.0)
    measures = {
        "duration_s": audio.duration,
        "rate": audio.rate,
        "channels": audio.channels,
        "integrated_lufs": integrated_from(*energy),
        "loudness_range_lu": loudness_range_from(*energy),
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
              for s, e in spans(reference.frames, chunk)]
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
    for s, e in spans(max(last - first, 0)):
        t = test.samples[:, first + s + lag:first + e + lag].astype(np.float64)
        tt += dot(t, t)
        tr += dot(t, reference.samples[:, first + s:first + e].astype(np.float64))
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
    return [(label, (freqs >= lo) & ((freqs < hi) if hi < rate / 2 else True)) for label, lo, hi in bands(edges, rate)]


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
        for s, e in spans(n):
            t, r = x[c, s:e].astype(np.float64), y[c, s:e].astype(np.float64)
            sums += (t.sum(), r.sum(), dot(t, r), dot(r, r), dot(t, t))
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
