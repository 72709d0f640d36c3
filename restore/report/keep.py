"""Building the restored library from the choices: `keep(out_dir, library)`.

For every song the report knows (report/discover.py: the `_done` markers first), the variant
chosen in the report (report/choices.py), or `default` for a song with no choice ("skip":
leave it out), is copied to `LIBRARY/<the song's path>.flac`, so the library mirrors the
input's folders. A stems variant is kept as its folder, `LIBRARY/<song>/<stem>.flac`.

What a kept file carries, besides the audio and the variant's own tags and cover art (the
run copied them from the MP3, restore/io/tags.py):
  REPLAYGAIN_TRACK_GAIN/PEAK, REPLAYGAIN_ALBUM_GAIN/PEAK   ReplayGain 2.0: -18 LUFS minus the
      BS.1770-4 integrated loudness (restore/analysis/loudness.py, checked against pyloudnorm
      in the tests), peaks as true peak (linear). An album is a folder of kept songs, measured
      as one programme (all tracks' gating blocks together). Any older ReplayGain/R128 tags go.
  MP3RESTORE_VARIANT (already there), MP3RESTORE_MADE (its steps and their options, from the
      `_done` marker), MP3RESTORE_KEPT ("chosen in the report" or "default: no choice made"),
      MP3RESTORE_ABX (the newest blind test, when one was run).
Stems get the provenance tags but no ReplayGain (a stem's loudness is not the song's).

Files are copied, never hard-linked: a kept file carries its own ReplayGain tags, and a tag
edited in the library must not change the variant's file (its marker would no longer match
and the next run would make it again).

Resumable and atomic: every file is written to a temporary name and moved into place
(restore/io/writers.py), and `LIBRARY/.mp3restore-keep/<song>.json` records what was kept
(variant, the source files' size and mtime, the tags written, the measured loudness). A
rerun writes a song again only when its choice or its source changed, or its file is gone
from the library. A changed song can move its album's gain: the album's other songs are
then retagged in place (their audio, and any tag edited in the library, stay). A file
edited in the library since (a tag, the cover) is otherwise left as it is.
"""
from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from mutagen.flac import FLAC

from restore.analysis import loudness
from restore.errors import UsageError, describe_failure, printable
from restore.io.read import read_audio
from restore.io.writers import atomic_output, remove_temps_in, write_bytes_atomic
from restore.report.choices import abx_line, load_choices
from restore.report.discover import Song, find_songs, variant_folders
from restore.report.parallel import in_processes

REFERENCE_LUFS = -18.0      # ReplayGain 2.0's reference loudness
STATE_DIR = ".mp3restore-keep"
SKIP = "skip"
STATE_VERSION = 1
Log = Callable[[str], object]


@dataclass
class Pick:
    """One song's decision: what is kept (variant None: nothing) and from which files."""
    song: Song
    variant: str | None
    how: str                                                      # "chosen", "default", "skip"
    why: str = ""                                                 # for a song kept from nothing
    files: list[tuple[Path, PurePosixPath]] = field(default_factory=list)  # (source, target below LIBRARY)
    stems: bool = False
    entry: dict | None = None                                     # its choices.json entry

    @property
    def album(self) -> str:
        return PurePosixPath(self.song.key).parent.as_posix()


@dataclass
class KeepSummary:
    written: list[str] = field(default_factory=list)     # songs written (new or changed)
    retagged: list[str] = field(default_factory=list)    # same audio, new tags (the album's gain moved)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        return (f"keep: {len(self.written)} written, {len(self.retagged)} retagged, "
                f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped, {len(self.failed)} failed")


