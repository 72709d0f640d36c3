"""Remix (06_remixed): the stems summed back into one song, with nothing lost.

Demucs's stems do not add up to the mixture exactly; what they miss (the decode minus the
sum of the stems as separated: `Stems.residual`, kept by the route before it changed them,
or measured here when the stems come straight from a separator) is added back. So with every
route `none` and every gain 0 dB the remix is the decode (tested within -90 dB; what is left
is float32 rounding, below 24-bit: the test's FLACs come out identical to the baseline's).

- Gains: `--set remix.<stem>_db=1.5` per stem (vocals, drums, bass, other, guitar, piano);
  the residual stays at 0 dB. Recorded in the facts.
- Rate: the highest of the stems' rates. A bandwidth extension (AudioSR, HiFi-GAN+) returns
  its stem at 48 kHz with content up to 24 kHz; summing at the decode's 44.1 kHz would throw
  that band away and put the enhanced stems through one more resampler, while bringing the
  untouched stems and the residual up to 48 kHz (soxr, very high quality) adds nothing and
  loses nothing. With every stem at the decode's rate (the offline restore, none) the remix
  stays at it. Length exact: round(frames x rate / decode rate), as every stage.
- Channels: the decode's (stereo kept; the stems have it).
- Level: float in, float out: nothing is clipped here. A remix whose sample peak would exceed
  full scale (stems brightened, a gain raised) is scaled down as a whole to a 0 dBFS peak,
  and the log and the facts say by how much (`remix.scaled_db`); the master after it, or the
  writer, gets audio that fits.

Memory: the output, plus one stem at a time when its rate has to change.
"""
from __future__ import annotations

import math

import numpy as np

from restore.analysis.blocks import energy, resample, spans
from restore.audio import Audio, fit_frames, frames_at_rate
from restore.errors import RestoreError
from restore.stages.base import Stage, StageContext
from restore.stages.options import Option
from restore.stages.route import STEM_NAMES, residual_of

MAX_GAIN_DB = 24.0


class RemixStage(Stage):
    """Stems + residual -> one song (06_remixed)."""

    name = "remix"
    revision = 1
    libraries = ("soxr", "numpy")   # soxr: analysis.blocks.resample
    options = tuple(Option(f"{stem}_db", "float", 0.0, f"gain of the {stem} stem in the remix, dB",
                           -MAX_GAIN_DB, MAX_GAIN_DB) for stem in STEM_NAMES)

    def config(self) -> dict:
        return {"gains_db": {stem: self.opts[f"{stem}_db"] for stem in STEM_NAMES}, "residual": "added back",
                "rate": "highest of the stems", "resampler": "soxr-vhq", "over_full_scale": "scaled to a 0 dBFS peak"}

    def process(self, stems, ctx: StageContext) -> Audio:
        """{stem: Audio} (+ residual) -> Audio at the highest stem rate, the decode's channels
        and duration."""
        if not isinstance(stems, dict) or not stems:
            raise RestoreError("remix sums stems: put a separating step (separate or stems_from) before it")
        source = ctx.source
        if source is None:
            raise RestoreError("remix needs the song's decode (StageContext.source) to add back what the stems miss")
        residual = getattr(stems, "residual", None)
        if residual is None:
            residual = residual_of(source, stems)
            if residual is None:
                raise RestoreError("remix: the stems are not at the decode's rate and length, and nothing kept "
                                   "what the separation left out (route keeps it)")
        rate = max(s.rate for s in stems.values())
        frames = frames_at_rate(source.frames, source.rate, rate)
        out = np.array(fit_frames(resample(residual, rate).samples, frames), dtype=np.float32)  # a fresh copy
        gains = {}
        for name, stem in stems.items():
            gain_db = self.opts.get(f"{name}_db", 0.0)
            gains[name] = gain_db
            gain = np.float32(10 ** (gain_db / 20))
            y = fit_frames(resample(stem, rate).samples, frames)
            for a, b in spans(frames):  # in blocks: no song-size temporary for the gain
                out[:, a:b] += y[:, a:b] if gain_db == 0 else y[:, a:b] * gain
            del y
        unused = [f"{s}_db" for s in STEM_NAMES if self.opts[f"{s}_db"] != 0 and s not in stems]
        peak = max((float(np.abs(out[:, a:b]).max()) for a, b in spans(frames)), default=0.0)
        scaled_db = 0.0
        if peak > 1.0:
            scaled_db = -20 * math.log10(peak)
            for a, b in spans(frames):
                out[:, a:b] *= np.float32(1.0 / peak)
        e_source, e_res = energy(source), energy(residual)
        residual_db = round(10 * math.log10(max(e_res, 1e-30) / e_source), 2) if e_source > 0 else None
        for name, gain_db in gains.items():
            ctx.facts[f"remix.{name}_db"] = gain_db
        ctx.facts["remix.residual_db"] = residual_db
        ctx.facts["remix.rate"] = rate
        ctx.facts["remix.peak_dbfs"] = round(20 * math.log10(peak), 2) if peak > 0 else None
        ctx.facts["remix.scaled_db"] = round(scaled_db, 2)
        if unused:
            ctx.facts["remix.unused"] = unused
        ctx.log(f"remix: {len(stems)} stems ({', '.join(f'{n} {g:+g} dB' for n, g in gains.items())}) + the residual "
                f"({'silent input' if residual_db is None else f'{residual_db:.1f} dB re the decode'}) at {rate} Hz"
                + (f", resampled from {source.rate} Hz where a stem was not there" if rate != source.rate else ""))
        if scaled_db:
            ctx.log(f"remix: the sum peaked at {20 * math.log10(peak):+.2f} dBFS: scaled by {scaled_db:.2f} dB "
                    "to fit full scale (nothing clipped)")
        if unused:
            ctx.log(f"remix: {', '.join('remix.' + u for u in unused)} set, but this song has no such stem")
        ctx.progress(1.0)
        return Audio(out, rate)
