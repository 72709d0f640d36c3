"""The person's choices: which variant of each song to keep, and the blind tests they ran.

They live in `OUT/_report/choices.json`, beside the pages and never rewritten by a report
build, so they survive a reload and a rebuilt report:

    {"version": 1,
     "songs": {"Artist/Album/Song": {"keep": "08_hifigan" | null,
                                     "at": "2026-11-30T16:40:00Z",
                                     "abx": [{"a": "01_baseline", "b": "08_hifigan", "correct": 9,
                                              "trials": 10, "p": 0.011, "at": "..."}]}}}

Song keys are the report's (the path below a variant folder, "/"-separated, no suffix).
`mp3restore report --serve` writes the file through `save_choice`; a page opened from the
file system keeps choices in the browser and offers the same file as a download.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from restore.errors import UsageError
from restore.io.writers import write_bytes_atomic

CHOICES = "choices.json"
VERSION = 1
MAX_ABX = 50          # blind tests kept per song (the newest)
_MAX_TEXT = 4096


def choices_path(out_dir: Path) -> Path:
    from restore.report.html import REPORT_DIR
    return Path(out_dir) / REPORT_DIR / CHOICES


def load_choices(out_dir: Path, strict: bool = False) -> dict[str, dict]:
    """song key -> its entry ({} when there is no file). A file that cannot be read is {}
    for the report (it must still build) and a UsageError with strict=True (building a
    library from no choices would silently keep the default everywhere)."""
    path = choices_path(out_dir)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if strict:
            raise UsageError(f"cannot read the choices ({exc})", path, "fix or delete the file") from exc
        return {}
    songs = data.get("songs") if isinstance(data, dict) else None
    if not isinstance(songs, dict):
        if strict:
            raise UsageError("the choices file has no 'songs'", path, "fix or delete the file")
        return {}
    return {k: clean_entry(v) for k, v in songs.items() if isinstance(k, str) and isinstance(v, dict)}


def _text(value) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_TEXT else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def clean_entry(entry: dict) -> dict:
    """Only the fields this module knows, of the right types (what a browser sent is data)."""
    abx = []
    for test in entry.get("abx") or []:
        if not isinstance(test, dict):
            continue
        a, b, correct, trials = _text(test.get("a")), _text(test.get("b")), _number(test.get("correct")), _number(test.get("trials"))
        if a and b and correct is not None and trials:
            abx.append({"a": a, "b": b, "correct": int(correct), "trials": int(trials),
                        "p": _number(test.get("p")), "at": _text(test.get("at"))})
    return {"keep": _text(entry.get("keep")), "at": _text(entry.get("at")), "abx": abx[-MAX_ABX:]}


def save_choice(out_dir: Path, song: str, entry: dict, known: dict[str, set[str]] | None = None) -> dict[str, dict]:
    """Merge one song's entry into choices.json (written atomically) and return all of them.
    `known`: song key -> the variants it has; a song or variant not in it is a UsageError.
    Callers serialise calls (the server holds a lock)."""
    if not _text(song):
        raise UsageError("a choice needs the song's key")
    entry = clean_entry(entry if isinstance(entry, dict) else {})
    if known is not None:
        if song not in known:
            raise UsageError("no such song in this report", song)
        if entry["keep"] is not None and entry["keep"] not in known[song]:
            raise UsageError(f"the song has no variant {entry['keep']!r}", song)
    songs = load_choices(out_dir)
    songs[song] = entry
    data = {"version": VERSION, "songs": dict(sorted(songs.items()))}
    write_bytes_atomic(choices_path(out_dir), json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"),
                       "saving the choices")
    return songs


def abx_line(entry: dict | None) -> str | None:
    """The newest blind test in words: "9/10 01_baseline vs 08_hifigan (p = 0.011)"."""
    tests = (entry or {}).get("abx") or []
    if not tests:
        return None
    t = tests[-1]
    p = f" (p = {t['p']:.3f})" if t.get("p") is not None else ""
    return f"{t['correct']}/{t['trials']} {t['a']} vs {t['b']}{p}"
