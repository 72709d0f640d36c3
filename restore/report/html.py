"""The compare report's pages: which metric rows, which direction is better, and the HTML
(index and song pages) that shows them. Pure functions of the measured records: no audio,
no files read. Names pass through `printable` and `html.escape`; URLs are percent-encoded.
"""
from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from restore.errors import printable
from restore.engine.variants import VARIANTS
from restore.io.writers import fit_name

REPORT_DIR = "_report"
Log = Callable[[str], object]
HONEST = ("Every variant is a hypothesis; the baseline is the MP3 as decoded. Nothing here recovers what "
          "the encoder threw away: the numbers and pictures show what each variant changed, your ears decide.")


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
    same_loudness: bool = False # loudness moves it: starred only among variants as loud as the
                                # baseline (within LOUDNESS_MATCH_LU), see starred_values



def song_file(key: str, suffix: str) -> str:
    """A song's file under the report folder's songs/ (or cache/): its key (Artist/Album/Song)
    plus `suffix`, the last name cut with a hash where it would pass the file system's limit."""
    folder, _, name = key.rpartition("/")
    return (folder + "/" if folder else "") + fit_name(name, suffix)

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
    Row("crest_factor_db", "Crest factor (dB)", "higher", "{:.1f}",
        "higher = more dynamic, less squashed; \u2605 only among variants as loud as the baseline (a variant that "
        "removed sound reads as more dynamic)", tol=0.5, same_loudness=True),
    Row("stereo_correlation", "Stereo correlation", None, "{:.3f}", "+1 mono, 0 wide, below 0: phase trouble",
        warn=lambda v, m: _num(v) and v < 0),
    Row("stereo_width_db", "Stereo width (dB, side over mid)", None, "{:.1f}", "a change means the image was changed"),
    Row("clipped_samples", "Clipped samples", "lower", "{:.0f}",
        "fewer is better; \u2605 only among variants as loud as the baseline (quieter clips less)",
        warn=lambda v, m: _num(v) and v > 0, same_loudness=True),
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


LOUDNESS_MATCH_LU = 1.0  # "as loud as the baseline" for rows that loudness moves


def starred_values(row: Row, values: dict[str, object], lufs: dict[str, object], base: str | None) -> dict[str, object]:
    """The values a row's star may go to: all of them, or for a row that loudness moves
    (crest factor, clipping) only those of variants within LOUDNESS_MATCH_LU of the
    baseline's integrated loudness (none without a measured baseline)."""
    if not row.same_loudness:
        return values
    ref = lufs.get(base)
    if not _num(ref):
        return {}
    return {v: x for v, x in values.items() if _num(lufs.get(v)) and abs(lufs[v] - ref) <= LOUDNESS_MATCH_LU}


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
    """A page; `up` leads from it to the report folder (report.js finds choices.json by it)."""
    js = f'\n<script src="{up}assets/report.js"></script>' if script else ""
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{esc(title)}</title>\n<link rel="icon" href="data:,">\n'
            f'<link rel="stylesheet" href="{up}assets/report.css">\n</head>\n'
            f'<body data-root="{url(up or "./")}">\n{body}{js}\n</body>\n</html>\n')


