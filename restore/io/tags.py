"""Tags and cover art: read from the MP3's ID3 (v2 or v1), written as FLAC Vorbis comments
and pictures. Mapping follows the common tagger conventions (Picard, foobar2000)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mutagen import MutagenError
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, ID3NoHeaderError

from restore import __version__

_TEXT_FRAMES = {
    "TIT2": "TITLE", "TPE1": "ARTIST", "TALB": "ALBUM", "TPE2": "ALBUMARTIST",
    "TDRC": "DATE", "TDOR": "ORIGINALDATE", "TCON": "GENRE", "TCOM": "COMPOSER",
    "TPE3": "CONDUCTOR", "TEXT": "LYRICIST", "TPE4": "REMIXER", "TBPM": "BPM", "TSRC": "ISRC",
    "TPUB": "LABEL", "TCOP": "COPYRIGHT", "TIT1": "GROUPING", "TIT3": "SUBTITLE",
    "TSOP": "ARTISTSORT", "TSOA": "ALBUMSORT", "TSOT": "TITLESORT", "TSO2": "ALBUMARTISTSORT",
    "TCMP": "COMPILATION", "TKEY": "KEY", "TLAN": "LANGUAGE", "TMED": "MEDIA", "TENC": "ENCODEDBY",
}
_NUMBER_PAIRS = {"TRCK": ("TRACKNUMBER", "TRACKTOTAL"), "TPOS": ("DISCNUMBER", "DISCTOTAL")}
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


def read_id3(path: Path) -> TagSet:
    """The MP3's tags as a TagSet; an MP3 without tags gives an empty one."""
    tags = TagSet()
    try:
        id3 = ID3(str(path))
    except ID3NoHeaderError:
        return tags
    except (MutagenError, ValueError) as exc:  # a damaged tag must not cost the song its audio
        tags.warning = f"the ID3 tag is damaged and was not copied ({exc})"
        return tags
    for frame in id3.values():
        fid = frame.FrameID
        if fid in _TEXT_FRAMES:
            for text in frame.text:
                tags.add(_TEXT_FRAMES[fid], str(text))
        elif fid in _NUMBER_PAIRS:
            number_name, total_name = _NUMBER_PAIRS[fid]
            number, _, total = str(frame.text[0]).partition("/")
            tags.add(number_name, number)
            tags.add(total_name, total)
        elif fid == "COMM" and frame.desc in ("", "Comment") and frame.lang != "iTu":
            for text in frame.text:
                tags.add("COMMENT", text)
        elif fid == "USLT":
            tags.add("LYRICS", frame.text)
        elif fid == "TXXX":
            name = _TXXX_NAMES.get(frame.desc.upper(), frame.desc.upper().replace(" ", "_"))
            if name and "=" not in name and "~" not in name:
                for text in frame.text:
                    tags.add(name, text)
        elif fid == "UFID" and frame.owner == "http://musicbrainz.org":
            tags.add("MUSICBRAINZ_TRACKID", frame.data.decode("ascii", "replace"))
        elif fid == "APIC" and frame.data:
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = int(frame.type), frame.mime or "image/jpeg", frame.desc, frame.data
            tags.pictures.append(pic)
    return tags
