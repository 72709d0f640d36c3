"""What an MP3 file says about itself, read from its bytes: no decoding.

`inspect(path)` walks every frame header once (0.6 s for an hour of audio at 192 kbps)
and returns `Mp3Info`: rate, channels, bitrate (average; VBR or not), frame count,
the Xing/Info/LAME or VBRI tag (encoder, encoder delay and padding, the encoder's
own lowpass), where the audio frames lie between the tags (ID3v2 at the start; ID3v1,
APEv1/2, Lyrics3 v1/v2 and ID3v2 with a footer at the end; ID3v2 tags between frames),
the gapless data to use (the LAME tag, else an iTunes `iTunSMPB` comment) or why there is
none, and damage (bytes skipped between frames, a cut-off last frame, fewer frames than
the tag promises). A file that is not MPEG audio at all raises `InputError` naming what
it is instead (WAV, FLAC, an empty file...). An MP3 stream inside a WAV (RIFF) container
(format tag 0x55 or 0x50, as Windows' ACM codec, old rippers and `ffmpeg -c:a libmp3lame
out.wav` write it) is an MP3 all the same: its `data` chunk is walked and decoded.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mutagen import MutagenError
from mutagen.id3 import ID3

from restore.errors import InputError, input_read_error

# Samples every layer III decoder puts in front of the encoder's output (the synthesis
# filterbank's 528, plus 1): a gapless decode skips the encoder delay and these.
DECODER_DELAY = 529

# Bitrates in kbps by (MPEG version family, layer); index 0 is "free format".
_BITRATES = {
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (2, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {"1": (44100, 48000, 32000), "2": (22050, 24000, 16000), "2.5": (11025, 12000, 8000)}
_VERSION_BITS = {0: "2.5", 2: "2", 3: "1"}  # 1 is reserved
_LAYER_BITS = {1: 3, 2: 2, 3: 1}  # 0 is reserved
_VBR_METHODS = {0: "unknown", 1: "CBR", 2: "ABR", 3: "VBR (rh)", 4: "VBR (mtrh)", 5: "VBR (mt)", 6: "VBR", 8: "CBR (2-pass)", 9: "ABR (2-pass)"}

# WAV format tags of MPEG audio: a RIFF file with one of these holds an MP3 stream in its data chunk.
_WAVE_MPEG = {0x0055: "MPEG layer III", 0x0050: "MPEG"}

# What other files named .mp3 turn out to be, by their first bytes.
_MAGIC = (
    (b"RIFF", "a WAV (RIFF) file"),
    (b"fLaC", "a FLAC file"),
    (b"OggS", "an Ogg file"),
    (b"FORM", "an AIFF file"),
    (b"\x30\x26\xb2\x75", "a WMA/ASF file"),
    (b"<", "a text/HTML file (perhaps a saved web page)"),
    (b"PK\x03\x04", "a ZIP archive"),
)


@dataclass(frozen=True)
class FrameHeader:
    version: str          # "1", "2" or "2.5"
    layer: int            # 1, 2 or 3
    bitrate_kbps: int
    rate: int
    padding: int
    channels: int
    mode: str             # stereo, joint stereo, dual channel, mono
    protected: bool       # a 16-bit CRC follows the header

    @property
    def samples_per_frame(self) -> int:
        if self.layer == 1:
            return 384
        if self.layer == 2 or self.version == "1":
            return 1152
        return 576

    @property
    def length(self) -> int:
        """Frame length in bytes, header included."""
        if self.layer == 1:
            return (12 * self.bitrate_kbps * 1000 // self.rate + self.padding) * 4
        return self.samples_per_frame // 8 * self.bitrate_kbps * 1000 // self.rate + self.padding


def parse_header(b, pos: int = 0) -> FrameHeader | None:
    """The MPEG audio frame header at b[pos:pos+4], or None if there is none."""
    if pos + 4 > len(b):
        return None
    h = int.from_bytes(b[pos:pos + 4], "big")
    if h >> 21 != 0x7FF:
        return None
    version = _VERSION_BITS.get((h >> 19) & 3)
    layer = _LAYER_BITS.get((h >> 17) & 3)
    br_idx, sr_idx = (h >> 12) & 15, (h >> 10) & 3
    if version is None or layer is None or br_idx in (0, 15) or sr_idx == 3:
        return None  # reserved values, or free format (unsupported)
    mode_bits = (h >> 6) & 3
    return FrameHeader(
        version=version,
        layer=layer,
        bitrate_kbps=_BITRATES[(1 if version == "1" else 2, layer)][br_idx],
        rate=_RATES[version][sr_idx],
        padding=(h >> 9) & 1,
        channels=1 if mode_bits == 3 else 2,
        mode=("stereo", "joint stereo", "dual channel", "mono")[mode_bits],
        protected=not (h >> 16) & 1,
    )


@dataclass
class Mp3Info:
    """Facts about one MP3. Durations in seconds, rates in Hz, bitrates in kbps."""

    version: str
    layer: int
    rate: int
    channels: int
    mode: str
    frames: int                   # audio frames found by the walk (tag frame excluded)
    samples_per_frame: int
    bitrate_kbps: float           # average over the audio frames
    vbr: bool                     # frames of different bitrates, or a tag that says VBR/ABR
    vbr_method: str | None        # from the LAME tag, when there is one
    encoder: str | None           # e.g. "LAME3.100"
    encoder_delay: int | None     # samples the encoder put in front (LAME tag or iTunSMPB), when trusted
    encoder_padding: int | None   # samples the encoder appended (idem); the decoder delay is not in either
    encoder_lowpass_hz: int | None
    gapless: bool                 # delay and padding are known, so the decode is trimmed exactly
    tag_frames: int | None        # frame count the Xing/Info/VBRI tag promises
    id3v2_bytes: int
    skipped_bytes: int            # junk between frames: a sign of damage
    truncated: bool               # the last frame is cut off, or frames are missing
    problems: list[str] = field(default_factory=list)
    gapless_from: str | None = None   # "LAME tag" or "iTunSMPB" when gapless
    gapless_note: str | None = None   # why the decode cannot be trimmed, when it cannot
    audio_start: int = 0              # byte offset of the first audio frame (after any Xing/VBRI frame)
    audio_end: int = 0                # byte offset just after the last whole audio frame
    tags: list[str] = field(default_factory=list)  # tags found, in file order, e.g. ["ID3v2.4", "APEv2", "ID3v1"]
    container: str | None = None      # "WAV (RIFF)" when the MP3 stream is wrapped in one; None for a plain MP3

    @property
    def expected_samples(self) -> int:
        """Samples a gapless decoder returns for this file."""
        total = self.frames * self.samples_per_frame
        if self.gapless:
            total -= (self.encoder_delay or 0) + (self.encoder_padding or 0)
        return max(total, 0)

    @property
    def duration(self) -> float:
        return self.expected_samples / self.rate

    def to_dict(self) -> dict:
        d = asdict(self)
        d["duration"] = round(self.duration, 3)
        return d


class FileWindow:
    """Read-only random access to a file through a 1 MiB window: b[i], b[i:j], len(b),
    b.find(sub, start, end). Walking an hour-long MP3 keeps 1 MiB in memory, not the file
    (an mmap made every page resident: +84 MB of RSS for a 60-minute 192 kbps file)."""

    WINDOW = 1 << 20

    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size
        self.start, self.buf = 0, b""

    def __len__(self) -> int:
        return self.size

    def _span(self, lo: int, hi: int) -> bytes:
        lo, hi = max(lo, 0), min(hi, self.size)
        if lo >= hi:
            return b""
        if lo < self.start or hi > self.start + len(self.buf):
            self.fh.seek(lo)
            self.start, self.buf = lo, self.fh.read(max(hi - lo, self.WINDOW))
        return self.buf[lo - self.start:hi - self.start]

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._span(key.start or 0, self.size if key.stop is None else key.stop)
        return self._span(key, key + 1)[0]

    def find(self, sub: bytes, start: int, end: int) -> int:
        pos = start
        while pos < end:
            hi = min(end, pos + self.WINDOW)
            i = self._span(pos, hi + len(sub) - 1).find(sub)
            if i >= 0 and pos + i + len(sub) <= end:
                return pos + i
            pos = hi
        return -1


def _syncsafe(data: bytes) -> int | None:
    """A 28-bit ID3v2 "syncsafe" size (7 bits a byte), or None if a byte has its top bit set."""
    if len(data) != 4 or any(byte & 0x80 for byte in data):
        return None
    return (data[0] << 21) | (data[1] << 14) | (data[2] << 7) | data[3]


def _id3v2_at(b, pos: int, end: int) -> tuple[int, str] | None:
    """(length, "ID3v2.N") of a valid ID3v2 tag starting at b[pos], ending by `end`, or None."""
    head = bytes(b[pos:pos + 10])
    if len(head) < 10 or head[:3] != b"ID3" or head[3] not in (2, 3, 4) or head[4] == 0xFF:
        return None
    size = _syncsafe(head[6:10])
    if size is None:
        return None
    length = 10 + size + (10 if head[3] == 4 and head[5] & 0x10 else 0)  # a v2.4 footer
    return (length, f"ID3v2.{head[3]}") if pos + length <= end else None


def _id3v2_size(b, tags: list[str] | None = None) -> int:
    """Bytes taken by ID3v2 tags at the start (several may follow each other); their kinds
    are appended to `tags`."""
    pos = 0
    while (found := _id3v2_at(b, pos, len(b))) is not None:
        pos += found[0]
        if tags is not None:
            tags.append(found[1])
    return pos


def _tag_ending_at(b, end: int) -> tuple[int, str] | None:
    """(start, kind) of the tag that ends exactly at `end`, or None. Each kind is checked
    by its own markers at both ends where it has them, so audio is never taken for a tag."""
    if end >= 128 and bytes(b[end - 128:end - 125]) == b"TAG":
        start = end - 128
        if start >= 227 and bytes(b[start - 227:start - 223]) == b"TAG+":  # the "enhanced" block before it
            return start - 227, "ID3v1 (enhanced)"
        return start, "ID3v1"
    if end >= 32 and bytes(b[end - 32:end - 24]) == b"APETAGEX":
        version = int.from_bytes(bytes(b[end - 24:end - 20]), "little")
        size = int.from_bytes(bytes(b[end - 20:end - 16]), "little")  # items + footer, not the header
        flags = int.from_bytes(bytes(b[end - 12:end - 8]), "little")
        start = end - size - (32 if flags & 0x80000000 else 0)
        if size >= 32 and start >= 0 and (not flags & 0x80000000 or bytes(b[start:start + 8]) == b"APETAGEX"):
            return start, "APEv2" if version >= 2000 else "APEv1"
    if end >= 15 and bytes(b[end - 9:end]) == b"LYRICS200":
        digits = bytes(b[end - 15:end - 9])
        if digits.isdigit():
            start = end - 15 - int(digits)
            if start >= 0 and bytes(b[start:start + 11]) == b"LYRICSBEGIN":
                return start, "Lyrics3v2"
    if end >= 20 and bytes(b[end - 9:end]) == b"LYRICSEND":
        lo = max(end - 5100 - 20, 0)  # Lyrics3 v1 holds at most 5100 bytes of lyrics
        at = bytes(b[lo:end]).rfind(b"LYRICSBEGIN")
        if at >= 0:
            return lo + at, "Lyrics3v1"
    if end >= 20 and bytes(b[end - 10:end - 7]) == b"3DI":  # an ID3v2.4 tag with a footer, appended
        size = _syncsafe(bytes(b[end - 4:end]))
        if size is not None and end - size - 20 >= 0:
            start = end - size - 20
            if bytes(b[start:start + 3]) == b"ID3":
                return start, f"ID3v2.{b[end - 7:end - 6][0]}"
    return None


def _tags_at_end(b, limit: int) -> tuple[int, list[str]]:
    """(where the trailing tags begin, their kinds in file order). Audio frames end before
    it. Tags are peeled from the end one by one, in any order, but never past `limit`."""
    end, kinds = len(b), []
    while (found := _tag_ending_at(b, end)) is not None and found[0] >= limit:
        end = found[0]
        kinds.append(found[1])
    return end, kinds[::-1]


def _find_sync(b, pos: int, end: int) -> tuple[int, FrameHeader] | None:
    """First position >= pos with a valid header whose next frame also starts validly
    (two in a row: a lone 0xFFE pattern inside junk is not a frame)."""
    while True:
        pos = b.find(b"\xff", pos, end)
        if pos < 0:
            return None
        hdr = parse_header(b, pos)
        if hdr is not None:
            nxt = pos + hdr.length
            if nxt >= end or (parse_header(b, nxt) is not None and _compatible(hdr, parse_header(b, nxt))):
                return pos, hdr
        pos += 1


def _compatible(a: FrameHeader, c: FrameHeader | None) -> bool:
    return c is not None and (a.version, a.layer, a.rate) == (c.version, c.layer, c.rate)


def _side_info_length(h: FrameHeader) -> int:
    if h.version == "1":
        return 17 if h.channels == 1 else 32
    return 9 if h.channels == 1 else 17


def _crc16(data: bytes) -> int:
    """CRC-16 (polynomial 0x8005, reflected, start 0): the LAME tag's own checksum."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _read_vbr_tag(b, pos: int, h: FrameHeader) -> dict | None:
    """The Xing/Info (+LAME extension) or VBRI tag in the frame at pos, as a dict, or None.
    `lame` is True when a LAME extension is there and its checksum holds (a damaged or
    pre-3.90 LAME tag has none that holds: its delay and padding are not trusted)."""
    if h.layer != 3:
        return None
    start = pos + 4 + (2 if h.protected else 0) + _side_info_length(h)
    ident = bytes(b[start:start + 4])
    if ident in (b"Xing", b"Info"):
        flags = int.from_bytes(b[start + 4:start + 8], "big")
        p = start + 8
        tag = {"kind": ident.decode(), "frames": None, "lame": False}
        if flags & 1:
            tag["frames"] = int.from_bytes(b[p:p + 4], "big")
            p += 4
        if flags & 2:
            p += 4
        if flags & 4:
            p += 100
        if flags & 8:
            p += 4
        enc = bytes(b[p:p + 9])
        if p + 36 <= pos + h.length and enc[:4].isalpha():
            tag["encoder"] = enc.rstrip(b"\x00 ").decode("latin-1", "replace")
            tag["vbr_method"] = _VBR_METHODS.get(b[p + 9] & 15, "unknown")
            tag["lowpass_hz"] = b[p + 10] * 100 or None
            d = bytes(b[p + 21:p + 24])
            tag["delay"] = (d[0] << 4) | (d[1] >> 4)
            tag["padding"] = ((d[1] & 15) << 8) | d[2]
            tag["lame"] = _crc16(bytes(b[pos:p + 34])) == int.from_bytes(bytes(b[p + 34:p + 36]), "big")
        return tag
    vbri = pos + 4 + 32
    if bytes(b[vbri:vbri + 4]) == b"VBRI":
        return {"kind": "VBRI", "frames": int.from_bytes(b[vbri + 14:vbri + 18], "big"), "lame": False,
                "encoder": "FhG (VBRI)", "vbr_method": "VBR"}
    return None