def plan(out_dir: Path, default: str = "01_baseline") -> list[Pick]:
    """Every song's pick: its choice, else `default` (a variant name or "skip"). Raises
    UsageError for an unreadable choices.json or a default that is no variant here."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError("no such output folder", out_dir, "give the folder a run wrote its variants to")
    if default != SKIP and default not in variant_folders(out_dir):
        raise UsageError(f"--default {default!r} is no variant folder here", out_dir,
                         "variants: " + ", ".join(variant_folders(out_dir) + [SKIP]))
    choices = load_choices(out_dir, strict=True)
    picks = []
    for song in find_songs(out_dir):
        entry = choices.get(song.key)
        chosen = (entry or {}).get("keep")
        if chosen:
            variant, how = chosen, "chosen"
        elif default == SKIP:
            picks.append(Pick(song, None, SKIP, "no choice made (--default skip)", entry=entry))
            continue
        else:
            variant, how = default, "default"
        if variant in song.files:
            target = PurePosixPath(f"{song.key}.flac")
            picks.append(Pick(song, variant, how, files=[(song.files[variant], target)], entry=entry))
        elif variant in song.stems:
            files = [(f, PurePosixPath(song.key) / f.name) for f in song.stems[variant]]
            picks.append(Pick(song, variant, how, files=files, stems=True, entry=entry))
        else:
            picks.append(Pick(song, None, SKIP, f"{'the chosen' if how == 'chosen' else 'the default'} variant "
                                                f"{variant} has no file for this song", entry=entry))
    return picks


# ---- what is recorded per song ---------------------------------------------------------------

def _state_path(library: Path, key: str) -> Path:
    return library / STATE_DIR / f"{key}.json"


def _read_state(library: Path, key: str) -> dict:
    try:
        data = json.loads(_state_path(library, key).read_text("utf-8"))
        return data if isinstance(data, dict) and data.get("version") == STATE_VERSION else {}
    except (OSError, ValueError):
        return {}


def _identity(pick: Pick) -> dict:
    """What the kept audio is made from: a change here means copying again."""
    sources = []
    for src, target in pick.files:
        st = src.stat()
        sources.append([target.as_posix(), st.st_size, st.st_mtime_ns])
    return {"variant": pick.variant, "stems": pick.stems, "sources": sources}


def _targets_state(library: Path, state: dict) -> str:
    """"intact" (every file as it was written), "edited" (all there, some changed since: a
    tag edited in a player) or "missing" (some gone, or nothing recorded)."""
    targets = state.get("targets") or {}
    edited = False
    for rel, (size, mtime_ns) in targets.items():
        try:
            st = (library / rel).stat()
        except OSError:
            return "missing"
        edited |= [st.st_size, st.st_mtime_ns] != [size, mtime_ns]
    return "missing" if not targets else "edited" if edited else "intact"


def _measure(path: Path) -> dict:
    """Track loudness (LUFS), true peak (linear) and the 400 ms gating blocks (for the album)."""
    audio = read_audio(path)
    at_edges, edges = loudness.k_energy(audio)
    blocks = loudness.gating_blocks(at_edges, edges).astype(np.float64)
    tp = loudness.true_peak_dbtp(audio)
    return {"lufs": loudness.gated_loudness(blocks), "peak": 10 ** (tp / 20) if tp is not None else 0.0,
            "blocks": base64.b64encode(blocks.tobytes()).decode("ascii")}


def _measured(path: Path) -> tuple[dict | None, str | None]:
    """_measure, or why the file cannot be read (one line), for another process."""
    try:
        return _measure(path), None
    except Exception as exc:
        return None, describe_failure(exc)


def _blocks(measured: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(measured["blocks"]), dtype=np.float64)


def _made(marker: dict | None) -> str:
    """The variant's steps with their options, from its marker, in one line."""
    if not isinstance(marker, dict) or not isinstance(marker.get("config"), dict):
        return "unknown (no marker)"
    steps = []
    for s in marker["config"].get("steps", []):
        if isinstance(s, dict) and s.get("stage"):
            opts = ", ".join(f"{k}={v}" for k, v in (s.get("config") or {}).items())
            steps.append(f"{s['stage']}({opts})" if opts else str(s["stage"]))
    version = (marker.get("versions") or {}).get("mp3restore") if isinstance(marker.get("versions"), dict) else None
    return " -> ".join(steps or ["decode"]) + (f"; mp3restore {version}" if version else "")


def _gain(lufs: float | None) -> str | None:
    return None if lufs is None else f"{REFERENCE_LUFS - lufs:+.2f} dB"


def _tags(pick: Pick, measured: dict | None, album: tuple[float | None, float] | None) -> dict[str, str]:
    tags = {"MP3RESTORE_VARIANT": pick.variant, "MP3RESTORE_MADE": _made(pick.song.markers.get(pick.variant)),
            "MP3RESTORE_KEPT": "chosen in the report" if pick.how == "chosen" else "default: no choice made"}
    if abx_line(pick.entry):
        tags["MP3RESTORE_ABX"] = abx_line(pick.entry)
    if measured is not None and measured["lufs"] is not None:
        tags["REPLAYGAIN_TRACK_GAIN"] = _gain(measured["lufs"])
        tags["REPLAYGAIN_TRACK_PEAK"] = f"{measured['peak']:.6f}"
        if album is not None and album[0] is not None:
            tags["REPLAYGAIN_ALBUM_GAIN"] = _gain(album[0])
            tags["REPLAYGAIN_ALBUM_PEAK"] = f"{album[1]:.6f}"
    return tags


def _copy_tagged(src: Path, final: Path, tags: dict[str, str]) -> list[int]:
    """src's bytes with `tags` set (old ReplayGain/R128 fields dropped) at `final`, atomically."""
    with atomic_output(final, "keeping a song") as tmp:
        shutil.copyfile(src, tmp)
        flac = FLAC(str(tmp))
        for name in list(flac.keys()):
            if name.upper().startswith(("REPLAYGAIN_", "R128_")):
                del flac[name]
        for name, value in tags.items():
            flac[name] = [value]
        flac.save()
    st = final.stat()
    return [st.st_size, st.st_mtime_ns]


# ---- the whole library --------------------------------------------------------------------------

