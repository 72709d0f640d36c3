"""Measuring a song's variants for the report, with a cache: metrics against the baseline
(and a lossless reference, when given) and spectrogram pictures on one scale. A song is
measured again only when one of its files, its baseline or its reference changed (size and
mtime), or the measuring code did (`code_fingerprint`).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from restore.analysis import blocks, compare, levels, loudness, spectrum
from restore.errors import RestoreError, describe_failure, printable
from restore.io.read import read_audio, read_resampled
from restore.io.writers import write_bytes_atomic
from restore.report import plots
from restore.report.discover import Song
from restore.report.html import REPORT_DIR, song_file
from restore.report.plots import SpectrogramScale, spectrogram_png

BASELINE = "01_baseline"
CACHE_VERSION = 1  # bump when what the cache holds changes meaning
# The code whose output the cache holds: a change to any of these makes old entries stale;
# a change elsewhere (the report's pages, the engine) does not.
MEASURING_CODE = (blocks, compare, levels, loudness, spectrum, plots)

Log = Callable[[str], object]


def code_fingerprint() -> str:
    """Changes when the measuring or drawing code changes, so a cache never outlives it."""
    h = hashlib.blake2b(str(CACHE_VERSION).encode(), digest_size=8)
    for module in MEASURING_CODE:
        try:
            h.update(Path(module.__file__).read_bytes())
        except (OSError, TypeError):
            h.update(module.__name__.encode())
    return h.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


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


def write_json(path: Path, data, doing: str) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1, allow_nan=False).encode("utf-8"), doing)


def measured_song(song: Song, out_dir: Path, reference: Path | None, fingerprint: str) -> tuple[dict, list[str]]:
    """measure_song, with what it said as lines beside the record (for another process)."""
    said: list[str] = []
    return measure_song(song, out_dir, reference, fingerprint, said.append), said


def measure_song(song: Song, out_dir: Path, reference: Path | None, fingerprint: str, log: Log) -> dict:
    """Metrics and pictures of every variant of one song, reusing the cache where a file,
    the baseline and the reference are unchanged (size and mtime). Returns the song's record
    (also what the cache holds). Nothing here raises for a bad FLAC: it becomes a problem line."""
    report_dir = out_dir / REPORT_DIR
    cache_path = report_dir / "cache" / song_file(song.key, ".json")
    old = _load_json(cache_path)
    old_variants = old.get("variants", {}) if old.get("fingerprint") == fingerprint else {}
    files_dir = report_dir / "songs" / song_file(song.key, ".files")
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

    # Then read and measure only what changed, one song's file in memory at a time (an
    # hour of stereo 44.1 kHz is 1.2 GiB; two at once, plus a resampled copy, was 5 GiB):
    # the baseline first, kept only as its metrics (the others' deltas) and its spectrogram
    # (their difference pictures); each other variant is read, measured, drawn and dropped,
    # and read again resampled, block by block, for its difference picture. A reference
    # stays in memory for the song (reference_metrics aligns against the whole of it).
    todo = [v for v, e in entries.items() if not e["error"] and (e["metrics"] is None or e["pictures"] is None)]
    ref_audio = None
    base_spectrogram = None
    base_rate = entries[base].get("rate") if base else None
    wants_diff = any(v != base and entries[v].get("want_pictures", {}).get("difference") for v in todo)
    if base and wants_diff and base not in todo and not entries[base]["error"]:
        todo.append(base)   # its pictures are there, but the others' differences need its spectrogram
        entries[base]["keep_pictures"] = True
    if reference is not None and any(entries[v]["metrics"] is None for v in todo):
        try:
            ref_audio = read_audio(reference)
        except Exception as exc:
            problem(None, f"cannot read the reference {printable(reference.name)}: {describe_failure(exc)}")
    todo.sort(key=lambda v: v != base)  # the baseline first: its metrics feed the others' deltas
    for v in todo:
        e = entries[v]
        keep_pictures = e.pop("keep_pictures", False)
        e.setdefault("problems", [])
        if not keep_pictures:
            e["problems"] = []
        try:
            audio = read_audio(song.files[v])
        except Exception as exc:
            e["error"] = f"cannot read {printable(song.files[v].name)}: {describe_failure(exc)}"
            continue
        if v == base:
            base_rate = audio.rate
            if wants_diff:
                base_spectrogram = plots.spectrogram_db(audio)
        if e["metrics"] is None:
            record["measured"].append(v)
            e.update(rate=audio.rate, channels=audio.channels, frames=audio.frames)
            base_metrics = entries[base]["metrics"] if base and v != base else None
            try:
                if base_metrics is not None:  # measured once, not again for every variant
                    e["metrics"] = _flat(compare.song_metrics(audio, baseline_metrics=base_metrics))
                else:
                    e["metrics"] = _flat(compare.song_metrics(audio))
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
                if name is None or (kind == "difference" and base_spectrogram is None):
                    continue
                title = f"{v} minus {base}" if kind == "difference" else v
                try:
                    if kind == "difference":
                        # plots pairs the two spectrograms column by column: both must be at
                        # one rate for a column to mean the same moment (the diff shows only
                        # up to the lower Nyquist anyway)
                        if audio.rate != base_rate:
                            audio = None   # the resampled copy is read from the file, not made from this
                            audio = read_resampled(song.files[v], base_rate)
                        spectrogram_png(audio, files_dir / name, _mathtext_safe(title), scale,
                                        diff_against=base_spectrogram)
                    else:
                        spectrogram_png(audio, files_dir / name, _mathtext_safe(title), scale)
                    e["pictures"][kind] = name
                except RestoreError:
                    raise  # cannot write the report at all (disk full): not one song's problem
                except Exception as exc:
                    e["problems"].append(f"drawing the {kind} failed: {describe_failure(exc)}")
        audio = None
    for v, e in entries.items():
        e.pop("want_pictures", None)
        if e["error"]:
            problem(v, e["error"])
        for line in e.get("problems") or ():
            problem(v, line)
    record["made"] = {v: how_made(song.markers.get(v)) for v in [*entries, *song.stems]}
    write_json(cache_path, record, "writing the report cache")
    return record


def how_made(marker: dict | None) -> dict | None:
    """What a variant's marker says made it: its steps after the decode, with their options,
    and what those steps measured or chose (`stage_facts`). None without a marker (a file
    put there by hand, or a run from an older version); markers come checked by
    report/discover.py."""
    if marker is None:
        return None
    steps = [s for s in marker["config"].get("steps", []) if isinstance(s, dict) and s.get("stage") != "decode"]
    facts = marker.get("stage_facts")
    return {"steps": steps, "facts": facts if isinstance(facts, dict) else {}}


def _mathtext_safe(text: str) -> str:
    # matplotlib reads $...$ in a title as maths; a "$" in a variant name must stay a dollar
    return printable(text).replace("$", r"\$")
