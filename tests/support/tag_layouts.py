"""MP3s as archives hold them: each encoder available here, each tag layout taggers write,
made from one source so that its decode can be checked sample for sample. `LAYOUTS` is
the README's decode table (tests/test_tag_layouts.py checks both: every row decodes as it
says, and the README shows exactly these rows).

Encoders: Debian's `lame` (LAME tag), lameenc (no tag), ffmpeg with libmp3lame (LAME tag
written by ffmpeg) and libshine (an Info tag saying delay 0 and padding 0), shineenc (no
tag). Tags: mutagen writes ID3v2.3/2.4, ID3v1 and APEv2 (as mp3gain does); Lyrics3 v1/v2,
an ID3v2.4 with a footer, Xing without LAME extension and VBRI are built by hand from
their specifications (no tool here writes them). An MP3 stream in a WAV (RIFF) container
comes from ffmpeg's WAV muxer (LIST INFO tags) and, with an `id3 ` chunk, from a wrapper
built by hand and mutagen.
"""
from __future__ import annotations

import io
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import soundfile as sf
from mutagen.apev2 import APEv2
from mutagen.id3 import COMM, ID3, TIT2, TPE1
from mutagen.wave import WAVE

from restore.audio import Audio
from restore.io.lame import encode_mp3
from restore.io.mp3info import FileWindow, _find_sync, _side_info_length, inspect

TOOLS = {name: shutil.which(name) for name in ("lame", "ffmpeg", "shineenc")}


@dataclass(frozen=True)
class Layout:
    carries: str               # what the file carries (the README's first column)
    made_by: str               # how the test makes it
    make: Callable[[Path, Audio], Path]
    lag: int | None            # None: exact (the source's length, lag 0); else the kept delay
    needs: tuple[str, ...] = ()

    @property
    def decode(self) -> str:
        if self.lag is None:
            return "exact: the source's length, lag 0"
        return f"keeps the delay ({self.lag} samples) and the padding, and says why"


# -- encoders ------------------------------------------------------------------------------

def _wav(path: Path, audio: Audio) -> Path:
    wav = path.with_suffix(".src.wav")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(wav), audio.samples.T, audio.rate, subtype="PCM_16")
    return wav


def lame(path: Path, audio: Audio, *args: str) -> Path:
    """Debian's `lame` at 192 kbps CBR unless `args` say otherwise: a LAME tag."""
    wav = _wav(path, audio)
    subprocess.run([TOOLS["lame"], "--quiet", *(args or ("-b", "192")), str(wav), str(path)], check=True)
    wav.unlink()
    return path


def lameenc(path: Path, audio: Audio) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp3(audio, bitrate=192))
    return path


def ffmpeg(path: Path, audio: Audio, *args: str) -> Path:
    wav = _wav(path, audio)
    subprocess.run([TOOLS["ffmpeg"], "-v", "error", "-y", "-i", str(wav), *args, str(path)], check=True)
    wav.unlink()
    return path


def shineenc(path: Path, audio: Audio) -> Path:
    wav = _wav(path, audio)
    subprocess.run([TOOLS["shineenc"], "-q", "-b", "192", str(wav), str(path)], check=True,
                   stdout=subprocess.DEVNULL)
    wav.unlink()
    return path


# -- tags ----------------------------------------------------------------------------------

def add_id3v2(path: Path, version: int = 4) -> Path:
    tags = ID3()
    tags.add(TIT2(encoding=1, text="Song"))
    tags.add(TPE1(encoding=1, text="Artist"))
    tags.save(str(path), v2_version=version)
    return path


def add_id3v1(path: Path) -> Path:
    """A 128-byte ID3v1.1 tag appended (as `ID3.save(v1=2)` writes, but without adding an ID3v2)."""
    tag = b"TAG" + b"Song".ljust(30, b"\0") + b"Artist".ljust(30, b"\0") + b"Album".ljust(30, b"\0") \
        + b"1999" + b"comment".ljust(28, b"\0") + b"\0\x01" + b"\x11"
    assert len(tag) == 128
    with open(path, "ab") as fh:
        fh.write(tag)
    return path