def keep(out_dir: Path, library: Path, default: str = "01_baseline", dry_run: bool = False,
         log: Log = lambda line: None, jobs: int = 1) -> KeepSummary:
    """Build or update `library` from out_dir's choices (see the module docstring), measuring
    up to `jobs` songs' loudness at once (report/parallel.py). One song that cannot be read
    is a line in `log` and in `failed`; the others go on. Raises
    UsageError (no such folder, bad default, unreadable choices.json) and OutputError (the
    library cannot be written)."""
    out_dir, library = Path(out_dir), Path(library)
    inside = [out_dir.resolve()] + [out_dir.resolve() / v for v in variant_folders(out_dir)]
    if any(library.resolve() == f or f in library.resolve().parents for f in inside[1:]) or library.resolve() == inside[0]:
        raise UsageError("the library cannot be the output folder or inside a variant folder", library,
                         "give a folder of its own, e.g. --to ~/Music/restored")
    picks = plan(out_dir, default)
    summary = KeepSummary()
    if not dry_run and library.is_dir():
        removed = remove_temps_in(library)
        if removed:
            log(f"keep: removed {removed} temporary file(s) left by an interrupted run")

    # First what changed and the loudness of every song that is kept (measured only when
    # its source changed: the state holds the rest; up to `jobs` songs at once).
    found: list[tuple[Pick, dict, dict, dict | None]] = []   # pick, old state, identity, measured
    for pick in picks:
        key = pick.song.key
        if pick.variant is None:
            summary.skipped.append(key)
            log(f"keep: {printable(key)}: skipped: {pick.why}")
            continue
        try:
            identity = _identity(pick)
        except OSError as exc:
            summary.failed.append(key)
            log(f"keep: {printable(key)}: cannot read {pick.variant}: {describe_failure(exc)}")
            continue
        state = _read_state(library, key)
        same = state.get("identity") == identity and _targets_state(library, state) != "missing"
        if dry_run:
            what = ("unchanged" if same else f"would write {pick.variant} ({pick.how})"
                    + (f", was {state['identity']['variant']}" if state.get("identity") else ""))
            (summary.unchanged if same else summary.written).append(key)
            log(f"keep: {printable(key)}: {what} -> {printable(library / pick.files[0][1])}"
                + (f" and {len(pick.files) - 1} more stem(s)" if pick.stems else ""))
            continue
        measured = state.get("measured") if state.get("identity") == identity else None  # of the source
        found.append((pick, state, identity, measured))
    if dry_run:
        return summary
    to_measure = [i for i, (pick, _, _, measured) in enumerate(found) if measured is None and not pick.stems]
    def lost(index: int, exc: BaseException) -> None:
        log(f"keep: measuring {printable(found[to_measure[index]][0].song.key)} in its own process failed "
            f"({describe_failure(exc)}); measured here instead")
    with in_processes(_measured, [(found[i][0].files[0][0],) for i in to_measure], jobs, lost) as measuring:
        fresh = dict(zip(to_measure, measuring))
    todo: list[tuple[Pick, dict, dict, dict | None]] = []
    for i, (pick, state, identity, measured) in enumerate(found):
        if i in fresh:
            measured, failure = fresh[i]
            if failure:  # an unreadable FLAC is this song's problem only
                summary.failed.append(pick.song.key)
                log(f"keep: {printable(pick.song.key)}: cannot read {pick.variant}: {failure}")
                continue
        todo.append((pick, state, identity, measured))

    albums: dict[str, list[dict]] = {}
    for pick, _, _, measured in todo:
        if measured is not None:
            albums.setdefault(pick.album, []).append(measured)
    album_values = {a: (loudness.gated_loudness(np.concatenate([_blocks(m) for m in ms])),
                        max(m["peak"] for m in ms)) for a, ms in albums.items()}

    for pick, state, identity, measured in todo:
        key = pick.song.key
        tags = _tags(pick, measured, album_values.get(pick.album) if measured is not None else None)
        there = _targets_state(library, state) if state.get("identity") == identity else "missing"
        if there != "missing" and state.get("tags") == tags:
            summary.unchanged.append(key)
            if there == "edited":
                log(f"keep: {printable(key)}: changed in the library since it was kept: left as it is")
            continue
        # Same audio, new tags (its album's gain moved): retag the library's own file, so that
        # what the person edited there (tags, cover) stays; otherwise copy from the variant.
        retag = there != "missing"
        targets = {}
        for src, rel in pick.files:
            file_tags = {**tags, "MP3RESTORE_STEM": rel.stem} if pick.stems else tags
            final = library / Path(*rel.parts)
            targets[rel.as_posix()] = _copy_tagged(final if retag else src, final, file_tags)
        for old in set(state.get("targets") or {}) - set(targets):  # a choice moved from a file to stems, or back
            try:
                (library / old).unlink()
            except OSError:
                pass
        write_bytes_atomic(_state_path(library, key), json.dumps(
            {"version": STATE_VERSION, "identity": identity, "tags": tags, "targets": targets,
             "measured": measured}, indent=1).encode("utf-8"), "recording what was kept")
        (summary.retagged if retag else summary.written).append(key)
        what = "tags updated (album gain or choice)" if retag else f"{pick.variant} ({pick.how})"
        gain = tags.get("REPLAYGAIN_TRACK_GAIN")
        log(f"keep: {printable(key)}: {what}" + (f", track gain {gain}" if gain and not retag else ""))
    return summary