def json_script(element_id: str, data) -> str:
    """Data for report.js in the page: JSON that no text inside can end the script early."""
    text = json.dumps(data, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>\n'


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
        ranked = {v: _rank_value(row, values[v], entries[v]) for v in entries}
        lufs = {v: (entries[v].get("metrics") or {}).get("integrated_lufs") for v in entries}
        best = best_of(row, starred_values(row, ranked, lufs, base), base)
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


def song_page(record: dict, out_dir: Path, choice: dict | None = None) -> str:
    """The song's page: players, the keep choice (`choice`: its choices.json entry), ABX,
    spectrograms, metrics, stems, problems."""
    key = record["song"]
    page_dir = (out_dir / REPORT_DIR / "songs" / key).parent
    up = "../" * (key.count("/") + 1)
    playable = [v for v, e in record["variants"].items() if not e["error"]]
    parts = [f'<nav><a href="{up}index.html">All songs</a></nav>\n<h1>{esc(key)}</h1>\n<p class="honest">{esc(HONEST)}</p>\n']
    if record["problems"]:
        parts.append('<ul class="problems">' + "".join(f"<li>{esc(p)}</li>" for p in record["problems"]) + "</ul>\n")
    parts += [_players(record, playable, out_dir, page_dir), _keep(record, playable, choice), _abx(record, playable),
              _pictures(record, playable),
              _measurements(record, playable), _stems(record, out_dir, page_dir), _how_made(record)]
    return _page(f"{key} \u00b7 mp3restore", up, "".join(parts), script=True)


def _players(record: dict, playable: list[str], out_dir: Path, page_dir: Path) -> str:
    """One <audio> per readable variant; its loudness rides along in data-lufs for report.js."""
    out = ['<h2 id="listen">Listen</h2>\n<p class="controls">'
           '<label><input type="checkbox" id="match-loudness" checked> Match loudness: every variant plays '
           'at the quietest one\'s loudness (louder always sounds better)</label>'
           '<label><input type="checkbox" id="keep-position" checked> Keep the position when switching</label></p>\n'
           '<p class="controls" id="loop-controls"><label><input type="checkbox" id="loop"> Loop from</label> '
           '<input type="number" id="loop-start" min="0" step="0.1" value="0"> s to '
           '<input type="number" id="loop-end" min="0" step="0.1" value="0"> s '
           '<button type="button" id="loop-set-start">start here</button>'
           '<button type="button" id="loop-set-end">end here</button></p>\n'
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


def _keep(record: dict, playable: list[str], choice: dict | None) -> str:
    """"Keep this one": a choice per variant (and stems variant) that report.js saves to
    choices.json (through `report --serve`) or in the browser; `mp3restore keep` reads it."""
    chosen = (choice or {}).get("keep")
    options = [*playable, *record["stems"]] + ([chosen] if chosen and chosen not in playable and chosen not in record["stems"] else [])
    labels = "".join(
        f'<label class="keep-option"><input type="radio" name="keep" value="{esc(v)}"{" checked" if v == chosen else ""}> '
        f'{esc(v)}{" (stems)" if v in record["stems"] else ""}</label>' for v in options)
    undecided = f'<label class="keep-option"><input type="radio" name="keep" value=""{"" if chosen else " checked"}> undecided</label>'
    return (f'<h2 id="keep">Keep</h2>\n<div id="keep-choice" data-song="{esc(record["song"])}">'
            '<p class="note">Which variant goes into your library (<code>mp3restore keep OUT --to LIBRARY</code>). '
            'Keys 1-9 switch the players at the same position.</p>\n'
            f'<p>{labels}{undecided}</p>\n<p id="keep-status" class="note"></p>'
            '<button type="button" class="download-choices" hidden>Download choices.json</button>\n</div>\n'
            + json_script("choice-data", {record["song"]: choice} if choice else {}))


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
        'and score come only at the end (keys: A, B, X play, S stops, 1 says X is A, 2 says X is B). Guessing gets about half right; 9 of 10 or better happens by chance about once '
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
    files_rel = song_file(record["song"], ".files").rsplit("/", 1)[-1] + "/"

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


def _how_made(record: dict) -> str:
    """Each variant's steps with their options, and what the steps measured or chose, from
    its marker: nothing a variant did is hidden from the person comparing them."""
    made = {v: m for v, m in (record.get("made") or {}).items() if m}
    if not made:
        return ""
    rows = []
    for v, m in made.items():
        steps = "<br>".join(
            f'{esc(s.get("stage"))}' + (f' <span class="note">{esc(", ".join(f"{k}={_plain(x)}" for k, x in (s.get("config") or {}).items()))}</span>'
                                       if s.get("config") else "")
            for s in m["steps"]) or "decode only"
        facts = "<br>".join(f"{esc(k)}: {esc(_plain(x))}" for k, x in m["facts"].items()) or ""
        rows.append(f"<tr><td>{esc(v)}</td><td>{steps}</td><td>{facts}</td></tr>")
    return ('<h2 id="how-made">How each variant was made</h2>\n<table class="made">\n'
            "<tr><th>variant</th><th>steps after the decode (options)</th><th>what the steps measured or chose</th></tr>\n"
            + "\n".join(rows) + "\n</table>\n")


def _plain(value) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"  # 16690 Hz, not 1.669e+04
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(x) for x in value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(x)}" for k, x in value.items()) + "}"
    return str(value)


INDEX_COLUMNS = [("duration_s", "length s", "{:.2f}"), ("rate", "rate Hz", "{:.0f}"), ("cutoff_hz", "cutoff Hz", "{:.0f}"),
                 ("integrated_lufs", "LUFS", "{:.1f}"), ("true_peak_dbtp", "true peak dBTP", "{:.2f}"),
                 ("clipped_samples", "clipped", "{:.0f}")]