def add_apev2(path: Path, before_id3v1: bool = True) -> Path:
    """What mp3gain writes: an APEv2 tag with header and footer, before any ID3v1 (mutagen
    alone appends it after the ID3v1: `before_id3v1=False`)."""
    data = path.read_bytes()
    id3v1 = data[-128:] if before_id3v1 and data[-128:-125] == b"TAG" else b""
    if id3v1:
        path.write_bytes(data[:-128])
    tags = APEv2()
    tags["MP3GAIN_MINMAX"] = "087,210"
    tags["REPLAYGAIN_TRACK_GAIN"] = "-3.10 dB"
    tags["REPLAYGAIN_TRACK_PEAK"] = "0.981"
    tags.save(str(path))
    with open(path, "ab") as fh:
        fh.write(id3v1)
    return path


def _before_id3v1(path: Path, block: bytes) -> Path:
    data = path.read_bytes()
    at = len(data) - 128 if data[-128:-125] == b"TAG" else len(data)
    path.write_bytes(data[:at] + block + data[at:])
    return path


def add_lyrics3v2(path: Path) -> Path:
    """Lyrics3 v2.00: LYRICSBEGIN, fields (3-letter id, 5-digit size, data), a 6-digit size of
    all that, LYRICS200; placed before the ID3v1 tag as the format requires."""
    fields = b"IND00002" + b"10" + b"LYR00024" + b"[00:01]la la la\r\nla la."
    body = b"LYRICSBEGIN" + fields
    return _before_id3v1(path, body + b"%06d" % len(body) + b"LYRICS200")


def add_lyrics3v1(path: Path) -> Path:
    return _before_id3v1(path, b"LYRICSBEGIN" + b"la la la\r\nla la." + b"LYRICSEND")


def add_id3v24_footer(path: Path) -> Path:
    """An ID3v2.4 tag with a footer, appended at the end (allowed by ID3v2.4 section 5)."""
    text = b"\x03Appended"
    frame = b"TIT2" + _syncsafe(len(text)) + b"\0\0" + text
    size = _syncsafe(len(frame))
    with open(path, "ab") as fh:
        fh.write(b"ID3\x04\x00\x10" + size + frame + b"3DI\x04\x00\x10" + size)
    return path


def add_id3v23_appended(path: Path) -> Path:
    """An ID3v2.3 tag (no footer) appended after the audio, as some taggers did."""
    tags = ID3()
    tags.add(TIT2(encoding=1, text="Appended"))
    blob = io.BytesIO()
    tags.save(blob, v2_version=3, padding=lambda info: 64)
    with open(path, "ab") as fh:
        fh.write(blob.getvalue())
    return path


def _syncsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 127, (n >> 14) & 127, (n >> 7) & 127, n & 127))


def add_itunsmpb(path: Path, delay: int = 576, length_error: int = 0, length: int | None = None) -> Path:
    """An iTunes gapless comment for a LAME-encoded file without LAME tag: delay 576 (LAME's),
    padding what is left of the frames; `length_error` makes it not add up."""
    info = inspect(path)
    total = info.frames * info.samples_per_frame
    assert length is not None
    padding = total - delay - length
    tags = ID3()
    tags.add(COMM(encoding=0, lang="eng", desc="iTunSMPB",
                  text=f" 00000000 {delay:08X} {padding:08X} {length + length_error:016X} 00000000 00000000"))
    tags.save(str(path), v2_version=3)
    return path


