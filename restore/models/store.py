"""The model manager: which model files the tool can use, where they are, fetching and
verifying them. Weights are never part of the repository.

Models live in one folder: `--models-dir`, else $MP3RESTORE_MODELS, else the user's cache
(Windows: %LOCALAPPDATA%\\mp3restore\\models; macOS: ~/Library/Caches/mp3restore/models;
elsewhere: $XDG_CACHE_HOME or ~/.cache, then mp3restore/models). A model is also found in
its own library's cache where that library has one (hifi-gan-bwe: ~/.local/hifi-gan-bwe).

A model file is code as much as data (a torch checkpoint is a pickle), so the catalogue
records what each published file is: its sha256 where it is known, else the hash prefix its
publisher puts in its name (Demucs). `check_file` compares a file with that record (or with
the hash `fetch` recorded when it downloaded the file); restore/models/checkpoints.py is
the one place that reads a checkpoint, and decides from that verdict what it may do.
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from restore.errors import RestoreError
from restore.io.writers import atomic_output, hash_file, write_bytes_atomic

ENV_MODELS = "MP3RESTORE_MODELS"


@dataclass(frozen=True)
class ModelFile:
    """One published file of a model."""

    filename: str                  # in the models folder (a relative path)
    url: str
    sha256: str | None = None      # the published file's sha256, where known
    # Where only a prefix of the sha256 is published (Demucs names its files
    # <signature>-<first 8 hex digits>.th): it catches a damaged or other file, not a forged one.
    sha256_prefix: str | None = None
    approx_bytes: int = 0


@dataclass(frozen=True)
class ModelSpec:
    name: str                      # what people type: `mp3restore models fetch hifigan-bwe`
    filename: str                  # the file in the models folder
    url: str
    purpose: str
    variants: tuple[str, ...]
    approx_bytes: int              # for the listing and the memory plan (all files together)
    fmt: str = "torchscript"       # how `verify` checks it: torchscript, torch, demucs (a torch.save'd package)
    sha256: str | None = None      # the published file's sha256; None: not known (see check_file)
    other_places: tuple[str, ...] = field(default_factory=tuple)  # library caches, "~" allowed
    # A Hugging Face hub repo whose cached snapshots also hold the file (under its own name,
    # the last part of `filename`): $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
    hf_repo: str | None = None
    sha256_prefix: str | None = None
    also: tuple[ModelFile, ...] = ()   # the model's other files (a Demucs bag: one per model in it)
    licence: str = ""              # the weights' licence as their publisher states it ("" not recorded)
    # The published config's values the model needs (the msst separators: "class", the
    # constructor's "model" arguments, "instruments", "target", "chunk_size", "num_overlap"),
    # kept here as data: the YAML files are not in the msst wheel, and reading a YAML
    # would need more than safe_load (they carry !!python/tuple tags).
    config: dict = field(default_factory=dict, compare=False, hash=False)

    def files(self) -> tuple[ModelFile, ...]:
        """Every file of the model, the main one (`filename`) first."""
        main = ModelFile(self.filename, self.url, self.sha256, self.sha256_prefix,
                         self.approx_bytes - sum(f.approx_bytes for f in self.also))
        return (main, *self.also)


DEMUCS_ROOT = "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/"


MSST_RELEASES = "https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/download/"
FOUR = ("drums", "bass", "other", "vocals")
# BS-RoFormer's band split of the 1025 STFT bins of a 2048-point STFT (both published configs)
ROFORMER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)


def _roformer(dim: int, depth: int, stems: int, **more) -> dict:
    """BSRoformer's constructor arguments as the published configs give them (the training
    losses' arguments left out: they are the class's defaults or unused at inference)."""
    return {"dim": dim, "depth": depth, "stereo": True, "num_stems": stems, "time_transformer_depth": 1,
            "freq_transformer_depth": 1, "linear_transformer_depth": 0, "freqs_per_bands": ROFORMER_BANDS,
            "dim_head": 64, "heads": 8, "attn_dropout": 0.1, "ff_dropout": 0.1, "flash_attn": True,
            "dim_freqs_in": 1025, "stft_n_fft": 2048, "stft_hop_length": 441, "stft_win_length": 2048,
            "stft_normalized": False, "mask_estimator_depth": 2, **more}


def _demucs(name: str, purpose: str, published: tuple[str, ...], each_bytes: int) -> ModelSpec:
    """A Demucs bag as published: one `<signature>-<sha256[:8]>.th` per model, in the bag's
    order (demucs/remote/files.txt and <name>.yaml), kept in <models>/demucs/."""
    files = tuple(ModelFile(f"demucs/{n}", DEMUCS_ROOT + n, None, n[:-3].rsplit("-", 1)[1], each_bytes) for n in published)
    first = files[0]
    return ModelSpec(name=name, filename=first.filename, url=first.url, purpose=purpose, variants=("04_stems",),
                     approx_bytes=each_bytes * len(files), fmt="demucs", sha256_prefix=first.sha256_prefix,
                     also=files[1:], licence="MIT (the demucs repository; trained on MUSDB18-HQ + 800 songs)")


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
            # sha256: not published anywhere we could read; `fetch` records the one it downloads.
        ),
        ModelSpec(
            name="audiosr-basic",
            filename="audiosr_basic/pytorch_model.bin",
            url="https://huggingface.co/haoheliu/audiosr_basic/resolve/main/pytorch_model.bin",
            purpose="AudioSR latent diffusion super-resolution to 48 kHz (general audio and music)",
            variants=("02_audiosr_direct", "03_audiosr_lp", "10_denoise_audiosr"),
            approx_bytes=6_180_000_000,      # 6.18 GB on the hub page
            fmt="torch",
            hf_repo="haoheliu/audiosr_basic",
            # sha256: unknown here (the hub shows it on the file's page; we could not read it).
            # Its pickle names only tensors and OrderedDict (the hub's pickle scan), so it loads
            # with weights_only=True and needs no hash to be read safely. For a speech variant,
            # haoheliu/audiosr_speech's pytorch_model.bin is sha256
            # 59fd60a9b93346c698788bac9b6077977a21733e7a78db9d3c3af3f1bdebc640 (its hub page).
        ),
        ModelSpec(
            name="apollo",
            filename="apollo/pytorch_model.bin",
            url="https://huggingface.co/JusperLee/Apollo/resolve/main/pytorch_model.bin",
            purpose="Apollo MP3 restoration (JusperLee; trained on MP3 at 24-128 kbps), 44.1 kHz stereo",
            variants=("12_apollo",),
            # 16.54 M float32 parameters (sr 44100, win 20 ms, feature_dim 256, layer 6) make
            # 66 MB; the file's size as published was not readable here.
            approx_bytes=66_200_000,
            fmt="torch",
            hf_repo="JusperLee/Apollo",
            licence="CC BY-SA 4.0, its model card",
            # sha256: not known here (the hub shows it on the file's page; we could not read it).
            # Its layout (look2hear's BaseModel.serialize): {"model_name": "Apollo", "state_dict",
            # "model_args", "infos"}; it reads as tensors once TorchVersion (a str) is allowed.
        ),
        ModelSpec(
            name="apollo-universal",
            filename="apollo/apollo_universal_model.ckpt",
            url="https://huggingface.co/ASesYusuf1/Apollo_universal_model/resolve/main/apollo_universal_model.ckpt",
            purpose="Apollo community \"universal\" restoration for any lossy codec (Lew; feature_dim 384), "
                    "12_apollo with apollo.model=universal",
            variants=("12_apollo",),
            # 36.6 M float32 parameters make 146 MB; a Lightning checkpoint that also keeps the
            # discriminator or optimizer state is larger. Its size as published is not known here.
            approx_bytes=146_500_000,
            fmt="torch",
            hf_repo="ASesYusuf1/Apollo_universal_model",
            licence="not stated by its publisher",
            # sha256: unknown. A Lightning checkpoint ({"state_dict": {"audio_model.*": ...}, ...});
            # if its pickle names more than tensors it is refused unless --trust-model-file names it.
        ),
        _demucs("htdemucs", "Demucs v4 hybrid transformer, one model, 4 stems (separate.model=htdemucs)",
                ("955717e8-8726e21a.th",), 84_000_000),
        _demucs("htdemucs_ft", "Demucs v4 fine-tuned bag of 4 models, one per stem (separate.model=htdemucs_ft; what auto takes without SCNet XL IHF)",
                ("f7e0c4bc-ba3fe64a.th", "d12395a8-e57c48e6.th", "92cfc3b6-ef3bcb9c.th", "04573f0d-f3cf25b2.th"),
                84_000_000),
        _demucs("htdemucs_6s", "Demucs v4, 6 stems: adds guitar and piano (separate.model=htdemucs_6s)",
                ("5c90dfd2-34c22ccb.th",), 55_000_000),
        # The msst separators (04-07 with separate.model=NAME): their files as the MSST project
        # publishes them (docs/pretrained_models.md), read as tensors only.
        ModelSpec(
            name="scnet_xl_ihf",
            filename="msst/model_scnet_ep_36_sdr_10.0891.ckpt",
            url=MSST_RELEASES + "v1.0.15/model_scnet_ep_36_sdr_10.0891.ckpt",
            purpose="SCNet XL IHF, 4 stems, MUSDB18-HQ test SDR avg 10.08 (separate.model=scnet_xl_ihf; "
                    "what separate.model=auto takes when present)",
            variants=("04_stems",),
            # 53.47 M float32 parameters with the config below make 213.87 MB: the published
            # file's 214,063,778 bytes (and sha256, as another project pins them) fit that.
            approx_bytes=214_063_778,
            fmt="torch",
            sha256="ac25975f0f5704f3d1a3c3c251505b7a0f417a22eafe82773440ee4f7e14b74f",
            licence="MIT (a release asset of the MIT-licensed MSST repository; trained on MUSDB18-HQ only)",
            # config_musdb18_scnet_xl_more_wide_v5.yaml (release v1.0.15). dims, band_stride,
            # num_dplayer, chunk_size and num_overlap as read from that file by another
            # project's test; band_kernel and conv_depths as another project's copy gives them
            # (the parameter count then matches the file's size); band_SR as in the repository's
            # config_musdb18_scnet_large.yaml. A value that differs from the real file fails the
            # load (strict) with the file named, it does not run wrong.
            config={"class": "scnet", "instruments": FOUR, "chunk_size": 485_100, "num_overlap": 4,
                    "model": {"sources": list(FOUR), "audio_channels": 2, "dims": [4, 64, 128, 256], "nfft": 4096,
                              "hop_size": 1024, "win_size": 4096, "normalized": True,
                              "band_SR": [0.225, 0.372, 0.403], "band_stride": [1, 4, 4], "band_kernel": [3, 4, 4],
                              "conv_depths": [3, 3, 3], "compress": 4, "conv_kernel": 3, "num_dplayer": 8,
                              "expand": 1}},
        ),
        ModelSpec(
            name="bs_roformer",
            filename="msst/model_bs_roformer_ep_17_sdr_9.6568.ckpt",
            url=MSST_RELEASES + "v1.0.12/model_bs_roformer_ep_17_sdr_9.6568.ckpt",
            purpose="BS-RoFormer 384x8, 4 stems, MUSDB18-HQ test SDR avg 9.65 (separate.model=bs_roformer)",
            variants=("04_stems",),
            approx_bytes=526_816_656,   # 131.7 M float32 parameters; the file's size not known here
            fmt="torch",
            licence="MIT (a release asset of the MIT-licensed MSST repository; trained on MUSDB18-HQ only)",
            # config_bs_roformer_384_8_2_485100.yaml (release v1.0.12), as the repository's copy
            # configs/sage/config_musdb18_bs_roformer_384_8_2_485100_sage.yaml gives it (less
            # its SageAttention switch, which this msst's class does not take).
            config={"class": "bs_roformer", "instruments": FOUR, "chunk_size": 485_100, "num_overlap": 2,
                    "model": _roformer(384, 8, 4, mlp_expansion_factor=2)},
        ),
        ModelSpec(
            name="bs_roformer_vocals",
            filename="msst/model_bs_roformer_ep_317_sdr_12.9755.ckpt",
            url="https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
                "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
            purpose="BS-RoFormer 512x12 (viperx), vocals + instrumental (the mix minus the vocals); "
                    "Multisong vocals SDR 10.87 (separate.model=bs_roformer_vocals)",
            variants=("04_stems",),
            approx_bytes=639_032_368,   # 159.8 M float32 parameters; the file's size not known here
            fmt="torch",
            licence="not stated by its publisher (UVR's public model repository): never the default",
            # configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml
            config={"class": "bs_roformer", "instruments": ("vocals", "other"), "target": "vocals",
                    "chunk_size": 352_800, "num_overlap": 2, "model": _roformer(512, 12, 1)},
        ),
    )
}


def published_file(name: str) -> tuple[ModelSpec, ModelFile] | None:
    """The catalogue's record of the file called `name` (a file name, no folder), if any."""
    for spec in CATALOGUE.values():
        for f in spec.files():
            if Path(f.filename).name == name:
                return spec, f
    return None


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
    """Where huggingface_hub keeps downloads, by the rules of huggingface_hub.constants
    (without importing it): $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
    else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


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


_hashes: dict[tuple, str] = {}
_HEX = frozenset("0123456789abcdef")


def _is_sha256(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and set(text) <= _HEX


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per version of the file (path, size, mtime and ctime),
    remembered in memory and in `fingerprints.json` in the user's cache, so that a
    multi-gigabyte checkpoint is not read again to plan every run (best effort: a cache
    that cannot be written only costs time). ctime is in the key because a program can set
    a file's mtime back but not its ctime: a file rewritten in place is hashed again. What
    only this cache vouches for is never enough to unpickle a file in full: that path
    hashes the bytes it reads (restore/models/checkpoints.py)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _hashes:
        return _hashes[key]
    store = default_models_dir().parent / "fingerprints.json"
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    text_key = "|".join(map(str, key))
    if not _is_sha256(known.get(text_key)):   # absent, or a 16-digit fingerprint of an older version
        known[text_key] = hash_file(path, "sha256")
        try:
            write_bytes_atomic(store, json.dumps(known, indent=0).encode("utf-8"), "remembering a model's hash")
        except Exception:
            pass
    _hashes[key] = known[text_key]
    return known[text_key]


def model_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the file's sha256: what goes into a variant's versions, so
    that other weights redo the songs (hashed once per version of the file: file_sha256)."""
    return file_sha256(path)[:16]


