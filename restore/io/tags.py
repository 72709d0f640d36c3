"""Tags and cover art: read from the MP3's ID3 (v2 or v1) and APEv2 tags, written as FLAC
Vorbis comments and pictures. Mapping follows the common tagger conventions (Picard,
foobar2000). Where a file has both, ID3v2 comes first and APEv2 adds what it lacks; APEv2
comes before an ID3v1 (foobar2000 tags MP3s with APEv2 + ID3v1 by default, and ID3v1 cuts
titles at 30 characters). An MP3 wrapped in a WAV (RIFF) container carries its tags in
chunks instead: an `id3 ` chunk and a LIST INFO chunk (INAM, IART, ...), read the same way."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mutagen import MutagenError
from mutagen.apev2 import APENoHeaderError, APEv2
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, Encoding, ID3NoHeaderError
from mutagen.wave import WAVE

from restore.io.mp3info import FileWindow, chunks_in, riff_chunks

from restore import __version__

_TEXT_FRAMES = {
    "TIT2": "TITLE", "TPE1": "ARTIST", "TALB": "ALBUM", "TPE2": "ALBUMARTIST",
    "TDRC": "DATE", "TDOR": "ORIGINALDATE", "TCOM": "COMPOSER",  # TCON (genre): _add_id3
    "TPE3": "CONDUCTOR", "TEXT": "LYRICIST", "TPE4": "REMIXER", "TBPM": "BPM", "TSRC": "ISRC",
    "TPUB": "LABEL", "TCOP": "COPYRIGHT", "TIT1": "GROUPING", "TIT3": "SUBTITLE",
    "TSOP": "ARTISTSORT", "TSOA": "ALBUMSORT", "TSOT": "TITLESORT", "TSO2": "ALBUMARTISTSORT",
    "TCMP": "COMPILATION", "TKEY": "KEY", "TLAN": "LANGUAGE", "TMED": "MEDIA", "TENC": "ENCODEDBY",
}
_NUMBER_PAIRS = {"TRCK": ("TRACKNUMBER", "TRACKTOTAL"), "TPOS": ("DISCNUMBER", "DISCTOTAL")}
# RIFF INFO fields (as Windows, ffmpeg and old rippers write them) and their Vorbis names.
_INFO_FIELDS = {
    b"INAM": "TITLE", b"IART": "ARTIST", b"IPRD": "ALBUM", b"ICRD": "DATE", b"IGNR": "GENRE",
    b"ICMT": "COMMENT", b"ICOP": "COPYRIGHT", b"ITRK": "TRACKNUMBER", b"IPRT": "TRACKNUMBER",
    b"ICMS": "COMPOSER",
}
# APEv2 keys (case-insensitive) whose Vorbis name differs, or that hold number/total pairs.
# (Other keys keep their name without spaces: "Album Artist" -> ALBUMARTIST.)
_APE_NAMES = {"YEAR": "DATE", "PUBLISHER": "LABEL"}
_APE_PAIRS = {"TRACK": ("TRACKNUMBER", "TRACKTOTAL"), "DISC": ("DISCNUMBER", "DISCTOTAL")}
_APE_COVERS = {"COVER ART (FRONT)": 3, "COVER ART (BACK)": 4}
_TXXX_NAMES = {  # Picard's names for MusicBrainz identifiers
    "MUSICBRAINZ ALBUM ID": "MUSICBRAINZ_ALBUMID", "MUSICBRAINZ ARTIST ID": "MUSICBRAINZ_ARTISTID",
    "MUSICBRAINZ ALBUM ARTIST ID": "MUSICBRAINZ_ALBUMARTISTID", "MUSICBRAINZ RELEASE GROUP ID": "MUSICBRAINZ_RELEASEGROUPID",
    "MUSICBRAINZ RELEASE TRACK ID": "MUSICBRAINZ_RELEASETRACKID", "ACOUSTID ID": "ACOUSTID_ID",
}


@dataclass
class TagSet:
    """Vorbis-comment fields (UPPERCASE name -> values) and pictures, ready for a FLAC."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    pictures: list[Picture] = field(default_factory=list)
    warning: str | None = None  # set when the MP3's tag could not be read

    def add(self, name: str, value: str) -> None:
        value = str(value).strip()
        if value:
            self.fields.setdefault(name, []).append(value)

    def fill_from(self, other: "TagSet") -> None:
        """Add the fields this set lacks from `other`, and its pictures if this has none."""
        for name, values in other.fields.items():
            if name not in self.fields:
                self.fields[name] = list(values)
        if not self.pictures:
            self.pictures = list(other.pictures)

    def without_loudness_tags(self) -> "TagSet":
        """A copy without ReplayGain/R128 fields: for variants that change loudness."""
        kept = {k: v for k, v in self.fields.items() if not k.startswith(("REPLAYGAIN_", "R128_"))}
        return TagSet(kept, list(self.pictures))

    def with_provenance(self, variant: str, source_name: str) -> "TagSet":
        """A copy that says what made the file (no timestamps: reruns give identical bytes)."""
        out = TagSet({k: list(v) for k, v in self.fields.items()}, list(self.pictures))
        out.fields["MP3RESTORE_VARIANT"] = [variant]
        out.fields["MP3RESTORE_SOURCE"] = [source_name]
        out.fields["MP3RESTORE_VERSION"] = [__version__]
        return out

    def with_stem(self, stem: str) -> "TagSet":
        """A copy for one stem of the song: the title says which ("Song (vocals)"), so a
        player's list of stems is readable, and MP3RESTORE_STEM names it for programs."""
        out = TagSet({k: list(v) for k, v in self.fields.items()}, list(self.pictures))
        out.fields["TITLE"] = [f"{t} ({stem})" for t in out.fields.get("TITLE", [])] or [stem]
        out.fields["MP3RESTORE_STEM"] = [stem]
        return out

    def write_flac(self, path: Path) -> None:
        flac = FLAC(str(path))
        flac.clear()
        for name, values in self.fields.items():
            flac[name] = values
        flac.clear_pictures()
        for picture in self.pictures:
            flac.add_picture(picture)
        flac.save()