def _header_frame(path: Path, ident: bytes, body: bytes, at: int | None = None) -> Path:
    """Insert before the first audio frame a silent frame of the same format whose data is
    `ident + body`, at the offset the format puts it (Xing: after the side info; VBRI: 32
    bytes after the header)."""
    data = path.read_bytes()
    with open(path, "rb") as fh:
        first, header = _find_sync(FileWindow(fh, len(data)), 0, len(data))
    frame = bytearray(header.length)
    frame[:4] = data[first:first + 4]
    offset = at if at is not None else 4 + (2 if header.protected else 0) + _side_info_length(header)
    frame[offset:offset + 4 + len(body)] = ident + body
    path.write_bytes(data[:first] + bytes(frame) + data[first:])
    return path


def add_xing(path: Path) -> Path:
    """A Xing header (frames and bytes, no TOC, no LAME extension), as pre-LAME Xing encoders wrote."""
    info = inspect(path)
    size = path.stat().st_size
    return _header_frame(path, b"Xing", (3).to_bytes(4, "big") + info.frames.to_bytes(4, "big") + size.to_bytes(4, "big"))


def add_vbri(path: Path) -> Path:
    """A VBRI header (FhG): version 1, delay, quality, bytes, frames, an empty seek table."""
    info = inspect(path)
    size = path.stat().st_size
    body = (1).to_bytes(2, "big") + (0x0481).to_bytes(2, "big") + (75).to_bytes(2, "big") + size.to_bytes(4, "big") \
        + info.frames.to_bytes(4, "big") + bytes(8)
    return _header_frame(path, b"VBRI", body, at=4 + 32)


