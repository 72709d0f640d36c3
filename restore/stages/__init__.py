"""Stages: one module per engine, found through a lazy registry so that heavy
dependencies (torch, model libraries) are imported only when a stage is used.

Contract (see ARCHITECTURE.md):
- `name`: stable id used in markers and configs.
- `unavailable()`: None, or why the stage cannot run here (a missing model, no torch);
  the plan reports its variants as unavailable instead of failing.
- `versions()`: what decides the output besides the config (stage revision, library
  versions); a change redoes the step on the next run.
- `config()`: the parameters that decide the output; hashed into the marker.
- `load(device)`: heavy set-up, once per run.
- `process(audio, ctx) -> Audio | dict[str, Audio]`: keeps duration exactly and the
  channel count; states any change it makes through ctx.log.
The decode stage is the source: `read(path, ctx) -> (Audio, facts)` instead of process.
"""
from __future__ import annotations

import importlib

from restore.stages.base import Stage, StageContext, StageEnv, package_version

__all__ = ["Stage", "StageContext", "StageEnv", "get_stage", "package_version", "stage_names"]

_REGISTRY = {
    "decode": "restore.stages.decode:DecodeStage",
    "bwe_hifigan": "restore.stages.bwe_hifigan:HifiganBweStage",
    "bwe_audiosr": "restore.stages.audiosr.stage:AudioSrStage",
    "lowpass": "restore.stages.lowpass:LowpassStage",
    "separate": "restore.stages.separate:DemucsStage",
    "denoise": "restore.stages.denoise.stage:DeepFilterStage",
    "offline_restore": "restore.stages.offline_restore.stage:OfflineRestoreStage",
}


def get_stage(name: str, env: StageEnv | None = None) -> Stage:
    """A new instance of the stage registered under `name`. Constructing a stage is cheap
    (no torch import, no weights): `unavailable()`, `versions()` and `config()` can be
    asked before deciding to `load()` it."""
    try:
        module_name, class_name = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"no stage named {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return getattr(importlib.import_module(module_name), class_name)(env or StageEnv())


def stage_names() -> list[str]:
    """Every registered stage, sorted."""
    return sorted(_REGISTRY)