def read_id3(path: Path, codepage: str | None = None) -> TagSet:
    """The MP3's tags as a TagSet (ID3v2, APEv2, ID3v1; see the module's docstring); an MP3
    without tags gives an empty one. `codepage` (e.g. "cp1251"): what text marked Latin-1
    (and ID3v1's) is really in where it is neither ASCII nor UTF-8; None: Latin-1."""
    tags = TagSet()
    try:
        id3 = ID3(str(path))
    except ID3NoHeaderError:
        id3 = None
    except (MutagenError, ValueError) as exc:  # a damaged tag must not cost the song its audio
        tags.warning = f"the ID3 tag is damaged and was not copied ({exc})"
        return tags
    if id3 is not None and id3.version >= (2, 0):
        _add_id3(tags, id3, codepage)
    ape = _read_ape(path)
    tags.fill_from(ape)
    if id3 is not None and id3.version < (2, 0):
        tags.fill_from(_id3_tags(id3, codepage))
    tags.warning = ape.warning
    if id3 is None and not tags.fields and not tags.pictures and not tags.warning:
        return _read_riff(path, codepage)
    return tags


def _id3_tags(id3: ID3, codepage: str | None) -> TagSet:
    tags = TagSet()
    _add_id3(tags, id3, codepage)
    return tags


def _read_ape(path: Path) -> TagSet:
    """The APEv2 tag's fields and cover art (mp3gain's own MP3GAIN_* are its undo data, not
    tags); an empty TagSet where there is none."""
    tags = TagSet()
    try:
        ape = APEv2(str(path))
    except APENoHeaderError:
        return tags
    except (MutagenError, ValueError) as exc:
        tags.warning = f"the APEv2 tag is damaged and was not copied ({exc})"
        return tags
    applied = any(key.upper() == "MP3GAIN_UNDO" for key in ape.keys())
    for key, value in ape.items():
        name = key.upper()
        if name in _APE_COVERS:
            data = bytes(value.value) if hasattr(value, "value") else b""
            _, _, image = data.partition(b"\0")  # "file name\0image bytes"
            if image:
                pic = Picture()
                pic.type, pic.data = _APE_COVERS[name], image
                pic.mime = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
                tags.pictures.append(pic)
            continue
        if name.startswith("MP3GAIN_") or getattr(value, "kind", None) != 0:  # 0: text (not binary, not a link)
            continue
        if name.startswith("REPLAYGAIN_") and applied:  # mp3gain changed the audio: the gain no longer fits it
            continue
        for text in value:
            if name in _APE_PAIRS:
                number, _, total = text.partition("/")
                tags.add(_APE_PAIRS[name][0], number)
                tags.add(_APE_PAIRS[name][1], total)
            elif "=" not in name and "~" not in name:
                tags.add(_APE_NAMES.get(name, name.replace(" ", "")), text)
    return tags


