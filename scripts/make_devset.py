"""Build the real-music development set for the quality harness (bench/quality.py).

    python scripts/make_devset.py [--out build/devset] [--test-clips tests/data]

Every clip is made offline from real instrument recordings that Debian packages (and
music21's public-domain scores), mixed here into 12 s, 44.1 kHz, true-stereo, 24-bit FLAC
files. The same inputs give the same files, bit for bit (seeded choices, no dither, one
synth thread); `build/devset/MANIFEST.json` lists each clip's sources and SHA-256, and
`build/devset/READY` is written last.

Clips (what a restoration must get right on each):
  drums         acoustic kit groove (hydrogen-drumkits: ColomboAcousticDrumkit, stereo samples)
  cymbals       ride, crashes, open hi-hats (Colombo + sonic-pi-samples cymbals, panned)
  full_mix      a Bach chorale arranged for piano, strings and bass (MuseScore General
                SoundFont through FluidSynth) over the acoustic kit
  piano         Joplin, Maple Leaf Rag (music21 corpus), Splendid Grand piano samples
  strings       Mozart, string quartet K.80 i (violins, viola, cello, panned as seated)
  quiet_reverb  a chorale on soft strings and piano, FluidSynth reverb, peaks at -20 dBFS
  hand_percussion  bongos, cajon, shaker, tambourine, claps, clave (hydrogen 'Gimme A Hand')
  electro       HardElectro1 kick and clap, synthetic noise hats, saw bass, square pad (numpy)
  piano_high    a Bach chorale two octaves up on the piano
  voice_en      espeak-ng speech (22.05 kHz: nothing above 11 kHz, a dark top)
  guitar_pi     sonic-pi's guitar samples through a tanh crunch and a cabinet roll-off, over the kit
The held-out part (HELD_OUT; the harness prints it apart; no setting is chosen on it):
  djembe        djembes and dununs (hydrogen 'circAfrique v4', made at a lower rate: dark over
                15.5 kHz) over sonic-pi's tabla loop
  electro_empire  ElectricEmpireKit, 808-style square-wave hats (numpy)
  piano_low, piano_mid  the piano two octaves down (a chorale), and a Clara Schumann piece
  voice_de      espeak-ng, German, a female variant
  guitar_sf     the SoundFont's distortion guitar (GM 30) power chords through the crunch, bass, kit
  tutti         a chorale on strings, brass, woodwinds, timpani and crash cymbals, reverb

FluidSynth puts a lowpass on every voice whose cutoff it clamps to 0.45 x the output rate
(19.8 kHz at 44.1 kHz); the SoundFont's own filter settings and NRPN offsets cannot lift it
(tried). So the rendered instruments have little above ~19.8 kHz. That is part of the
source, the same in the reference and in every decode, and above LAME's lowpass at 128 and
192 kbps (17 and 19.5 kHz), so it does not bias the comparison; the drum clips come from
recorded samples and are not filtered.

Nothing is installed here: a missing tool or package is named with the exact command to
install it, and the script exits with status 2.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RATE = 44100
CLIP_S = 12.0
SOUNDFONT = Path("/usr/share/sounds/sf2/MuseScore_General_Full.sf2")
KIT = Path("/usr/share/hydrogen/data/drumkits/ColomboAcousticDrumkit")
SONICPI = Path("/usr/share/sonic-pi/samples")

APT = "sudo apt-get install hydrogen-drumkits sonic-pi-samples musescore-general-soundfont-lossless fluidsynth espeak-ng"
PIP = "pip install music21 soundfile soxr"


# ---- Requirements --------------------------------------------------------------------

def missing_requirements() -> list[str]:
    """One line per missing piece, each with the command that installs it."""
    out = []
    for path, pkg in ((KIT, "hydrogen-drumkits"), (SONICPI, "sonic-pi-samples"),
                      (SOUNDFONT, "musescore-general-soundfont-lossless")):
        if not path.exists():
            out.append(f"{path} is missing: sudo apt-get install {pkg}")
    for tool in ("fluidsynth", "espeak-ng"):
        if shutil.which(tool) is None:
            out.append(f"the {tool} command is missing: sudo apt-get install {tool}")
    for module, pkg in (("music21", "music21"), ("soundfile", "soundfile"), ("soxr", "soxr")):
        try:
            __import__(module)
        except ImportError:
            out.append(f"the Python package {pkg} is missing: pip install {pkg}")
    return out


# ---- Sample mixing ---------------------------------------------------------------------

def read(path: Path) -> np.ndarray:
    """A sample as float64 [2, frames] at 44.1 kHz (mono samples stay centred here: place()
    pans them)."""
    import soundfile as sf
    import soxr

    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    if rate != RATE:
        data = soxr.resample(data, rate, RATE, quality="VHQ")
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    return np.ascontiguousarray(data[:, :2].T)


class Track:
    """A stereo buffer that samples are placed on."""

    def __init__(self, seconds: float):
        self.buf = np.zeros((2, int(round(seconds * RATE)) + RATE), np.float64)  # + 1 s of tail room

    def place(self, sample: np.ndarray, at_s: float, gain_db: float = 0.0, pan: float = 0.0,
              spread_ms: float = 0.0) -> None:
        """Add `sample` [2, n] at at_s seconds, constant-power panned (pan -1 left .. +1 right),
        the far channel delayed by spread_ms (a small time difference, as two mics would
        hear it, so that a panned mono sample is real stereo, not one signal twice)."""
        theta = (pan + 1) * np.pi / 4
        g = 10 ** (gain_db / 20)
        left, right = sample[0] * np.cos(theta) * g * np.sqrt(2), sample[1] * np.sin(theta) * g * np.sqrt(2)
        delay = int(round(spread_ms * RATE / 1000))
        start = int(round(at_s * RATE))
        for ch, sig, d in ((0, left, delay if pan > 0 else 0), (1, right, delay if pan < 0 else 0)):
            a = start + d
            skip = max(0, -a)  # a hit pushed before 0 by the human feel loses its first samples
            a += skip
            if a >= self.buf.shape[1] or skip >= len(sig):
                continue
            n = min(len(sig) - skip, self.buf.shape[1] - a)
            self.buf[ch, a:a + n] += sig[skip:skip + n]

    def add(self, other: np.ndarray, gain_db: float = 0.0) -> None:
        n = min(other.shape[1], self.buf.shape[1])
        self.buf[:, :n] += other[:, :n] * 10 ** (gain_db / 20)


def kit_groove(seconds: float, bpm: float, seed: int, fills: bool = True, hats: str = "closed") -> np.ndarray:
    """A rock groove on the Colombo acoustic kit: kick on 1 and 3 (and the 'and' of 3),
    snare on 2 and 4, eighth-note hi-hats, a tom fill and a crash every four bars. Seeded
    choices of the velocity layer, +-1.5 dB and +-4 ms of human feel."""
    rng = np.random.default_rng(seed)
    s = {name: read(KIT / f"{name}.flac") for name in (
        "bassdrum-4mics-br-stereo-normal3", "bassdrum-4mics-br-stereo-soft2",
        "snare-opaque-normal-mic-normal_shot2", "snare-opaque-normal-mic-normal_shot3",
        "snare-opaque-normal-mic-rimshot2", "hihat-closed-1", "hihat-closed-4", "hihat-closed-6",
        "hihat-semi-open-1", "hihat-open-1", "tom-hi-1", "tom-mid-1", "tom-low-1",
        "crash20i__crash", "crash16i__crash1")}
    t = Track(seconds)
    beat = 60.0 / bpm
    bars = int(np.ceil(seconds / (4 * beat)))

    def hit(name, at, gain=0.0, pan=0.0):
        t.place(s[name], at + rng.uniform(-0.004, 0.004), gain + rng.uniform(-1.5, 1.5), pan)

    for bar in range(bars):
        t0 = bar * 4 * beat
        fill = fills and bar % 4 == 3
        for k, at in enumerate((0, 2, 2.5)):
            hit("bassdrum-4mics-br-stereo-normal3" if k < 2 else "bassdrum-4mics-br-stereo-soft2", t0 + at * beat, -2)
        for at in (1, 3) if not fill else (1,):
            hit(rng.choice(["snare-opaque-normal-mic-normal_shot2", "snare-opaque-normal-mic-normal_shot3"]),
                t0 + at * beat, -3)
        for e in range(8 if not fill else 4):
            name = ("hihat-open-1" if hats == "open" and e % 2 else
                    "hihat-semi-open-1" if e == 7 else str(rng.choice(["hihat-closed-1", "hihat-closed-4", "hihat-closed-6"])))
            hit(name, t0 + e * beat / 2, -8 if e % 2 else -6, pan=-0.1)
        if fill:
            for k, tom in enumerate(["tom-hi-1", "tom-hi-1", "tom-mid-1", "tom-mid-1", "tom-low-1", "tom-low-1",
                                     "snare-opaque-normal-mic-rimshot2", "tom-low-1"]):
                hit(tom, t0 + (2 + k * 0.25) * beat, -4)
        if bar % 4 == 0:
            hit("crash20i__crash" if bar % 8 == 0 else "crash16i__crash1", t0, -5)
    return t.buf


def cymbal_wash(seconds: float, bpm: float, seed: int) -> np.ndarray:
    """Ride on every quarter with its cup on the off-beats, open hi-hats, crashes and
    sonic-pi's splash and cymbals panned across the stage, plus a quiet kick for the floor:
    most of the energy from 2 kHz up, real content to 20 kHz."""
    rng = np.random.default_rng(seed)
    kit = {n: read(KIT / f"{n}.flac") for n in ("crash16i__ride2", "crash16i__ride_cup4", "crash20i__ride4",
                                                  "hihat-open-4", "hihat-open-5", "hihat-closed-1",
                                                  "crash20i__crash", "crash16i__crash1",
                                                  "bassdrum-4mics-br-stereo-soft4")}
    pi = {n: read(SONICPI / f"{n}.flac") for n in ("drum_splash_hard", "drum_splash_soft", "drum_cymbal_open",
                                                    "drum_cymbal_closed", "drum_cymbal_soft", "drum_cymbal_pedal")}
    t = Track(seconds)
    beat = 60.0 / bpm
    n_beats = int(np.ceil(seconds / beat))

    def jitter():
        return rng.uniform(-0.003, 0.003), rng.uniform(-1.0, 1.0)

    for b in range(n_beats):
        at = b * beat
        dt, dg = jitter()
        t.place(kit["crash20i__ride4" if b % 2 == 0 else "crash16i__ride2"], at + dt, -4 + dg, pan=0.35)
        dt, dg = jitter()
        t.place(kit["crash16i__ride_cup4"], at + beat / 2 + dt, -10 + dg, pan=0.35)
        dt, dg = jitter()
        t.place(pi["drum_cymbal_closed"], at + 0.25 * beat + dt, -14 + dg, pan=-0.6, spread_ms=0.4)
        dt, dg = jitter()
        t.place(pi["drum_cymbal_pedal"], at + 0.75 * beat + dt, -16 + dg, pan=-0.6, spread_ms=0.4)
        if b % 2 == 1:
            dt, dg = jitter()
            t.place(kit[str(rng.choice(["hihat-open-4", "hihat-open-5"]))], at + dt, -8 + dg, pan=-0.3)
        if b % 4 == 0:
            dt, dg = jitter()
            t.place(kit["bassdrum-4mics-br-stereo-soft4"], at + dt, -12 + dg)
        if b % 8 == 0:
            dt, dg = jitter()
            t.place(kit["crash20i__crash" if b % 16 == 0 else "crash16i__crash1"], at + dt, -3 + dg, pan=-0.5)
        if b % 8 == 4:
            dt, dg = jitter()
            t.place(pi[str(rng.choice(["drum_splash_hard", "drum_splash_soft"]))], at + dt, -9 + dg, pan=0.7,
                    spread_ms=0.5)
        if b % 8 == 6:
            dt, dg = jitter()
            t.place(pi[str(rng.choice(["drum_cymbal_open", "drum_cymbal_soft"]))], at + dt, -10 + dg, pan=-0.75,
                    spread_ms=0.5)
    return t.buf


# ---- MIDI and FluidSynth ---------------------------------------------------------------

TPQ = 480


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[int, int, bytes]], bpm: float) -> None:
    """A format-0 standard MIDI file. events: (tick, order, message bytes); order breaks
    ties (note-offs before note-ons, set-up before both)."""
    data = bytearray(_vlq(0) + bytes([0xFF, 0x51, 3]) + int(round(60e6 / bpm)).to_bytes(3, "big"))
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        data += _vlq(tick - now) + msg
        now = tick
    data += _vlq(0) + b"\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, TPQ) + b"MTrk" + struct.pack(">I", len(data)) + data)


def score_notes(corpus_name: str, start_quarter: float, quarters: float) -> list[list[tuple[float, float, int]]]:
    """The notes of a music21 corpus score, per part: (offset, duration, midi pitch) in
    quarters from start_quarter, for notes that start within `quarters`; ties merged."""
    from music21 import corpus

    score = corpus.parse(corpus_name)
    parts = []
    for part in score.parts:
        notes = []
        for n in part.stripTies().flatten().notes:
            off = float(n.offset) - start_quarter
            if 0 <= off < quarters:
                for p in n.pitches:
                    notes.append((off, float(n.quarterLength), int(p.midi)))
        parts.append(notes)
    return parts


def channel_events(ch: int, program: int, pan: float, volume: int, notes, velocity: int, seed: int,
                   legato: float = 0.95, reverb: int = 0) -> list[tuple[int, int, bytes]]:
    """MIDI events for one instrument: program, pan (-1..1), volume, reverb send, and the
    notes at `velocity` +-6 (seeded), held `legato` of their written length."""
    rng = np.random.default_rng(seed)
    ev = [(0, 0, bytes([0xC0 | ch, program])), (0, 1, bytes([0xB0 | ch, 10, int(round(64 + pan * 63))])),
          (0, 2, bytes([0xB0 | ch, 7, volume])), (0, 3, bytes([0xB0 | ch, 91, reverb])),
          (0, 4, bytes([0xB0 | ch, 93, 0]))]
    for off, dur, pitch in notes:
        on = int(round(off * TPQ)) + 1
        off_tick = on + max(1, int(round(dur * legato * TPQ)))
        vel = int(np.clip(velocity + rng.integers(-6, 7), 1, 127))
        ev += [(on, 20, bytes([0x90 | ch, pitch, vel])), (off_tick, 10, bytes([0x80 | ch, pitch, 0]))]
    return ev


def render(events, bpm: float, seconds: float, reverb: bool = False, soundfont: Path = SOUNDFONT) -> np.ndarray:
    """FluidSynth's render of the events, float64 [2, frames] at 44.1 kHz, `seconds` long
    plus 1 s of tail. Float output (no dither), one thread: the same bytes every time."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        end = int(round((seconds + 1.0) * bpm / 60 * TPQ))
        write_midi(mid, [*events, (end, 99, bytes([0xB0, 121, 0]))], bpm)  # the end: reset controllers
        cmd = ["fluidsynth", "-ni", "-q", "-F", str(wav), "-T", "wav", "-O", "float", "-r", str(RATE),
               "-g", "0.5", "-o", "synth.cpu-cores=1", "-o", f"synth.reverb.active={int(reverb)}",
               "-o", "synth.chorus.active=0", "-o", "synth.reverb.room-size=0.8", "-o", "synth.reverb.damp=0.3",
               "-o", "synth.reverb.level=0.9", "-o", "synth.reverb.width=1.0", str(soundfont), str(mid)]
        subprocess.run(cmd, check=True, capture_output=True)
        data, rate = sf.read(str(wav), dtype="float64", always_2d=True)
    assert rate == RATE, rate
    return np.ascontiguousarray(data.T)


