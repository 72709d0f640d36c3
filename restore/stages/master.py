"""Mastering (variant 07_mastered, or any variant with `master` as its last step): stereo
width on mid/side, bass in mono below a frequency, one static gain to an integrated loudness
target, and a lookahead true-peak limiter that may take at most `max_limiting_db` of gain
reduction.

What measures and what limits, and why:
- Loudness: pyloudnorm (MIT, ITU-R BS.1770-4 integrated loudness), not a meter of our own.
  It refuses audio shorter than one 400 ms gating block (ValueError) and reads -inf when
  every block is under the -70 LUFS gate: the level is then left as it is (facts say why).
- Limiter: pedalboard's `BrickwallLimiter(true_peak=True)` (pedalboard 0.9.26, GPL-3: an
  extra, see README): a lookahead limiter (instant attack, exponential release, stereo-linked,
  latency compensated) whose sidechain oversamples 4x; no permissively licensed, maintained
  true-peak lookahead limiter was found for Python. Its docs say it "does not guarantee" the
  reconstructed waveform stays under the ceiling, and measured here it overshoots: by
  0.005 dB on a fs/4 sine at 45 degrees, 0.02 dB on the cymbals clip, 0.4 dB on the example
  band (its output samples stop at the ceiling, and the waveform between them goes over).
  Lowering its ceiling by the overshoot lowers its output's true peak by as much, so the
  stage runs it first on excerpts around the song's loudest blocks (`probe_overshoot`, a
  few seconds of audio), then over the song that much lower, within the same limiting cap.
  Every output is then measured by an independent meter, `restore.analysis.loudness.
  true_peak_dbtp` (soxr, 4x, linear phase), and what is still over comes off as a static
  trim: the probe does not see everything (the overshoot depends on what came before a
  peak; on the 4-minute example band the probe showed 0.21 dB, the whole song 0.36).
- Loudness range: `restore.analysis.loudness.loudness_range_lu` (EBU Tech 3342), the one the
  report uses: pyloudnorm's `loudness_range` steps 90 ms and pads 1.5 s of silence, and takes
  seconds on a song.

The plan, never squashing to reach a number: gain = target - loudness, unless the true peak
after that gain would be more than `max_limiting_db` over the ceiling; then the gain is
lowered so that the limiter takes exactly `max_limiting_db` at the loudest peak, and the
loudness stops short of the target (facts: reached false). The limiter runs only when a
true peak would be over the ceiling; loud material is turned down and never limited.
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np

from restore.audio import Audio
from restore.stages.base import Stage, StageContext, package_version
from restore.stages.options import Option

LOOKAHEAD_MS = 5.0          # pedalboard's default: long enough for its 4x sidechain to see a peak coming
REACHED_LU = 0.5            # the target counts as reached within this many LU
TRIM_MARGIN_DB = 0.01       # a trim or a lowered limiter ceiling aims this far under (float32 rounding)
OVERSHOOT_DB = 0.001       # a probed overshoot smaller than this is left to the trim
MIN_LIMITER_FRAMES = 4096   # shorter audio is padded with silence for the limiter (see limit())
PROBES = 16                 # loudest blocks the limiter's overshoot is measured on (probe_overshoot)
PROBE_BLOCK = 2048          # frames per block when looking for them
PROBE_PAD_S = 0.1           # audio around each block, s: the limiter's lookahead and release around the peak
GAIN_REDUCTION_FLOOR_DB = -6.0  # the limiter's gain reduction is read where the input is within 6 dB of its peak
_NEEDS = ("pedalboard", "pyloudnorm", "scipy")


def _mono_bass_check(value: int) -> int:
    if value and value < 20:
        raise ValueError("must be 0 (off) or at least 20 Hz")
    return value


class MasterStage(Stage):
    """[C, T] -> [C, T] at the same rate: width, bass mono, loudness, true-peak ceiling."""

    name = "master"
    revision = 1
    libraries = (*_NEEDS, "soxr", "numpy")   # soxr: the true peak measured (analysis.loudness)
    options = (
        Option("target_lufs", "float", -14.0, "integrated loudness to reach, LUFS (BS.1770-4, measured by pyloudnorm)",
               -30, -5),
        Option("ceiling_dbtp", "float", -1.0, "true-peak ceiling, dBTP (4x oversampled), kept by a lookahead limiter",
               -6, 0),
        Option("max_limiting_db", "float", 2.0, "most gain reduction the limiter may take, dB; a song that would "
               "need more stops short of the target", 0, 12),
        Option("width", "float", 1.0, "stereo width: the side (L-R) scaled by this; 0 is mono, 1 unchanged", 0, 2),
        Option("mono_bass_hz", "int", 0, "below this the side is removed (bass in mono; Linkwitz-Riley 4th order, "
               "zero phase), Hz", 0, 300, note="0 is off, else at least 20", check=_mono_bass_check),
        Option("release_ms", "float", 100.0, "the limiter's release, ms", 10, 1000),
    )

    def unavailable(self) -> str | None:
        missing = [m for m in _NEEDS if importlib.util.find_spec(m) is None]
        if missing:
            return f'{", ".join(missing)} not installed (pip install -e ".[master]"; pedalboard is GPL-3, see README)'
        return None

    def config(self) -> dict:
        return {**self.opts, "lookahead_ms": LOOKAHEAD_MS, "limiter": "pedalboard.BrickwallLimiter(true_peak=True)"}

    def process(self, audio: Audio, ctx: StageContext) -> Audio:
        """[C, T] float32 at any rate -> [C, T] float32 at the same rate. Records
        ctx.facts["master"]: loudness, loudness range and true peak before and after, the
        static gain, the limiting, whether the target was reached and why not."""
        from restore.analysis.loudness import loudness_range_lu, true_peak_dbtp

        o = self.opts
        target, ceiling, cap = o["target_lufs"], o["ceiling_dbtp"], o["max_limiting_db"]
        facts: dict = {"target_lufs": target, "ceiling_dbtp": ceiling, "max_limiting_db": cap,
                       "width": o["width"], "mono_bass_hz": o["mono_bass_hz"],
                       "limiter": f'pedalboard {package_version("pedalboard")} BrickwallLimiter(true_peak=True)',
                       "meter": f'pyloudnorm {package_version("pyloudnorm")}'}
        ctx.facts["master"] = facts
        if not np.any(audio.samples):
            facts.update(reached=False, gain_db=0.0, limiting_db=0.0, note="silence: left unchanged")
            ctx.log("master: silence, left unchanged")
            return audio

        rate = audio.rate
        lufs_before, tp_before, lra_before = integrated_lufs(audio.samples, rate), true_peak_dbtp(audio), loudness_range_lu(audio)
        facts.update(lufs_before=_r(lufs_before), true_peak_before_dbtp=_r(tp_before), lra_before=_r(lra_before))
        y, shaped = self._shape_stereo(audio.samples, rate, facts, ctx)
        lufs, tp = (integrated_lufs(y, rate), true_peak_dbtp(Audio(y, rate))) if shaped else (lufs_before, tp_before)

        limiter_ceiling = ceiling - TRIM_MARGIN_DB
        gain, limiting, notes = plan_gain(lufs, tp, target, limiter_ceiling, cap)
        out, trim, took = _scaled(y, gain), 0.0, 0.0
        if limiting > 0:
            # The limiter overshoots its ceiling on bright peaks (its samples stop at the
            # ceiling, the waveform between them goes over): measure by how much on this
            # song's loudest moments, and run it that much lower, within the same limiting cap.
            over = probe_overshoot(out, rate, limiter_ceiling, o["release_ms"])
            if over > OVERSHOOT_DB:
                limiter_ceiling -= over
                gain, limiting, notes = plan_gain(lufs, tp, target, limiter_ceiling, cap)
                notes.append(f"the limiter overshoots by {over:.3f} dB here, so it runs at {limiter_ceiling:.2f} dBTP")
                out = _scaled(y, gain)
        if limiting > 0:
            gained = out
            out = limit(gained, rate, limiter_ceiling, o["release_ms"])
            facts["limiter_ceiling_dbtp"] = _r(limiter_ceiling)
        tp_after = true_peak_dbtp(Audio(out, rate))   # the stage's promise, by a meter independent of the limiter
        if tp_after is not None and tp_after > ceiling:
            trim = -(tp_after - ceiling + TRIM_MARGIN_DB)
            out = _scaled(out, trim)
            tp_after += trim                             # a gain moves the true peak by exactly its dB
        if trim:
            notes.append(f"{-trim:.3f} dB more off the whole song: the output was over the ceiling")
        if limiting > 0:
            took = max(0.0, gain_reduction_db(gained, out) + trim)   # the limiter's own share, the trim apart
            lufs_after, lra_after = integrated_lufs(out, rate), loudness_range_lu(Audio(out, rate))
            facts["after"] = "measured"
        else:
            # A static gain moves every gating block by the same dB: the loudness follows it
            # exactly and the range stays (both gates are relative; the -70 LUFS one only
            # matters for songs within 10 LU of it). Not measuring again saves a third of the time.
            lufs_after = _plus(lufs, gain + trim)
            lra_after = loudness_range_lu(Audio(out, rate)) if shaped else lra_before
            facts["after"] = "true peak measured; loudness is the measured one plus the static gain (exact)"
        reached = lufs_after is not None and abs(lufs_after - target) <= REACHED_LU
        facts.update(lufs_after=_r(lufs_after), true_peak_after_dbtp=_r(tp_after), lra_after=_r(lra_after),
                     reached=reached, gain_db=_r(gain + trim), limiting_db=_r(took))
        if notes:
            facts["note"] = "; ".join(notes)
        ctx.log(f"master: {_show(lufs_before)} -> {_show(lufs_after)} LUFS (target {target:g}, "
                f"{'reached' if reached else 'not reached'}), gain {gain + trim:+.2f} dB, limiting {took:.2f} dB, "
                f"true peak {_show(tp_before, '.2f')} -> {_show(tp_after, '.2f')} dBTP" + "".join(f"; {n}" for n in notes))
        return Audio(out, rate)

    def _shape_stereo(self, x: np.ndarray, rate: int, facts: dict, ctx: StageContext) -> tuple[np.ndarray, bool]:
        """(samples after width and bass mono, whether they changed). Mono and other channel
        counts than two pass unchanged (there is no side to scale)."""
        width, bass_hz = self.opts["width"], self.opts["mono_bass_hz"]
        if width == 1.0 and not bass_hz:
            return x, False
        if x.shape[0] != 2:
            facts["stereo"] = f"{x.shape[0]} channel(s): width and bass mono do not apply"
            ctx.log(f"master: {x.shape[0]} channel(s), width and bass mono do not apply")
            return x, False
        return mid_side(x, rate, width, bass_hz), True


def integrated_lufs(samples: np.ndarray, rate: int) -> float | None:
    """Integrated loudness of [C, T] samples in LUFS by pyloudnorm (BS.1770-4); None when it
    cannot be measured: shorter than one 400 ms gating block, or every block under -70 LUFS."""
    import pyloudnorm

    try:
        value = pyloudnorm.Meter(rate).integrated_loudness(samples.T.astype(np.float64))
    except ValueError:          # "Audio must have length greater than the block size."
        return None
    return float(value) if math.isfinite(value) else None


def plan_gain(lufs: float | None, true_peak: float | None, target: float, ceiling: float,
              max_limiting: float) -> tuple[float, float, list[str]]:
    """(static gain dB, limiting the gain calls for dB, notes). The gain reaches the target
    unless the true peak would then be more than `max_limiting` over the ceiling; then it is
    lowered until the limiting is exactly `max_limiting` (stops short). Unmeasurable loudness
    keeps the level (gain 0, unless the peaks alone need more than the limiter may take)."""
    notes = []
    if lufs is None:
        gain = 0.0
        notes.append("loudness not measurable (shorter than a 400 ms gating block, or under the -70 LUFS gate): "
                     "level kept")
    else:
        gain = target - lufs
    if true_peak is None:
        return gain, 0.0, notes
    allowed = ceiling + max_limiting - true_peak
    if gain > allowed:
        if lufs is not None:
            notes.append(f"stopped short of the target: reaching it would need {gain - allowed + max_limiting:.2f} dB "
                         f"of limiting, {max_limiting:g} dB allowed")
        else:
            notes.append(f"turned down {-allowed:.2f} dB: the peaks are over what the limiter may take")
        gain = allowed
    over = true_peak + gain - ceiling
    return gain, over if over > 1e-9 else 0.0, notes     # not float rounding of a gain capped at the ceiling


def mid_side(x: np.ndarray, rate: int, width: float, bass_hz: int) -> np.ndarray:
    """Stereo [2, T] -> [2, T] float32: the side (L-R)/2 scaled by `width`, and below
    `bass_hz` (0: off) removed. The bass split is a zero-phase Linkwitz-Riley crossover: a
    2nd-order Butterworth low-pass run forwards and backwards (|H|^2: -6 dB at the crossover,
    24 dB per octave) and its complement, side - low, so the two bands sum to the side exactly."""
    mid = (x[0].astype(np.float64) + x[1]) / 2
    side = (x[0].astype(np.float64) - x[1]) / 2
    if bass_hz:
        from scipy.signal import butter, sosfiltfilt

        side = side - sosfiltfilt(butter(2, bass_hz, btype="low", fs=rate, output="sos"), side)
    side *= width
    return np.stack([mid + side, mid - side]).astype(np.float32)


def limit(samples: np.ndarray, rate: int, ceiling_dbtp: float, release_ms: float) -> np.ndarray:
    """[C, T] float32 through pedalboard's lookahead true-peak limiter: stereo-linked, its
    latency compensated (the output is aligned with the input), same shape. Short audio is
    padded with silence for the call: pedalboard guesses the layout from the shape."""
    import pedalboard

    frames = samples.shape[1]
    padded = np.pad(samples, ((0, 0), (0, max(0, MIN_LIMITER_FRAMES - frames))))
    limiter = pedalboard.BrickwallLimiter(ceiling_db=ceiling_dbtp, release_ms=release_ms,
                                          lookahead_ms=LOOKAHEAD_MS, true_peak=True)
    out = limiter.process(np.ascontiguousarray(padded, dtype=np.float32), float(rate))
    if out.shape != padded.shape:
        raise RuntimeError(f"the limiter returned {out.shape} for {padded.shape}")
    return np.ascontiguousarray(out[:, :frames], dtype=np.float32)


def probe_overshoot(samples: np.ndarray, rate: int, ceiling_dbtp: float, release_ms: float) -> float:
    """By how many dB the limiter's output overshoots the ceiling (true peak, measured by
    restore.analysis.loudness) on excerpts around the PROBES loudest blocks of `samples`
    [C, T]; 0.0 if it does not. A few seconds of audio instead of a whole extra pass: the
    overshoot is the limiter's, at the loudest peaks, and lowering its ceiling by it lowers
    its output's true peak by as much. The whole output is measured afterwards anyway."""
    from restore.analysis.loudness import true_peak_dbtp

    hop, pad = PROBE_BLOCK, int(PROBE_PAD_S * rate)
    loudest = np.abs(samples).max(axis=0)                       # [T]: the limiter is stereo-linked
    blocks = -(-loudest.size // hop)
    peaks = np.pad(loudest, (0, blocks * hop - loudest.size)).reshape(blocks, hop).max(axis=1)
    worst = -math.inf
    for b in np.sort(np.argsort(peaks)[-PROBES:]):
        start, stop = max(0, b * hop - pad), min(samples.shape[1], (b + 1) * hop + pad)
        keep = slice(min(b * hop, start + pad // 2) - start, None)   # the limiter's first moments warm it up: not judged
        out = limit(samples[:, start:stop], rate, ceiling_dbtp, release_ms)[:, keep]
        worst = max(worst, true_peak_dbtp(Audio(np.ascontiguousarray(out), rate)) or -math.inf)
    return max(0.0, worst - ceiling_dbtp)


def gain_reduction_db(before: np.ndarray, after: np.ndarray) -> float:
    """The most a gain stage took off, in dB, read sample by sample where `before` is within
    6 dB of its peak (where a peak limiter acts, and where the ratio is well defined).
    The limiter is stereo-linked, so the loudest channel of each frame is enough."""
    a = np.abs(before).max(axis=0)
    b = np.abs(after).max(axis=0)
    peak = float(a.max())
    if peak <= 0:
        return 0.0
    near = a >= peak * 10 ** (GAIN_REDUCTION_FLOOR_DB / 20)
    ratio = float(np.max(a[near] / np.maximum(b[near], 1e-30)))
    return max(0.0, 20 * math.log10(ratio))


def _scaled(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """samples * gain (dB), float32; the same array for 0 dB."""
    return samples if gain_db == 0 else samples * np.float32(10 ** (gain_db / 20))


def _plus(value: float | None, db: float) -> float | None:
    return None if value is None else value + db


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def _show(value: float | None, fmt: str = ".1f") -> str:
    return "unmeasurable" if value is None else format(value, fmt)
