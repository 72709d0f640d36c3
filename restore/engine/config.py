"""The run configuration: what the CLI and the menu both build, and all the library needs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from restore.engine.variants import Variant

VERIFY_LEVELS = ("quick", "full")


@dataclass
class RunConfig:
    inputs: list[str]                 # as typed; scan cleans them
    out_dir: Path
    variants: list[Variant] | None = None  # None: every variant that can run here (models present)
    verify: str = "quick"             # how resume checks compare files (see markers)
    redo: bool = False                # ignore markers and redo every step
    accept_damaged: bool = False      # restore truncated/damaged MP3s as far as they go
    strict: bool = False              # an asked-for variant that cannot run here counts as failed (exit 1)
    dry_run: bool = False             # plan only, write nothing
    debug: bool = False               # tracebacks on the console
    device: str = "auto"              # auto, cuda, mps or cpu: where model stages run
    models_dir: Path | None = None    # None: $MP3RESTORE_MODELS or the user's cache
    report: bool = True               # write the compare report (_report/) at the end of the run
    reference: Path | None = None     # lossless originals for the report's reference metrics
    order: str = "song"               # "song": all variants of a song, then the next;
                                      # "stage": one variant across all songs, then the next
    stems_from: Path | None = None    # a folder of stems made elsewhere (UVR, audio-separator, an
                                      # earlier 04_stems): used instead of Demucs for 04-07
    # Per-stage options by stage name ({"denoise": {"atten_db": "9"}}); each stage parses and
    # validates its own (`--set STAGE.KEY=VALUE` on the command line).
    stage_options: dict[str, dict[str, object]] = field(default_factory=dict)
    # Model files to load even if they are not the published file (--trust-model-file):
    # a full unpickle runs whatever the file names. The run log and each song's log say so.
    trusted_model_files: tuple[Path, ...] = ()
    # A Dask scheduler (tcp://HOST:8786): the songs run on its workers (engine/cluster.py).
    cluster: str | None = None
    # The code page of tag text marked Latin-1 that is neither ASCII nor UTF-8 (--tag-codepage
    # cp1251: old Russian taggers); None: Latin-1 as marked.
    tag_codepage: str | None = None
    # Songs at once on this machine (--jobs): over 1, worker processes of a private Dask
    # cluster on 127.0.0.1 (engine/localcluster.py).
    jobs: int = 1
    # CLIENT=WORKER path prefixes for workers that mount the shared folders elsewhere.
    path_map: tuple[str, ...] = ()