SOLO_NOTES = [(k * 0.5, 0.5, pitch) for k, pitch in enumerate([72, 76, 79, 84, 81, 77, 74, 79])]


def solo(program: int, seconds: float = 4.0, notes=SOLO_NOTES, soundfont: Path = SOUNDFONT) -> np.ndarray:
    """One General MIDI instrument (`program`) alone playing `notes` ((beat, beats, MIDI
    pitch); by default eight notes from C5 up at 120 bpm), float64 [2, frames] of `seconds`
    at 44.1 kHz, panned a little right, no reverb, peak at -6 dBFS. For the offline restore's
    tonal tests and bench/tune_offline_restore.py --part instruments."""
    x = render(channel_events(0, program, 0.2, 110, notes, 100, seed=5), 120.0, seconds,
               soundfont=soundfont)[:, :int(round(seconds * RATE))]
    return x * (0.5 / np.abs(x).max())


# ---- The clips -------------------------------------------------------------------------

def clip_drums() -> np.ndarray:
    return kit_groove(CLIP_S, 104, seed=1)


def clip_cymbals() -> np.ndarray:
    return cymbal_wash(CLIP_S, 96, seed=2)


def clip_full_mix() -> np.ndarray:
    bpm = 92.0
    s, a, t, b = score_notes("bach/bwv269", 0.0, CLIP_S * bpm / 60)
    ev = []
    ev += channel_events(0, 0, -0.35, 110, s + a, 92, seed=10)                        # piano: the upper voices
    ev += channel_events(1, 48, 0.45, 92, a + t, 70, seed=11, legato=1.0)             # string ensemble
    ev += channel_events(2, 33, 0.05, 110, [(o, d, p - 12) for o, d, p in b], 96, seed=12, legato=0.8)  # bass
    music = render(ev, bpm, CLIP_S)
    mix = Track(CLIP_S)
    mix.add(music)
    mix.add(kit_groove(CLIP_S, bpm, seed=3, fills=True), gain_db=-6)
    return mix.buf


