"""The only code that writes files: audio, markers, logs' siblings.

Every file is written to a temporary name beside its target (same folder, so the
final rename never crosses a disk; real extension kept, so libraries pick the right
format), flushed, fsynced and `os.replace`d. A crash at any moment leaves either the
old file, the new file or no file at a path, and at worst a stale temporary file that
the next run removes (`remove_stale_temps`).

Temporary names have one length whatever the target's (`.mp3restore-<8 hex of the
target's name><6 hex of its owner><6 random hex>.flac`, 37 bytes): a name that fits the
file system as a target fits as a temporary (the target's name inside the temporary's
made names of 221 bytes or more fail on the usual 255-byte limit). The name's hash lets a
sweep find the temporaries of one target only; the owner (one token per process) lets a
sweep where no claim keeps other runs out (`_report`) tell its own temporaries from those
another live run is writing, which it leaves alone unless they are stale (`STALE_TEMP_S`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from restore.audio import Audio
from restore.errors import output_error
from restore.faults import checkpoint
from restore.io.tags import TagSet

TMP_MARK = ".mp3restore-"  # in every temporary name (this version's and the earlier `.<name>.<hex>.mp3restore-tmp.<ext>`)
# <name hash 8><owner 6><random 6>, or an earlier version's <name hash 8><random 8> (no owner)
_TEMP = re.compile(r"\.mp3restore-([0-9a-f]{8})(?:([0-9a-f]{6})[0-9a-f]{6}|[0-9a-f]{8})(\.[A-Za-z0-9]{1,8})?")
# A temporary untouched this long is a killed run's: every write of a live run is done in
# far less (a report page, a summary: milliseconds; a FLAC is written to as it goes).
STALE_TEMP_S = 3600.0
_owner: tuple[int, str] = (0, "")
_WRITE_BLOCK = 1 << 16  # frames per block: bounds the int conversion buffers


NAME_MAX = 255  # bytes in one file name: ext4, APFS, exFAT; NTFS counts UTF-16 units, never more than UTF-8 bytes


def fit_name(stem: str, suffix: str, limit: int = NAME_MAX) -> str:
    """`stem + suffix` where that fits in `limit` bytes of UTF-8 (every name that fits keeps
    its spelling, so what earlier runs wrote is found again); else the stem cut on a
    character boundary, `~` and 8 hex of the whole name's hash, then the suffix, `limit`
    bytes at most: a 255-byte `Song.mp3` has its marker `Song.m~1a2b3c4d.json`."""
    name = stem + suffix
    if len(name.encode("utf-8", "surrogateescape")) <= limit:
        return name
    room = limit - len(suffix.encode("utf-8", "surrogateescape")) - 9
    cut = stem
    while len(cut.encode("utf-8", "surrogateescape")) > room:
        cut = cut[:-1]
    return f"{cut}~{_name_hash(name)}{suffix}"


def _name_hash(name: str) -> str:
    return hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()


def temp_owner() -> str:
    """This process's token in the temporary names it makes (6 hex; a new one after a fork)."""
    global _owner
    if _owner[0] != os.getpid():
        _owner = (os.getpid(), secrets.token_hex(3))
    return _owner[1]


def temp_path_for(final: Path) -> Path:
    """A fresh temporary name beside `final`, 37 bytes or so whatever final's length, e.g.
    `.mp3restore-1a2b3c4d5e6f7a8b9c0d.flac`: a hash of final's name, this process's token,
    random digits, its suffix."""
    suffix = final.suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", final.suffix) else ".tmp"
    return final.with_name(f"{TMP_MARK}{_name_hash(final.name)}{temp_owner()}{secrets.token_hex(3)}{suffix}")


def is_temp_of(candidate: str, final: Path) -> bool:
    """Whether the file name `candidate` is a temporary of `final` (this version's or an earlier one's)."""
    match = _TEMP.fullmatch(candidate)
    if match:
        return match.group(1) == _name_hash(final.name)
    return candidate.startswith(f".{final.name}.") and ".mp3restore-tmp" in candidate


def _removable(path: Path, shared: bool) -> bool:
    """Whether a sweep may delete the temporary `path`: always where a claim keeps other runs
    out; in a `shared` folder only this process's own and stale ones (untouched for
    STALE_TEMP_S: another live run may be writing a fresh one)."""
    if not shared:
        return True
    match = _TEMP.fullmatch(path.name)
    if match and match.group(2) == temp_owner():
        return True
    try:
        return time.time() - path.stat().st_mtime > STALE_TEMP_S
    except OSError:
        return False


def remove_stale_temps(final: Path, shared: bool = False) -> int:
    """Delete temporary files left beside `final` by a crashed run. Call while holding the
    claim for `final` (no other run can be writing them then), or with `shared` (only this
    process's own and stale ones go). Returns how many."""
    removed = 0
    try:
        names = os.listdir(final.parent)
    except OSError:
        return 0
    for name in names:
        if is_temp_of(name, final) and _removable(final.parent / name, shared):
            with contextlib.suppress(OSError):
                os.remove(final.parent / name)
                removed += 1
    return removed


