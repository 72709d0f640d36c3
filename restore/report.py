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
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import numpy as np
import soundfile as sf

from . import metrics, plots
from .audio import Audio
from .errors import RestoreError, UsageError, describe_os_error, printable
from .plots import SpectrogramScale, spectrogram_png
from .variants import VARIANTS
from .writers import TMP_MARK, write_bytes_atomic

REPORT_DIR = "_report"
BASELINE = "01_baseline"
CACHE_VERSION = 1  # bump when what the cache holds changes meaning
REFERENCE_SUFFIXES = (".wav", ".flac", ".aiff", ".aif")
ASSETS = ("report.css", "report.js")
_VARIANT_DIR = re.compile(r"^\d{2}_\S")
HONEST = ("Every variant is a hypothesis; the baseline is the MP3 as decoded. Nothing here recovers what "
          "the encoder threw away: the numbers and pictures show what each variant changed, your ears decide.")

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
    for module in (metrics, plots):
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


def _reason(exc: BaseException) -> str:
    """One printable line for why reading or measuring failed."""
    if isinstance(exc, RestoreError):
        return exc.reason()
    if isinstance(exc, sf.LibsndfileError):
        return printable(exc.error_string)
    if isinstance(exc, OSError) and exc.errno is not None:
        return printable(describe_os_error(exc)[0])
    return printable(f"{type(exc).__name__}: {exc}")


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
            problem(None, f"cannot read the reference {printable(reference.name)}: {_reason(exc)}")
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
            e["error"] = f"cannot read {printable(song.files[v].name)}: {_reason(exc)}"
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
            e["error"] = f"cannot read {printable(song.files[v].name)}: {_reason(exc)}"
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
            entries[base]["error"] = f"cannot read {printable(song.files[base].name)}: {_reason(exc)}"
            todo = [v for v in todo if v != base]
    if reference is not None and any(entries[v]["metrics"] is None for v in todo):
        try:
            ref_audio = _read(reference)
        except Exception as exc:
            problem(None, f"cannot read the reference {printable(reference.name)}: {_reason(exc)}")
    todo.sort(key=lambda v: v != base)  # the baseline first: its metrics feed the others' deltas
    for v in todo:
        e = entries[v]
        e["problems"] = []
        try:
            audio = base_audio if v == base else _read(song.files[v])
        except Exception as exc:
            e["error"] = f"cannot read {printable(song.files[v].name)}: {_reason(exc)}"
            continue
        against = base_audio if v != base else None
        if e["metrics"] is None:
            record["measured"].append(v)
            e.update(rate=audio.rate, channels=audio.channels, frames=audio.frames)
            base_metrics = entries[base]["metrics"] if base and v != base else None
            try:
                if base_metrics is not None:  # measured once, not again for every variant
                    e["metrics"] = _flat(metrics.song_metrics(audio, against, baseline_metrics=base_metrics))
                else:
                    e["metrics"] = _flat(metrics.song_metrics(audio, against))
            except Exception as exc:  # the report goes on; the line says what failed
                e["problems"].append(f"measuring failed: {_reason(exc)}")
            if ref_audio is not None:
                try:
                    e["reference_metrics"] = _flat(metrics.reference_metrics(audio, ref_audio))
                except Exception as exc:
                    e["problems"].append(f"comparing with the reference failed: {_reason(exc)}")
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
                        spectrogram_png(metrics.resample(audio, against.rate), files_dir / name,
                                        _mathtext_safe(title), scale, diff_against=against)
                    else:
                        spectrogram_png(audio, files_dir / name, _mathtext_safe(title), scale)
                    e["pictures"][kind] = name
                except RestoreError:
                    raise  # cannot write the report at all (disk full): not one song's problem
                except Exception as exc:
                    e["problems"].append(f"drawing the {kind} failed: {_reason(exc)}")
        del audio
    for v, e in entries.items():
        e.pop("want_pictures", None)
        if e["error"]:
            problem(v, e["error"])
        for line in e.get("problems") or ():
            problem(v, line)
    _write_json(cache_path, record, "writing the report cache")
    return record