INDEX_REF_COLUMNS = [("lsd_full", "LSD dB (lower = closer)", "{:.2f}"), ("si_sdr", "SI-SDR dB (higher = closer)", "{:.2f}")]


def artist_album(key: str) -> tuple[str, str]:
    """(artist, album) from a song's path, Artist/Album/Song as a run mirrors it; "" where
    the path is shorter."""
    parts = key.split("/")
    return (parts[-3] if len(parts) >= 3 else "", parts[-2] if len(parts) >= 2 else "")


def index_page(records: list[dict], out_dir: Path, problems: list[str], choices: dict[str, dict] | None = None) -> str:
    """Every song with a link to its page, its choice and blind test (from `choices`, kept
    up to date by report.js), a few key numbers per variant; a summary of the choices and
    filters by artist, album, status and text."""
    from restore.report.choices import abx_line
    choices = choices or {}
    with_ref = any(e.get("reference_metrics") for r in records for e in r["variants"].values())
    cols = INDEX_COLUMNS + (INDEX_REF_COLUMNS if with_ref else [])
    head = "".join(f"<th>{esc(label)}</th>" for _, label, _ in cols)
    parts = [f'<h1>mp3restore report</h1>\n<p class="honest">{esc(HONEST)}</p>\n'
             f'<p class="note">{len(records)} song(s) in {esc(out_dir)}. Open a song to listen (loudness-matched), '
             'take a blind test, see every measurement and choose the variant to keep; then '
             '<code>mp3restore keep OUT --to LIBRARY</code> builds your library from the choices.</p>\n']
    if problems:
        parts.append('<ul class="problems">' + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul>\n")
    decided = sum(1 for r in records if (choices.get(r["song"]) or {}).get("keep"))
    artists = sorted({artist_album(r["song"])[0] for r in records} - {""}, key=str.casefold)
    albums = sorted({artist_album(r["song"])[1] for r in records} - {""}, key=str.casefold)

    def select(element_id: str, label: str, values: list[str]) -> str:
        return (f'<label>{label} <select id="{element_id}"><option value="">all</option>'
                + "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values) + "</select></label> ")
    parts.append(f'<h2>Choices</h2>\n<div id="summary"><p>{decided} of {len(records)} song(s) decided.</p></div>\n'
                 '<p class="controls" id="filters"><label>Search <input type="search" id="filter-text" '
                 'placeholder="artist, album or song"></label> ' + select("filter-artist", "Artist", artists)
                 + select("filter-album", "Album", albums)
                 + '<label>Status <select id="filter-status"><option value="">all</option><option value="decided">decided'
                 '</option><option value="undecided">undecided</option></select></label> '
                 '<button type="button" class="download-choices" hidden>Download choices.json</button>'
                 '<span id="keep-status" class="note"></span></p>\n')
    parts.append(f'<table class="index">\n<tr><th>song</th><th>kept</th><th>blind test</th><th>variant</th>{head}'
                 '<th>notes</th></tr>\n')
    for r in records:
        variants = list(r["variants"].items()) or [("", {"error": "stems only", "metrics": None})]
        link = f'<a href="{url("songs/" + song_file(r["song"], ".html"))}">{esc(r["song"])}</a>'
        entry = choices.get(r["song"]) or {}
        artist, album = artist_album(r["song"])
        attrs = f' data-song="{esc(r["song"])}" data-artist="{esc(artist)}" data-album="{esc(album)}"'
        for i, (v, e) in enumerate(variants):
            song_cell = "" if i else (
                f'<td class="song" rowspan="{len(variants)}">{link}</td>'
                f'<td class="kept" rowspan="{len(variants)}">{esc(entry.get("keep") or "undecided")}</td>'
                f'<td class="abx" rowspan="{len(variants)}">{esc(abx_line(entry) or "")}</td>')
            m = {**(e.get("metrics") or {}), **(e.get("reference_metrics") or {})}
            nums = "".join(f'<td class="num">{esc(_fmt(Row(k, k, fmt=f), m.get(k)) if m else "")}</td>' for k, _, f in cols)
            note = e["error"] or "; ".join(e.get("problems") or [])
            parts.append(f"<tr{attrs}>{song_cell}<td>{esc(v)}</td>{nums}<td>{esc(note)}</td></tr>\n")
    parts.append("</table>\n")
    parts.append(json_script("choice-data", {r["song"]: choices[r["song"]] for r in records if r["song"] in choices}))
    return _page("mp3restore report", "", "".join(parts), script=True)
