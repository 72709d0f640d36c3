"""The run configuration: what the CLI and the menu both build, and all the library needs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .variants import Variant, resolve_variants

VERIFY_LEVELS = ("quick", "full")


@dataclass
class RunConfig:
    inputs: list[str]                 # as typed; scan cleans them
    out_dir: Path
    variants: list[Variant] = field(default_factory=lambda: resolve_variants(None))
    verify: str = "quick"             # how resume checks compare files (see markers)
    redo: bool = False                # ignore markers and redo every step
    accept_damaged: bool = False      # restore truncated/damaged MP3s as far as they go
    dry_run: bool = False             # plan only, write nothing
    debug: bool = False               # tracebacks on the console