def _mathtext_safe(text: str) -> str:
    # matplotlib reads $...$ in a title as maths; a "$" in a variant name must stay a dollar
    return printable(text).replace("$", r"\$")


# ---- the metric table: which rows, which direction is better ------------------------------

@dataclass(frozen=True)
class Row:
    key: str
    label: str
    better: str | None = None   # "higher", "lower", "zero" (closest to 0), "baseline" (closest to the
                                # baseline's value), None: no direction is better
    fmt: str = "{:.4g}"
    note: str = ""              # says which direction is better, or why none is
    delta: bool = True          # show the difference to the baseline
    warn: Callable[[object, dict], bool] | None = None  # (value, the variant's metrics) -> flag it
    none_text: str = "\u2014"   # what None shows (cutoff: "none", the band reaches Nyquist)
    tol: float = 0.0            # values this close to the best are as good (the measure's resolution)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


SONG_ROWS = [
    Row("duration_s", "Length (s)", "baseline", "{:.3f}", "closest to the baseline is best", tol=0.001,
        warn=lambda v, m: m.get("length_matches_baseline") is False),
    Row("rate", "Sample rate (Hz)", None, "{:.0f}", "no better: a higher rate is not more music", delta=False),
    Row("channels", "Channels", None, "{:.0f}", "", delta=False),
    Row("cutoff_hz", "Cutoff (Hz)", "higher", "{:.0f}",
        "higher = wider band (a hypothesis, not a recovery); none = no cliff below Nyquist", none_text="none",
        tol=250.0),
    Row("energy_above_16k_db", "Energy above 16 kHz (dB)", None, "{:.1f}", "more = brighter, not truer"),
    Row("top_band_flatness", "Top-band flatness", None, "{:.3f}", "near 1: noise-like highs; near 0: tonal"),
    Row("integrated_lufs", "Integrated loudness (LUFS)", None, "{:.1f}", "no better: playback is matched to the quietest"),
    Row("loudness_range_lu", "Loudness range (LU)", None, "{:.1f}", "a change means the dynamics were changed"),
    Row("true_peak_dbtp", "True peak (dBTP)", None, "{:.2f}", "above 0 may distort on playback",
        warn=lambda v, m: _num(v) and v > 0),
    Row("peak_dbfs", "Sample peak (dBFS)", None, "{:.2f}", ""),
    Row("crest_factor_db", "Crest factor (dB)", "higher", "{:.1f}", "higher = more dynamic, less squashed", tol=0.5),
    Row("stereo_correlation", "Stereo correlation", None, "{:.3f}", "+1 mono, 0 wide, below 0: phase trouble",
        warn=lambda v, m: _num(v) and v < 0),
    Row("stereo_width_db", "Stereo width (dB, side over mid)", None, "{:.1f}", "a change means the image was changed"),
    Row("clipped_samples", "Clipped samples", "lower", "{:.0f}", "fewer is better",
        warn=lambda v, m: _num(v) and v > 0),
]
REFERENCE_ROWS = [
    Row("lsd_full", "Log-spectral distance, full band (dB)", "lower", "{:.2f}", "lower is closer to the original", tol=0.05),
    Row("lsd_below_16k", "Log-spectral distance below 16 kHz (dB)", "lower", "{:.2f}", "lower is closer", tol=0.05),
    Row("lsd_above_16k", "Log-spectral distance above 16 kHz (dB)", "lower", "{:.2f}", "lower is closer", tol=0.05),
    Row("si_sdr", "SI-SDR (dB)", "higher", "{:.2f}", "higher is closer to the original", tol=0.1),
    Row("visqol", "ViSQOL MOS-LQO", "higher", "{:.2f}", "higher sounds closer (1 to 5); none: visqol not installed",
        tol=0.05),
    Row("loudness_diff_lu", "Loudness vs the original (LU)", None, "{:+.1f}", "a level, not a quality: playback is matched"),
    Row("rate", "Compared at (Hz)", None, "{:.0f}", "the original's rate", delta=False),
    Row("lag_samples", "Lag (samples)", None, "{:.0f}", "removed before comparing", delta=False),
    Row("lag_ms", "Lag (ms)", None, "{:.2f}", "removed before comparing", delta=False),
    Row("gain", "Gain", None, "{:.4g}", "removed before comparing", delta=False),
    Row("gain_db", "Gain (dB)", None, "{:+.2f}", "removed before comparing", delta=False),
]
_HIDDEN = {"length_matches_baseline"}  # shown as the length row's warning


