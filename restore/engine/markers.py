"""Resume markers: `_done/<variant>/<song path>.json`, one per song and variant, written
last and atomically. "The output file exists" never means "done"; a valid marker does.

A marker holds the input's fingerprint (size, mtime, blake2b of its bytes), the step's
config hash, the versions that decide its output, and each output's path, size, mtime
and hash. `check_marker` says whether a step can be skipped, and if not, why.

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
from restore.io.writers import hash_file, write_bytes_atomic

SCHEMA = 1


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the config as canonical JSON, first 16 hex digits."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def marker_path(out_dir: Path, variant: str, rel: PurePosixPath) -> Path:
    return out_dir / "_done" / variant / Path(*rel.parts).with_name(rel.name + ".json")


def file_record(path: Path, digest: str | None = None) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": digest or hash_file(path)}


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
        hashes[key] = hash_file(path)
    return None if hashes[key] == record.get("hash") else "changed (content)"


@dataclass
class MarkerCheck:
    done: bool
    reason: str  # why the step must run ("new", "input changed", ...), or "done"


def check_marker(path: Path, source: Path, out_dir: Path, cfg_hash: str, versions: dict, verify: str = "quick",
                 hashes: dict | None = None) -> MarkerCheck:
    """Can the step whose marker is at `path` be skipped for `source`? Pass one `hashes`
    dict across the checks of a plan to hash each file at most once."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return MarkerCheck(False, "new")
    except (OSError, ValueError):
        return MarkerCheck(False, "marker unreadable")
    if marker.get("schema") != SCHEMA:
        return MarkerCheck(False, "marker from another version")
    why = _same_file(source, marker.get("input", {}), verify, hashes)
    if why:
        return MarkerCheck(False, f"input {why}")
    if marker.get("config_hash") != cfg_hash:
        return MarkerCheck(False, "config changed")
    if marker.get("versions") != versions:
        changed = sorted(k for k in set(versions) | set(marker.get("versions", {}))
                         if versions.get(k) != marker.get("versions", {}).get(k))
        return MarkerCheck(False, f"versions changed ({', '.join(changed)})")
    for out in marker.get("outputs", []):
        why = _same_file(out_dir / out["path"], out, verify, hashes)
        if why:
            return MarkerCheck(False, f"output {why}: {out['path']}")
    return MarkerCheck(True, "done")


def write_marker(path: Path, *, variant: str, rel: PurePosixPath, source_record: dict, cfg_hash: str,
                 config: dict, versions: dict, outputs: list[dict], out_dir: Path, facts: dict,
                 seconds: float, stage_facts: dict | None = None) -> None:
    """Write the marker atomically. `outputs` are writer results ({path, size, mtime_ns, hash});
    `facts` what the decode found; `stage_facts` what the variant's stages measured and
    chose (the low-pass used, a level match, a stem sum residual), shown in the report."""
    marker = {
        "schema": SCHEMA,
        "variant": variant,
        "song": rel.as_posix(),
        "input": source_record,
        "config_hash": cfg_hash,
        "config": config,
        "versions": versions,
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
