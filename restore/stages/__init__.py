"""Stages: one module (or package) per engine, found through a lazy registry so that heavy
dependencies (torch, model libraries) are imported only when a stage is used.

The contract is `restore.stages.base.Stage` (defaults for every member; `StageProtocol`
lists them) with options declared as `restore.stages.options.Option`s. The decode stage is
the source: `stream(path, ctx)` / `read(path, ctx)` instead of process.

May import restore.models, restore.analysis, restore.io and the shared values; never the
engine, the report or the UI.
"""
from __future__ import annotations

import importlib

from restore.stages.base import Stage, StageContext, StageEnv, StageProtocol, package_version
from restore.stages.options import Option

__all__ = ["Option", "Stage", "StageContext", "StageEnv", "StageProtocol", "get_stage", "package_version", "stage_names"]

_REGISTRY = {
    "decode": "restore.stages.decode:DecodeStage",
    "bwe_hifigan": "restore.stages.bwe_hifigan:HifiganBweStage",
    "bwe_audiosr": "restore.stages.audiosr.stage:AudioSrStage",
    "lowpass": "restore.stages.lowpass:LowpassStage",
    "separate": "restore.stages.separate:separate_stage",
    "denoise": "restore.stages.denoise.stage:DeepFilterStage",
    "offline_restore": "restore.stages.offline_restore.stage:OfflineRestoreStage",
    "master": "restore.stages.master:MasterStage",
    "stems_from": "restore.stages.stems_from:StemsFromStage",
    "route": "restore.stages.route:RouteStage",
    "remix": "restore.stages.remix:RemixStage",
    "apollo": "restore.stages.apollo:ApolloStage",
}


def get_stage(name: str, env: StageEnv | None = None) -> StageProtocol:
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
