"""Route (05_stems_enhanced, and the remix after it): each stem through its own chain of
existing stages, {stem: Audio} in and out.

The default routes follow the plan the archive's owner made, kept honest:
  vocals  denoise, bwe   DeepFilterNet3 (limited, as in 09) is a speech model: a vocal stem
                         is where it belongs, not a full mix; then the band's extension
  drums   bwe
  bass    none           there is nothing above 16 kHz in a bass line to extend
  other   bwe
  guitar, piano  other   (the 6-stem model's) other's route, whatever it is set to
  instrumental   other   a two-stem separation's accompaniment (separate.model=bs_roformer_vocals,
                         or UVR's files): other's route, unless set; a stem of any other
                         name takes other's route too
"bwe" is the best bandwidth extension present here, chosen when the run is planned: AudioSR,
else HiFi-GAN+, else the offline restore (numpy, always present), so the chain runs on a
machine with no neural weights. The chosen engine is part of the config, so installing a
model redoes the songs. A route is `--set route.<stem>=<names>`: stage names or `bwe`,
separated by commas, or `none`.

The stages a route runs are the run's own (`ctx.loaded`: built from the run's options,
loaded once per run through the model cache, shared with the variants that run them
directly); outside a run the stage loads its own. Each gets the song's facts (the MP3's
cutoff applies to every stem: the encoder cut the mix), its own facts, which land here
prefixed with the stem (`vocals.denoise_level_change_db`), and a log prefixed likewise.

Before changing the stems the route keeps what the separation left out of them (the decode
minus their sum, `Stems.residual`), for the remix to add back. A rate may change per stem
(AudioSR and HiFi-GAN+ give 48 kHz); the remix decides how they meet.
"""
from __future__ import annotations

import math

from restore.analysis.blocks import energy, spans
from restore.audio import Audio, Stems, frames_at_rate
from restore.errors import RestoreError, UsageError
from restore.stages.base import Stage, StageContext
from restore.stages.options import Option

STEM_NAMES = ("vocals", "drums", "bass", "other", "guitar", "piano", "instrumental")
BWE_ENGINES = ("bwe_audiosr", "bwe_hifigan", "offline_restore")   # best first
NOT_ROUTABLE = frozenset({"decode", "separate", "stems_from", "route", "remix"})  # not Audio -> Audio
DEFAULT_ROUTES = {"vocals": "denoise,bwe", "drums": "bwe", "bass": "none", "other": "bwe", "guitar": "other", "piano": "other",
                  "instrumental": "other"}
WHY = {
    "vocals": "DeepFilterNet3 (a speech model: the vocal stem is where it belongs), then the band's extension",
    "drums": "the band's extension",
    "bass": "unchanged: there is nothing above 16 kHz in a bass line to extend",
    "other": "the band's extension; a stem of another name takes this route too",
    "guitar": "other's route (htdemucs_6s)",
    "piano": "other's route (htdemucs_6s)",
    "instrumental": "other's route (a vocals + instrumental separation: bs_roformer_vocals, UVR)",
}
VALUES = "stage names or bwe, separated by commas; or none; or other (other's route)"


def check_route(value: str) -> str:
    """'Denoise, BWE' -> 'denoise,bwe'; ValueError naming what is wrong."""
    from restore.stages import stage_names
    names = [w.strip().lower() for w in str(value).split(",") if w.strip()]
    if not names:
        raise ValueError("give stage names separated by commas, or none")
    for alone, what in (("none", "the stem goes through unchanged"), ("other", "the stem takes other's route")):
        if alone in names and len(names) > 1:
            raise ValueError(f"{alone} stands alone: {what}")
    known = set(stage_names()) - NOT_ROUTABLE
    for name in names:
        if name not in known and name not in ("bwe", "none", "other"):
            raise ValueError(f"{name} is not a stage a stem can go through (known: bwe, none, other, "
                             f"{', '.join(sorted(known))})")
    return ",".join(names)


def rms_dbfs(audio: Audio) -> float | None:
    """RMS level over all channels, dBFS (a full-scale sine reads -3.01); None for silence."""
    e = energy(audio)
    return round(10 * math.log10(e / audio.samples.size), 2) if e > 0 else None


def residual_of(source: Audio, stems: dict[str, Audio]) -> Audio | None:
    """The source minus the sum of the stems, at the source's rate, float32; None when a
    stem is at another rate (then it is not what a separation gave)."""
    if any(s.rate != source.rate or s.frames != source.frames for s in stems.values()):
        return None
    out = source.samples.copy()
    for a, b in spans(source.frames):
        for s in stems.values():
            out[:, a:b] -= s.samples[:, a:b]
    return Audio(out, source.rate)