def _itunes_gapless(path: Path) -> tuple[int, int, int] | None:
    """(delay, padding, length) from an iTunes `iTunSMPB` comment (ID3v2 COMM or TXXX:
    " 00000000 DDDDDDDD PPPPPPPP LLLLLLLLLLLLLLLL ...", hexadecimal samples), or None.
    As in the LAME tag, the delay is the encoder's: the decoder's 529 samples come on top
    (iTunes' own MP3 encoder writes 0x210 = 528, the ISO reference encoder's delay)."""
    try:
        tags = ID3(path)
    except (MutagenError, ValueError, OSError):
        return None
    for frame in (*tags.getall("COMM"), *tags.getall("TXXX")):
        if frame.desc.lower() == "itunsmpb" and frame.text:
            fields = str(frame.text[0]).split()
            try:
                return int(fields[1], 16), int(fields[2], 16), int(fields[3], 16)
            except (IndexError, ValueError):
                return None
    return None


def _gapless(tag: dict, path: Path, has_id3v2: bool, total: int) -> tuple[int | None, int | None, str | None, str | None]:
    """(delay, padding, where from, None) when the decode can be trimmed exactly, else
    (None, None, None, what the file lacks). `total` is frames * samples per frame. The
    LAME tag comes first (it is in the stream), then iTunSMPB, checked against `total`."""
    if tag.get("lame") and (tag["delay"] or tag["padding"]):
        return tag["delay"], tag["padding"], "LAME tag", None
    if tag.get("lame"):
        notes = [f"the {tag['encoder']} tag gives delay 0 and padding 0"]  # ffmpeg's, for encoders it cannot ask
    elif tag.get("kind") == "VBRI":
        notes = ["a VBRI header (FhG): it gives no padding, and tools disagree on how to read its delay"]
    elif tag.get("encoder"):
        notes = [f"the {tag['encoder']} tag's checksum does not hold"]
    elif tag:
        notes = [f"an {tag['kind']} header without LAME extension"]
    else:
        notes = ["no LAME tag"]
    itunes = _itunes_gapless(path) if has_id3v2 else None
    if itunes is None:
        notes.append("no iTunSMPB")
    else:
        delay, padding, length = itunes
        if length and delay + padding + length == total:
            return delay, padding, "iTunSMPB", None
        notes.append(f"an iTunSMPB that does not match the file (delay {delay} + padding {padding} + "
                     f"length {length} is not its {total} samples)")
    return None, None, None, ", ".join(notes)


