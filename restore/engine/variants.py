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
        Variant("04_stems", "Demucs stems (vocals, drums, bass, other), one FLAC each",
                steps=("separate",), stems=True),
        Variant("08_hifigan", "HiFi-GAN+ bandwidth extension to 48 kHz (fast GAN, trained on speech)",
                steps=("bwe_hifigan",), keeps_loudness=False),
        Variant("09_denoised", "DeepFilterNet3 denoise, gentle (trained on speech: risky on music)",
                steps=("denoise",)),
        Variant("10_denoise_audiosr", "DeepFilterNet3 denoise, then AudioSR (the original full chain)",
                steps=("denoise", "bwe_audiosr"), keeps_loudness=False),
        Variant("11_offline_restore", "CPU restore with nothing to download: highs above the cutoff and spectral holes",
                steps=("offline_restore",), keeps_loudness=False),
        Variant("12_apollo", "Apollo, trained on MP3 damage: repairs below the cutoff, restores above it (44.1 kHz inside)",
                steps=("apollo",), keeps_loudness=False),
    )
}


def resolve_variants(spec: str | None) -> list[Variant] | None:
    """'01_baseline,08' or 'baseline' or 'all' -> Variants, in table order. A name matches a
    variant by its full name, its number or the words after the number. None or '' gives
    None: the default set, every variant that can run here (decided by the plan)."""
    if not spec or spec.strip().lower() == "default":
        return None
    if spec.strip().lower() == "all":
        return list(VARIANTS.values())
    chosen = []
    for word in (w.strip().lower() for w in spec.split(",") if w.strip()):
        match = [v for v in VARIANTS.values() if word in (v.name, v.name[:2], v.name[3:])]
        if not match:
            raise UsageError(f"unknown variant {word!r}", hint="known: " + ", ".join(VARIANTS))
        chosen.extend(m for m in match if m not in chosen)
    return sorted(chosen, key=list(VARIANTS.values()).index)