def flat_facts(prefix: str, facts: dict) -> dict:
    """{"offline_restore": {"cutoff_hz": 16000}} -> {"<prefix>.offline_restore.cutoff_hz": 16000}:
    one level of keys, for the report's table."""
    out = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            out.update(flat_facts(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


class RouteStage(Stage):
    """Each stem through its own chain of stages (05_stems_enhanced)."""

    name = "route"
    revision = 1
    options = tuple(Option(stem, "text", DEFAULT_ROUTES[stem], f"the {stem} stem's chain; default: {WHY[stem]}",
                           values=VALUES, check=check_route) for stem in STEM_NAMES)

    def __init__(self, env=None):
        super().__init__(env)
        if self.opts["other"] == "other":
            raise UsageError("route.other='other': other's route must name stages, bwe or none")
        self._stages: dict = {}      # cheap instances, for config, versions and availability
        self._own: dict = {}         # loaded by this stage when run outside a run
        self._bwe: str | None = None
        self.device = None

    def _stage(self, name: str):
        if name not in self._stages:
            from restore.stages import get_stage
            self._stages[name] = get_stage(name, self.env)
        return self._stages[name]

    def bwe_engine(self) -> str:
        """The best bandwidth extension present here (asked once)."""
        if self._bwe is None:
            self._bwe = next(n for n in BWE_ENGINES if n == BWE_ENGINES[-1] or self._stage(n).unavailable() is None)
        return self._bwe

    def route_of(self, stem: str) -> tuple[str, ...]:
        """The stages `stem` goes through, `bwe` resolved; () for none. A stem of a name
        without its own option, or whose route is `other`, takes other's route."""
        words = self.opts[stem if stem in self.opts else "other"].split(",")
        if words == ["other"]:
            words = self.opts["other"].split(",")
        return tuple(self.bwe_engine() if w == "bwe" else w for w in words if w != "none")

    def uses(self) -> tuple[str, ...]:
        """Every stage some route runs (the plan builds them, the run loads them once)."""
        return tuple(dict.fromkeys(n for stem in STEM_NAMES for n in self.route_of(stem)))

    # -- what the plan asks (cheap) --
    def unavailable(self) -> str | None:
        for stem in STEM_NAMES:
            for name in self.route_of(stem):
                why = self._stage(name).unavailable()
                if why:
                    return f"route.{stem} needs {name}: {why} (or choose its route: --set route.{stem}=bwe or none)"
        return None

    def versions(self) -> dict:
        out = {"route": self.revision}
        for name in self.uses():
            out.update({f"{name}.{k}": v for k, v in self._stage(name).versions().items()})
        return out

    def library_versions(self) -> dict:
        out = {}
        for name in self.uses():
            out.update({f"{name}.{k}": v for k, v in self._stage(name).library_versions().items()})
        return out

    def config(self) -> dict:
        return {"routes": {stem: [{"stage": n, "config": self._stage(n).config()} for n in self.route_of(stem)]
                           for stem in STEM_NAMES},
                "other_stems": "as other", "bwe": self.bwe_engine(), "residual": "kept for the remix"}

    # -- heavy: the stages it runs are loaded by the run (ctx.loaded) --
    def load(self, device=None) -> None:
        self.device = device

    def unload(self) -> None:
        for stage in self._own.values():
            stage.unload()
        self._own.clear()

    def _loaded(self, name: str, ctx: StageContext):
        if ctx.loaded is not None:
            return ctx.loaded(name)
        if name not in self._own:  # outside a run: load our own, on the device we were given
            from restore.models.devices import choose_device
            stage = self._stage(name)
            stage.load(self.device or choose_device("cpu"))
            self._own[name] = stage
        return self._own[name]

    def process(self, stems, ctx: StageContext) -> Stems:
        """{stem: Audio} -> Stems with each stem through its route (same channels and
        duration; the rate may change per stem), and `residual` kept."""
        if not isinstance(stems, dict) or not stems:
            raise RestoreError("route works on stems: put a separating step (separate or stems_from) before it")
        residual = getattr(stems, "residual", None)
        if residual is None and ctx.source is not None:
            residual = residual_of(ctx.source, stems)
        out = Stems(residual=residual)
        total = sum(len(self.route_of(n)) for n in stems) or 1
        done = 0
        for stem, audio in stems.items():
            chain = self.route_of(stem)
            before = rms_dbfs(audio)
            y = audio
            for name in chain:
                sub = StageContext(options=dict(ctx.options), log=lambda line, s=stem: ctx.log(f"route {s}: {line}"),
                                   progress=lambda f, d=done: ctx.progress(min(1.0, (d + f) / total)),
                                   source=ctx.source, loaded=ctx.loaded)
                given = y
                y = self._loaded(name, ctx).process(given, sub)
                if (not isinstance(y, Audio) or y.channels != given.channels
                        or y.frames != frames_at_rate(given.frames, given.rate, y.rate)):
                    raise RestoreError(f"route.{stem}: {name} did not keep the stem's channels and duration")
                ctx.facts.update(flat_facts(stem, sub.facts))
                done += 1
            out[stem] = y
            after = rms_dbfs(y) if chain else before
            ctx.facts[f"{stem}.route"] = ", ".join(chain) or "none"
            ctx.facts[f"{stem}.rms_before_dbfs"] = before
            ctx.facts[f"{stem}.rms_after_dbfs"] = after
            why = f" ({WHY['bass'].split(': ', 1)[1]})" if stem == "bass" and not chain else ""
            ctx.log(f"route: {stem} -> {', '.join(chain) or 'unchanged'}{why}; RMS {_db(before)} -> {_db(after)} dBFS"
                    + (f", {y.rate} Hz" if y.rate != audio.rate else ""))
        ctx.progress(1.0)
        return out


def _db(value: float | None) -> str:
    return "silent" if value is None else f"{value:.1f}"