def _guess_row(key: str) -> Row:
    """A row for a metric this module does not know yet: a direction only where the name says it."""
    k = key.lower()
    if k.startswith("band_error_db."):
        band = key.split(".", 1)[1]
        return Row(key, f"Band error {band} Hz (dB)", "zero", "{:+.2f}", "closest to 0 is best: the original's level",
                   tol=0.1)
    if any(w in k for w in ("lsd", "err", "distance", "dist")):
        return Row(key, key, "lower", note="lower is closer (by its name)")
    if any(w in k for w in ("sdr", "snr", "visqol", "pesq", "mos")):
        return Row(key, key, "higher", note="higher is closer (by its name)")
    return Row(key, key)


def rows_for(known: list[Row], dicts: list[dict]) -> list[Row]:
    """The known rows that some variant has, then every other key (but deltas) as it comes."""
    present = {k for d in dicts for k in d}
    rows = [r for r in known if r.key in present]
    named = {r.key for r in rows} | _HIDDEN
    for d in dicts:
        for k in d:
            if k not in named and not k.startswith("delta_"):
                rows.append(_guess_row(k))
                named.add(k)
    return rows


def _rank_value(row: Row, value, entry: dict):
    if row.key == "cutoff_hz" and value is None and entry.get("metrics") is not None and entry.get("rate"):
        return entry["rate"] / 2  # no cliff found: the band reaches Nyquist
    return value if _num(value) else None


def best_of(row: Row, values: dict[str, object], base: str | None) -> set[str]:
    """The variants holding the row's best value; empty where "best" means nothing here."""
    if row.better == "baseline":
        target = values.get(base)
        cands = {v: -abs(x - target) for v, x in values.items() if v != base and _num(x)} if _num(target) else {}
    elif row.better in ("higher", "lower", "zero"):
        sign = {"higher": lambda x: x, "lower": lambda x: -x, "zero": lambda x: -abs(x)}[row.better]
        cands = {v: sign(x) for v, x in values.items() if _num(x)}
    else:
        return set()
    top = max(cands.values(), default=0.0)
    best = {v for v, x in cands.items() if x >= top - row.tol}
    return best if len(cands) >= 2 and len(best) < len(cands) else set()  # all as good: none is best


# ---- HTML --------------------------------------------------------------------------------

def esc(text: object) -> str:
    """A name as HTML text or attribute: control characters shown as \\xNN, then escaped."""
    return html.escape(printable(text), quote=True)


def url(rel: str) -> str:
    """A relative path as an href/src attribute value: percent-encoded (so <, &, #, ?, %,
    ":" and escape codes are data, never syntax), then HTML-escaped."""
    return html.escape(quote(rel, safe="/"), quote=True)


def _rel(target: Path, page_dir: Path) -> str:
    return os.path.relpath(target, page_dir).replace(os.sep, "/")


def _fmt(row: Row, value) -> str:
    if value is None:
        return row.none_text
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _num(value):
        return row.fmt.format(value)
    return printable(json.dumps(value) if isinstance(value, list) else value)


def _page(title: str, up: str, body: str, script: bool = False) -> str:
    js = f'\n<script src="{up}assets/report.js"></script>' if script else ""
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{esc(title)}</title>\n<link rel="icon" href="data:,">\n'
            f'<link rel="stylesheet" href="{up}assets/report.css">\n</head>\n<body>\n{body}{js}\n</body>\n</html>\n')