def clip_piano() -> np.ndarray:
    bpm = 84.0  # quarter = 84: the rag "not fast"
    rh, lh = score_notes("joplin/maple_leaf_rag", 2.0, CLIP_S * bpm / 60)
    ev = channel_events(0, 0, -0.15, 110, rh, 88, seed=20, legato=0.9)
    ev += channel_events(1, 0, 0.15, 110, lh, 80, seed=21, legato=0.9)
    return render(ev, bpm, CLIP_S)


def clip_strings() -> np.ndarray:
    bpm = 50.0  # Adagio, in quarters
    v1, v2, va, vc = score_notes("mozart/k80/movement1", 0.0, CLIP_S * bpm / 60)
    ev = channel_events(0, 40, -0.6, 110, v1, 90, seed=30, legato=1.0)
    ev += channel_events(1, 40, -0.2, 105, v2, 80, seed=31, legato=1.0)
    ev += channel_events(2, 41, 0.25, 105, va, 80, seed=32, legato=1.0)
    ev += channel_events(3, 42, 0.6, 110, vc, 85, seed=33, legato=1.0)
    return render(ev, bpm, CLIP_S)


def clip_quiet_reverb() -> np.ndarray:
    bpm = 54.0
    s, a, t, b = score_notes("bach/bwv66.6", 0.0, CLIP_S * bpm / 60)
    ev = channel_events(0, 48, -0.5, 100, s + a, 45, seed=40, legato=1.0, reverb=110)  # strings, soft
    ev += channel_events(1, 48, 0.5, 100, t + b, 42, seed=41, legato=1.0, reverb=110)
    ev += channel_events(2, 0, 0.1, 90, s, 34, seed=42, legato=0.7, reverb=127)          # a soft piano line
    return render(ev, bpm, CLIP_S, reverb=True)


