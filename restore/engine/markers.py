"""Resume markers: `_done/<variant>/<song path>.json`, one per song and variant, written
last and atomically. "The output file exists" never means "done"; a valid marker does.

A marker holds the input's fingerprint (size, mtime, blake2b of its bytes), the step's
config hash, the versions that decide its output (each stage's revision, its model files,
a stems folder's files), the versions of the libraries that made it (for information), and
each output's path, size, mtime and hash. `check_marker` says whether a step can be skipped,
and if not, why.

Redo policy: a step is redone when its input, config, stage revision or model changed,
never for a library version alone. Upgrading torch or numpy does not throw away a night of
GPU work when the output did not change; when it did, the stage's revision is bumped, and
the golden tests (tests/test_golden.py) fail until it is. A marker's `versions` may hold
keys that are no longer compared (markers written before library versions moved to
`libraries`): they are ignored, so that an upgrade to this policy redoes nothing.

A marker is checked against its schema before anything in it is used (`marker_problem`):
valid JSON of the wrong shape (`[]`, `null`, an input that is not a record, outputs that
are not a list, an output path that leaves the output folder) means "redo this step",
with the reason, never a crash of the whole run's plan.

Verification levels: "quick" (default) trusts a file whose size and mtime are unchanged
and hashes only when they differ, so a touched but identical input is not redone; "full"
re-hashes every input and output.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from restore import __version__
from restore.errors import input_read_error
from restore.io.writers import fit_name, hash_file, write_bytes_atomic

SCHEMA = 1


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the config as canonical JSON, first 16 hex digits."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def marker_path(out_dir: Path, variant: str, rel: PurePosixPath) -> Path:
    """`_done/<variant>/<song path>.json`; a song name of 251 to 255 bytes, whose marker name
    would pass the file system's limit, gets a cut name with a hash (`fit_name`). Names that
    fit are spelled as ever, so markers earlier versions wrote still count."""
    return out_dir / "_done" / variant / Path(*rel.parts).with_name(fit_name(rel.name, ".json"))


def file_record(path: Path, digest: str | None = None) -> dict:
    """The input's fingerprint {size, mtime_ns, hash}. A read error is an InputError naming it."""
    try:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": digest or hash_file(path)}
    except OSError as exc:
        raise input_read_error(path, exc) from exc


def _same_file(path: Path, record: dict, verify: str, hashes: dict | None) -> str | None:
    """None if `path` still matches `record`, else the reason it does not. `hashes` caches
    hashes by (path, size, mtime) so that one input checked for several variants is read once."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if st.st_size != record.get("size"):
        return "changed (size)"
    if verify == "quick" and st.st_mtime_ns == record.get("mtime_ns"):
        return None
    hashes = {} if hashes is None else hashes
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in hashes:
        try:
            hashes[key] = hash_file(path)
        except OSError:
            return "unreadable"
    return None if hashes[key] == record.get("hash") else "changed (content)"


_RECORD = (("size", int), ("mtime_ns", int), ("hash", str))
_TOP = (("input", dict), ("config_hash", str), ("versions", dict), ("outputs", list))
_OPTIONAL = (("config", dict), ("facts", dict), ("stage_facts", dict), ("libraries", dict))
_KIND = {dict: "an object", list: "a list", str: "a string", int: "a whole number"}


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _record_problem(record: Any, name: str) -> str | None:
    if not isinstance(record, dict):
        return f"{name} is not an object"
    for key, kind in _RECORD:
        if not _is(record.get(key), kind):
            return f"{name}'s {key} is not {_KIND[kind]}"
    return None


def _inside(rel: str) -> bool:
    """A path relative to the output folder that stays inside it (POSIX or Windows spelling).
    Plain string tests: this runs for every output of every marker at every plan."""
    if not rel or "\x00" in rel:
        return False
    posix = rel.replace("\\", "/")
    if posix.startswith("/") or (len(rel) > 1 and rel[1] == ":"):   # /abs, \\server\share, C:...
        return False
    return ".." not in posix.split("/")


def marker_problem(marker: Any) -> str | None:
    """What makes a parsed marker unusable (its shape, not whether it matches), or None.
    The schema version is checked first: another version's marker is not damaged."""
    if not isinstance(marker, dict):
        return f"marker damaged (not an object but {type(marker).__name__})"
    if marker.get("schema") != SCHEMA:
        return "marker from another version"
    for key, kind in (*_TOP, *(o for o in _OPTIONAL if o[0] in marker)):
        if not _is(marker.get(key), kind):
            return f"marker damaged ({key} is not {_KIND[kind]})"
    why = _record_problem(marker["input"], "input") or ("it lists no outputs" if not marker["outputs"] else None)
    for i, out in enumerate(marker["outputs"]):
        why = why or _record_problem(out, f"output {i + 1}")
        if not why and not (isinstance(out.get("path"), str) and _inside(out["path"])):
            why = f"output {i + 1}'s path is not a path inside the output folder"
    steps = marker.get("config", {}).get("steps", [])
    if not why and not (isinstance(steps, list) and all(isinstance(s, dict) for s in steps)):
        why = "config's steps are not a list of objects"
    return f"marker damaged ({why})" if why else None