def _what_is_it(head: bytes) -> str | None:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            if magic == b"RIFF" and head[8:12] != b"WAVE":
                return "a RIFF file"
            return name
    if head[4:8] == b"ftyp":
        return "an MP4/M4A file"
    return None


def inspect(path: Path) -> Mp3Info:
    """Read the facts of the MP3 at `path`. Raises InputError for files that are no MP3 or
    cannot be read (a permission, a disk error: named as the input's, not the output's)."""
    try:
        return _inspect(path)
    except OSError as exc:
        raise input_read_error(path, exc) from exc


def riff_chunks(b) -> list[tuple[bytes, int, int]]:
    """The top-level chunks of a WAV (RIFF) file (see chunks_in); [] for any other file.
    `b`: the file's bytes (a FileWindow or bytes)."""
    size = len(b)
    if size < 12 or bytes(b[0:4]) != b"RIFF" or bytes(b[8:12]) != b"WAVE":
        return []
    return chunks_in(b, 12, size)


def chunks_in(b, pos: int, end: int) -> list[tuple[bytes, int, int]]:
    """The RIFF chunks in b[pos:end] (a 4-byte id, a little-endian 32-bit size, the body
    padded to an even size) as (id, start of its body, length), in order. A chunk whose size
    says more than there is (a cut-off file), or a data chunk whose size says 0 (a writer
    that streamed), runs to `end` and is the last."""
    chunks = []
    while pos + 8 <= end:
        chunk, length = bytes(b[pos:pos + 4]), int.from_bytes(bytes(b[pos + 4:pos + 8]), "little")
        body = pos + 8
        if length > end - body or (length == 0 and chunk == b"data"):
            chunks.append((chunk, body, end - body))
            break
        chunks.append((chunk, body, length))
        pos = body + length + (length & 1)
    return chunks