# ---- The wider set (issue 14): more kinds of music, and a held-out part --------------------

HANDS = KIT.parent / "Gimme A Hand 1.0"
AFRIQUE = KIT.parent / "circAfrique v4"
ELECTRO = KIT.parent / "HardElectro1"
EMPIRE = KIT.parent / "ElectricEmpireKit"


def pattern(samples: dict, hits, seconds: float, bpm: float, seed: int, steps: int = 16) -> np.ndarray:
    """A looped 16th-note pattern: hits = [(sample name, step list, gain dB, pan)], each hit
    with seeded +-1.5 dB and +-3 ms of feel and a 0.3 ms inter-channel spread."""
    rng = np.random.default_rng(seed)
    t = Track(seconds)
    step_s = 60.0 / bpm / 4
    for bar in range(int(np.ceil(seconds / (steps * step_s)))):
        for name, where, gain, pan in hits:
            for k in where:
                at = (bar * steps + k) * step_s + rng.uniform(-0.003, 0.003)
                names = name if isinstance(name, list) else [name]
                t.place(samples[str(rng.choice(names))], at, gain + rng.uniform(-1.5, 1.5), pan, spread_ms=0.3)
    return t.buf


def clip_hand_percussion() -> np.ndarray:
    """Bongos, cajon, shaker, tambourine, claps and clave (hydrogen 'Gimme A Hand')."""
    names = ["BongoHi-Hard", "BongoHi-Med", "BongoLo-Hard", "BongoLo-Med", "CajonSlaps-Hard", "CajonThumps-Hard",
             "Maraca-Med", "Maraca-Soft", "Tambourine-Hard", "Tambourine-Med", "HandClap-Hard", "Clave-Med"]
    s = {n: read(HANDS / f"{n}.wav") for n in names}
    return pattern(s, [(["CajonThumps-Hard"], (0, 6, 10), -3, 0.0), (["CajonSlaps-Hard"], (4, 12), -4, 0.0),
                       (["BongoHi-Hard", "BongoHi-Med"], (2, 3, 7, 11, 14, 15), -6, -0.4),
                       (["BongoLo-Hard", "BongoLo-Med"], (5, 9, 13), -6, -0.3),
                       (["Maraca-Med", "Maraca-Soft"], range(16), -14, 0.5),
                       (["Tambourine-Hard", "Tambourine-Med"], (4, 12), -10, 0.6),
                       (["HandClap-Hard"], (4, 12), -9, -0.1), (["Clave-Med"], (0, 3, 6, 10, 12), -12, 0.2)],
                   CLIP_S, 100, seed=60)


