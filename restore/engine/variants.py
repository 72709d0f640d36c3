"""Variants: named recipes whose results land side by side in OUT/<name>/.

A variant is the decode followed by zero or more stages, written as FLAC. Steps that
variants share (the decode) run once per song and feed them all.
"""
from __future__ import annotations

from dataclasses import dataclass

from restore.errors import UsageError


@dataclass(frozen=True)
class Variant:
    name: str                    # the output folder and the id in markers, e.g. "01_baseline"
    title: str                   # what a person reads in menus and reports
    steps: tuple[str, ...] = ()  # stage names applied after the decode, in order
    bits: int = 24
    keeps_loudness: bool = True  # False: ReplayGain tags would lie, so they are dropped
    stems: bool = False          # the last step returns {stem: Audio}: one FLAC per stem in a folder per song
    default: bool = True         # in the default set when it can run here (else only by name)

    def config(self, stage_configs: dict[str, dict]) -> dict:
        """Everything that decides this variant's output, for the config hash."""
        return {
            "variant": self.name,
            "steps": [{"stage": s, "config": stage_configs[s]} for s in ("decode", *self.steps)],
            "output": {"format": "FLAC", "bits": self.bits, "keeps_loudness": self.keeps_loudness,
                       **({"stems": True} if self.stems else {})},
        }


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("01_baseline", "clean gapless 24-bit decode, no AI: the reference"),
        Variant("02_audiosr_direct", "AudioSR latent diffusion bandwidth extension on the decode, 48 kHz",
                steps=("bwe_audiosr",), keeps_loudness=False),
        Variant("03_audiosr_lp", "low-pass at the detected MP3 cutoff, then AudioSR, 48 kHz",
                steps=("lowpass", "bwe_audiosr"), keeps_loudness=False),
        Variant("04_stems", "stems (vocals, drums, bass, other; SCNet XL IHF when present, else Demucs; "
                "separate.model chooses), one FLAC each",
                steps=("separate",), stems=True),
        Variant("05_stems_enhanced", "each stem through its own route (vocals: denoise + bandwidth extension; "
                "drums, other: bandwidth extension; bass: unchanged), one FLAC each",
                steps=("separate", "route"), keeps_loudness=False, stems=True),
        Variant("06_remixed", "the routed stems summed back with what the separation left out (nothing lost), "
                "per-stem gains", steps=("separate", "route", "remix"), keeps_loudness=False),
        Variant("07_mastered", "the remix mastered: loudness target, true-peak ceiling, width (never squashed "
                "past max_limiting_db)", steps=("separate", "route", "remix", "master"), keeps_loudness=False),
        Variant("08_hifigan", "HiFi-GAN+ bandwidth extension to 48 kHz (fast GAN, trained on speech)",
                steps=("bwe_hifigan",), keeps_loudness=False),
        # Off the default set: on the dev set it took 5-6 LU from every music clip and restored
        # nothing (bench/RESULTS.md); the denoiser's place is the vocal stem's route (05-07).
        Variant("09_denoised", "DeepFilterNet3 denoise, gentle (trained on speech: risky on music)",
                steps=("denoise",), default=False),
        Variant("10_denoise_audiosr", "DeepFilterNet3 denoise, then AudioSR (the original full chain)",
                steps=("denoise", "bwe_audiosr"), keeps_loudness=False),
        Variant("11_offline_restore", "CPU restore with nothing to download: highs above the cutoff and spectral holes",
                steps=("offline_restore",), keeps_loudness=False),
        Variant("12_apollo", "Apollo, trained on MP3 damage: repairs below the cutoff, restores above it (44.1 kHz inside)",
                steps=("apollo",), keeps_loudness=False),
    )
}


def resolve_variants(spec: str | None) -> list[Variant] | None:
    """'01_baseline,08' or '1,9,11' or 'baseline' or 'all' -> Variants, in table order. A
    name matches a variant by its full name, its number (with or without the leading zero)
    or the words after the number. None or '' gives None: the default set, every variant
    that can run here (decided by the plan)."""
    if not spec or spec.strip().lower() == "default":
        return None
    if spec.strip().lower() == "all":
        return list(VARIANTS.values())
    chosen = []
    for word in (w.strip().lower() for w in spec.split(",") if w.strip()):
        word, plus, extra = word.partition("+")
        word = word.strip()
        match = [v for v in VARIANTS.values()
                 if word in (v.name, v.name[:2], v.name[3:]) or (word.isdigit() and int(word) == int(v.name[:2]))]
        if not match:
            raise UsageError(f"unknown variant {word!r}", hint="known: " + ", ".join(VARIANTS))
        if plus:
            if extra.strip() != "master":
                raise UsageError(f"'{word}+{extra}': only +master can follow a variant", hint="e.g. --variants 11+master")
            match = [mastered(v) for v in match]
        chosen.extend(m for m in match if m not in chosen)
    order = list(VARIANTS)
    return sorted(chosen, key=lambda v: (order.index(v.name if v.name in VARIANTS else v.name.removesuffix(MASTERED)),
                                         v.name))


MASTERED = "_mastered"


def mastered(v: Variant) -> Variant:
    """`v` with the master stage after its steps (loudness, true-peak ceiling, width: see
    restore/stages/master.py), written beside it as `<name>_mastered`: `--variants 11+master`
    masters the offline restore the way 07_mastered masters the remix of the stems."""
    if v.stems:
        raise UsageError(f"{v.name} makes stems, not a mix: there is nothing to master",
                         hint="07_mastered masters the remix of the stems")
    if "master" in v.steps:
        raise UsageError(f"{v.name} is mastered already")
    return Variant(v.name + MASTERED, f"{v.title}; mastered", steps=(*v.steps, "master"), bits=v.bits,
                   keeps_loudness=False, default=False)
