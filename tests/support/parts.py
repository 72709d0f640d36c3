"""Separately rendered instrument parts of one short song, as real stems for the stems chain's
tests (and the mix they add up to): real recorded instrument samples from Debian packages,
the way scripts/make_devset.py makes the dev set.

  drums   the General MIDI drum kit of a SoundFont (kick, snare, hi-hats, a crash)
  bass    a finger bass line (GM program 33)
  other   piano chords (GM program 0)
  vocals  espeak-ng speech: a stand-in for a voice (a synthesiser reading words, not
          singing; what matters here is a separate, real, voice-like part)

The SoundFont is the first found of MuseScore General (musescore-general-soundfont-lossless,
what the dev set uses), FluidR3 GM (fluid-soundfont-gm) and TimGM6mb (timgm6mb-soundfont),
rendered by the fluidsynth command; espeak-ng reads the words. `missing()` says what is not
installed, with the command that installs it. Rendering is deterministic (float output, no
dither, one synth thread, no reverb or chorus).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from scripts.make_devset import channel_events, render
from scripts.make_devset import solo as make_devset_solo

RATE = 44100
SOUNDFONTS = (Path("/usr/share/sounds/sf2/MuseScore_General_Full.sf2"), Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
              Path("/usr/share/sounds/sf2/TimGM6mb.sf2"))
WORDS = "Bring it back, bring it all back home. The night is long and the song goes on."
APT = "apt-get install fluidsynth fluid-soundfont-gm espeak-ng"


def soundfont() -> Path | None:
    return next((p for p in SOUNDFONTS if p.is_file()), None)


def missing() -> str | None:
    """Why the parts cannot be made here (with the command that fixes it), or None."""
    lack = [what for what, ok in (("fluidsynth", shutil.which("fluidsynth")), ("a GM SoundFont", soundfont()),
                                  ("espeak-ng", shutil.which("espeak-ng"))) if not ok]
    return f"{', '.join(lack)} not installed ({APT})" if lack else None


def _render(events, bpm: float, seconds: float) -> np.ndarray:
    """FluidSynth's render (scripts/make_devset.render, no reverb) from the SoundFont found
    here, float64 [2, frames] at 44.1 kHz, `seconds` + 1 s long."""
    return render(events, bpm, seconds, soundfont=soundfont())


def _voice(seconds: float) -> np.ndarray:
    """espeak-ng reading WORDS, at 44.1 kHz, centred, float64 [2, frames]."""
    import soundfile as sf
    import soxr
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "voice.wav"
        subprocess.run(["espeak-ng", "-s", "165", "-p", "45", "-w", str(wav), WORDS], check=True, capture_output=True)
        data, rate = sf.read(str(wav), dtype="float64")
    x = soxr.resample(data, rate, RATE, quality="VHQ")
    n = int(round(seconds * RATE))
    x = np.pad(x, (int(0.2 * RATE), max(0, n - len(x))))[:n]
    return np.stack([x * 0.98, x])  # almost centred: a little level difference, as a real mix has


def synth_missing(fonts: tuple[Path, ...] = SOUNDFONTS) -> str | None:
    """Why one instrument cannot be rendered here from one of `fonts` (see solo), or None.
    A test measured on particular samples names the SoundFonts it was measured with (they
    come first in SOUNDFONTS, so soundfont() then picks one of them)."""
    if shutil.which("fluidsynth") and any(p.is_file() for p in fonts):
        return None
    return f"fluidsynth or one of {', '.join(p.name for p in fonts)} not installed ({APT})"


def solo(program: int, seconds: float = 4.0) -> np.ndarray:
    """One General MIDI instrument alone (scripts/make_devset.solo: eight notes, peak -6 dBFS),
    float64 [2, frames] at 44.1 kHz, from the first SoundFont found here."""
    return make_devset_solo(program, seconds, soundfont=soundfont())


def make_parts(seconds: float = 4.0, bpm: float = 120.0) -> dict[str, np.ndarray]:
    """{stem: float64 [2, frames]} of `seconds` at 44.1 kHz, each at a level a mix would
    give it; their sum peaks at -3 dBFS."""
    beats = int(seconds * bpm / 60)
    kit = []  # (quarter, length, GM drum note)
    for b in range(beats):
        kit += [(b, 0.25, 36 if b % 2 == 0 else 38)] + [(b + h / 2, 0.2, 42) for h in range(2)]
    kit.append((0, 1.0, 49))
    bass = [(b, 0.9, [40, 40, 43, 45][b // 2 % 4]) for b in range(beats)]
    chords = [(2 * k, 1.9, p) for k in range(beats // 2) for p in ([64, 67, 71], [62, 66, 69], [60, 64, 67], [62, 66, 69])[k % 4]]
    n = int(round(seconds * RATE))
    parts = {
        "drums": _render(channel_events(9, 0, 0.0, 110, kit, 100, seed=1), bpm, seconds)[:, :n],
        "bass": _render(channel_events(1, 33, -0.1, 110, bass, 96, seed=2, legato=0.9), bpm, seconds)[:, :n],
        "other": _render(channel_events(0, 0, 0.3, 100, chords, 80, seed=3, legato=1.0), bpm, seconds)[:, :n],
        "vocals": _voice(seconds),
    }
    levels = {"drums": 0.0, "bass": -2.0, "other": -4.0, "vocals": 0.0}  # dB against each part's own RMS match
    ref = np.sqrt(np.mean(parts["drums"] ** 2))
    for k, x in parts.items():
        rms = np.sqrt(np.mean(x ** 2))
        parts[k] = x * (ref / rms * 10 ** (levels[k] / 20)) if rms > 0 else x
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.02 * RATE))  # no click at the ends
    peak = np.abs(sum(parts.values()) * fade).max()
    return {k: x * fade * (10 ** (-3 / 20) / peak) for k, x in parts.items()}