def clip_djembe() -> np.ndarray:
    """Djembes and dununs (hydrogen 'circAfrique v4') over sonic-pi's tabla loop."""
    names = ["Djembe1 Bass", "Djembe1 Slap", "Djembe1 Tone", "Djembe3 Slap", "Djembe3 Tone", "Dununba1 Head Hit",
             "Dununba1 Bell", "Kenkeni1 Bell Hit", "Kenkeni1 Head Hit", "Sangban1 Head Hit", "Sangban1 Bell Hit"]
    s = {n: read(AFRIQUE / f"{n}.wav") for n in names}
    t = Track(CLIP_S)
    t.add(pattern(s, [(["Djembe1 Bass"], (0, 8), -4, -0.3), (["Djembe1 Slap", "Djembe3 Slap"], (3, 6, 11, 14), -5, -0.4),
                      (["Djembe1 Tone", "Djembe3 Tone"], (2, 7, 10, 15), -6, 0.4),
                      (["Dununba1 Head Hit"], (0, 6), -6, 0.1), (["Dununba1 Bell"], (0, 4, 8, 12), -13, 0.2),
                      (["Kenkeni1 Bell Hit"], (2, 6, 10, 14), -14, -0.6), (["Kenkeni1 Head Hit"], (4, 12), -8, -0.5),
                      (["Sangban1 Head Hit", "Sangban1 Bell Hit"], (1, 9, 13), -9, 0.6)], CLIP_S, 110, seed=61))
    tabla = read(SONICPI / "loop_tabla.flac")
    t.place(tabla, 0.0, -10, pan=0.2, spread_ms=0.4)
    return t.buf


def clip_electro() -> np.ndarray:
    """Electronic: a HardElectro1 kick and clap, synthetic hats (seeded noise through a
    one-pole highpass with a fast decay), a saw bass and a detuned square pad (numpy)."""
    rng = np.random.default_rng(62)
    s = {n: read(ELECTRO / f"{n}.flac") for n in ("HardHse_K_02", "Clap_1", "Hard_Hse_OHH_1")}
    n_hat = int(0.06 * RATE)
    hats = []
    for k in range(4):
        noise = rng.standard_normal(n_hat)
        hp = noise - np.concatenate([[0], noise[:-1]]) * 0.95           # a bright first difference
        env = np.exp(-np.arange(n_hat) / (RATE * (0.008 + 0.006 * k)))
        hats.append(np.vstack([hp * env, np.roll(hp, 7) * env]) * 0.5)
    s.update({f"hat{k}": h for k, h in enumerate(hats)})
    t = Track(CLIP_S)
    bpm = 124.0
    t.add(pattern(s, [(["HardHse_K_02"], (0, 4, 8, 12), -3, 0.0), (["Clap_1"], (4, 12), -7, 0.0),
                      (["hat0", "hat1", "hat2", "hat3"], range(1, 16, 2), -10, 0.3),
                      (["hat0", "hat1"], range(0, 16, 2), -16, -0.3), (["Hard_Hse_OHH_1"], (6, 14), -12, 0.4)],
                  CLIP_S, bpm, seed=63))
    time_s = np.arange(t.buf.shape[1]) / RATE
    step = 60.0 / bpm / 2
    notes = 55.0 * 2 ** (np.array([0, 0, 3, 5, 0, 7, 5, 3]) / 12)
    f = notes[(time_s / step).astype(int) % len(notes)]
    phase = np.cumsum(f) / RATE
    saw = 2 * (phase % 1.0) - 1
    pad = sum(np.sign(np.sin(2 * np.pi * 220 * 2 ** (i / 12) * (1 + d) * time_s))
              for i, d in ((0, 0.002), (4, -0.003), (7, 0.001)))
    t.buf += np.vstack([saw * 0.12 + pad * 0.015, saw * 0.12 + np.roll(pad, 40) * 0.015])
    return t.buf


