"""Reading model files without running what comes with them: the one module that opens a
checkpoint. Every stage loads its weights through here (tests/test_model_safety.py scans
the sources and fails on any other `torch.load`, `torch.jit.load`, pickle or demucs loader).

A PyTorch checkpoint is a pickle, and unpickling runs whatever the file names. So:

- `load_tensors` reads a checkpoint with `torch.load(weights_only=True)`: tensors, plain
  containers and numbers, plus the few classes a format needs, named by the caller
  (`allow`: a Demucs package names its model class and a Fraction). A file that names
  anything else is refused with one line (`ModelRefused`), before anything of it runs.
- A full unpickle happens in one function only, `_full_unpickle`, and only for a file whose
  bytes, hashed as they are read, are the published file's (the catalogue's sha256), or for
  a file the person named with `--trust-model-file` (the caller logs it). None of the
  published checkpoints the tool knows needs it: they all read as tensors.
- `read_safetensors` reads safetensors files (tensors and a JSON header: no code at all).
- `load_torchscript` reads TorchScript files (HiFi-GAN+), whose code is TorchScript, not
  Python, after checking that the file is one.

Whether a file matches the catalogue is decided by restore/models/store.py (`check_file`);
`verified_or_refused` turns a mismatch into a refusal unless the file is trusted.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

from restore.errors import RestoreError
from restore.io.writers import hash_stream
from restore.models.store import FileCheck, ModelSpec, check_file, format_problem


class ModelRefused(RestoreError):
    """A model file was not loaded because it could run code or is not the published file.
    The variants that need it are reported unavailable or failed; the batch goes on."""


def refusal(path: Path, what: str, why: str, fetch_name: str | None) -> ModelRefused:
    """The one line: the file, what it is, why it was refused, how to get the verified one
    (the reason names the path too: a summary row shows only `reason()`)."""
    get = f"get the verified one with `mp3restore models fetch {fetch_name}`" if fetch_name else "replace it"
    return ModelRefused(f"refused {what} {path}: {why}",
                        hint=f"{get}, or pass --trust-model-file {path} to load this file anyway")


def is_trusted(path: Path, trusted: Iterable[Path]) -> bool:
    """Whether `path` is one of the files the person named with --trust-model-file."""
    try:
        real = Path(path).resolve()
        return any(real == Path(t).expanduser().resolve() for t in trusted)
    except OSError:
        return False


def verified_or_refused(spec: ModelSpec, path: Path, what: str, trusted: bool = False, expected=None) -> FileCheck:
    """The catalogue's verdict on `path` (store.check_file). Raises ModelRefused when the file
    differs from the published (or recorded) hash, unless the person trusts it."""
    check = check_file(spec, path, expected)
    if not check.ok and not trusted:
        raise refusal(path, what, f"it is not the published file ({check.detail})", spec.name)
    return check


def model_file_problem(spec: ModelSpec, path: Path, what: str, trusted: Iterable[Path] = ()) -> str | None:
    """For a stage's `unavailable()`: None, or the one-line reason the file at `path` would be
    refused (it differs from the published or recorded hash; a TorchScript model that is
    not a TorchScript file). Hashes the file the first time only (store.file_sha256)."""
    if is_trusted(path, trusted):
        return None
    try:
        verified_or_refused(spec, path, what)
        problem = format_problem(spec.fmt, path) if spec.fmt == "torchscript" else None
        if problem:
            raise refusal(path, what, problem, spec.name)
    except ModelRefused as exc:
        return exc.reason()
    return None


_UNSUPPORTED = re.compile(r"Unsupported (?:global: GLOBAL [\w.]+|operand \d+|class [\w.]+)")


def _weights_only_refusal(exc: BaseException) -> str | None:
    """What torch's safe unpickler refused ("Unsupported global: GLOBAL os.system"), or None
    when the error is something else (a damaged or truncated file)."""
    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    found = _UNSUPPORTED.search(text)
    return found.group(0) if found else "something that is not a tensor"


def load_tensors(path: Path, *, what: str, fetch_name: str | None, allow: Sequence = (),
                 check: FileCheck | None = None, published_sha256: str | None = None, trusted: bool = False):
    """The checkpoint at `path`, read with torch.load(weights_only=True, map_location="cpu")
    and only the classes in `allow` added to what that loader accepts (memory-mapped when it
    is a zip archive). A file that names anything else is unpickled in full only when
    `check` says it is the published file and `published_sha256` is that file's hash (the
    bytes are hashed again as they are read), or when `trusted`; otherwise ModelRefused,
    before anything the file names has run. A file torch cannot read at all is a
    RestoreError naming it."""
    import torch
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:
        refused = _weights_only_refusal(exc)
        if refused is None:  # damaged, truncated, not a checkpoint: nothing was run
            raise RestoreError(f"cannot read {what} {path} ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})",
                               hint=f"`mp3restore models fetch {fetch_name}` gets a sound copy" if fetch_name else None) from None
    verified = check is not None and check.status == "published" and published_sha256 == check.sha256
    if not (verified or trusted):
        raise refusal(path, what, f"it holds more than tensors ({refused}), and only the published file "
                                  "(its sha256 checked) is unpickled in full", fetch_name)
    return _full_unpickle(path, published_sha256=published_sha256 if verified else None, trusted=trusted,
                          what=what, fetch_name=fetch_name)


def _full_unpickle(path: Path, *, published_sha256: str | None, trusted: bool, what: str, fetch_name: str | None):
    """The one full unpickle in the project (torch.load with weights_only=False), for a file
    whose bytes are the published file's, or one the person trusts by name. The bytes are
    hashed through the same open file that is then unpickled, so a file swapped after
    `check_file` (or a stale hash cache) cannot slip through."""
    import torch
    if published_sha256 is None and not trusted:
        raise refusal(path, what, "a full unpickle needs the published file's sha256 or --trust-model-file", fetch_name)
    with open(path, "rb") as fh:
        if published_sha256 is not None:
            digest = hash_stream(fh, "sha256")
            if digest != published_sha256 and not trusted:
                raise refusal(path, what, f"it changed since it was checked (sha256 {digest[:12]}...)", fetch_name)
            fh.seek(0)
        return torch.load(fh, map_location="cpu", weights_only=False)


def read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    """(tensors by name, the header's metadata) of a safetensors file: data and JSON only,
    nothing in it can run."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:
        raise RestoreError(f"cannot read the safetensors file {path} ({exc.__class__.__name__}: {exc})") from None


def load_torchscript(path: Path, map_location: str, *, what: str, fetch_name: str | None):
    """A TorchScript module (its code is TorchScript, compiled by torch, not Python), after
    checking the file is a TorchScript archive: a plain pickle put in its place is refused
    before torch reads it."""
    import torch
    problem = format_problem("torchscript", path)
    if problem:
        raise refusal(path, what, problem, fetch_name)
    try:
        return torch.jit.load(str(path), map_location=map_location)
    except Exception as exc:
        raise RestoreError(f"cannot read {what} {path} ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})",
                           hint=f"`mp3restore models fetch {fetch_name}` gets a sound copy" if fetch_name else None) from None