def _riff_mpeg_data(b) -> tuple[int, int] | None:
    """(start, end) of the data chunk of a WAV (RIFF) file whose format is MPEG audio, None
    for any other file."""
    fmt = None
    for chunk, body, length in riff_chunks(b):
        if chunk == b"fmt " and length >= 2:
            fmt = int.from_bytes(bytes(b[body:body + 2]), "little")
        elif chunk == b"data":
            return (body, body + length) if fmt in _WAVE_MPEG else None
    return None


def _inspect(path: Path) -> Mp3Info:
    size = path.stat().st_size
    if size == 0:
        raise InputError("empty file (0 bytes)", path, "the copy or download failed; restore it from a backup")
    tags: list[str] = []
    with open(path, "rb") as fh:
        b = FileWindow(fh, size)
        riff = _riff_mpeg_data(b)
        if riff is not None:  # the container's other chunks (fmt, fact, LIST, id3) are not audio
            start, end = riff
            tags_at_end = []
        else:
            start = _id3v2_size(b, tags)
            end, tags_at_end = _tags_at_end(b, start)
        id3 = start if riff is None else 0
        if start >= end:
            raise InputError("no audio: the file holds only " + ("a WAV header" if riff else "tags") +
                             ", no MP3 frames", path)
        other = None if riff else _what_is_it(bytes(b[start:start + 12]))
        if other:
            raise InputError(f"not an MP3: this is {other} named .mp3", path, "convert or rename it; mp3restore restores MP3s")
        found = _find_sync(b, start, end)
        if found is None:
            raise InputError("not an MP3: no MPEG audio frames found", path, "the file is damaged or of another format")
        first, h0 = found
        skipped = first - start
        tag = _read_vbr_tag(b, first, h0)
        pos = audio_start = audio_end = first + h0.length if tag else first

        frames, bytes_sum, bitrates, truncated = 0, 0, set(), False
        while pos < end:
            h = parse_header(b, pos)
            if h is None or not _compatible(h0, h):
                inner = _id3v2_at(b, pos, end)  # an ID3v2 tag after the audio or between two songs
                if inner is not None:
                    tags.append(inner[1])
                    pos += inner[0]
                    continue
                again = _find_sync(b, pos + 1, end)
                if again is None:
                    skipped += end - pos
                    break
                skipped += again[0] - pos
                pos, h = again
            if pos + h.length > end:
                truncated = True  # the last frame is cut off
                break
            frames += 1
            bytes_sum += h.length
            bitrates.add(h.bitrate_kbps)
            pos += h.length
            audio_end = pos

    if frames == 0:
        raise InputError("no audio: the file has a header frame but no audio frames", path)
    spf = h0.samples_per_frame
    tag = tag or {}
    problems = []
    tag_frames = tag.get("frames")
    if tag_frames and frames < tag_frames - 1:
        truncated = True
        problems.append(f"truncated: {frames} of the {tag_frames} frames its header promises "
                        f"({frames * spf / h0.rate:.1f} s of {tag_frames * spf / h0.rate:.1f} s)")
    elif truncated:
        problems.append("truncated: the last frame is cut off")
    if skipped > 4096:  # a few bytes of junk are common; more is damage
        problems.append(f"damaged: {skipped} bytes of junk between frames")
    delay, padding, gapless_from, note = _gapless(tag, path, id3 > 0, frames * spf)
    if truncated and gapless_from:
        note = "the file is cut off, so its end is where the file ends"
    vbr_method = tag.get("vbr_method")
    return Mp3Info(
        version=h0.version, layer=h0.layer, rate=h0.rate, channels=h0.channels, mode=h0.mode,
        frames=frames, samples_per_frame=spf,
        bitrate_kbps=round(bytes_sum * 8 * h0.rate / (frames * spf) / 1000, 1),
        vbr=len(bitrates) > 1 or (vbr_method or "").startswith(("VBR", "ABR")),
        vbr_method=vbr_method, encoder=tag.get("encoder"),
        encoder_delay=delay, encoder_padding=padding,
        encoder_lowpass_hz=tag.get("lowpass_hz"), gapless=gapless_from is not None and not truncated,
        tag_frames=tag_frames, id3v2_bytes=id3, skipped_bytes=skipped, truncated=truncated, problems=problems,
        gapless_from=gapless_from if not truncated else None, gapless_note=note,
        audio_start=audio_start, audio_end=audio_end, tags=tags + tags_at_end,
        container="WAV (RIFF)" if riff else None,
    )
