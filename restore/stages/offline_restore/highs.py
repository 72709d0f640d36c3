"""The offline restore's signal processing (variant 11): spectral holes filled and the top
band extended, in the STFT of restore.analysis.stft, one block at a time.

Nothing here is recovered: the encoder threw the highs away. What is added is a plausible
guess made from the music just below them, and it goes only where the encoder left nothing
(add, never replace: what the MP3 kept is passed through as decoded):
- Extension, from the cutoff to Nyquist: a target level per frame, channel and bin (the level
  of the 2 kHz under min(cutoff, sfb21's start), continued with the song's own slope there,
  and above the cutoff that slope plus an extra roll-off; where the cutoff lies above sfb21's
  start, at least the band the encoder kept between them continued the same way, at most
  KEPT_CAP_DB more: the kept floor). Only bins the encoder left empty (EMPTY: far under the
  target; above a real cutoff, all of them) get anything. The added part takes its phases
  from the band under the level band copied upwards by a whole multiple of 4 bins (so the
  copy keeps the hop's phase advance and with it the music's timing) and its magnitude from
  the target. Dark music (little under the edge) gets little; a frame whose top is silent
  gets nothing. Optionally (level=model, off by default) a song-level model raises or lowers
  that target (level_gain_db): a line in four features of the decode (two slopes of its
  long-term spectrum under the cutoff, the cutoff, and the level band's side-to-mid ratio),
  fitted on 231 random mixes that are not in the dev set (scripts/make_trainset.py,
  bench/fit_offline_level.py), less a margin towards dark (bench/RESULTS.md). Tonal music
  (the level band's frame flatness under tonal_flat_db) gets a quieter band, 1 dB per dB
  (tonal_fade_db): a noise-like top over partials and near silence fills every valley.
  With no cliff measured at 192 kbps and up, the bins the quantiser emptied among sfb21's
  kept ones (16 kHz to the encoder's lowpass, SongPlan.sparse_top_hz) get sparse_fill_db
  less: the quantiser kept the louder bins, the emptied ones held the quieter part.
- Holes: runs of bins in the top of the kept band that sit far under the level of the bins
  kept around them (the encoder quantised them to zero; that level is a geometric mean, so
  between the partials of a tonal sound it is the floor there, not the partials') get noise
  up to a fraction of the local envelope (a 3-frame one, unless it is far above the frame's
  own: then the frame is quiet, not holed) and at most a little under that kept level. In
  sfb21 (16 kHz to a higher cutoff), where the encoder keeps scattered bits whatever the
  music, the envelope is the measure.
  Noise phases are a hash of the frame's place in the song and the bin, shared by the
  channels (identical channels stay identical): the same on every run and in any chunking.

The result is the input plus what was added (only the added part goes through the inverse
STFT), so the band below the cutoff keeps its samples except where a hole was filled (with
holes off: the decode within -90 dB under the cutoff, tests/test_offline_restore.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from restore.analysis.stft import OFFLINE

N_FFT, HOP, NORM = OFFLINE.n_fft, OFFLINE.hop, OFFLINE.norm
stft, istft = OFFLINE.stft, OFFLINE.istft

FLOOR_DB = -100.0          # per-bin level (0 dB = a full-scale sine's bin) under which nothing counts:
                           # the quality measures' own floor
GUARD_HZ = 350.0           # the encoder's lowpass transition: level and patch are taken below it
LEVEL_BAND_HZ = 2000.0     # width of the band whose level, frame by frame, the extension continues
PATCH_HZ = 4000.0          # width of the band copied upwards
ENVELOPE_HZ = 1000.0       # the holes' local envelope is measured over this width
HOLE_BINS = 4              # a hole is a run of at least this many bins (172 Hz at 44.1 kHz)
DARK_DB = 70.0             # holes are filled only where the envelope is within this of the frame's peak
BORROWED_DB = 6.0          # ... and at most this over the frame's own envelope (else it is a neighbour's)
KEPT_SHARE_MIN = 0.05      # the kept bins' level needs this share of the width kept (else: all bins' level)
RAMP_BINS = 4              # the extension fades in over these bins above the cutoff
KEPT_MIN_BINS = 4          # the kept floor needs at least this many bins between sfb21 and the cutoff
KEPT_CAP_DB = 6.0          # ... and raises the plain rule's target by at most this
SPARSE_BAND_HZ = 2000.0    # the encoder's lowpass this far over sfb21's start or more (192 kbps and up):
                           # the band between keeps scattered bits (see HighsSettings.sparse_fill_db)
SEED = 20240607            # the noise hash's fixed seed


@dataclass(frozen=True)
class HighsSettings:
    """What decides the output besides the audio. Levels in dB, slopes in dB per kHz."""

    strength_db: float = 0.0      # added to the extension's target level (-inf: no extension)
    rolloff_db_khz: float = 0.5   # extra slope above the cutoff beyond the music's own: highs fall faster up there
    min_slope_db_khz: float = -12.0  # the measured slope is clamped to [min_slope, max_slope]
    max_slope_db_khz: float = 0.0    # never rising: a bright mix does not get brighter than its top
    empty_db: float = 20.0        # in the extended region, a bin this far under the target is one the encoder emptied
    holes: bool = True
    hole_lo_hz: float = 8000.0    # holes are looked for between this and the cutoff
    hole_depth_db: float = 15.0   # a bin this far under the level of the kept bins around it is a hole
    hole_fill_db: float = -8.0    # holes are filled up to this much under the local envelope
    hole_cap_db: float = -6.0     # ... and at most this over the kept bins' level (inf: no cap)
    fitted_level: bool = False    # add the level model's level_gain_db to the target (option level=model)
    kept_floor: bool = True       # the target never starts under what the encoder kept just under the cutoff
    tonal_flat_db: float = -18.0  # music whose level band is more tonal than this (frame flatness, dB) ...
    tonal_fade: float = 1.0       # ... gets this many dB less added per dB under it (0: no fade)
    sparse_fill_db: float = -6.0  # no cliff measured: under the encoder's lowpass the emptied bins get this
                                  # much less than the target (they held the quieter part of the music)

    def config(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in self.__dict__.items()}


def sfb21_hz(rate: int) -> float:
    """Where an MP3's last scalefactor band (sfb21) starts: about 16 kHz at 44.1 and 48 kHz,
    15.3 kHz at 32 kHz. It has no scalefactor of its own, so at 128-192 kbps LAME keeps only
    scattered bits of it even below its lowpass: we treat it as damaged up to the cutoff."""
    return min(16000.0, 0.955 * rate / 2)


@dataclass(frozen=True)
class SongPlan:
    """Song-level facts the blocks share (measured once on the whole song)."""

    rate: int
    cutoff_hz: float              # the encoder's lowpass: nothing above it survived
    slope_db_khz: float           # the music's own slope under the extended region (clamped)
    sparse_top_hz: float | None = None  # no cliff measured: the encoder's lowpass for the bitrate, where
                                        # it lies SPARSE_BAND_HZ or more over the cutoff (sfb21's start)

    @property
    def fill_hz(self) -> float:
        """Where the extended region starts: the cutoff. Under it the encoder kept what it
        kept (at 192 kbps sfb21's scattered bits from 16 kHz up): only its holes are filled."""
        return self.cutoff_hz

    @property
    def level_hz(self) -> float:
        """The top of the band whose level the extension continues: the cutoff, or sfb21's
        start if lower (above it the kept bits are scattered, no steady guide to the level)."""
        return min(self.cutoff_hz, sfb21_hz(self.rate))

    def bins(self) -> tuple[int, int, int, int]:
        """(first bin of the extended region kf, top of the level band, its bottom, bin count)."""
        hz = self.rate / N_FFT
        kf = int(np.ceil(self.fill_hz / hz))
        guard = int(np.ceil(GUARD_HZ / hz))
        top = int(np.ceil(self.level_hz / hz)) - guard
        return kf, top, top - int(round(LEVEL_BAND_HZ / hz)), N_FFT // 2 + 1


def measure_slope(spectrum_db: np.ndarray, rate: int, top_hz: float, settings: HighsSettings) -> float:
    """The long-term spectrum's slope in dB/kHz over the 5 kHz under top_hz (least squares
    line), clamped to the settings' range. spectrum_db: n_fft // 2 + 1 bins, 0..rate/2."""
    slope = _line_slope(spectrum_db, rate, top_hz - 5000.0, top_hz - GUARD_HZ)
    if slope is None:
        return settings.max_slope_db_khz
    return float(np.clip(slope, settings.min_slope_db_khz, settings.max_slope_db_khz))


def near_slope(spectrum_db: np.ndarray, rate: int, top_hz: float) -> float | None:
    """The long-term spectrum's slope in dB/kHz over the NEAR_HZ just under the level band's top
    (top_hz - GUARD_HZ), unclamped; None when the band has too few bins."""
    return _line_slope(spectrum_db, rate, top_hz - GUARD_HZ - NEAR_HZ, top_hz - GUARD_HZ)


def _freqs(spectrum_db: np.ndarray, rate: int) -> np.ndarray:
    """The bins' frequencies in Hz of a spectrum of n_fft // 2 + 1 bins from 0 to rate/2."""
    return np.arange(len(spectrum_db)) * rate / (2 * (len(spectrum_db) - 1))


def _line_slope(spectrum_db: np.ndarray, rate: int, lo_hz: float, hi_hz: float) -> float | None:
    f = _freqs(spectrum_db, rate)
    m = (f >= lo_hz) & (f < hi_hz)
    if m.sum() < 4:
        return None
    return float(np.polyfit(f[m] / 1000.0, spectrum_db[m], 1)[0])


# The level model (used with HighsSettings.fitted_level): how many dB the extension's target
# level is raised, from features of the decode's long-term spectrum (level_features), a line
# fitted by bench/fit_offline_level.py on the level-training set (scripts/make_trainset.py:
# random mixes, none of the dev set's clips). Do not refit on the dev set's held-out part.
NEAR_HZ = 2500.0           # width of the band whose slope is the "near" feature
LEVEL_MIN_DB, LEVEL_MAX_DB = -6.0, 9.0   # never more than this either way
# -- the level model's constants (bench/fit_offline_level.py prints them) --
# Fitted (LEVEL_FIT_DB) less DARK_MARGIN_DB: with the margin the model is over 2 dB too bright
# on fewer of the training mixes than the plain rule (18 % against 21 %), and within 2 dB on
# more (39 % against 32 %, leave one clip out; fitted on revision 4's plain rule, kept floor
# included, and a training set with bowed strings alone; a refit on revision 5 moves them by
# 2 % at most; bench/RESULTS.md). It is an option,
# not the default: on the dev set's tuned part it still makes the string quartet 3 dB too
# bright at 128 kbps and a gated synth 4-5 dB darker than the plain rule.
LEVEL_FIT_DB = 7.659
DARK_MARGIN_DB = 1.5
LEVEL_INTERCEPT_DB = LEVEL_FIT_DB - DARK_MARGIN_DB
LEVEL_WEIGHTS: dict[str, float] = {"near": 1.1448, "slope5": -3.4920, "cut_khz": -0.4680, "side": 0.2022}
LEVEL_RANGES: dict[str, tuple[float, float]] = {"near": (-7.34, 1.26), "slope5": (-7.87, 1.40), "cut_khz": (15.99, 18.83),
                                                "side": (-28.55, 4.19)}
# -- end of the level model's constants --


def _band_db(spectrum_db: np.ndarray, rate: int, lo_hz: float, hi_hz: float) -> float | None:
    """The mean power (dB) of the bins in [lo_hz, hi_hz); None when there are none."""
    f = _freqs(spectrum_db, rate)
    m = (f >= lo_hz) & (f < hi_hz)
    if not m.any():
        return None
    return float(10 * np.log10(np.mean(10 ** (spectrum_db[m] / 10)) + 1e-30))


def level_features(spectrum_db: np.ndarray, rate: int, cutoff_hz: float) -> dict[str, float] | None:
    """What the level model reads: the decode's long-term spectrum (dB, n_fft // 2 + 1 bins,
    0..rate/2) around the level band (the 2 kHz under top = min(cutoff, sfb21) - GUARD_HZ).
    near, slope5: slopes in dB/kHz over the 2.5 and 5 kHz under top; tilt_4k, tilt_lo: the
    level 4-6 kHz under top and at 2-4 kHz, in dB over the level band's; flatness: the level
    band's spectral flatness in dB (0: noise-like, very negative: a few partials); cut_khz:
    the cutoff in kHz; level_db: the level band's mean level (dB, the spectrum's scale). None
    where a band has no bins or the level band is silent."""
    level_top = min(cutoff_hz, sfb21_hz(rate))
    top = level_top - GUARD_HZ
    level = _band_db(spectrum_db, rate, top - LEVEL_BAND_HZ, top)
    mid = _band_db(spectrum_db, rate, top - 6000.0, top - 4000.0)
    low = _band_db(spectrum_db, rate, 2000.0, 4000.0)
    near, slope5 = near_slope(spectrum_db, rate, level_top), _line_slope(spectrum_db, rate, top - 5000.0, top)
    if None in (level, mid, low, near, slope5) or level < FLOOR_DB:
        return None
    f = _freqs(spectrum_db, rate)
    band = spectrum_db[(f >= top - LEVEL_BAND_HZ) & (f < top)]
    flatness = float(np.mean(band) - level)          # geometric over arithmetic mean, in dB
    return {"near": near, "slope5": slope5, "tilt_4k": mid - level, "tilt_lo": low - level,
            "flatness": flatness, "cut_khz": cutoff_hz / 1000.0, "level_db": level}


FRAME_FEATURE_FRAMES = 2000   # frames read for frame_features, spread over the song (bounded cost on an hour)


def frame_features(x: np.ndarray, rate: int, cutoff_hz: float) -> dict[str, float] | None:
    """What the level model reads frame by frame, in the level band (see level_features), from
    at most FRAME_FEATURE_FRAMES STFT frames spread evenly over x (float32 [channels, n]):
    flat_f, the frames' spectral flatness there (dB, averaged over the channels, weighted by
    the frames' power: 0 noise-like, very negative a few partials); side, the side signal's
    power over the mid's there (dB, clamped to -40..+10; mono: -40). None when too short or silent."""
    channels, n = x.shape
    if n < N_FFT:
        return None
    plan = SongPlan(rate, cutoff_hz, 0.0)
    _, top, lo, _ = plan.bins()
    if lo < 1 or top <= lo:
        return None
    count = min(FRAME_FEATURE_FRAMES, (n - N_FFT) // HOP + 1)
    starts = np.linspace(0, n - N_FFT, count).astype(np.int64)
    idx = starts[:, None] + np.arange(N_FFT)[None, :]
    spec = np.fft.rfft(x[:, idx] * OFFLINE.window, axis=-1)[..., lo:top]      # [C, frames, K]
    p = (spec.real ** 2 + spec.imag ** 2).astype(np.float64) + 1e-30
    weight = p.mean(axis=(0, 2))                                                  # [frames]
    live = weight > weight.max() * 1e-6
    if weight.max() <= 0 or not live.any():
        return None
    flat = (np.log(p).mean(axis=-1) - np.log(p.mean(axis=-1))) * (10 / np.log(10))   # [C, frames]
    flat_f = float(np.average(flat.mean(axis=0)[live], weights=weight[live]))
    if channels >= 2:
        side = float((np.abs(spec[0] - spec[1]) ** 2).sum())
        mid = float((np.abs(spec[0] + spec[1]) ** 2).sum())
        side_db = 10 * np.log10(max(side, 1e-30) / max(mid, 1e-30))
    else:
        side_db = -40.0
    return {"flat_f": flat_f, "side": float(np.clip(side_db, -40.0, 10.0))}


def level_gain_db(features: dict[str, float] | None) -> float:
    """dB added to the extension's target level by the level model (0 without features).
    Each feature is first clipped to the range it had in the training set (LEVEL_RANGES), so
    an unusual song (mono, an odd rate) gets the nearest trained answer, not an extrapolation."""
    if not features or not LEVEL_WEIGHTS or any(k not in features for k in LEVEL_WEIGHTS):
        return 0.0
    g = LEVEL_INTERCEPT_DB
    for k, w in LEVEL_WEIGHTS.items():
        lo, hi = LEVEL_RANGES.get(k, (-np.inf, np.inf))
        g += w * float(np.clip(features[k], lo, hi))
    return float(np.clip(g, LEVEL_MIN_DB, LEVEL_MAX_DB)) if np.isfinite(g) else 0.0


def tonal_fade_db(frame: dict[str, float] | None, settings: HighsSettings) -> float:
    """dB added to the extension's target (0 or less) for tonal music: the added band is
    noise-like, and over a top of partials and near silence it fills every valley. frame:
    frame_features' answer (flat_f, the level band's frame flatness in dB); 0 without it.
    On 18 General MIDI instruments alone, the extension made LSD above 16 kHz worse than the
    decode's on 20 of 36 pairs (a church organ, flat_f -32 to -36 dB: 5.1 -> 13.3 dB), while
    every dev-set clip it helps but the string quartet has flat_f over -11 (revision 6;
    bench/RESULTS.md)."""
    if not frame or "flat_f" not in frame or not settings.tonal_fade:
        return 0.0
    return -settings.tonal_fade * max(0.0, settings.tonal_flat_db - frame["flat_f"])


def _runs(mask: np.ndarray, width: int) -> np.ndarray:
    """The bins of `mask` (bool [..., bins]) that lie in a run of at least `width` True bins."""
    if width <= 1:
        return mask
    c = np.concatenate([np.zeros(mask.shape[:-1] + (1,), np.int32), np.cumsum(mask, axis=-1, dtype=np.int32)], axis=-1)
    full = (c[..., width:] - c[..., :-width]) == width          # window starting at bin i is all True
    out = np.zeros(mask.shape, bool)
    for j in range(width):                                     # mark every bin of each full window
        out[..., j:j + full.shape[-1]] |= full
    return out


def _smooth_freq(p: np.ndarray, width: int) -> np.ndarray:
    """Moving average over the last axis (bins), `width` bins, edges averaged over what exists."""
    n = p.shape[-1]
    c = np.zeros(p.shape[:-1] + (n + 1,), np.float32)
    np.cumsum(p, axis=-1, dtype=np.float32, out=c[..., 1:])
    lo = np.clip(np.arange(n) - width // 2, 0, n)
    hi = np.clip(np.arange(n) + width - width // 2, 0, n)
    out = np.empty(p.shape, np.float32)
    a, b = width // 2, n - (width - width // 2) + 1          # bins whose whole window exists: slices
    if b > a:
        out[..., a:b] = (c[..., width:width + b - a] - c[..., :b - a]) / np.float32(width)
    edge = np.r_[0:min(a, n), max(b, a, 0):n]                  # the rest: what exists of the window
    out[..., edge] = (c[..., hi[edge]] - c[..., lo[edge]]) / (hi[edge] - lo[edge]).astype(np.float32)
    return out


def _kept_level(p: np.ndarray, width: int, depth: np.float32) -> np.ndarray:
    """float32 [..., bins]: the level (power, as p) of the bins the encoder kept around each bin
    of p (power [..., frames, bins]): the geometric mean over `width` bins of those not more
    than `depth` (a power ratio under 1) under the geometric mean of all of them (each floored
    at FLOOR_DB), or that mean of all where fewer than KEPT_SHARE_MIN of them are. In a tonal
    sound it is the floor between the partials, where the arithmetic mean is the partials';
    in noise-like music it sits a few dB under the arithmetic mean. Bins the encoder zeroed
    count at FLOOR_DB: where most of a quiet stretch was zeroed (the decay of a glockenspiel
    note at 192 kbps), the level is near the floor and nothing there is a hole."""
    logp = np.log(np.maximum(p, np.float32(10 ** (FLOOR_DB / 10))))
    everything = _smooth_freq(logp, width)
    kept = (logp >= everything + np.log(depth)).astype(np.float32)
    share = _smooth_freq(kept, width)
    level = _smooth_freq(logp * kept, width) / np.maximum(share, np.float32(1e-6))
    return np.exp(np.where(share >= KEPT_SHARE_MIN, level, everything)).astype(np.float32)


def _smooth_time(p: np.ndarray) -> np.ndarray:
    """[.., frames, bins]: 3-frame moving average along frames (edges repeat)."""
    pad = np.concatenate([p[..., :1, :], p, p[..., -1:, :]], axis=-2)
    return (pad[..., :-2, :] + pad[..., 1:-1, :] + pad[..., 2:, :]) / np.float32(3)


def restore_block(x: np.ndarray, plan: SongPlan, settings: HighsSettings, start: int) -> tuple[np.ndarray, dict]:
    """x: float32 [channels, n] at plan.rate, the song's samples from `start` on (a multiple of
    HOP: the block's frames then lie on the song's frame grid, which places the noise) ->
    (float32 [channels, n], facts). Facts: frames (x channels), holes (bins filled),
    extended_frames (frames x channels that got an extension), kept_floor_frames (frames x
    channels whose target the kept floor raised)."""
    channels, n = x.shape
    kf, top, level_lo, nbins = plan.bins()
    hz = plan.rate / N_FFT
    spec = stft(x)                                        # [C, F, K]
    frames = spec.shape[1]
    patch_w = 4 * int(round(PATCH_HZ / hz / 4))
    src_lo = top - patch_w
    hole_lo = max(1, min(int(settings.hole_lo_hz / hz), top))
    lo = max(0, min(hole_lo, src_lo) - 32)                # bins below `lo` are never touched
    sub = spec[..., lo:]
    power = (sub.real ** 2 + sub.imag ** 2) / np.float32(NORM)
    added = np.zeros_like(sub)
    facts = {"frames": frames * channels, "holes": 0, "extended_frames": 0, "kept_floor_frames": 0}
    env_bins = int(round(ENVELOPE_HZ / hz))

    # -- holes: in [hole_lo, kf), bins far under the level of the bins kept around them --
    if settings.holes and kf - hole_lo > 8:
        a, b = hole_lo - lo, kf - lo
        own = _smooth_freq(power, env_bins)
        env = _smooth_time(own)[..., a:b]
        p = power[..., a:b]
        # Dark stays dark: only where the envelope is above the floor and within DARK_DB of the
        # frame's loudest bin (a piano's empty top octaves are its sound, not the encoder's holes).
        peak = (spec.real ** 2 + spec.imag ** 2).max(axis=-1, keepdims=True) / np.float32(NORM)
        live = (env > np.float32(10 ** (FLOOR_DB / 10))) & (env > peak * np.float32(10 ** (-DARK_DB / 10)))
        # An envelope well above the frame's own (the 3-frame smoothing next to an attack or a
        # cut-off) is borrowed from a neighbouring frame: this frame is quiet there, not holed.
        # Filling it put noise into the quiet frames around a gated synth's hits (LSD under
        # 16 kHz 0.15 dB worse than the decode's at 192 kbps; bench/RESULTS.md).
        live &= env <= own[..., a:b] * np.float32(10 ** (BORROWED_DB / 10))
        # What is a hole, and how much goes in, is measured against the level of the bins the
        # encoder kept around it (_kept_level), not against the envelope: between the partials
        # of a tonal sound (a glockenspiel, a vibraphone, a bell, a synth) the envelope is the
        # partials' and the floor between them sits 30-80 dB under it. Revision 4 took that
        # floor for holes and filled it to 8 dB under the partials: a rendered glockenspiel
        # lost 8 dB of kept-band SI-SDR at 192 kbps, and 6 of the 480 level-training pairs
        # over 0.2 dB (revision 5; bench/RESULTS.md).
        depth = np.float32(10 ** (-settings.hole_depth_db / 10))
        kept_level = _kept_level(p, env_bins, depth)
        # But in sfb21 (16 kHz to the cutoff, at 192 kbps) the encoder keeps scattered bits
        # whatever the music (the band has no scalefactor of its own): most of its bins are
        # zero in every frame, so the kept level there says nothing of the music's floor and
        # the envelope stays the measure (without it: LSD above 16 kHz 0.1-1.1 dB worse on the
        # tuned part at 192 kbps, no better on the kept band).
        in_sfb21 = max(0, int(np.ceil(sfb21_hz(plan.rate) / hz)) - hole_lo)
        kept_level[..., in_sfb21:] = env[..., in_sfb21:]
        deep = live & (p < kept_level * depth)
        hole = _runs(deep, HOLE_BINS)    # a dip between two partials is narrow; the encoder zeroes whole runs
        want = np.minimum(env * np.float32(10 ** (settings.hole_fill_db / 10)),
                          kept_level * np.float32(10 ** (settings.hole_cap_db / 10)))
        amp = np.sqrt(np.maximum(want - p, 0) * np.float32(NORM)) * hole
        added[..., a:b] = amp * _unit_noise(start // HOP, frames, hole_lo, b - a)   # the same in every channel
        facts["holes"] = int(hole.sum())
        power[..., a:b] += amp ** 2 / np.float32(NORM)    # what the patch below copies

    # -- extension: [kf, nbins) from the patch, shaped to the target envelope, minus what is there --
    if np.isfinite(settings.strength_db) and kf < nbins and src_lo - lo >= 0:
        level = power[..., level_lo - lo:top - lo].mean(axis=-1)          # [C, F]
        level_db = 10 * np.log10(level + np.float32(1e-30))
        f_khz = np.arange(kf, nbins) * hz / 1000.0
        target_db = level_db[..., None] + _continued(plan, settings, f_khz, (level_lo + top) / 2 * hz / 1000.0)   # [C, F, K_ext]
        on = level_db > FLOOR_DB - 10.0                  # nothing from a frame whose top is silent
        # The kept floor: where the cutoff lies above sfb21's start (18.6 kHz at 192 kbps; at 128
        # kbps the few hundred Hz LAME may keep over 16 kHz), the decode still holds the band
        # [sfb21, cutoff), holes filled, in each frame. It is the nearest evidence of the top's
        # level, and a lower one (the encoder only removes), so the target is at least that band
        # continued upwards the same way, and at most KEPT_CAP_DB over the plain rule (a lone
        # bright band under the cutoff is not the whole top: with no cap, 2 % of the training
        # pairs were raised by 6-17 dB; bench/RESULTS.md).
        kept_lo, kept_hi = int(np.ceil(plan.level_hz / hz)), kf - int(np.ceil(GUARD_HZ / hz))
        if settings.kept_floor and kept_hi - kept_lo >= KEPT_MIN_BINS:
            kept_db = 10 * np.log10(power[..., kept_lo - lo:kept_hi - lo].mean(axis=-1) + np.float32(1e-30))
            floor_db = np.minimum(kept_db[..., None] + _continued(plan, settings, f_khz, (kept_lo + kept_hi) / 2 * hz / 1000.0),
                                  target_db + np.float32(KEPT_CAP_DB))
            facts["kept_floor_frames"] = int(((floor_db[..., 0] > target_db[..., 0]) & on).sum())
            target_db = np.maximum(target_db, floor_db)
        if plan.sparse_top_hz:
            # No cliff: the encoder's lowpass (18.6 kHz at 192 kbps) lies above the cutoff taken,
            # sfb21's start, and the band between holds its scattered bits. The quantiser zeroes
            # the quieter bins and keeps the louder ones, so the emptied bins there held less
            # than the band's level: they get sparse_fill_db less (at the full target, a trumpet
            # over a kit lost 0.36 dB of kept-band SI-SDR at 192 kbps; at -6 dB the worst of the
            # 240 training pairs loses 0.09, and LSD above 16 kHz is a little better: RESULTS).
            sparse = (f_khz < plan.sparse_top_hz / 1000.0).astype(np.float32)
            target_db = target_db + np.float32(settings.sparse_fill_db) * sparse
        target = np.where(on[..., None] & (target_db > FLOOR_DB - 20.0), 10 ** (target_db / 10), 0).astype(np.float32)
        # Add, never replace: only bins the encoder left (next to) empty get anything; a bin
        # it kept, however quiet (sfb21's scattered bits under a 19 kHz cutoff), stays as decoded.
        there = power[..., kf - lo:]
        empty = there < target * np.float32(10 ** (-settings.empty_db / 10))
        need = np.where(empty, target, 0)
        src = sub[..., src_lo - lo:top - lo] + added[..., src_lo - lo:top - lo]   # holes filled
        idx = (np.arange(kf, nbins) - src_lo) % patch_w  # target bin -> patch bin: a shift by a multiple of 4
        # The shifted copy's phases with the missing level as magnitude: the phases carry the
        # music's timing (a hit stays a hit), the smooth magnitude measured 0.3 dB LSD better
        # than the copy's own scattered one (bench/RESULTS.md).
        gain = np.sqrt(need * np.float32(NORM)) / np.maximum(np.abs(src), np.float32(1e-20))[..., idx]
        ramp = np.ones(nbins - kf, np.float32)
        ramp[:RAMP_BINS] = np.sin(0.5 * np.pi * (np.arange(RAMP_BINS) + 0.5) / RAMP_BINS) ** 2
        added[..., kf - lo:] += src[..., idx] * gain * ramp
        facts["extended_frames"] = int(on.sum())

    full = np.zeros((channels, frames, nbins), np.complex64)
    full[..., lo:] = added
    return x + istft(full, n), facts


def _continued(plan: SongPlan, settings: HighsSettings, f_khz: np.ndarray, from_khz: float) -> np.ndarray:
    """float32 dB at the frequencies f_khz relative to a band centred at from_khz: the music's
    slope up to the cutoff, that slope plus the extra roll-off above it, plus the strength."""
    cut_khz = plan.cutoff_hz / 1000.0
    return (plan.slope_db_khz * (np.minimum(f_khz, cut_khz) - from_khz)
            + (plan.slope_db_khz - settings.rolloff_db_khz) * np.maximum(f_khz - cut_khz, 0)
            + settings.strength_db).astype(np.float32)


def _unit_noise(first_frame: int, frames: int, lo_bin: int, bins: int) -> np.ndarray:
    """complex64 [frames, bins] of unit magnitude and a random-looking phase that depends only
    on the frame's place in the whole song and the bin (an integer hash of both with SEED), so
    that two blocks give the same noise where they overlap and a crossfade joins one signal."""
    f = np.arange(first_frame, first_frame + frames, dtype=np.uint32)[:, None]
    b = np.arange(lo_bin, lo_bin + bins, dtype=np.uint32)[None, :]
    h = f * np.uint32(0x9E3779B1) + b * np.uint32(0x85EBCA77) + np.uint32(SEED)
    for shift, mul in ((16, 0x7FEB352D), (15, 0x846CA68B)):   # "lowbias32" integer finaliser
        h ^= h >> np.uint32(shift)
        h *= np.uint32(mul)
    h ^= h >> np.uint32(16)
    phase = h.astype(np.float32) * np.float32(2 * np.pi / 2 ** 32)
    return (np.cos(phase) + 1j * np.sin(phase)).astype(np.complex64)
