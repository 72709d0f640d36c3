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

APT = "sudo apt-get install hydrogen-drumkits sonic-pi-samples musescore-general-soundfont-lossless fluidsynth"
PIP = "pip install music21 soundfile soxr"


# ---- Requirements --------------------------------------------------------------------

def missing_requirements() -> list[str]:
    """One line per missing piece, each with the command that installs it."""
    out = []
    for path, pkg in ((KIT, "hydrogen-drumkits"), (SONICPI, "sonic-pi-samples"),
                      (SOUNDFONT, "musescore-general-soundfont-lossless")):
        if not path.exists():
            out.append(f"{path} is missing: sudo apt-get install {pkg}")
    if shutil.which("fluidsynth") is None:
        out.append("the fluidsynth command is missing: sudo apt-get install fluidsynth")
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


def render(events, bpm: float, seconds: float, reverb: bool = False) -> np.ndarray:
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
               "-o", "synth.reverb.level=0.9", "-o", "synth.reverb.width=1.0", str(SOUNDFONT), str(mid)]
        subprocess.run(cmd, check=True, capture_output=True)
        data, rate = sf.read(str(wav), dtype="float64", always_2d=True)
    assert rate == RATE, rate
    return np.ascontiguousarray(data.T)


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
}


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
