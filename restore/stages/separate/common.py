"""What every separator backend shares: the `separate` stage's options and model table, and
the part of `process` around the model (mono and other rates in, the song's shape out, the
mixture check, the facts and the log line).

A backend (demucs.py, msst.py) subclasses `SeparatorStage` and supplies `separate_mix`:
a float32 [2, T] stereo mix at 44.1 kHz -> (stem names, float32 [stems, 2, T]). Every
backend returns the same thing to the routes (05-07): `Stems`, {stem: Audio} at the
song's rate, channel count and exact length, in the model's order.
"""
from __future__ import annotations

import numpy as np

from restore.audio import Audio, Stems, fit_frames
from restore.errors import RestoreError
from restore.stages.base import ModelStage, StageContext
from restore.stages.options import Option

MODEL_RATE = 44100          # every model offered here is trained at 44.1 kHz stereo
MAX_SEGMENT = 7.8           # demucs's transformer models refuse longer segments than they were trained on
AUTO = "auto"
# name: (backend, what it is). The msst models' files and published configs are in the
# catalogue (restore/models/store.py) under the same name.
MODELS = {
    "htdemucs_ft": ("demucs", "Demucs v4 fine-tuned bag of 4 models, one per stem (MIT)"),
    "htdemucs": ("demucs", "Demucs v4, one model, 4 stems (MIT)"),
    "htdemucs_6s": ("demucs", "Demucs v4, 6 stems: adds guitar and piano; piano is weak (MIT)"),
    "scnet_xl_ihf": ("msst", "SCNet XL IHF, 4 stems, MUSDB18-HQ avg SDR 10.08 (MSST release v1.0.15, MIT)"),
    "bs_roformer": ("msst", "BS-RoFormer 384x8, 4 stems, MUSDB18-HQ avg SDR 9.65 (MSST release v1.0.12, MIT)"),
    "bs_roformer_vocals": ("msst", "BS-RoFormer 512x12 (viperx), vocals + instrumental; weights' licence not stated"),
}
BEST_FIRST = ("scnet_xl_ihf", "htdemucs_ft")   # what `auto` takes: the first whose files are present

OPTIONS = (
    Option("model", "choice", AUTO,
           "auto: scnet_xl_ihf when its file is in the models folder, else htdemucs_ft; "
           + "; ".join(f"{name}: {what}" for name, (_, what) in MODELS.items()),
           choices=(AUTO, *MODELS)),
    Option("shifts", "int", 1, "demucs models: random time shifts averaged: each costs one more pass; demucs "
           "reports up to +0.2 dB SDR", 0, 20, auto=True),
    Option("overlap", "float", 0.25, "demucs models: overlap of the segments, as a fraction", 0.0, 0.9, auto=True),
    Option("segment", "float", None, "demucs models: segment length in seconds (auto: the model's own)", 1.0,
           MAX_SEGMENT, auto=True, note="the transformer models refuse segments longer than they were trained on"),
    Option("num_overlap", "int", None, "msst models: chunks covering each point (auto: the published config's; "
           "more is slower and smoother)", 1, 16, auto=True),
)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """[C, T] float32 from rate_in to rate_out (soxr, very high quality); as is when equal."""
    if rate_in == rate_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    import soxr
    return np.ascontiguousarray(soxr.resample(np.ascontiguousarray(x.T), rate_in, rate_out, quality="VHQ").T,
                                dtype=np.float32)


def mixture_residual_db(mix: Audio, stems: list[Audio]) -> float | None:
    """10*log10(power of (sum of stems - mix) / power of mix), in dB; None for a silent mix.
    -inf would mean the stems add up to the mix exactly; a trained model lands far below
    -20 dB, and anything near 0 dB means the stems lost (or invented) the signal."""
    power = residual = 0.0
    block = 1 << 18  # frames at a time, in float64: a whole song at once would be several copies of it
    for i in range(0, mix.frames, block):
        m = mix.samples[:, i:i + block].astype(np.float64)
        total = sum(s.samples[:, i:i + block].astype(np.float64) for s in stems)
        power += float(np.sum(np.square(m)))
        residual += float(np.sum(np.square(total - m)))
    if power == 0.0:
        return None
    return 10.0 * np.log10(max(residual, 1e-30) / power)


class SeparatorStage(ModelStage):
    """The `separate` stage's shared part; a backend supplies the model (see the module
    docstring). `model_name` is the model chosen (auto resolved by the package's factory)."""

    name = "separate"
    revision = 1
    options = OPTIONS
    backend = ""

    def __init__(self, env=None, model_name: str | None = None):
        super().__init__(env)
        self.model_name = model_name or self.opts["model"]
        self.auto = self.opts["model"] == AUTO
        self.device = None

    def separate_mix(self, mix: np.ndarray, ctx: StageContext) -> tuple[list[str], np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        """What the log line says about the model and how it ran."""
        return self.model_name

    def process(self, audio: Audio, ctx: StageContext) -> Stems:
        """[C, T] at any rate (C = 1 or 2) -> Stems {stem: [C, T] at the same rate}, in the
        model's order."""
        if audio.channels > 2:
            raise RestoreError(f"{self.model_name} separates mono or stereo songs; this one has {audio.channels} channels")
        self.report_load_notes(ctx)
        mix = audio.samples if audio.channels == 2 else np.repeat(audio.samples, 2, axis=0)
        names, estimates = self.separate_mix(resample(mix, audio.rate, MODEL_RATE), ctx)
        del mix
        stems = Stems()
        for name, est in zip(names, estimates):
            y = fit_frames(resample(est, MODEL_RATE, audio.rate), audio.frames)
            if audio.channels == 1:
                y = y.mean(axis=0, keepdims=True)
            stems[name] = Audio(np.ascontiguousarray(y, dtype=np.float32), audio.rate)
        del estimates
        residual_db = mixture_residual_db(audio, list(stems.values()))
        ctx.facts["stems"] = list(stems)
        ctx.facts["stems_model"] = self.model_name
        ctx.facts["stems_residual_db"] = None if residual_db is None else round(float(residual_db), 2)
        shown = "silent input" if residual_db is None else f"{residual_db:.1f} dB"
        ctx.log(f"separate: {self.describe()}, {len(stems)} stems ({', '.join(stems)})"
                f"{'' if audio.rate == MODEL_RATE else f', resampled {audio.rate} -> {MODEL_RATE} -> {audio.rate} Hz'}"
                f"{', mono duplicated to stereo and folded back' if audio.channels == 1 else ''}; "
                f"sum of stems vs the decode: residual {shown}")
        return stems
