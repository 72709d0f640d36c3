"""Example songs made on the spot: a synthesised band (kick, snare, hi-hats, bass, chords)
encoded as tagged MP3s with LAME 3.100 (lameenc). For the README's first command and for
the tests; deterministic for a given seed. Not music to judge restorations by: the
evaluation set from real instrument recordings is made by scripts/ (see README).
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from mutagen.id3 import APIC, ID3, TALB, TCON, TDRC, TIT2, TPE1, TPE2, TRCK

from restore.audio import Audio
from restore.io.lame import encode_mp3


def band(seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0, bpm: float = 112.0) -> Audio:
    """A few bars of a small band, peak at about -1 dBFS. Hi-hats reach Nyquist, so an
    MP3 encoder's lowpass shows; instruments are panned, so the stereo field is real."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    beat = 60.0 / bpm
    left, right = np.zeros(n), np.zeros(n)

    def place(sound: np.ndarray, at: float, pan: float) -> None:
        i = int(at * rate)
        if i >= n:
            return
        seg = sound[: n - i]
        left[i:i + len(seg)] += seg * np.sqrt(1 - pan)
        right[i:i + len(seg)] += seg * np.sqrt(pan)

    k = np.arange(int(0.35 * rate)) / rate
    kick = np.sin(2 * np.pi * (50 * k + 70 / 18 * (1 - np.exp(-18 * k)))) * np.exp(-9 * k)
    s = np.arange(int(0.2 * rate)) / rate
    snare = (0.6 * rng.standard_normal(len(s)) + 0.5 * np.sin(2 * np.pi * 190 * s)) * np.exp(-22 * s)
    h = np.arange(int(0.06 * rate)) / rate
    hat_noise = np.diff(rng.standard_normal(len(h) + 1))  # differentiated noise: bright, up to Nyquist
    hat = hat_noise * np.exp(-70 * h) * 0.25
    roots = [55.0, 43.65, 49.0, 41.2]  # A, F, G, E
    for b in range(int(seconds / beat) + 1):
        at = b * beat
        if b % 4 in (0, 2):
            place(kick, at, 0.5)
        if b % 4 in (1, 3):
            place(snare, at, 0.45)
        for eighth in (0, 0.5):
            place(hat * (1.0 if eighth == 0 else 0.6) * rng.uniform(0.8, 1.2), at + eighth * beat, 0.7)
    for bar in range(int(seconds / (4 * beat)) + 1):
        root = roots[bar % len(roots)]
        start, dur = bar * 4 * beat, 4 * beat
        m = (t >= start) & (t < start + dur)
        tb = t[m] - start
        env = np.minimum(tb / 0.01, 1) * np.exp(-0.8 * tb)
        bass = sum(np.sin(2 * np.pi * root * 2 * j * tb) / j for j in range(1, 8)) * env * 0.5
        left[m] += bass * 0.7
        right[m] += bass * 0.7
        for semis, pan in ((12, 0.25), (16, 0.75), (19, 0.4), (24, 0.6)):
            f = root * 2 ** (semis / 12) * 2
            pad = sum(np.sin(2 * np.pi * f * j * tb + j) / j ** 1.5 for j in range(1, 12)) * (1 - np.exp(-3 * tb)) * 0.08
            left[m] += pad * np.sqrt(1 - pan)
            right[m] += pad * np.sqrt(pan)
    mix = np.stack([left, right])
    mix *= 10 ** (-1 / 20) / max(np.max(np.abs(mix)), 1e-9)
    if channels == 1:
        mix = mix.mean(axis=0, keepdims=True)
    return Audio(mix.astype(np.float32), rate)


def png_cover(size: int = 32, seed: int = 0) -> bytes:
    """A small valid PNG (RGB gradient) to embed as cover art."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = rng.integers(0, 255, 3)
    img = ((base[None, None, :] + np.stack([x * 7, y * 5, (x + y) * 3], -1)) % 256).astype(np.uint8)
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def tag_mp3(path: Path, title: str, artist: str, album: str, track: str, year: str = "1999",
            genre: str = "Rock", cover: bytes | None = None) -> None:
    """Write an ID3v2.4 tag with the usual fields and, optionally, front cover art."""
    tags = ID3()
    for frame in (TIT2(encoding=3, text=title), TPE1(encoding=3, text=artist), TPE2(encoding=3, text=artist),
                  TALB(encoding=3, text=album), TRCK(encoding=3, text=track), TDRC(encoding=3, text=year),
                  TCON(encoding=3, text=genre)):
        tags.add(frame)
    if cover:
        tags.add(APIC(encoding=3, mime="image/png", type=3, desc="Cover", data=cover))
    tags.save(str(path))


def make_examples(folder: Path, seconds: float = 20.0) -> list[Path]:
    """Write a small example library to `folder`: Artist/Album/NN Title.mp3 at 128 and
    192 kbps CBR and a VBR one, tagged, with cover art. Returns the paths."""
    songs = [("01 Morning Drive", 128, None), ("02 Night Train", 192, None), ("03 Late Call", None, 2)]
    made = []
    for i, (title, bitrate, vbr) in enumerate(songs):
        path = folder / "The Examples" / "Generated Sessions" / f"{title}.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = encode_mp3(band(seconds, seed=i, bpm=100 + 12 * i), bitrate=bitrate or 192, vbr_quality=vbr)
        path.write_bytes(data)
        tag_mp3(path, title[3:], "The Examples", "Generated Sessions", f"{i + 1}/{len(songs)}", cover=png_cover(seed=i))
        made.append(path)
    return made
