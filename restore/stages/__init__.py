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
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..audio import Audio

_REGISTRY = {
    "decode": "restore.stages.decode:DecodeStage",
    "bwe_hifigan": "restore.stages.bwe_hifigan:HifiganBweStage",
    "bwe_audiosr": "restore.stages.bwe_audiosr:AudioSrStage",
    "lowpass": "restore.stages.lowpass:LowpassStage",
    "separate": "restore.stages.separate:DemucsStage",
    "denoise": "restore.stages.denoise:DeepFilterStage",
    "offline_restore": "restore.stages.offline_restore:OfflineRestoreStage",
}


@dataclass(frozen=True)
class StageEnv:
    """What a stage needs to know about this installation (not about a song)."""

    models_dir: Path | None = None   # None: $MP3RESTORE_MODELS or the user's cache
    # Per-stage options by stage name, e.g. {"bwe_audiosr": {"ddim_steps": "50"}}: from the
    # CLI's `--set STAGE.KEY=VALUE` (values are strings) or typed values from the library.
    # A stage reads its own in __init__, parses and validates them (UsageError on a bad one)
    # and puts them in config(), so a changed option redoes the step.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options_for(self, stage: str) -> dict[str, Any]:
        return dict(self.options.get(stage, {}))


class Stage(Protocol):
    name: str

    def versions(self) -> dict[str, Any]: ...
    def config(self) -> dict[str, Any]: ...
    def load(self, device: str | None = None) -> None: ...
    def process(self, audio: Audio, ctx: "StageContext") -> Audio | dict[str, Audio]: ...


@dataclass
class StageContext:
    """What a stage may use besides its audio: options, a log line sink and a progress sink.
    Stages never print and never touch output files."""

    options: dict[str, Any] = field(default_factory=dict)  # the song's facts: cutoff_hz (int or None)
    log: Callable[[str], None] = lambda line: None
    progress: Callable[[float], None] = lambda fraction: None
    # What a stage measured and wants in the marker and the report (e.g. the lowpass it
    # used, a stem sum residual): the pipeline merges it into the job's facts.
    facts: dict[str, Any] = field(default_factory=dict)


def package_version(name: str) -> str:
    """An installed package's version, or "absent": cheap (reads metadata, imports nothing),
    for a stage's versions() and unavailable()."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def get_stage(name: str, env: StageEnv | None = None) -> Stage:
    """A new instance of the stage registered under `name`. Constructing a stage is cheap
    (no torch import, no weights): `unavailable()`, `versions()` and `config()` can be
    asked before deciding to `load()` it."""
    try:
        module_name, class_name = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"no stage named {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return getattr(importlib.import_module(module_name), class_name)(env or StageEnv())