def model_version(spec: ModelSpec, folder: Path) -> str:
    """What a stage puts in its versions for its weights: "<name>:<fingerprint>", or "missing"."""
    path = find_model(spec, folder)
    return "missing" if path is None else f"{spec.name}:{model_fingerprint(path)}"


def _recorded_hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_hash(path: Path) -> str | None:
    """The sha256 `fetch` recorded beside the file when it downloaded it, if any."""
    try:
        words = _recorded_hash_path(path).read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return None
    return words[0].lower() if words and _is_sha256(words[0].lower()) else None


@dataclass(frozen=True)
class FileCheck:
    """What the catalogue says about one model file. `status`:
    - "published": its sha256 is the published file's (the catalogue records it);
    - "prefix": the catalogue knows only a prefix of the published sha256 (Demucs's file
      names carry 8 hex digits) and it matches: a damaged or other file is caught, a forged
      one is not;
    - "recorded": no published hash is known, and it matches the hash `fetch` recorded when
      it downloaded the file from the publisher;
    - "unverified": there is nothing to compare it with;
    - "mismatch": it differs from the published or recorded hash (`detail` says how).
    Only "published" (or the person's own --trust-model-file) lets a file be unpickled in
    full; everything else is read as tensors only."""

    path: Path
    status: str
    sha256: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "mismatch"