def _title_of(variant: str) -> str:
    v = VARIANTS.get(variant)
    return v.title if v else ""


def metric_table(rows: list[Row], record: dict, which: str, caption: str) -> str:
    """Rows = metrics, columns = variants; best per row marked, deltas to the baseline below."""
    entries = {v: e for v, e in record["variants"].items() if not e["error"]}
    base = record["baseline"] if record["baseline"] in entries else None
    dicts = {v: (e.get(which) or {}) for v, e in entries.items()}
    if not rows or not entries:
        return ""
    head = "".join(f"<th>{esc(v)}</th>" for v in entries)
    out = [f'<table class="metrics {which}">\n<caption class="note">{esc(caption)}</caption>\n<tr><th>metric</th>{head}</tr>']
    for row in rows:
        values = {v: dicts[v].get(row.key) for v in entries}
        best = best_of(row, {v: _rank_value(row, values[v], entries[v]) for v in entries}, base)
        cells = []
        for v in entries:
            x = values[v]
            cls = ["num"] + (["best"] if v in best else []) + (["warn"] if row.warn and row.warn(x, dicts[v]) else [])
            delta = ""
            if row.delta and base and v != base and _num(x) and _num(values[base]):
                signed = row.fmt.replace("{:+", "{:").replace("{:", "{:+")  # "+1.2": which way it moved
                delta = f'<span class="delta">{esc(signed.format(x - values[base]))} vs baseline</span>'
            title = ' title="best in this row"' if v in best else ""
            cells.append(f'<td class="{" ".join(cls)}"{title}><span class="v">{esc(_fmt(row, x))}</span>{delta}</td>')
        note = f"<small>{esc(row.note)}</small>" if row.note else ""
        out.append(f'<tr><th class="row">{esc(row.label)}{note}</th>{"".join(cells)}</tr>')
    return "\n".join(out) + "\n</table>\n"


def song_page(record: dict, out_dir: Path) -> str:
    """The song's page: players, ABX, spectrograms, metrics, stems, problems."""
    key = record["song"]
    page_dir = (out_dir / REPORT_DIR / "songs" / key).parent
    up = "../" * (key.count("/") + 1)
    playable = [v for v, e in record["variants"].items() if not e["error"]]
    parts = [f'<nav><a href="{up}index.html">All songs</a></nav>\n<h1>{esc(key)}</h1>\n<p class="honest">{esc(HONEST)}</p>\n']
    if record["problems"]:
        parts.append('<ul class="problems">' + "".join(f"<li>{esc(p)}</li>" for p in record["problems"]) + "</ul>\n")
    parts += [_players(record, playable, out_dir, page_dir), _abx(record, playable), _pictures(record, playable),
              _measurements(record, playable), _stems(record, out_dir, page_dir)]
    return _page(f"{key} \u00b7 mp3restore", up, "".join(parts), script=True)


def _players(record: dict, playable: list[str], out_dir: Path, page_dir: Path) -> str:
    """One <audio> per readable variant; its loudness rides along in data-lufs for report.js."""
    out = ['<h2 id="listen">Listen</h2>\n<p class="controls">'
           '<label><input type="checkbox" id="match-loudness" checked> Match loudness: every variant plays '
           'at the quietest one\'s loudness (louder always sounds better)</label>'
           '<label><input type="checkbox" id="keep-position" checked> Keep the position when switching</label></p>\n'
           '<table class="players">\n<tr><th>variant</th><th>player</th><th>loudness</th><th>playback gain</th></tr>\n']
    for v in playable:
        e = record["variants"][v]
        lufs = (e.get("metrics") or {}).get("integrated_lufs")
        lufs_attr = f' data-lufs="{lufs:.3f}"' if _num(lufs) else ""
        what = f'<br><span class="note">{esc(_title_of(v))}</span>' if _title_of(v) else ""
        out.append(f'<tr><td>{esc(v)}{what}</td><td><audio class="variant-player" controls preload="metadata" '
                   f'data-variant="{esc(v)}"{lufs_attr} src="{url(_rel(out_dir / e["file"], page_dir))}"></audio></td>'
                   f'<td class="num">{esc(f"{lufs:.1f} LUFS" if _num(lufs) else "unknown")}</td>'
                   f'<td class="num gain"></td></tr>\n')
    return "".join(out) + "</table>\n"


