"""Randomly initialised HTDemucs models of the published architecture, saved where and how
demucs 4.1's own loader reads them, for the tests and the benchmarks. The product never uses
this module: it loads the published weights through demucs.

Two on-disk layouts, both demucs's own:
- a local repo folder (`demucs.pretrained.get_model(name, repo=folder)`, the legacy AWS
  layout): `<name>.yaml` (the bag: model signatures and per-source weights) beside one
  `<sig>-<sha256[:8]>.th` per model (a torch-saved dict: klass, args, kwargs, state);
- the Hugging Face hub cache (`demucs.hf.get_hf_model`):
  `<cache>/models--adefossez--<HTDemucs-ft>/{refs/main, snapshots/<commit>/<name>.yaml,
  snapshots/<commit>/<sig>.safetensors}`, the class and its arguments as JSON metadata.

The bags use the published signatures and weights (read from the yaml files that demucs
ships in `demucs/remote/`), so a folder made here looks like the real one.

FULL is the published htdemucs (41.98 M parameters per model; the `mmi` grid's released
configuration: depth 4, dconv in encoder and decoder, a 512-channel bottleneck around a
5-layer cross-domain transformer, trained on 7.8 s segments). TINY keeps the class and the
segment but not the width (0.36 M parameters), for fast tests.
"""
from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import torch
import yaml

SOURCES = {4: ["drums", "bass", "other", "vocals"], 6: ["drums", "bass", "other", "vocals", "guitar", "piano"]}
SEGMENT = Fraction(39, 5)    # 7.8 s: what the published transformer models were trained on
FULL = dict(channels=48, depth=4, dconv_mode=3, bottom_channels=512, t_layers=5)
TINY = dict(channels=8, t_layers=1, t_heads=4)


def remote_bag(name: str) -> dict:
    """The bag description demucs ships for `name` (demucs/remote/<name>.yaml)."""
    from demucs.pretrained import REMOTE_ROOT
    return yaml.safe_load((REMOTE_ROOT / f"{name}.yaml").read_text())


def random_htdemucs(sources: list[str], seed: int = 0, **arch) -> torch.nn.Module:
    """An HTDemucs (the real class) with random weights; `arch` overrides TINY (and the
    7.8 s training segment: a shorter one makes tests faster, as every segment is padded to it)."""
    from demucs.htdemucs import HTDemucs
    torch.manual_seed(seed)
    return HTDemucs(sources=list(sources), **{"segment": SEGMENT, **TINY, **arch}).eval()


def _sources_of(name: str) -> list[str]:
    return SOURCES[6 if name.endswith("_6s") else 4]


def save_repo(folder: Path, name: str = "htdemucs_ft", seed: int = 0, with_yaml: bool = True, **arch) -> list[Path]:
    """Write bag `name` (its published signatures) as a local repo folder; returns the
    weight files. Without the yaml, demucs's shipped one must be used to read the folder."""
    from demucs.states import save_with_checksum
    folder.mkdir(parents=True, exist_ok=True)
    bag = remote_bag(name)
    files = []
    for i, sig in enumerate(bag["models"]):
        model = random_htdemucs(_sources_of(name), seed=seed + i, **arch)
        args, kwargs = model._init_args_kwargs
        package = {"klass": type(model), "args": args, "kwargs": kwargs,
                   "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        save_with_checksum(package, folder / f"{sig}.th")
        files.append(next(folder.glob(f"{sig}-*.th")))
    if with_yaml:
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(bag))
    return files


def _to_json(value):
    """demucs.hf's encoding of init arguments (fractions as tagged objects)."""
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def hf_repo_dir(cache: Path, name: str, namespace: str = "adefossez") -> Path:
    from demucs.hf import hf_repo_name
    return cache / f"models--{namespace}--{hf_repo_name(name)}"


def save_hf_cache(cache: Path, name: str = "htdemucs_ft", seed: int = 0, **arch) -> list[Path]:
    """Write bag `name` into a Hugging Face hub cache folder (what HF_HUB_CACHE points at)
    as huggingface_hub lays a download out; returns the weight files."""
    from safetensors.torch import save_file
    bag = remote_bag(name)
    commit = hashlib.sha1(f"{name}-{seed}".encode()).hexdigest()
    repo = hf_repo_dir(cache, name)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    files = []
    for i, sig in enumerate(bag["models"]):
        model = random_htdemucs(_sources_of(name), seed=seed + i, **arch)
        args, kwargs = model._init_args_kwargs
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        klass = f"{type(model).__module__}.{type(model).__name__}"
        path = snapshot / f"{sig}.safetensors"
        save_file(state, str(path), metadata={"klass": klass, "args": json.dumps(_to_json(list(args))),
                                              "kwargs": json.dumps(_to_json(kwargs))})
        files.append(path)
    (snapshot / f"{name}.yaml").write_text(yaml.safe_dump(bag))
    return files