def file_of(spec: ModelSpec, path: Path) -> ModelFile:
    """The catalogue's record for `path`: the model file of that name, else the main one
    (a Hugging Face snapshot keeps the main file under its own name)."""
    return next((f for f in spec.files() if Path(f.filename).name == path.name), spec.files()[0])


def check_file(spec: ModelSpec, path: Path, expected: ModelFile | None = None) -> FileCheck:
    """Compare the file at `path` with the catalogue's record (`expected`, else the record
    of its name in `spec`): the published sha256, else the published prefix, else the hash
    recorded at fetch. Cheap after the first time (file_sha256 remembers)."""
    record = expected or file_of(spec, path)
    digest = file_sha256(path)
    if record.sha256:
        if digest == record.sha256:
            return FileCheck(path, "published", digest, "sha256 matches the published file")
        return FileCheck(path, "mismatch", digest,
                         f"sha256 {digest[:12]}... is not the published file's {record.sha256[:12]}...")
    if record.sha256_prefix:
        if digest.startswith(record.sha256_prefix):
            return FileCheck(path, "prefix", digest,
                             f"sha256 starts with {record.sha256_prefix}, as the published file's name says")
        return FileCheck(path, "mismatch", digest,
                         f"sha256 {digest[:12]}... does not start with {record.sha256_prefix}, as the published file's does")
    recorded = recorded_hash(path)
    if recorded:
        if digest == recorded:
            return FileCheck(path, "recorded", digest, "sha256 matches the one recorded when it was fetched")
        return FileCheck(path, "mismatch", digest,
                         f"sha256 {digest[:12]}... differs from the {recorded[:12]}... recorded when it was fetched")
    return FileCheck(path, "unverified", digest,
                     f"sha256 {digest[:12]}...: no published hash is known for it and `mp3restore models fetch` did not fetch it")


