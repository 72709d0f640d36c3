"""The model manager: which model files the tool can use, where they are, fetching and
verifying them. Weights are never part of the repository.

Models live in one folder: `--models-dir`, else $MP3RESTORE_MODELS, else the user's cache
(Windows: %LOCALAPPDATA%\\mp3restore\\models; macOS: ~/Library/Caches/mp3restore/models;
elsewhere: $XDG_CACHE_HOME or ~/.cache, then mp3restore/models). A model is also found in
its own library's cache where that library has one (hifi-gan-bwe: ~/.local/hifi-gan-bwe).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from restore.errors import RestoreError
from restore.io.writers import atomic_output, write_bytes_atomic

ENV_MODELS = "MP3RESTORE_MODELS"


@dataclass(frozen=True)
class ModelSpec:
    name: str                      # what people type: `mp3restore models fetch hifigan-bwe`
    filename: str                  # the file in the models folder
    url: str
    purpose: str
    variants: tuple[str, ...]
    approx_bytes: int              # for the listing and the memory plan
    fmt: str = "torchscript"       # how `verify` checks it
    sha256: str | None = None      # known hash of the published file; None: recorded at fetch
    other_places: tuple[str, ...] = field(default_factory=tuple)  # library caches, "~" allowed
    # A Hugging Face hub repo whose cached snapshots also hold the file (under its own name,
    # the last part of `filename`): $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
    hf_repo: str | None = None


CATALOGUE: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            name="hifigan-bwe",
            filename="hifi-gan-bwe-10-42890e3-vctk-48kHz.pt",
            url="https://cdn.brentspell.com/models/hifi-gan-bwe/hifi-gan-bwe-10-42890e3-vctk-48kHz.pt",
            purpose="HiFi-GAN+ bandwidth extension to 48 kHz (fast GAN, trained on speech)",
            variants=("08_hifigan",),
            approx_bytes=4_300_000,
            other_places=("~/.local/hifi-gan-bwe",),
        ),
        ModelSpec(
            name="audiosr-basic",
            filename="audiosr_basic/pytorch_model.bin",
            url="https://huggingface.co/haoheliu/audiosr_basic/resolve/main/pytorch_model.bin",
            purpose="AudioSR latent diffusion super-resolution to 48 kHz (general audio and music)",
            variants=("02_audiosr_direct", "03_audiosr_lp", "10_denoise_audiosr"),
            approx_bytes=6_000_000_000,      # a guess: 1.09 B parameters plus their EMA copy, float32
            fmt="torch",
            hf_repo="haoheliu/audiosr_basic",
        ),
    )
}


class ModelMissing(RestoreError):
    """A model file is not where it should be; the variants that need it are skipped."""


def default_models_dir() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mp3restore" / "models"


def models_dir(override: Path | str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if os.environ.get(ENV_MODELS):
        return Path(os.environ[ENV_MODELS]).expanduser()
    return default_models_dir()


def hf_hub_cache() -> Path:
    """Where huggingface_hub keeps downloads, by its own rules (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def candidates(spec: ModelSpec, folder: Path) -> list[Path]:
    found = [folder / spec.filename, *(Path(p).expanduser() / spec.filename for p in spec.other_places)]
    if spec.hf_repo:
        repo = hf_hub_cache() / ("models--" + spec.hf_repo.replace("/", "--")) / "snapshots"
        name = Path(spec.filename).name
        found += sorted(repo.glob(f"*/{name}")) if repo.is_dir() else [repo / "<revision>" / name]
    return found


def find_model(spec: ModelSpec, folder: Path) -> Path | None:
    """The first existing file for `spec`: the models folder, then the library caches."""
    return next((p for p in candidates(spec, folder) if p.is_file()), None)


def missing(spec: ModelSpec, folder: Path) -> ModelMissing:
    """The error that says which file is missing, where to put it and how to get it."""
    return ModelMissing(f"model {spec.name} is missing: put {spec.filename} in {folder}",
                        hint=f"download {spec.url}, or run `mp3restore models fetch {spec.name}` where there is network")


def require_model(spec: ModelSpec, folder: Path) -> Path:
    path = find_model(spec, folder)
    if path is None:
        raise missing(spec, folder)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_fingerprints: dict[tuple, str] = {}


def model_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the file's sha256: what goes into a variant's versions, so
    that other weights redo the songs. Hashed once per version of the file (path, size and
    mtime), remembered in memory and in `fingerprints.json` in the user's cache, so that a
    multi-gigabyte checkpoint is not read again to plan every run (best effort: a cache
    that cannot be written only costs time)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _fingerprints:
        return _fingerprints[key]
    store = default_models_dir().parent / "fingerprints.json"
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    text_key = "|".join(map(str, key))
    if not isinstance(known, dict) or not isinstance(known.get(text_key), str):
        known = known if isinstance(known, dict) else {}
        known[text_key] = sha256_of(path)[:16]
        try:
            write_bytes_atomic(store, json.dumps(known, indent=0).encode("utf-8"), "remembering a model's hash")
        except Exception:
            pass
    _fingerprints[key] = known[text_key]
    return known[text_key]


def model_version(spec: ModelSpec, folder: Path) -> str:
    """What a stage puts in its versions for its weights: "<name>:<fingerprint>", or "missing"."""
    path = find_model(spec, folder)
    return "missing" if path is None else f"{spec.name}:{model_fingerprint(path)}"


def _recorded_hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify(spec: ModelSpec, path: Path) -> str | None:
    """None if the file at `path` is a sound copy of `spec`, else the reason it is not:
    the published hash where known, else the hash recorded when it was fetched; and the
    format (a TorchScript file is a zip archive with code and data)."""
    digest = sha256_of(path)
    expected = spec.sha256
    recorded = _recorded_hash_path(path)
    if expected is None and recorded.is_file():
        expected = recorded.read_text().split()[0]
    if expected is not None and digest != expected:
        return f"hash mismatch (sha256 {digest[:12]}..., expected {expected[:12]}...): the file is damaged or another version"
    if spec.fmt == "torch":  # torch.save: a zip archive with data.pkl, or a legacy pickle
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if not any(n.endswith("data.pkl") for n in z.namelist()):
                    return "not a torch checkpoint (a zip archive without data.pkl)"
        else:
            with open(path, "rb") as fh:
                if fh.read(1) != b"\x80":
                    return "not a torch checkpoint (neither a zip archive nor a pickle)"
    if spec.fmt == "torchscript":
        if not zipfile.is_zipfile(path):
            return "not a TorchScript file (not a zip archive)"
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n.endswith("data.pkl") for n in names) or not any("/code/" in n for n in names):
            return "not a TorchScript file (no code/ or data.pkl inside: perhaps a plain state dict)"
    return None


def fetch(spec: ModelSpec, folder: Path, progress: Callable[[int, int | None], None] = lambda done, total: None) -> Path:
    """Download `spec` into `folder` (atomically), verify it and record its hash. Raises
    RestoreError with a clear reason when there is no network or the file is bad."""
    target = folder / spec.filename
    try:
        with urllib.request.urlopen(spec.url, timeout=30) as response, atomic_output(target, "downloading") as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            with open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    done += len(chunk)
                    progress(done, total)
            problem = verify(spec, tmp)
            if problem:
                raise RestoreError(f"downloaded {spec.name} but {problem}", spec.url)
    except OSError as exc:  # URLError is an OSError: no network, DNS, refused, timeout
        raise RestoreError(f"cannot download {spec.name} ({getattr(exc, 'reason', exc)})", spec.url,
                           f"download it by hand and put it in {folder}") from exc
    _recorded_hash_path(target).write_text(f"{sha256_of(target)}  {spec.filename}\n")
    return target