def read_marker(path: Path) -> tuple[dict | None, str]:
    """(the marker, "ok") or (None, why not: "new", "marker unreadable", "marker damaged (...)",
    "marker from another version"). Never raises for what a marker file holds."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "new"
    except (OSError, ValueError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
        return None, "marker unreadable"
    why = marker_problem(marker)
    return (None, why) if why else (marker, "ok")


@dataclass
class MarkerCheck:
    done: bool
    reason: str  # why the step must run ("new", "input changed", ...), or "done"


def check_marker(path: Path, source: Path, out_dir: Path, cfg_hash: str, versions: dict, verify: str = "quick",
                 hashes: dict | None = None) -> MarkerCheck:
    """Can the step whose marker is at `path` be skipped for `source`? Pass one `hashes`
    dict across the checks of a plan to hash each file at most once."""
    marker, why = read_marker(path)
    if marker is None:
        return MarkerCheck(False, why)
    why = _same_file(source, marker["input"], verify, hashes)
    if why:
        return MarkerCheck(False, f"input {why}")
    if marker.get("config_hash") != cfg_hash:
        return MarkerCheck(False, "config changed")
    # only what decides the output now; a key only the marker has is ignored (see above)
    changed = sorted(k for k in versions if versions[k] != marker["versions"].get(k))
    if changed:
        return MarkerCheck(False, f"versions changed ({', '.join(changed)})")
    for out in marker["outputs"]:
        why = _same_file(out_dir / out["path"], out, verify, hashes)
        if why:
            return MarkerCheck(False, f"output {why}: {out['path']}")
    return MarkerCheck(True, "done")


def write_marker(path: Path, *, variant: str, rel: PurePosixPath, source_record: dict, cfg_hash: str,
                 config: dict, versions: dict, outputs: list[dict], out_dir: Path, facts: dict,
                 seconds: float, stage_facts: dict | None = None, libraries: dict | None = None) -> None:
    """Write the marker atomically. `outputs` are writer results ({path, size, mtime_ns, hash});
    `facts` what the decode found; `stage_facts` what the variant's stages measured and
    chose (the low-pass used, a level match, a stem sum residual), shown in the report;
    `libraries` the library versions that made it (information only)."""
    marker = {
        "schema": SCHEMA,
        "variant": variant,
        "song": rel.as_posix(),
        "input": source_record,
        "config_hash": cfg_hash,
        "config": config,
        "versions": versions,
        "libraries": libraries or {},
        "outputs": [
            {"path": Path(o["path"]).relative_to(out_dir).as_posix(), "size": o["size"],
             "mtime_ns": o["mtime_ns"], "hash": o["hash"]}
            for o in outputs
        ],
        "facts": facts,
        "stage_facts": stage_facts or {},
        "mp3restore": __version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 3),
    }
    write_bytes_atomic(path, json.dumps(marker, indent=1, default=str).encode("utf-8"), "writing the resume marker")