def remove_temps_in(folder: Path, shared: bool = False) -> int:
    """Delete the temporary files under `folder` (a song's stems folder, the report folder),
    left by a crashed run whose file names are not known ahead (the stem names depend on the
    model). Call while no other run can be writing there, or with `shared` (the report
    folder, which two runs may write at once: only this process's own and stale ones go).
    Returns how many."""
    removed = 0
    for path in folder.rglob(f"*{TMP_MARK}*") if folder.is_dir() else ():
        if path.is_file() and _removable(path, shared):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


def _fsync_path(path: Path) -> None:
    with open(path, "rb+") as fh:
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable. Folders cannot be opened on Windows; NTFS journals renames."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _replace(tmp: Path, final: Path) -> None:
    # On Windows a virus scanner or a player may hold the target for a moment.
    for attempt in range(5):
        try:
            os.replace(tmp, final)
            return
        except PermissionError:
            if os.name != "nt" or attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextlib.contextmanager
def atomic_output(final: Path, doing: str = "writing") -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success fsync it and move it into place.
    On any failure (including KeyboardInterrupt) the temporary file is removed and an
    OSError becomes an OutputError with a one-line reason."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(f"{doing} (creating its folder)", final.parent, exc) from exc
    tmp = temp_path_for(final)
    try:
        yield tmp
        _fsync_path(tmp)
        checkpoint("before-replace")
        _replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise output_error(doing, final, exc) from exc
        raise


def write_bytes_atomic(final: Path, data: bytes, doing: str = "writing") -> None:
    with atomic_output(final, doing) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


_HASHES = {"blake2b": lambda: hashlib.blake2b(digest_size=16), "sha256": hashlib.sha256}


def hash_stream(fh, algo: str = "blake2b") -> str:
    """Hex digest of what is left to read in the binary file object `fh`, read in 1 MiB
    blocks: "blake2b" (128-bit: the markers' output hashes) or "sha256" (model files, as
    their publishers give them)."""
    h = _HASHES[algo]()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def hash_file(path: Path, algo: str = "blake2b") -> str:
    """Hex digest of the file's bytes (see hash_stream)."""
    with open(path, "rb") as fh:
        return hash_stream(fh, algo)


def _libsndfile_os_error(exc: Exception, tmp: Path) -> OSError:
    """libsndfile says "System error." for any failing system call: find the real cause.
    Opening the file ourselves gives the OS's own error (permission denied, read-only file
    system, a path too long); failing that, a nearly empty disk says it was full."""
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o666))
    except OSError as real:
        return real
    try:
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        free = None
    if free is not None and free < (1 << 20):
        return OSError(errno.ENOSPC, "No space left on device")
    return OSError(errno.EIO, f"the FLAC encoder failed ({getattr(exc, 'error_string', exc)})")


class FlacSink:
    """What `flac_writer` yields: call `write(block)` with float32 [channels, n] blocks.
    After the `with`, `record` holds {"path", "size", "mtime_ns", "hash", "clipped"}."""

    def __init__(self, f: sf.SoundFile):
        self._file = f
        self.clipped = 0
        self.frames = 0
        self.record: dict = {}

    def write(self, block: np.ndarray) -> None:
        for start in range(0, block.shape[1], _WRITE_BLOCK):
            part = block[:, start:start + _WRITE_BLOCK].T
            over = np.abs(part) > 1.0
            if over.any():  # an integer file cannot hold them: clip, and say how many
                self.clipped += int(over.sum())
                part = np.clip(part, -1.0, 1.0)
            self._file.write(np.ascontiguousarray(part))
            self.frames += part.shape[0]
            if self.frames == part.shape[0]:
                checkpoint("mid-audio")


@contextlib.contextmanager
def flac_writer(final: Path, rate: int, channels: int, tags: TagSet | None = None, bits: int = 24) -> Iterator[FlacSink]:
    """Stream a FLAC of `bits` (16 or 24) at `rate` Hz to `final`, atomically: the file
    appears, tags and all, only when the `with` body ends without an exception."""
    subtype = {16: "PCM_16", 24: "PCM_24"}[bits]
    with atomic_output(final, "writing FLAC") as tmp:
        try:
            with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=channels, format="FLAC", subtype=subtype) as f:
                sink = FlacSink(f)
                yield sink
        except sf.LibsndfileError as exc:
            raise _libsndfile_os_error(exc, tmp) from exc
        if tags is not None:
            checkpoint("before-tags")
            tags.write_flac(tmp)
        digest = hash_file(tmp)
    st = final.stat()
    sink.record = {"path": final, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": digest, "clipped": sink.clipped}


def write_flac(audio: Audio, final: Path, tags: TagSet | None = None, bits: int = 24) -> dict:
    """Write a whole `Audio` with `flac_writer`; returns the sink's record."""
    with flac_writer(final, audio.rate, audio.channels, tags, bits) as sink:
        sink.write(audio.samples)
    return sink.record
