"""Typed errors that read as one line: what was being done, to which path, why, and a hint.

Tracebacks are for the song's log and for --debug; a person sees `one_line()`.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """Text safe to print in a terminal or a log: control characters (colour escape
    codes, newlines) are shown as \\xNN instead of being obeyed."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


class RestoreError(Exception):
    """An error a person can act on. Exit codes map from the subclass (see cli)."""

    def __init__(self, what: str, path: Path | str | None = None, hint: str | None = None, *,
                 path_in_reason: bool = False):
        self.what = what
        self.path = path
        self.hint = hint
        self.path_in_reason = path_in_reason  # the path is not the song's (a file in the way)
        super().__init__(self.one_line())

    def reason(self) -> str:
        """The error without its path, for a table whose row already names the song; with it
        where the path is something else the person must find (the file in the way)."""
        if self.path_in_reason and self.path is not None:
            return self.one_line()
        return printable(f"{self.what} ({self.hint})" if self.hint else self.what)

    def one_line(self) -> str:
        text = self.what
        if self.path is not None:
            text = f"{text}: {printable(self.path)}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return printable(text)


class UsageError(RestoreError):
    """The command line asks for something impossible (exit code 2)."""


class InputError(RestoreError):
    """One input file cannot be used: not an MP3, empty, damaged. The batch goes on."""


class OutputError(RestoreError):
    """Writing an output failed: disk full, no permission, path in the way."""


class SetupError(RestoreError):
    """The run cannot start at all, e.g. the output folder cannot be created (exit code 3)."""


_OS_REASONS = {
    errno.ENOSPC: ("disk full", "free some space and run again; finished songs are kept"),
    errno.EDQUOT: ("disk quota exceeded", "free some space and run again; finished songs are kept"),
    errno.EFBIG: ("file too large for this file system", "write to a disk formatted NTFS/exFAT/ext4, not FAT32"),
    errno.EACCES: ("permission denied", "choose an output folder you can write to"),
    errno.EPERM: ("operation not permitted", "choose an output folder you can write to"),
    errno.EROFS: ("read-only file system", "choose an output folder on a writable disk"),
    errno.ENAMETOOLONG: ("path too long", "use a shorter output folder"),
    errno.ENOTDIR: ("a file is in the way of a folder", "move the file that has a folder's name"),
    errno.EEXIST: ("a file is in the way", "move the file that is in the way"),
    errno.EISDIR: ("a folder is in the way of a file", "move the folder that has the file's name"),
}


# Windows' own error numbers (OSError.winerror) that say more than the errno they map to.
_WINDOWS_REASONS = {
    32: ("the file is open in another program (a music player?)", "close it there and run again"),  # sharing violation
    33: ("part of the file is locked by another program", "close it there and run again"),          # lock violation
    206: ("path too long for Windows (260 characters)", "use a shorter output folder, or enable long paths in Windows"),
}


def describe_os_error(exc: OSError) -> tuple[str, str | None]:
    """A short reason and a hint for an OSError, e.g. ('disk full', 'free some space ...')."""
    if getattr(exc, "winerror", None) in _WINDOWS_REASONS:
        return _WINDOWS_REASONS[exc.winerror]
    if exc.errno in _OS_REASONS:
        return _OS_REASONS[exc.errno]
    return (exc.strerror or exc.__class__.__name__, None)


def path_of(exc: OSError, default: Path | str) -> Path | str:
    """The path to name for an OSError: for "in the way" errors the thing that is in the
    way (the file where a folder must go, e.g. `OUT/_logs`, not the folder that could not
    be made, nor the output folder above it); otherwise `default`."""
    if exc.errno not in (errno.ENOTDIR, errno.EEXIST) or not isinstance(exc.filename, (str, os.PathLike)):
        return default
    target = Path(exc.filename)
    for candidate in (target, *target.parents):
        if candidate.exists() or candidate.is_symlink():
            return target if candidate.is_dir() else candidate
    return target


def output_error(doing: str, path: Path | str, exc: OSError) -> OutputError:
    """Writing `path` failed: the reason, naming what the person must act on where that is
    not `path` itself (the file in the way; the folder that may not be written to: a variant
    folder, not the output folder, which the run has proved writable)."""
    reason, hint = describe_os_error(exc)
    if exc.errno in (errno.EACCES, errno.EPERM) and getattr(exc, "winerror", None) not in _WINDOWS_REASONS:
        folder = Path(exc.filename).parent if isinstance(exc.filename, (str, os.PathLike)) else Path(path).parent
        return OutputError(f"{doing} failed, {reason}", folder, "give yourself write access to that folder, "
                           "or choose another output folder", path_in_reason=True)
    in_the_way = path_of(exc, path)
    return OutputError(f"{doing} failed, {reason}", in_the_way, hint, path_in_reason=in_the_way != path)


_INPUT_REASONS = {  # the output's hints ("choose an output folder...") are wrong for an input
    errno.EACCES: ("permission denied", "give yourself read access to it, or copy it somewhere you can read"),
    errno.EPERM: ("operation not permitted", "give yourself read access to it, or copy it somewhere you can read"),
    errno.EIO: ("the disk reports a read error", "copy the file from a backup"),
    errno.ENOENT: ("it is gone", "it was moved or deleted after the scan"),
}


def input_read_error(path: Path | str, exc: OSError) -> InputError:
    """An input file that cannot be read, as a one-line InputError that names the input."""
    reason, hint = _INPUT_REASONS.get(exc.errno, (exc.strerror or exc.__class__.__name__, None))
    return InputError(f"cannot read the file, {reason}", path, hint)


def describe_failure(exc: BaseException, doing: str | None = None) -> str:
    """One printable line for why something failed: what a person reads in the summary, the
    log and the report. With `doing` ("making 02_audiosr_direct"), the line says what was
    being done; without it, just why."""
    if isinstance(exc, RestoreError):
        return exc.reason()
    if isinstance(exc, MemoryError):
        return f"out of memory while {doing}" if doing else "out of memory"
    if isinstance(exc, OSError) and (doing or exc.errno is not None):
        what, hint = describe_os_error(exc)
        return printable(f"{doing} failed, {what}" + (f" ({hint})" if hint else "")) if doing else printable(what)
    library_says = getattr(exc, "error_string", None)  # libsndfile's own words (soundfile.LibsndfileError)
    if isinstance(library_says, str) and not doing:
        return printable(library_says)
    what = f"{exc.__class__.__name__}: {printable(exc)}"
    return f"internal error while {doing}: {what}" if doing else printable(what)