def clip_empire() -> np.ndarray:
    """Electronic, another kit: ElectricEmpireKit kicks, snares and dirty hats, synthetic
    metallic hats (six square waves, as the 808 makes them, highpassed, short decays)."""
    names = ["EE_Kick_Hard_1", "EE_Kick_Power", "EE_Snare_1", "EE_Snare_3", "EE_Hat_Cl_Dirty", "EE_Hat_Op_Dirty",
             "EE_Clap", "EE_Conga_1"]
    s = {n: read(EMPIRE / f"{n}.flac") for n in names}
    n_hat = int(0.08 * RATE)
    tt = np.arange(n_hat) / RATE
    metal = sum(np.sign(np.sin(2 * np.pi * f * tt)) for f in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0))
    for _ in range(3):
        metal = metal - np.concatenate([[0], metal[:-1]])              # three differences: a steep highpass
    metal /= np.abs(metal).max()
    s["syn_hat"] = np.vstack([metal, metal]) * np.exp(-tt / 0.012) * 0.7
    s["syn_open"] = np.vstack([metal, metal]) * np.exp(-tt / 0.05) * 0.5
    return pattern(s, [(["EE_Kick_Hard_1", "EE_Kick_Power"], (0, 7, 10), -3, 0.0), (["EE_Snare_1", "EE_Snare_3"], (4, 12), -5, 0.0),
                       (["syn_hat"], range(0, 16, 1), -13, 0.35), (["syn_open"], (2, 10), -12, -0.35),
                       (["EE_Hat_Cl_Dirty"], (3, 11, 15), -11, -0.5), (["EE_Clap"], (12,), -9, 0.1),
                       (["EE_Conga_1"], (5, 13), -10, 0.5)], CLIP_S, 118, seed=64)


def piano_clip(score: str, start_q: float, bpm: float, shift: int, seed: int, velocity: int = 84) -> np.ndarray:
    """A chorale or piece on the Splendid Grand, every part transposed by `shift` semitones."""
    parts = score_notes(score, start_q, CLIP_S * bpm / 60)
    ev = []
    for i, part in enumerate(parts[:4]):
        notes = [(o, d, int(np.clip(p + shift, 21, 108))) for o, d, p in part]
        ev += channel_events(i, 0, -0.3 + 0.2 * i, 110, notes, velocity, seed=seed + i, legato=0.9)
    return render(ev, bpm, CLIP_S)


def clip_piano_high() -> np.ndarray:
    return piano_clip("bach/bwv84.5", 0.0, 72, 24, seed=70, velocity=90)


def clip_piano_low() -> np.ndarray:
    return piano_clip("bach/bwv86.6", 0.0, 66, -24, seed=72, velocity=92)


def clip_piano_mid() -> np.ndarray:
    return piano_clip("schumann_clara/opus17/movement3", 0.0, 60, 0, seed=74, velocity=80)


