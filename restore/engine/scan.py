"""Scan: clean the paths a person typed, find the MP3s under them. Read-only.

Each Track knows its absolute path, its path relative to the input it was found under
(mirrored under every variant folder) and its size and mtime. The MP3's facts are read
by the decode stage (`restore.mp3info`), so that checking an already finished batch
touches nothing but the file system's metadata.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from restore.errors import UsageError, printable

# CSI sequences (colours: ESC [ 90 m), OSC sequences (titles, links), lone ESC pairs,
# and the same with their ESC lost (the seed's batch file passed "[90m" through).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
_BARE_SGR = re.compile(r"^(?:\[[0-9;]*m)+|(?:\[[0-9;]*m)+$")
_QUOTES = ("\"", "'", "\u201c", "\u201d", "\u2018", "\u2019")


def clean_user_path(raw: str) -> Path:
    """The path a person meant: terminal escape codes, surrounding quotes (also curly ones
    and PowerShell's `& '...'` from drag and drop) and surrounding spaces removed, `~`
    expanded. Escape codes that lost their ESC ("[90m") are removed only when the path
    with them does not exist. Raises UsageError if nothing is left."""
    text = _ANSI.sub("", raw)
    text = "".join(ch for ch in text if ch >= " " and ch not in "\x7f\x9b")  # other control characters
    text = _unquote(text)
    if not text:
        raise UsageError("empty path", printable(raw))
    path = Path(os.path.expanduser(text))
    if not path.exists():
        bare = _unquote(_BARE_SGR.sub("", text))
        if bare and bare != text:
            return Path(os.path.expanduser(bare))
    return path


def _unquote(text: str) -> str:
    text = text.strip()
    if text.startswith("& ") and text[2:3] in _QUOTES:
        text = text[2:].strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


@dataclass(frozen=True)
class Track:
    path: Path                 # absolute
    rel: PurePosixPath         # relative to its input root, e.g. Artist/Album/Song.mp3
    size: int
    mtime_ns: int

    def output_rel(self, suffix: str) -> PurePosixPath:
        """The song's path for an output: Artist/Album/Song.flac."""
        return self.rel.with_suffix(suffix)


@dataclass
class ScanResult:
    tracks: list[Track]
    problems: list[tuple[Path, str]]  # (path, one-line reason) for what could not be used
    warnings: list[tuple[Path, str]] = field(default_factory=list)  # what was skipped, not failed: a folder
                                      # without MP3s, a link to a folder already scanned


def _natural_key(rel: PurePosixPath) -> list:
    return [int(t) if t.isdigit() else t.casefold() for t in re.split(r"(\d+)", rel.as_posix())]


# Other audio an archive holds beside its MP3s: not restored, but said once per input folder,
# so that a mixed library's M4As are not left behind without a word.
OTHER_AUDIO = (".m4a", ".aac", ".mp4", ".wma", ".ogg", ".oga", ".opus", ".mp2", ".mpc", ".ape", ".wv",
               ".flac", ".wav", ".aif", ".aiff", ".alac")


def _is_mp3_name(name: str) -> bool:
    # macOS leaves "._Song.mp3" resource forks on shared drives: not audio.
    return name.lower().endswith(".mp3") and not name.startswith("._")


def _folder_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)  # follows a link: the folder it leads to
    return st.st_dev, st.st_ino


def _walk(root: Path, skip: set[Path], problems: list, warnings: list) -> list[tuple[Path, PurePosixPath]]:
    """The MP3s under the folder `root` with their paths relative to it. Linked folders are
    followed (the relative path is the link's); a link to a folder already scanned (a loop
    back up, or a second way to one folder) is skipped with a warning."""
    candidates = []
    others: Counter[str] = Counter()  # other audio files by suffix
    scanned = {_folder_id(root)}
    for folder, dirs, files in os.walk(root, followlinks=True,
                                       onerror=lambda e: problems.append((Path(e.filename), f"cannot read folder: {e.strerror}"))):
        keep = []
        for name in sorted(dirs):
            path = Path(folder) / name
            if path.resolve() in skip:
                continue
            try:
                ident = _folder_id(path)
            except OSError as exc:
                problems.append((path, f"cannot read folder: {exc.strerror}"))
                continue
            if ident in scanned:
                warnings.append((path, f"skipped: it leads to {printable(path.resolve())}, a folder already scanned"))
                continue
            scanned.add(ident)
            keep.append(name)
        dirs[:] = keep
        for name in files:
            if _is_mp3_name(name):
                p = Path(folder) / name
                candidates.append((p, PurePosixPath(p.relative_to(root).as_posix())))
            elif name.lower().endswith(OTHER_AUDIO) and not name.startswith("._"):
                others[Path(name).suffix.lower()] += 1
    if others:
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in sorted(others.items(), key=lambda kv: (-kv[1], kv[0])))
        warnings.append((root, f"also holds {sum(others.values())} audio file(s) that are not MP3 ({kinds}): "
                               "not restored (mp3restore restores MP3s)"))
    return candidates


def scan(raw_inputs: list[str], skip_dirs: list[Path] = ()) -> ScanResult:
    """Find MP3s (any case of .mp3) in the given files and folders, recursively, following
    linked folders (each folder once).

    Raises UsageError for an input that does not exist after cleaning. Songs whose
    relative paths collide (two inputs both holding Song.mp3) keep the first; the
    others are reported as problems. A folder without MP3s is a warning.
    """
    roots = [clean_user_path(r) for r in raw_inputs]
    for root in roots:
        if not root.exists():
            raise UsageError("no such file or folder", root, "check the spelling, or put the path in quotes")
    skip = {p.resolve() for p in skip_dirs}
    tracks: dict[str, Track] = {}  # keyed by output name, case-folded (Windows ignores case)
    seen: set[Path] = set()
    problems: list[tuple[Path, str]] = []
    warnings: list[tuple[Path, str]] = []
    for root in roots:
        root = root.resolve()
        if root.is_file():
            candidates = [(root, PurePosixPath(root.name))]
        else:
            candidates = _walk(root, skip, problems, warnings)
            if not candidates:
                warnings.append((root, "no MP3 files in this folder"))
        for path, rel in candidates:
            if path in seen:
                continue
            seen.add(path)
            try:
                st = path.stat()
            except OSError as exc:
                problems.append((path, f"cannot read: {exc.strerror}"))
                continue
            key = rel.with_suffix("").as_posix().casefold()
            if key in tracks:
                problems.append((path, f"its output would overwrite that of {tracks[key].path}; run it separately"))
                continue
            tracks[key] = Track(path, rel, st.st_size, st.st_mtime_ns)
    ordered = sorted(tracks.values(), key=lambda t: _natural_key(t.rel))
    return ScanResult(ordered, problems, warnings)