def _abx(record: dict, playable: list[str]) -> str:
    """The blind test's controls (report.js runs it); baseline against the first other by default."""
    if len(playable) < 2:
        return '<h2>Blind test (ABX)</h2>\n<p class="note">A blind test needs two readable variants of this song.</p>\n'
    first = record["baseline"] if record["baseline"] in playable else playable[0]
    second = next(v for v in playable if v != first)

    def options(chosen: str) -> str:
        return "".join(f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>' for v in playable)
    return (
        '<h2>Blind test (ABX)</h2>\n<div id="abx">\n<p class="note">Two variants are hidden behind A and B '
        '(shuffled); X is A or B at random in each trial. Listen as often as you like, then say which one X is. Names '
        'and score come only at the end. Guessing gets about half right; 9 of 10 or better happens by chance about once '
        'in 100 tries, so such a score means you hear a difference. Blind trials always play loudness-matched.</p>\n'
        f'<div id="abx-setup"><label>Compare <select id="abx-first">{options(first)}</select></label> '
        f'<label>with <select id="abx-second">{options(second)}</select></label> '
        '<label>trials <select id="abx-trials"><option>5</option><option selected>10</option><option>16</option>'
        '<option>20</option></select></label> <button type="button" id="abx-start">Start</button>'
        '<p id="abx-message" class="note"></p></div>\n'
        '<div id="abx-run" hidden><p id="abx-progress"></p>'
        '<button type="button" data-abx-play="A">Play A</button><button type="button" data-abx-play="B">Play B</button>'
        '<button type="button" data-abx-play="X">Play X</button><button type="button" id="abx-stop">Stop</button>'
        '<p>Which one is X?</p><button type="button" class="answer" id="abx-answer-a">X is A</button>'
        '<button type="button" class="answer" id="abx-answer-b">X is B</button></div>\n'
        '<div id="abx-result" hidden></div>\n</div>\n')


def _pictures(record: dict, playable: list[str]) -> str:
    files_rel = record["song"].rsplit("/", 1)[-1] + ".files/"

    def figures(kind: str, caption: Callable[[str], str]) -> str:
        return "".join(
            f'<figure><img src="{url(files_rel + pics[kind])}" alt="{esc(caption(v))}" loading="lazy">'
            f'<figcaption>{esc(caption(v))}</figcaption></figure>'
            for v in playable if (pics := record["variants"][v].get("pictures") or {}).get(kind))
    diffs = figures("difference", lambda v: f"{v} minus {record['baseline']} (red: louder than the baseline, blue: quieter)")
    return ('<h2>Spectrograms</h2>\n<p class="note">One scale for all: same frequency axis (up to the highest '
            'Nyquist among the variants), same colours (dBFS).</p>\n'
            f'<div class="grid">{figures("spectrogram", lambda v: v)}</div>\n'
            + (f'<h3>Difference from the baseline</h3>\n<div class="grid">{diffs}</div>\n' if diffs else ""))


def _measurements(record: dict, playable: list[str]) -> str:
    song_dicts = [record["variants"][v].get("metrics") or {} for v in playable]
    ref_dicts = [record["variants"][v].get("reference_metrics") or {} for v in playable]
    out = "<h2>Measurements</h2>\n" + metric_table(
        rows_for(SONG_ROWS, song_dicts), record, "metrics",
        "\u2605 marks the best value where one direction is better and it stands out by more than the measure's "
        "resolution; below each value, its difference to the baseline.")
    if any(ref_dicts):
        ref_name = Path(record["reference"]).name if record.get("reference") else ""
        out += f"<h3>Against the original ({esc(ref_name)})</h3>\n" + metric_table(
            rows_for(REFERENCE_ROWS, ref_dicts), record, "reference_metrics",
            "Each variant compared with the lossless original, after alignment.")
    return out


def _stems(record: dict, out_dir: Path, page_dir: Path) -> str:
    """Stems are listed with a player each, not measured."""
    if not record["stems"]:
        return ""
    out = ["<h2>Stems</h2>\n"]
    for v, files in record["stems"].items():
        items = "".join(f'<li>{esc(Path(f).stem)} <audio controls preload="none" '
                        f'src="{url(_rel(out_dir / f, page_dir))}"></audio></li>' for f in files)
        out.append(f"<h3>{esc(v)}</h3>\n<ul>{items}</ul>\n")
    return "".join(out)


INDEX_COLUMNS = [("duration_s", "length s", "{:.2f}"), ("rate", "rate Hz", "{:.0f}"), ("cutoff_hz", "cutoff Hz", "{:.0f}"),
                 ("integrated_lufs", "LUFS", "{:.1f}"), ("true_peak_dbtp", "true peak dBTP", "{:.2f}"),
                 ("clipped_samples", "clipped", "{:.0f}")]
INDEX_REF_COLUMNS = [("lsd_full", "LSD dB (lower = closer)", "{:.2f}"), ("si_sdr", "SI-SDR dB (higher = closer)", "{:.2f}")]


def index_page(records: list[dict], out_dir: Path, problems: list[str]) -> str:
    """Every song with a link to its page and a few key numbers per variant."""
    with_ref = any(e.get("reference_metrics") for r in records for e in r["variants"].values())
    cols = INDEX_COLUMNS + (INDEX_REF_COLUMNS if with_ref else [])
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in cols)
    parts = [f'<h1>mp3restore report</h1>\n<p class="honest">{esc(HONEST)}</p>\n'
             f'<p class="note">{len(records)} song(s) in {esc(out_dir)}. Open a song to listen (loudness-matched), '
             'take a blind test and see every measurement.</p>\n']
    if problems:
        parts.append('<ul class="problems">' + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul>\n")
    parts.append(f'<table class="index">\n<tr><th>song</th><th>variant</th>{head}<th>notes</th></tr>\n')
    for r in records:
        variants = list(r["variants"].items()) or [("", {"error": "stems only", "metrics": None})]
        link = f'<a href="{url("songs/" + r["song"] + ".html")}">{esc(r["song"])}</a>'
        for i, (v, e) in enumerate(variants):
            song_cell = f'<td class="song" rowspan="{len(variants)}">{link}</td>' if i == 0 else ""
            m = {**(e.get("metrics") or {}), **(e.get("reference_metrics") or {})}
            nums = "".join(f'<td class="num">{esc(_fmt(Row(k, k, fmt=f), m.get(k)) if m else "")}</td>' for k, _, f in cols)
            note = e["error"] or "; ".join(e.get("problems") or [])
            parts.append(f"<tr>{song_cell}<td>{esc(v)}</td>{nums}<td>{esc(note)}</td></tr>\n")
    parts.append("</table>\n")
    return _page("mp3restore report", "", "".join(parts))


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
        data = (resources.files("restore") / "report_assets" / name).read_bytes()
        target = report_dir / "assets" / name
        try:
            same = target.read_bytes() == data
        except OSError:
            same = False
        if not same:
            write_bytes_atomic(target, data, "writing the report")


def build_report(out_dir: Path, reference: Path | None = None, log: Log = print) -> Path:
    """Write out_dir/_report/ (see the module docstring) for every variant folder in out_dir;
    returns the index page's path. Songs whose FLACs (and reference) are unchanged since the
    last report are not measured or drawn again. Raises UsageError when out_dir is not a
    folder or `reference` does not exist, OutputError when the report cannot be written;
    a bad FLAC is never an exception, only a line on its page and in `log`."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError("no such output folder", out_dir, "give the folder a run wrote its variants to")
    report_dir = out_dir / REPORT_DIR
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