def voice_clip(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    """espeak-ng speaking `text` (22.05 kHz: nothing above 11 kHz, a dark source), resampled,
    placed slightly off centre with a small inter-channel delay."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "v.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
                       check=True, capture_output=True)
        t = Track(CLIP_S)
        t.place(read(wav), 0.2, 0.0, pan=-0.1, spread_ms=0.3)
    return t.buf


TEXT = ("The restoration adds only what the encoder left out, and keeps every note it kept. "
        "A quiet voice, then a louder one, carries the words across the room.")


def clip_voice_en() -> np.ndarray:
    return voice_clip(TEXT, "en-gb", 45, 150)


def clip_voice_de() -> np.ndarray:
    return voice_clip("Die Musik bleibt, wie sie war; nur was fehlt, wird ergaenzt. Eins, zwei, drei, vier.",
                      "de+f3", 60, 140)


def distort(x: np.ndarray, drive_db: float) -> np.ndarray:
    """A guitar amp's crunch: gain, tanh clipping, then a gentle 2-pole cabinet roll-off
    around 6 kHz (zero phase, |H| of a 2nd-order Butterworth: a real cabinet has little above 8 kHz)."""
    y = np.tanh(x * 10 ** (drive_db / 20))
    f = np.fft.rfftfreq(y.shape[-1], 1 / RATE)
    return np.fft.irfft(np.fft.rfft(y, axis=-1) / np.sqrt(1 + (f / 6000.0) ** 4), y.shape[-1], axis=-1)


def clip_guitar_pi() -> np.ndarray:
    """sonic-pi's electric guitar samples (fifths, em9, slide) through the crunch, over the acoustic kit."""
    t = Track(CLIP_S)
    g = Track(CLIP_S)
    for at, name in ((0.0, "guit_e_fifths"), (3.0, "guit_em9"), (6.0, "guit_e_fifths"), (9.0, "guit_e_slide")):
        g.place(read(SONICPI / f"{name}.flac"), at, 0.0, pan=-0.2, spread_ms=0.5)
    t.add(distort(g.buf, 24) * 0.5)
    t.add(kit_groove(CLIP_S, 120, seed=65), gain_db=-4)
    return t.buf


def clip_guitar_sf() -> np.ndarray:
    """The SoundFont's distortion guitar (GM 30) playing power chords of a chorale's bass,
    through the crunch, doubled left and right, with a bass (GM 34)."""
    bpm = 100.0
    s, a, t, b = score_notes("bach/bwv10.7", 0.0, CLIP_S * bpm / 60)
    chords = [(o, d, p) for o, d, p0 in b for p in (p0, p0 + 7, p0 + 12)]
    left = render(channel_events(0, 30, -0.8, 120, chords, 100, seed=66, legato=0.95), bpm, CLIP_S)
    right = render(channel_events(0, 30, 0.8, 120, chords, 96, seed=67, legato=0.9), bpm, CLIP_S)
    bass = render(channel_events(0, 34, 0.0, 110, [(o, d, p - 12) for o, d, p in b], 100, seed=68), bpm, CLIP_S)
    mix = Track(CLIP_S)
    mix.add(distort(left, 18) * 0.3)
    mix.add(distort(right, 18) * 0.3)
    mix.add(bass)
    mix.add(kit_groove(CLIP_S, bpm, seed=69), gain_db=-5)
    return mix.buf


def clip_tutti() -> np.ndarray:
    """Orchestral tutti: a chorale on strings, brass, woodwinds (GM 48, 61, 57, 73, 71, 58),
    timpani (GM 47) and crash cymbals on the GM drum channel, FluidSynth reverb."""
    bpm = 70.0
    s, a, t, b = score_notes("bach/bwv1.6", 0.0, CLIP_S * bpm / 60)[:4]
    ev = []
    ev += channel_events(0, 48, -0.5, 110, s + a, 100, seed=80, legato=1.0, reverb=60)
    ev += channel_events(1, 48, 0.5, 110, t + b, 100, seed=81, legato=1.0, reverb=60)
    ev += channel_events(2, 61, 0.3, 105, a + t, 104, seed=82, legato=0.95, reverb=60)
    ev += channel_events(3, 56, -0.2, 100, s, 100, seed=83, legato=0.95, reverb=60)
    ev += channel_events(4, 73, -0.4, 95, [(o, d, p + 12) for o, d, p in s], 96, seed=84, reverb=60)
    ev += channel_events(5, 71, 0.2, 95, a, 90, seed=85, reverb=60)
    ev += channel_events(6, 57, 0.1, 105, [(o, d, p - 12) for o, d, p in b], 100, seed=86, reverb=60)
    ev += channel_events(7, 47, 0.0, 115, [(o, 0.5, 36 + (p % 7)) for o, d, p in b if o % 2 == 0], 105, seed=87, reverb=60)
    crashes = [(q, 1.0, 49) for q in np.arange(0, CLIP_S * bpm / 60, 4.0)]
    ev += [e for e in channel_events(9, 0, 0.3, 110, crashes, 100, seed=88, reverb=60) if e[2][0] & 0xF0 != 0xC0]
    return render(ev, bpm, CLIP_S, reverb=True)


CLIPS = {
    # name: (builder, peak dBFS, sources)
    "drums": (clip_drums, -1.0, ["hydrogen-drumkits: ColomboAcousticDrumkit (GPL, Marcos Guglielmetti)"]),
    "cymbals": (clip_cymbals, -1.0, ["hydrogen-drumkits: ColomboAcousticDrumkit", "sonic-pi-samples (CC0)"]),
    "full_mix": (clip_full_mix, -1.0, ["music21 corpus bach/bwv269 (public domain)",
                                       "MuseScore_General SoundFont (MIT) via FluidSynth",
                                       "hydrogen-drumkits: ColomboAcousticDrumkit"]),
    "piano": (clip_piano, -1.0, ["music21 corpus joplin/maple_leaf_rag (public domain)",
                                 "MuseScore_General SoundFont: Splendid Grand piano (public domain)"]),
    "strings": (clip_strings, -1.0, ["music21 corpus mozart/k80/movement1 (public domain)",
                                     "MuseScore_General SoundFont (MIT) via FluidSynth"]),
    "quiet_reverb": (clip_quiet_reverb, -20.0, ["music21 corpus bach/bwv66.6 (public domain)",
                                                "MuseScore_General SoundFont (MIT) via FluidSynth, reverb"]),
    # The wider set: tuned on ...
    "hand_percussion": (clip_hand_percussion, -1.0, ["hydrogen-drumkits: Gimme A Hand 1.0"]),
    "electro": (clip_electro, -1.0, ["hydrogen-drumkits: HardElectro1", "numpy: synthetic hats, saw bass, pad"]),
    "piano_high": (clip_piano_high, -1.0, ["music21 corpus bach/bwv84.5, two octaves up", "MuseScore_General SoundFont"]),
    "voice_en": (clip_voice_en, -3.0, ["espeak-ng (en-gb)"]),
    "guitar_pi": (clip_guitar_pi, -1.0, ["sonic-pi-samples: guit_*, tanh crunch", "hydrogen-drumkits: ColomboAcousticDrumkit"]),
    # ... and held out: never used to choose a setting (bench/quality.py prints them apart)
    "djembe": (clip_djembe, -1.0, ["hydrogen-drumkits: circAfrique v4", "sonic-pi-samples: loop_tabla"]),
    "electro_empire": (clip_empire, -1.0, ["hydrogen-drumkits: ElectricEmpireKit", "numpy: 808-style square-wave hats"]),
    "piano_low": (clip_piano_low, -1.0, ["music21 corpus bach/bwv86.6, two octaves down", "MuseScore_General SoundFont"]),
    "piano_mid": (clip_piano_mid, -1.0, ["music21 corpus schumann_clara/opus17/movement3", "MuseScore_General SoundFont"]),
    "voice_de": (clip_voice_de, -3.0, ["espeak-ng (de+f3)"]),
    "guitar_sf": (clip_guitar_sf, -1.0, ["music21 corpus bach/bwv10.7", "MuseScore_General SoundFont: GM 30, 34; tanh crunch",
                                         "hydrogen-drumkits: ColomboAcousticDrumkit"]),
    "tutti": (clip_tutti, -1.0, ["music21 corpus bach/bwv1.6", "MuseScore_General SoundFont: orchestra, timpani, cymbals"]),
}

# The held-out part: the harness scores it in a table of its own; no setting of the offline
# restore was chosen by looking at it.
HELD_OUT = ("djembe", "electro_empire", "piano_low", "piano_mid", "voice_de", "guitar_sf", "tutti")


def finish(buf: np.ndarray, seconds: float, peak_db: float, fade_s: float = 0.05) -> np.ndarray:
    """Cut to `seconds`, short fades at both ends (no click at the cut), peak at peak_db."""
    n = int(round(seconds * RATE))
    x = buf[:, :n].copy()
    f = int(fade_s * RATE)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, f))
    x[:, :f] *= ramp
    x[:, -f:] *= ramp[::-1]
    peak = np.abs(x).max()
    return x * (10 ** (peak_db / 20) / peak) if peak > 0 else x


