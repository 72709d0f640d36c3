"""What every stage shares: the stage contract, the installation facts a stage is built with
(StageEnv), what it may use while processing a song (StageContext), and package versions.
Imports only restore.audio and restore.errors.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from restore.audio import Audio


@dataclass(frozen=True)
class StageEnv:
    """What a stage needs to know about this installation (not about a song)."""

    models_dir: Path | None = None   # None: $MP3RESTORE_MODELS or the user's cache
    # Per-stage options by stage name, e.g. {"bwe_audiosr": {"ddim_steps": "50"}}: from the
    # CLI's `--set STAGE.KEY=VALUE` (values are strings) or typed values from the library.
    # A stage reads its own in __init__, parses and validates them (UsageError on a bad one)
    # and puts them in config(), so a changed option redoes the step.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Model files the person trusts by name (--trust-model-file): loaded even when they are
    # not the published file, unpickled in full if they need it; the log says so.
    trusted_model_files: tuple[Path, ...] = ()

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
