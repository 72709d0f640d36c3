"""The compare report: what a person reads to choose between the variants of each song.

`build_report(out_dir)` reads the variant folders that exist (`NN_name/<song>.flac`) and
writes `out_dir/_report/`:

    index.html                      every song, a few key numbers per variant
    songs/<song>.html               players (loudness-matched), a blind ABX test,
    songs/<song>.files/*.png        spectrograms on one scale, differences from the baseline,
                                    every metric per variant
    metrics.csv, metrics.json       every metric, song by song, variant by variant
    cache/<song>.json               what was measured, keyed by each FLAC's size and mtime
    assets/report.css, report.js    the pages' style and behaviour

Pages work from the file system (file://): every link is relative and nothing is fetched
from the network. Names are shown through `printable` and `html.escape`, URLs are
percent-encoded. A FLAC that cannot be read is one line on its page and in the log; the
report goes on. Every file is written atomically.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from restore.analysis import blocks, compare, levels, loudness, spectrum
from restore.report import plots
from restore.audio import Audio
from restore.engine.markers import read_marker
from restore.errors import RestoreError, UsageError, describe_failure, printable
from restore.report.plots import SpectrogramScale, spectrogram_png
from restore.report.html import REPORT_DIR, index_page, song_page
from restore.io.writers import TMP_MARK, remove_temps_in, write_bytes_atomic

BASELINE = "01_baseline"
CACHE_VERSION = 1  # bump when what the cache holds changes meaning
REFERENCE_SUFFIXES = (".wav", ".flac", ".aiff", ".aif")
ASSETS = ("report.css", "report.js")
_VARIANT_DIR = re.compile(r"^\d{2}_\S")

Log = Callable[[str], object]


# ---- what is there ---------------------------------------------------------------------

@dataclass
class Song:
    key: str                                                    # relative path without suffix, "/"-separated
    files: dict[str, Path] = field(default_factory=dict)        # variant -> FLAC
    stems: dict[str, list[Path]] = field(default_factory=dict)  # variant -> stem FLACs (listed, not measured)


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


def find_songs(out_dir: Path) -> list[Song]:
    """Every song that has a FLAC in some variant folder, sorted by its path. A folder of
    FLACs is a song's stems when its variant is a stems one (its name says "stems"), or when
    another variant has a song of the folder's path and this variant does not."""
    seen = []  # (variant, song key, parent key, path)
    for v in variant_folders(out_dir):
        for f in _flacs(out_dir / v):
            rel = f.relative_to(out_dir / v)
            seen.append((v, rel.with_suffix("").as_posix(), rel.parent.as_posix(), f))
    songs_of: dict[str, set[str]] = {}
    for v, key, _, _ in seen:
        if "stems" not in v:
            songs_of.setdefault(v, set()).add(key)
    every_song = set().union(*songs_of.values()) if songs_of else set()
    songs: dict[str, Song] = {}
    for v, key, parent, f in seen:
        stem = parent != "." and ("stems" in v or (parent in every_song and parent not in songs_of.get(v, ())))
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


# ---- measuring, with a cache --------------------------------------------------------------

def _code_fingerprint() -> str:
    """Changes when the measuring or drawing code changes, so a cache never outlives it."""
    h = hashlib.blake2b(str(CACHE_VERSION).encode(), digest_size=8)
    for module in (blocks, compare, levels, loudness, spectrum, plots):
        try:
            h.update(Path(module.__file__).read_bytes())
        except (OSError, TypeError):
            h.update(module.__name__.encode())
    return h.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read(path: Path) -> Audio:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Audio.from_frames_major(data, rate)