def write_flac(path: Path, x: np.ndarray, bits: int) -> str:
    """Integer PCM (rounded, no dither: deterministic) to FLAC; returns the SHA-256 of the
    samples (FLAC files carry no timestamps, but hash the PCM so the check means the audio)."""
    import soundfile as sf

    scale = 2 ** (bits - 1) - 1
    pcm = np.clip(np.round(x.T * scale), -scale - 1, scale).astype(np.int32)
    tmp = path.with_name(path.name + ".tmp")
    if bits == 16:
        sf.write(str(tmp), pcm.astype(np.int16), RATE, format="FLAC", subtype="PCM_16")
    else:
        sf.write(str(tmp), pcm << 8, RATE, format="FLAC", subtype="PCM_24")  # int32 full scale -> 24-bit
    os.replace(tmp, path)
    return hashlib.sha256(pcm.tobytes()).hexdigest()


def build_devset(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    ready = out / "READY"
    if ready.exists():
        ready.unlink()
    manifest = {}
    for name, (builder, peak_db, sources) in CLIPS.items():
        x = finish(builder(), CLIP_S, peak_db)
        sha = write_flac(out / f"{name}.flac", x, 24)
        manifest[name] = {"file": f"{name}.flac", "seconds": CLIP_S, "rate": RATE, "bits": 24,
                          "part": "held-out" if name in HELD_OUT else "tuned",
                          "peak_dbfs": peak_db, "sources": sources, "pcm_sha256": sha}
        print(f"  {name}.flac  {sha[:12]}")
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    ready.write_text("devset complete\n", encoding="utf-8")
    return manifest


# ---- Small committed clips for the tests ------------------------------------------------

def build_test_clips(out: Path) -> dict:
    """4 s, 16-bit clips from CC0 / public-domain / MIT sources only (see tests/data/README.md):
    dark_piano (soft piano, almost nothing above 10 kHz) and bright_cymbals (sonic-pi's CC0
    cymbals, real energy above 16 kHz)."""
    out.mkdir(parents=True, exist_ok=True)
    seconds = 4.0
    bpm = 66.0
    s, a, t, b = score_notes("bach/bwv66.6", 0.0, seconds * bpm / 60)
    ev = channel_events(0, 0, -0.3, 100, s + a, 38, seed=50, legato=0.9)
    ev += channel_events(1, 0, 0.3, 100, t + b, 34, seed=51, legato=0.9)
    dark = finish(render(ev, bpm, seconds), seconds, -6.0)

    rng = np.random.default_rng(52)
    pi = {n: read(SONICPI / f"{n}.flac") for n in ("drum_cymbal_closed", "drum_cymbal_open", "drum_cymbal_pedal",
                                                    "drum_splash_soft", "drum_cymbal_soft")}
    tr = Track(seconds)
    step = 60.0 / 120 / 2
    for k in range(int(seconds / step)):
        name = "drum_cymbal_open" if k % 4 == 2 else "drum_cymbal_pedal" if k % 4 == 3 else "drum_cymbal_closed"
        tr.place(pi[name], k * step + rng.uniform(-0.003, 0.003), -6 + rng.uniform(-1, 1),
                 pan=-0.4 if k % 2 else 0.3, spread_ms=0.4)
    tr.place(pi["drum_splash_soft"], 0.0, -4, pan=0.6, spread_ms=0.5)
    tr.place(pi["drum_cymbal_soft"], 2.0, -4, pan=-0.6, spread_ms=0.5)
    bright = finish(tr.buf, seconds, -3.0)
    shas = {"dark_piano": write_flac(out / "dark_piano.flac", dark, 16),
            "bright_cymbals": write_flac(out / "bright_cymbals.flac", bright, 16)}
    for name, sha in shas.items():
        print(f"  {out / name}.flac  {sha[:12]}")
    return shas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/devset"), help="where the dev set goes")
    ap.add_argument("--test-clips", type=Path, default=None,
                    help="also (re)write the small committed test clips into this folder (tests/data)")
    args = ap.parse_args(argv)
    problems = missing_requirements()
    if problems:
        print("The dev set needs packages that are not installed (nothing was installed):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print(f"All at once:\n  {APT}\n  {PIP}", file=sys.stderr)
        return 2
    print(f"building the dev set in {args.out}")
    build_devset(args.out)
    if args.test_clips:
        print(f"building the test clips in {args.test_clips}")
        build_test_clips(args.test_clips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