def format_problem(fmt: str, path: Path) -> str | None:
    """None if the file looks like a `fmt` file (without reading what it holds), else why not."""
    if fmt in ("torch", "demucs"):  # torch.save: a zip archive with data.pkl, or a legacy pickle
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if not any(n.endswith("data.pkl") for n in z.namelist()):
                    return "not a torch checkpoint (a zip archive without data.pkl)"
        else:
            with open(path, "rb") as fh:
                if fh.read(1) != b"\x80":
                    return "not a torch checkpoint (neither a zip archive nor a pickle)"
    if fmt == "torchscript":
        if not zipfile.is_zipfile(path):
            return "not a TorchScript file (not a zip archive)"
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n.endswith("data.pkl") for n in names) or not any("/code/" in n for n in names):
            return "not a TorchScript file (no code/ or data.pkl inside: perhaps a plain state dict)"
    return None


def verify(spec: ModelSpec, path: Path) -> str | None:
    """None if the file at `path` is a sound copy of `spec`, else the reason it is not:
    the published hash (or its prefix) where known, else the hash recorded when it was
    fetched; and the format (a TorchScript file is a zip archive with code and data). A file
    with nothing to compare it with passes (`check_file` says "unverified")."""
    check = check_file(spec, path)
    if not check.ok:
        return f"hash mismatch ({check.detail}): the file is damaged or another version"
    return format_problem(spec.fmt, path)