def _plain(value):
    """Metric values as JSON can hold them: numpy scalars to Python, inf and NaN to None,
    nested dicts flattened by the caller."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, str) else printable(value)


def _flat(d: dict | None, prefix: str = "") -> dict | None:
    """{"bands": {"low": 1}} -> {"bands.low": 1}, values made plain."""
    if d is None:
        return None
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = _plain(v)
    return out


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data, doing: str) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1, allow_nan=False).encode("utf-8"), doing)


def measure_song(song: Song, out_dir: Path, reference: Path | None, fingerprint: str, log: Log) -> dict:
    """Metrics and pictures of every variant of one song, reusing the cache where a file,
    the baseline and the reference are unchanged (size and mtime). Returns the song's record
    (also what the cache holds). Nothing here raises for a bad FLAC: it becomes a problem line."""
    report_dir = out_dir / REPORT_DIR
    cache_path = report_dir / "cache" / f"{song.key}.json"
    old = _load_json(cache_path)
    old_variants = old.get("variants", {}) if old.get("fingerprint") == fingerprint else {}
    files_dir = report_dir / "songs" / f"{song.key}.files"
    base = BASELINE if BASELINE in song.files else None
    problems: list[str] = []
    record = {"song": song.key, "fingerprint": fingerprint, "baseline": base, "reference": None,
              "variants": {}, "stems": {v: [f.relative_to(out_dir).as_posix() for f in fs] for v, fs in song.stems.items()},
              "problems": problems, "measured": []}

    def problem(variant: str | None, text: str) -> None:
        line = f"{variant}: {text}" if variant else text
        problems.append(line)
        log(f"report: {printable(song.key)}: {line}")

    ref_key = None
    if reference is not None:
        try:
            ref_key = [str(reference), *_stat_key(reference)]
            record["reference"] = str(reference)
        except OSError as exc:
            problem(None, f"cannot read the reference {printable(reference.name)}: {describe_failure(exc)}")
            reference = None

    # First what each file is and what the cache still holds for it, so that the picture
    # scale (the highest Nyquist among the variants) is known before anything is drawn.
    entries: dict[str, dict] = record["variants"]
    for v in sorted(song.files):
        e = entries[v] = {"file": song.files[v].relative_to(out_dir).as_posix(), "error": None,
                          "metrics": None, "reference_metrics": None, "pictures": {}}
        try:
            e["stat"] = _stat_key(song.files[v])
        except OSError as exc:
            e["error"] = f"cannot read {printable(song.files[v].name)}: {describe_failure(exc)}"
    base_stat = entries[base].get("stat") if base else None
    for v, e in entries.items():
        if e["error"]:
            continue
        prev = old_variants.get(v, {})
        e["metrics_key"] = [e["stat"], base_stat if v != base else None, ref_key]
        if (prev.get("metrics_key") == e["metrics_key"] and not prev.get("problems") and prev.get("metrics") is not None
                and (reference is None or prev.get("reference_metrics") is not None)):
            for k in ("rate", "channels", "frames", "metrics", "reference_metrics"):
                e[k] = prev.get(k)
            continue
        try:
            info = sf.info(str(song.files[v]))
            e.update(rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames))
        except Exception as exc:  # any unreadable file is one line, whatever the library raises
            e["error"] = f"cannot read {printable(song.files[v].name)}: {describe_failure(exc)}"
    scale = SpectrogramScale(max_hz=max((e["rate"] / 2 for e in entries.values() if not e["error"]), default=24000.0))
    for v, e in entries.items():
        if e["error"]:
            continue
        prev = old_variants.get(v, {})
        e["pictures_key"] = [e["stat"], base_stat if v != base else None, scale.max_hz]
        names = {"spectrogram": f"{v}.png", "difference": f"{v}.diff.png" if base and v != base else None}
        if (prev.get("pictures_key") == e["pictures_key"] and not prev.get("problems")
                and all((files_dir / n).is_file() for n in prev.get("pictures", {}).values() if n)):
            e["pictures"] = prev["pictures"]
        else:
            e["pictures"] = None
            e["want_pictures"] = names

    # Then read and measure only what changed. The baseline (and reference) stay in memory
    # for the song; each other variant is read, measured, drawn and dropped.
    todo = [v for v, e in entries.items() if not e["error"] and (e["metrics"] is None or e["pictures"] is None)]
    base_audio = ref_audio = None
    if base and todo and not entries[base]["error"]:
        try:
            base_audio = _read(song.files[base])
        except Exception as exc:
            entries[base]["error"] = f"cannot read {printable(song.files[base].name)}: {describe_failure(exc)}"
            todo = [v for v in todo if v != base]
    if reference is not None and any(entries[v]["metrics"] is None for v in todo):
        try:
            ref_audio = _read(reference)
        except Exception as exc:
            problem(None, f"cannot read the reference {printable(reference.name)}: {describe_failure(exc)}")
    todo.sort(key=lambda v: v != base)  # the baseline first: its metrics feed the others' deltas
    for v in todo:
        e = entries[v]
        e["problems"] = []
        try:
            audio = base_audio if v == base else _read(song.files[v])
        except Exception as exc:
            e["error"] = f"cannot read {printable(song.files[v].name)}: {describe_failure(exc)}"
            continue
        against = base_audio if v != base else None
        if e["metrics"] is None:
            record["measured"].append(v)
            e.update(rate=audio.rate, channels=audio.channels, frames=audio.frames)
            base_metrics = entries[base]["metrics"] if base and v != base else None
            try:
                if base_metrics is not None:  # measured once, not again for every variant
                    e["metrics"] = _flat(compare.song_metrics(audio, against, baseline_metrics=base_metrics))
                else:
                    e["metrics"] = _flat(compare.song_metrics(audio, against))
            except Exception as exc:  # the report goes on; the line says what failed
                e["problems"].append(f"measuring failed: {describe_failure(exc)}")
            if ref_audio is not None:
                try:
                    e["reference_metrics"] = _flat(compare.reference_metrics(audio, ref_audio))
                except Exception as exc:
                    e["problems"].append(f"comparing with the reference failed: {describe_failure(exc)}")
        if e["pictures"] is None:
            e["pictures"] = {}
            for kind, name in e.pop("want_pictures").items():
                if name is None or (kind == "difference" and against is None):
                    continue
                title = f"{v} minus {base}" if kind == "difference" else v
                try:
                    if kind == "difference":
                        # plots pairs the two spectrograms column by column: both must be at
                        # one rate for a column to mean the same moment (the diff shows only
                        # up to the lower Nyquist anyway)
                        spectrogram_png(blocks.resample(audio, against.rate), files_dir / name,
                                        _mathtext_safe(title), scale, diff_against=against)
                    else:
                        spectrogram_png(audio, files_dir / name, _mathtext_safe(title), scale)
                    e["pictures"][kind] = name
                except RestoreError:
                    raise  # cannot write the report at all (disk full): not one song's problem
                except Exception as exc:
                    e["problems"].append(f"drawing the {kind} failed: {describe_failure(exc)}")
        del audio
    for v, e in entries.items():
        e.pop("want_pictures", None)
        if e["error"]:
            problem(v, e["error"])
        for line in e.get("problems") or ():
            problem(v, line)
    record["made"] = {v: how_made(out_dir, v, song.key) for v in [*entries, *song.stems]}
    _write_json(cache_path, record, "writing the report cache")
    return record


def how_made(out_dir: Path, variant: str, key: str) -> dict | None:
    """What the variant's marker says made it: its steps after the decode, with their
    options, and what those steps measured or chose (`stage_facts`). None without a
    readable marker (a file put there by hand, or a run from an older version)."""
    folder = out_dir / "_done" / variant / Path(*key.split("/")).parent
    name = key.rsplit("/", 1)[-1]
    try:  # the marker is <song file name>.json, and the song's suffix may be .mp3 or .MP3
        candidates = sorted(f for f in os.listdir(folder)
                            if f.endswith(".json") and f[:-5].rsplit(".", 1)[0] == name and TMP_MARK not in f)
    except OSError:
        return None
    marker = read_marker(folder / candidates[0])[0] if candidates else None  # None unless its shape is right
    if marker is None:
        return None
    steps = [s for s in marker.get("config", {}).get("steps", []) if s.get("stage") != "decode"]
    return {"steps": steps, "facts": marker.get("stage_facts", {})}


def _mathtext_safe(text: str) -> str:
    # matplotlib reads $...$ in a title as maths; a "$" in a variant name must stay a dollar
    return printable(text).replace("$", r"\$")


# ---- CSV and JSON ------------------------------------------------------------------------

def table_rows(records: list[dict]) -> list[dict]:
    """One row per song and variant: song, variant, file, rate, channels, frames, error,
    problems, metrics, reference_metrics."""
    rows = []
    for r in records:
        for v, e in r["variants"].items():
            rows.append({"song": r["song"], "variant": v, "file": e["file"], "rate": e.get("rate"),
                         "channels": e.get("channels"), "frames": e.get("frames"), "error": e["error"],
                         "problems": list(e.get("problems") or []), "reference": r.get("reference"),
                         "metrics": e.get("metrics"), "reference_metrics": e.get("reference_metrics")})
    return rows


def csv_text(rows: list[dict]) -> str:
    """The rows flat: metrics as their own columns, reference metrics prefixed `ref_`."""
    keys, ref_keys = [], []
    for row in rows:
        keys += [k for k in (row["metrics"] or {}) if k not in keys]
        ref_keys += [k for k in (row["reference_metrics"] or {}) if k not in ref_keys]
    fixed = ["song", "variant", "file", "rate", "channels", "frames", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fixed + keys + [f"ref_{k}" for k in ref_keys])

    def cell(x) -> str:
        if x is None:
            return ""
        if isinstance(x, bool):
            return "true" if x else "false"
        return printable(json.dumps(x) if isinstance(x, list) else x)
    for row in rows:
        m, rm = row["metrics"] or {}, row["reference_metrics"] or {}
        w.writerow([cell(row[k]) for k in fixed] + [cell(m.get(k)) for k in keys] + [cell(rm.get(k)) for k in ref_keys])
    return buf.getvalue()


# ---- the whole report -----------------------------------------------------------------------

def _install_assets(report_dir: Path) -> None:
    """Copy the pages' CSS and JS beside them (rewritten only when they changed)."""
    for name in ASSETS:
        data = (resources.files("restore.report") / "assets" / name).read_bytes()
        target = report_dir / "assets" / name
        try:
            same = target.read_bytes() == data
        except OSError:
            same = False
        if not same:
            write_bytes_atomic(target, data, "writing the report")