def _add_id3(tags: TagSet, id3: ID3, codepage: str | None = None) -> None:
    for frame in id3.values():
        fid = frame.FrameID
        latin1 = getattr(frame, "encoding", None) == Encoding.LATIN1

        def add(name: str, value, latin1=latin1) -> None:
            tags.add(name, _from_latin1(str(value), codepage) if latin1 else str(value))

        if fid == "TCON":  # ID3v1 genre numbers as v2.3 taggers wrote them: "(17)", "17", "(17)Rock"
            for genre in frame.genres:
                if genre != "Unknown":  # ID3v1's 255: no genre
                    add("GENRE", genre)
        elif fid in _TEXT_FRAMES:
            for text in frame.text:
                add(_TEXT_FRAMES[fid], text)
        elif fid in _NUMBER_PAIRS:
            number_name, total_name = _NUMBER_PAIRS[fid]
            number, _, total = str(frame.text[0]).partition("/")
            add(number_name, number)
            add(total_name, total)
        elif fid == "COMM" and frame.desc in ("", "Comment", "ID3v1 Comment") and frame.lang != "iTu":
            for text in frame.text:
                add("COMMENT", text)
        elif fid == "USLT":
            add("LYRICS", frame.text)
        elif fid == "TXXX":
            name = _TXXX_NAMES.get(frame.desc.upper(), frame.desc.upper().replace(" ", "_"))
            if name and "=" not in name and "~" not in name:
                for text in frame.text:
                    add(name, text)
        elif fid == "UFID" and frame.owner == "http://musicbrainz.org":
            tags.add("MUSICBRAINZ_TRACKID", frame.data.decode("ascii", "replace"))
        elif fid == "APIC" and frame.data:
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = int(frame.type), frame.mime or "image/jpeg", frame.desc, frame.data
            tags.pictures.append(pic)


def _from_latin1(text: str, codepage: str | None) -> str:
    """Text read from a frame marked Latin-1 (and ID3v1's), as it was meant. Taggers often
    wrote UTF-8 bytes there ("BjÃ¶rk" for "Björk"): Latin-1 text that decodes as UTF-8 with
    something beyond ASCII is that (real Latin-1 text almost never is). Older ones wrote their
    system's code page: with `codepage` given (cp1251: "Ïåñíÿ" -> "Песня"), the rest is read
    in it."""
    if text.isascii():
        return text
    raw = text.encode("latin-1", errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode(codepage, errors="replace") if codepage else text


def _read_riff(path: Path, codepage: str | None = None) -> TagSet:
    """The tags of an MP3 in a WAV (RIFF) container: its `id3 ` chunk, then what its LIST
    INFO chunk adds (a field the ID3 chunk has is not taken twice). Any other file: none."""
    tags = TagSet()
    try:
        with open(path, "rb") as fh:
            b = FileWindow(fh, path.stat().st_size)
            chunks = riff_chunks(b)
            info = [bytes(b[body:body + length]) for chunk, body, length in chunks
                    if chunk == b"LIST" and length >= 4 and bytes(b[body:body + 4]) == b"INFO"]
        if not chunks:
            return tags
        id3 = WAVE(str(path)).tags
    except OSError:  # unreadable: the decode names the input's error
        return tags
    except (MutagenError, ValueError) as exc:
        tags.warning = f"the WAV container's tags are damaged and were not copied ({exc})"
        return tags
    if id3 is not None:
        _add_id3(tags, id3, codepage)
    listed = TagSet()
    for name, value in (kv for data in info for kv in _info_fields(data, codepage)):
        listed.add(name, value)
    tags.fill_from(listed)
    return tags


def _info_fields(data: bytes, codepage: str | None = None) -> list[tuple[str, str]]:
    """(Vorbis name, text) of a LIST INFO chunk's body ("INFO" then sub-chunks of NUL-ended
    text: UTF-8 from ffmpeg, the Windows code page from older writers: `codepage`, else
    cp1252)."""
    out = []
    for key, body, length in chunks_in(data, 4, len(data)):
        raw = data[body:body + length].split(b"\0", 1)[0]
        if key in _INFO_FIELDS and raw:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode(codepage or "cp1252", "replace")
            out.append((_INFO_FIELDS[key], text))
    return out
