"""What a report covers: the songs and their variants in an output folder, and the lossless
references matched to them.

Songs and variants come from the `_done` markers first: a marker names its variant, its song
and every output it vouches for (a stems variant lists a folder of stem FLACs). Only FLACs
that no marker vouches for (put there by hand, or from a run of an older version) are found
by walking the variant folders; among those, a folder of FLACs is a song's stems when
another variant has a song at the folder's path and this variant does not.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from restore.engine.markers import read_marker
from restore.errors import UsageError
from restore.io.writers import TMP_MARK

REFERENCE_SUFFIXES = (".wav", ".flac", ".aiff", ".aif")
_VARIANT_DIR = re.compile(r"^\d{2}_\S")


@dataclass
class Song:
    key: str                                                    # relative path without suffix, "/"-separated
    files: dict[str, Path] = field(default_factory=dict)        # variant -> FLAC
    stems: dict[str, list[Path]] = field(default_factory=dict)  # variant -> stem FLACs (listed, not measured)
    markers: dict[str, dict] = field(default_factory=dict)      # variant -> its `_done` marker, where one vouches


def variant_folders(out_dir: Path) -> list[str]:
    """The variant folders in out_dir (NN_name), in number order."""
    try:
        return sorted(e.name for e in os.scandir(out_dir) if e.is_dir() and _VARIANT_DIR.match(e.name))
    except OSError:
        return []


def _flacs(folder: Path) -> list[Path]:
    """FLACs below `folder`; hidden files (macOS `._` forks) and writes in progress are skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files)
                  if f.lower().endswith(".flac") and not f.startswith(".") and TMP_MARK not in f]
    return found


def _marker_outputs(marker) -> tuple[str, str, bool, list[str]] | None:
    """(variant, song key, stems?, output paths relative to OUT) of a readable marker, or
    None for anything of another shape."""
    if not isinstance(marker, dict):
        return None
    variant, song, outputs = marker.get("variant"), marker.get("song"), marker.get("outputs")
    if not (isinstance(variant, str) and isinstance(song, str) and isinstance(outputs, list) and outputs):
        return None
    paths = [o.get("path") for o in outputs if isinstance(o, dict)]
    if not paths or not all(isinstance(p, str) for p in paths):
        return None
    output = (marker.get("config") or {}).get("output") if isinstance(marker.get("config"), dict) else None
    stems = bool(isinstance(output, dict) and output.get("stems"))
    return variant, song.rsplit(".", 1)[0] if "." in song.rsplit("/", 1)[-1] else song, stems, paths


def read_markers(out_dir: Path) -> list[dict]:
    """Every `_done/**/*.json` marker of the right shape (engine/markers.py's one check);
    temporary files, unreadable and damaged markers are skipped."""
    found = []
    for root, dirs, files in os.walk(out_dir / "_done"):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".json") and TMP_MARK not in name:
                marker, _ = read_marker(Path(root) / name)
                if marker is not None:
                    found.append(marker)
    return found


def find_songs(out_dir: Path) -> list[Song]:
    """Every song that has a FLAC in some variant folder, sorted by its path (see the module
    docstring: markers first, then the FLACs no marker vouches for)."""
    songs: dict[str, Song] = {}
    vouched: set[Path] = set()
    folders = set(variant_folders(out_dir))
    for marker in read_markers(out_dir):
        found = _marker_outputs(marker)
        if found is None or found[0] not in folders:
            continue
        variant, key, stems, paths = found
        files = [out_dir / Path(*p.split("/")) for p in paths]
        if not all(f.is_file() for f in files):  # an output deleted or moved since: walk for it instead
            continue
        song = songs.setdefault(key, Song(key))
        if stems:
            song.stems[variant] = sorted(files)
        else:
            song.files[variant] = files[0]
        song.markers[variant] = marker
        vouched.update(files)
    seen = []  # (variant, song key, parent key, path) of FLACs without a marker
    for v in variant_folders(out_dir):
        for f in _flacs(out_dir / v):
            if f in vouched:
                continue
            rel = f.relative_to(out_dir / v)
            seen.append((v, rel.with_suffix("").as_posix(), rel.parent.as_posix(), f))
    songs_of: dict[str, set[str]] = {}
    for song in songs.values():
        for v in song.files:
            songs_of.setdefault(v, set()).add(song.key)
    for v, key, _, _ in seen:
        songs_of.setdefault(v, set()).add(key)
    every_song = set().union(*songs_of.values()) if songs_of else set()
    for v, key, parent, f in seen:
        stem = parent != "." and parent in every_song and parent not in songs_of.get(v, ())
        if stem:
            songs.setdefault(parent, Song(parent)).stems.setdefault(v, []).append(f)
        else:
            songs.setdefault(key, Song(key)).files[v] = f
    return sorted(songs.values(), key=lambda s: (s.key.casefold(), s.key))


class ReferenceIndex:
    """Lossless originals (.wav/.flac/.aiff) matched to songs: the same relative path without
    suffix, else the same file name (stem) anywhere below, when only one file has it; case
    does not matter. A single reference file given for a batch of one song is its reference."""

    def __init__(self, reference: Path | None, song_count: int):
        self.by_rel: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        self.only: Path | None = None
        if reference is None:
            return
        if reference.is_file():
            files, root = [reference], reference.parent
            self.only = reference if song_count == 1 else None
        elif reference.is_dir():
            files, root = [f for f in _walk_files(reference) if f.suffix.lower() in REFERENCE_SUFFIXES], reference
        else:
            raise UsageError("no such reference file or folder", reference)
        for f in files:
            self.by_rel.setdefault(f.relative_to(root).with_suffix("").as_posix().casefold(), []).append(f)
            self.by_stem.setdefault(f.stem.casefold(), []).append(f)

    def find(self, key: str) -> tuple[Path | None, str | None]:
        """(reference file, None) or (None, why there is none; None when no reference was given)."""
        if self.only is not None:
            return self.only, None
        for found in (self.by_rel.get(key.casefold(), []), self.by_stem.get(key.rsplit("/", 1)[-1].casefold(), [])):
            if len(found) == 1:
                return found[0], None
            if len(found) > 1:
                return None, f"{len(found)} reference files match this song; none used"
        return (None, "no reference file matches this song") if self.by_stem else (None, None)


def _walk_files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return out