def _download_problem(spec: ModelSpec, record: ModelFile, tmp: Path) -> str | None:
    digest = hash_file(tmp, "sha256")
    if record.sha256 and digest != record.sha256:
        return f"its sha256 {digest[:12]}... is not the published {record.sha256[:12]}..."
    if record.sha256_prefix and not digest.startswith(record.sha256_prefix):
        return f"its sha256 {digest[:12]}... does not start with {record.sha256_prefix}, as its name says"
    return format_problem(spec.fmt, tmp)


def fetch(spec: ModelSpec, folder: Path, progress: Callable[[int, int | None], None] = lambda done, total: None) -> list[Path]:
    """Download every file of `spec` into `folder` (each atomically; one already there and
    sound is kept), check each against the catalogue (published sha256 or prefix) and its
    format, and record its sha256 beside it. Returns the files. Raises RestoreError with a
    clear reason when there is no network or a file is bad (nothing bad is left behind)."""
    done_files = []
    for record in spec.files():
        target = folder / record.filename
        if target.is_file() and check_file(spec, target, record).status in ("published", "prefix", "recorded"):
            done_files.append(target)
            continue
        try:
            with urllib.request.urlopen(record.url, timeout=30) as response, atomic_output(target, "downloading") as tmp:
                total = int(response.headers.get("Content-Length") or 0) or None
                done = 0
                with open(tmp, "wb") as out:
                    for chunk in iter(lambda: response.read(1 << 16), b""):
                        out.write(chunk)
                        done += len(chunk)
                        progress(done, total)
                problem = _download_problem(spec, record, tmp)
                if problem:
                    raise RestoreError(f"downloaded {spec.name} but {problem}", record.url)
        except OSError as exc:  # URLError is an OSError: no network, DNS, refused, timeout
            raise RestoreError(f"cannot download {spec.name} ({getattr(exc, 'reason', exc)})", record.url,
                               f"download it by hand and put it in {target.parent}") from exc
        _recorded_hash_path(target).write_text(f"{hash_file(target, 'sha256')}  {Path(record.filename).name}\n")
        done_files.append(target)
    return done_files