def build_report(out_dir: Path, reference: Path | None = None, log: Log = lambda line: None) -> Path:
    """Write out_dir/_report/ (see the module docstring) for every variant folder in out_dir;
    returns the index page's path. Songs whose FLACs (and reference) are unchanged since the
    last report are not measured or drawn again. Raises UsageError when out_dir is not a
    folder or `reference` does not exist, OutputError when the report cannot be written;
    a bad FLAC is never an exception, only a line on its page and in `log`."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError("no such output folder", out_dir, "give the folder a run wrote its variants to")
    report_dir = out_dir / REPORT_DIR
    removed = remove_temps_in(report_dir)  # left by a run killed while writing the report
    if removed:
        log(f"report: removed {removed} temporary file(s) left by an interrupted run")
    songs = find_songs(out_dir)
    refs = ReferenceIndex(Path(reference) if reference is not None else None, len(songs))
    fingerprint = _code_fingerprint()
    records, problems, measured = [], [], 0
    if not songs:
        problems.append("no variant folders with FLACs found (folders named like 01_baseline)")
        log(f"report: {problems[-1]} in {printable(out_dir)}")
    for song in songs:
        ref, why = refs.find(song.key)
        record = measure_song(song, out_dir, ref, fingerprint, log)
        if why:
            record["problems"].append(why)
            log(f"report: {printable(song.key)}: {why}")
        if record["measured"]:
            measured += 1
            log(f"report: {printable(song.key)}: measured {', '.join(record['measured'])}")
        problems += [f"{printable(song.key)}: {p}" for p in record["problems"]]
        write_bytes_atomic(report_dir / "songs" / f"{song.key}.html", song_page(record, out_dir).encode("utf-8"),
                           "writing the report")
        records.append(record)
    _install_assets(report_dir)
    rows = table_rows(records)
    write_bytes_atomic(report_dir / "metrics.csv", csv_text(rows).encode("utf-8-sig"), "writing the report")
    _write_json(report_dir / "metrics.json", {"out_dir": str(out_dir), "reference": str(reference) if reference else None,
                                              "variants": variant_folders(out_dir), "rows": rows, "problems": problems},
                "writing the report")
    index = report_dir / "index.html"
    write_bytes_atomic(index, index_page(records, out_dir, problems).encode("utf-8"), "writing the report")
    log(f"report: {len(records)} song(s), {measured} measured, {len(records) - measured} unchanged: {printable(index)}")
    return index