def break_lame_crc(path: Path) -> Path:
    """Change the LAME tag's lowpass byte without updating its checksum."""
    data = bytearray(path.read_bytes())
    at = data.index(b"LAME3.100") + 10
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def wrap_riff(path: Path) -> Path:
    """Wrap the MP3 in a WAV (RIFF) container as Windows' ACM codec writes one: an
    MPEGLAYER3WAVEFORMAT `fmt ` chunk (format tag 0x55), a `fact` chunk, the MP3 bytes as the
    `data` chunk; then an `id3 ` chunk with a title and artist, added by mutagen."""
    info, mp3 = inspect(path), path.read_bytes()
    fmt = struct.pack("<HHIIHHH", 0x55, info.channels, info.rate, int(info.bitrate_kbps * 125), 1, 0, 12) \
        + struct.pack("<HIHHH", 1, 2, 144 * 192000 // info.rate, 1, 1393)
    fact = struct.pack("<I", info.frames * info.samples_per_frame)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact \
        + b"data" + struct.pack("<I", len(mp3)) + mp3 + (b"\0" if len(mp3) & 1 else b"")
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    wave = WAVE(str(path))
    wave.add_tags()
    wave.tags.add(TIT2(encoding=3, text="Song"))
    wave.tags.add(TPE1(encoding=3, text="Artist"))
    wave.save()
    return path


def _chain(*steps):
    def make(path: Path, audio: Audio) -> Path:
        path = steps[0](path, audio)
        for step in steps[1:]:
            step(path)
        return path
    return make


def _itunes(length_error: int = 0):
    def make(path: Path, audio: Audio) -> Path:
        return add_itunsmpb(lameenc(path, audio), length=audio.frames, length_error=length_error)
    return make


LAYOUTS: tuple[Layout, ...] = (
    Layout("LAME tag", "`lame`", lame, None, ("lame",)),
    Layout("LAME tag, ID3v1", "`lame --tt Song --id3v1-only`",
           lambda p, a: lame(p, a, "-b", "192", "--tt", "Song", "--id3v1-only"), None, ("lame",)),
    Layout("ID3v2.3, LAME tag, ID3v1", "`lame --tt Song` (what LAME writes given a title)",
           lambda p, a: lame(p, a, "-b", "192", "--tt", "Song"), None, ("lame",)),
    Layout("ID3v2.4, LAME tag", "`lame`, mutagen", _chain(lame, add_id3v2), None, ("lame",)),
    Layout("LAME tag, APEv2", "`lame`, mutagen (as mp3gain writes)", _chain(lame, add_apev2), None, ("lame",)),
    Layout("LAME tag, APEv2, ID3v1", "`lame`, mutagen (as mp3gain writes)", _chain(lame, add_id3v1, add_apev2), None,
           ("lame",)),
    Layout("LAME tag, ID3v1, APEv2", "`lame`, mutagen (as mutagen writes)",
           _chain(lame, add_id3v1, lambda p: add_apev2(p, before_id3v1=False)), None, ("lame",)),
    Layout("LAME tag, Lyrics3v2, ID3v1", "`lame`, by hand", _chain(lame, add_id3v1, add_lyrics3v2), None, ("lame",)),
    Layout("LAME tag, Lyrics3v1, ID3v1", "`lame`, by hand", _chain(lame, add_id3v1, add_lyrics3v1), None, ("lame",)),
    Layout("LAME tag, ID3v2.4 with footer at the end", "`lame`, by hand", _chain(lame, add_id3v24_footer), None,
           ("lame",)),
    Layout("LAME tag, ID3v2.3 appended at the end", "`lame`, mutagen", _chain(lame, add_id3v23_appended), None,
           ("lame",)),
    Layout("ID3v2.4, LAME tag, ID3v2.3, APEv2, Lyrics3v2, ID3v1", "`lame`, mutagen, by hand",
           _chain(lame, add_id3v2, add_id3v23_appended, add_id3v1, add_apev2, add_lyrics3v2), None, ("lame",)),
    Layout("ID3v2.4, LAME tag by ffmpeg (`Lavc`), ID3v1", "ffmpeg (libmp3lame), mutagen",
           _chain(lambda p, a: ffmpeg(p, a, "-c:a", "libmp3lame", "-b:a", "192k"), add_id3v1), None, ("ffmpeg",)),
    Layout("ID3v2.3 with iTunSMPB, no LAME tag, ID3v1", "lameenc, mutagen", _chain(_itunes(), add_id3v1), None),
    Layout("ID3v2.3 with an iTunSMPB that does not add up to the file", "lameenc, mutagen", _itunes(1152), 1105),
    Layout("nothing (no gapless data)", "lameenc", lameenc, 1105),
    Layout("ID3v2.4, no Xing header", "ffmpeg `-write_xing 0` (libmp3lame)",
           lambda p, a: ffmpeg(p, a, "-c:a", "libmp3lame", "-b:a", "192k", "-write_xing", "0"), 1105, ("ffmpeg",)),
    Layout("Xing header without LAME extension", "lameenc, by hand", _chain(lameenc, add_xing), 1105),
    Layout("VBRI header (FhG)", "lameenc, by hand", _chain(lameenc, add_vbri), 1105),
    Layout("LAME tag whose checksum does not hold", "`lame`, one byte changed", _chain(lame, break_lame_crc), 1105,
           ("lame",)),
    Layout("nothing (shine)", "`shineenc`", shineenc, 1057, ("shineenc",)),
    Layout("ID3v2.4, Info tag saying delay 0 and padding 0", "ffmpeg (libshine)",
           lambda p, a: ffmpeg(p, a, "-c:a", "libshine", "-b:a", "192k"), 1057, ("ffmpeg",)),
    Layout("a WAV (RIFF) container (format 0x55), LIST INFO", "ffmpeg `-f wav` (libmp3lame)",
           lambda p, a: ffmpeg(p, a, "-c:a", "libmp3lame", "-b:a", "192k", "-metadata", "title=Song",
                               "-metadata", "artist=Artist", "-f", "wav"), 1105, ("ffmpeg",)),
    Layout("a WAV (RIFF) container (format 0x55), fact, id3 chunk", "lameenc, by hand, mutagen",
           _chain(lameenc, wrap_riff), 1105),
)


def markdown_table() -> str:
    rows = ["| The MP3 carries | Made in the tests by | The decode |", "|---|---|---|"]
    rows += [f"| {layout.carries} | {layout.made_by} | {layout.decode} |" for layout in LAYOUTS]
    return "\n".join(rows)
