"""The compare report: what a person reads to choose between the variants of each song.

`build_report(out_dir)` finds the songs and variants (report/discover.py: the `_done`
markers first), measures them with a cache (report/measure.py) and writes `out_dir/_report/`:

    index.html                      every song, a few key numbers per variant
    songs/<song>.html               players (loudness-matched), a blind ABX test,
    songs/<song>.files/*.png        spectrograms on one scale, differences from the baseline,
                                    every metric per variant
    metrics.csv, metrics.json       every metric, song by song, variant by variant
    cache/<song>.json               what was measured, keyed by each FLAC's size and mtime
    assets/report.css, report.js    the pages' style and behaviour
    choices.json                    the person's choices (report/choices.py): read, never written here

Pages work from the file system (file://): every link is relative and nothing is fetched
from the network. Names are shown through `printable` and `html.escape`, URLs are
percent-encoded. A FLAC that cannot be read is one line on its page and in the log; the
report goes on. Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

from restore.errors import UsageError, describe_failure, printable
from restore.io.writers import remove_temps_in, write_bytes_atomic
from restore.report.choices import load_choices
from restore.report.discover import ReferenceIndex, find_songs, variant_folders
from restore.report.html import REPORT_DIR, index_page, song_file, song_page
from restore.report.measure import BASELINE, Log, code_fingerprint, measured_song, write_json
from restore.report.parallel import in_processes

__all__ = ["BASELINE", "build_report", "find_songs"]

ASSETS = ("report.css", "report.js")

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


def build_report(out_dir: Path, reference: Path | None = None, log: Log = lambda line: None, jobs: int = 1) -> Path:
    """Write out_dir/_report/ (see the module docstring) for every variant folder in out_dir;
    returns the index page's path. Songs whose FLACs (and reference) are unchanged since the
    last report are not measured or drawn again; with `jobs` over 1, up to that many songs
    are measured at once, each in its own process (report/parallel.py). Raises UsageError
    when out_dir is not a folder or `reference` does not exist, OutputError when the report
    cannot be written; a bad FLAC is never an exception, only a line on its page and in `log`."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError("no such output folder", out_dir, "give the folder a run wrote its variants to")
    report_dir = out_dir / REPORT_DIR
    removed = remove_temps_in(report_dir, shared=True)  # left by a run killed while writing the report
    if removed:
        log(f"report: removed {removed} temporary file(s) left by an interrupted run")
    songs = find_songs(out_dir)
    refs = ReferenceIndex(Path(reference) if reference is not None else None, len(songs))
    fingerprint = code_fingerprint()
    choices = load_choices(out_dir)  # written by the pages (report --serve), never by a build
    records, problems, measured = [], [], 0
    if not songs:
        problems.append("no variant folders with FLACs found (folders named like 01_baseline)")
        log(f"report: {problems[-1]} in {printable(out_dir)}")
    found = [(song, *refs.find(song.key)) for song in songs]

    def lost(index: int, exc: BaseException) -> None:
        log(f"report: measuring {printable(found[index][0].key)} in its own process failed "
            f"({describe_failure(exc)}); measured here instead")
    with in_processes(measured_song, [(song, out_dir, ref, fingerprint) for song, ref, _ in found], jobs,
                      lost) as measuring:
        for (song, ref, why), (record, said) in zip(found, measuring):
            for line in said:
                log(line)
            if why:
                record["problems"].append(why)
                log(f"report: {printable(song.key)}: {why}")
            if record["measured"]:
                measured += 1
                log(f"report: {printable(song.key)}: measured {', '.join(record['measured'])}")
            problems += [f"{printable(song.key)}: {p}" for p in record["problems"]]
            write_bytes_atomic(report_dir / "songs" / song_file(song.key, ".html"),
                               song_page(record, out_dir, choices.get(song.key)).encode("utf-8"), "writing the report")
            records.append(record)
    _install_assets(report_dir)
    rows = table_rows(records)
    write_bytes_atomic(report_dir / "metrics.csv", csv_text(rows).encode("utf-8-sig"), "writing the report")
    write_json(report_dir / "metrics.json", {"out_dir": str(out_dir), "reference": str(reference) if reference else None,
                                              "variants": variant_folders(out_dir), "rows": rows, "problems": problems},
                "writing the report")
    index = report_dir / "index.html"
    write_bytes_atomic(index, index_page(records, out_dir, problems, choices).encode("utf-8"), "writing the report")
    log(f"report: {len(records)} song(s), {measured} measured, {len(records) - measured} unchanged: {printable(index)}")
    return index
