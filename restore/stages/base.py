"""What every stage shares: the stage contract (Stage, and ModelStage for stages backed by
model files), the installation facts a stage is built with (StageEnv), what it may use while
processing a song (StageContext), and package versions.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from restore.audio import Audio
from restore.models.checkpoints import is_trusted, verified_or_refused
from restore.models.store import models_dir, require_model
from restore.stages.options import Option, parse_options


@dataclass(frozen=True)
class StageEnv:
    """What a stage needs to know about this installation (not about a song)."""

    models_dir: Path | None = None   # None: $MP3RESTORE_MODELS or the user's cache
    # Per-stage options by stage name, e.g. {"bwe_audiosr": {"ddim_steps": "50"}}: from the
    # CLI's `--set STAGE.KEY=VALUE` (values are strings) or typed values from the library.
    # A stage parses its own against its declared options (Stage.__init__; UsageError on a
    # bad one) and puts them in config(), so a changed option redoes the step.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Model files the person trusts by name (--trust-model-file): loaded even when they are
    # not the published file, unpickled in full if they need it; the log says so.
    trusted_model_files: tuple[Path, ...] = ()

    def options_for(self, stage: str) -> dict[str, Any]:
        return dict(self.options.get(stage, {}))


class StageProtocol(Protocol):
    """Every member the engine, the plan and the model cache call on a stage."""

    name: str
    revision: int
    options: tuple[Option, ...]

    def unavailable(self) -> str | None: ...
    def versions(self) -> dict[str, Any]: ...
    def library_versions(self) -> dict[str, str]: ...
    def config(self) -> dict[str, Any]: ...
    def memory_bytes(self) -> int: ...
    def load(self, device: Any = None) -> None: ...
    def unload(self) -> None: ...
    def process(self, audio: Audio | dict[str, Audio], ctx: "StageContext") -> Audio | dict[str, Audio]: ...


class Stage:
    """The base of every stage, with the defaults of the contract.

    Subclasses set `name` (the stable id in markers and `--set`), `revision` (bump when the
    output for the same input and options changes: it redoes the step) and `options` (the
    declared options: parsed once here, into `self.opts`, so a bad one is a usage error at
    plan time), and override what differs:
    - `unavailable()`: None, or why the stage cannot run here (a missing package or model);
      cheap: no torch import, no weights.
    - `versions()`: what decides the output besides the config: the revision and the model
      files; a change redoes the step. Library versions are not in it: they are listed in
      `libraries` (every installed package whose version can change the samples, by its
      distribution name), recorded in the marker by `library_versions()` for information and
      never redo a step by themselves: an upgrade that leaves the output alone (a refactor, a
      faster build) keeps a night of GPU work. A change in the output must come with a
      revision bump, and the golden test of every stage (tests/test_golden.py: a fixed input,
      its output's signature recorded beside the revision in tests/golden/stages.json) fails
      when the output changes and the revision does not.
    - `config()`: the parameters that decide the output, hashed into the marker (default:
      the parsed options).
    - `memory_bytes()`: device memory the loaded stage needs (the model cache makes room).
    - `load(device)` / `unload()`: heavy set-up and tear-down, once per run.
    - `process(audio, ctx) -> Audio | {stem: Audio}`: [channels, frames] float32 in and out
      (stems in, for a stage that follows a separating one: restore.audio.Stems);
      keeps the duration exactly (frames scale with the rate) and the channel count, keeps
      loudness unless loudness is its job, never prints, never touches files; says what it
      did through ctx.log and records what it measured or chose in ctx.facts.
    """

    name: ClassVar[str] = ""
    revision: ClassVar[int] = 1
    options: ClassVar[tuple[Option, ...]] = ()
    libraries: ClassVar[tuple[str, ...]] = ("numpy",)   # packages that can change its samples

    def __init__(self, env: StageEnv | None = None):
        self.env = env or StageEnv()
        self.opts: dict[str, Any] = parse_options(self.name, self.options, self.env.options_for(self.name))

    def unavailable(self) -> str | None:
        return None

    def versions(self) -> dict[str, Any]:
        return {self.name: self.revision}

    def library_versions(self) -> dict[str, str]:
        """{package: installed version} of `libraries`: recorded in the marker, never compared."""
        return {lib: package_version(lib) for lib in self.libraries}

    def config(self) -> dict[str, Any]:
        return dict(self.opts)

    def memory_bytes(self) -> int:
        return 0

    def load(self, device: Any = None) -> None:
        pass

    def unload(self) -> None:
        pass

    def process(self, audio: Audio, ctx: "StageContext") -> Audio | dict[str, Audio]:
        raise NotImplementedError(f"stage {self.name} does not process audio")


@dataclass
class StageContext:
    """What a stage may use besides its audio: options, a log line sink and a progress sink,
    the song's decode, and the run's other stages. Stages never print and never touch
    output files.

    options: the song's facts: `cutoff_hz` (int or None, the MP3's lowpass as the decode
        measured it), `bitrate_kbps` (the MP3's, average for VBR) and `song` (its path relative to its input folder, e.g.
        "Artist/Album/Song.mp3", for a stage that finds files of its own per song:
        stems_from).
    source: the song's decoded mixture (Audio [channels, frames] at the MP3's rate, float32),
        the same for every step of every variant of the song, or None outside a run. For a
        stage that needs the song beside what the previous step made of it: the remix adds
        back what the stems miss of it, stems_from checks files against it. Read only: it is
        shared by every variant of the song (and is the input of their first steps).
    loaded: `loaded(name)` is the run's stage registered as `name`, loaded (through the run's
        model cache: one load per run, released when no later song needs it), for a stage
        that runs other stages (route); None outside a run (the stage then loads its own).
    """

    options: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = lambda line: None
    progress: Callable[[float], None] = lambda fraction: None
    # What a stage measured and wants in the marker and the report (e.g. the lowpass it
    # used, a stem sum residual): the pipeline merges it into the job's facts.
    facts: dict[str, Any] = field(default_factory=dict)
    source: Audio | None = None
    loaded: Callable[[str], Any] | None = None


def package_version(name: str) -> str:
    """An installed package's version, or "absent": cheap (reads metadata, imports nothing),
    for a stage's versions() and unavailable()."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


class ModelStage(Stage):
    """A stage backed by model files: where they are (`models_dir`), which ones the person
    trusts by name (`--trust-model-file`), and what loading them found (`load_notes`: lines
    for every song's log; those starting "warning:" also go to the marker's facts, hence
    the report, as `<facts_key>`)."""

    facts_key: ClassVar[str] = ""   # e.g. "bwe_audiosr_model_file"

    def __init__(self, env: StageEnv | None = None):
        super().__init__(env)
        self.models_dir = models_dir(self.env.models_dir)
        self.trusted = tuple(self.env.trusted_model_files)
        self.load_notes: list[str] = []

    def checked_model_file(self, spec, what: str):
        """(path, trusted, check) of this stage's one model file, checked before anything
        reads it (a changed file is refused here: restore/models/checkpoints.py), with what
        the check found put in `load_notes` for every song's log."""
        path = require_model(spec, self.models_dir)
        trusted = is_trusted(path, self.trusted)
        check = verified_or_refused(spec, path, what, trusted)
        if not check.ok:
            note = f"warning: {self.name}: loading {path} because --trust-model-file names it ({check.detail})"
        elif check.status == "unverified" and not trusted:
            note = (f"warning: {self.name}: the model file {path} is not verified ({check.detail}); "
                    f"`mp3restore models fetch {spec.name}` gets one whose hash is recorded")
        else:
            note = f"{self.name}: model file {path}: {check.detail}"
        self.load_notes = [note]
        return path, trusted, check

    def report_load_notes(self, ctx: "StageContext") -> None:
        """Say in the song's log (and, for warnings, its facts) what loading found."""
        for note in self.load_notes:
            ctx.log(note)
        warnings = [n.removeprefix(f"warning: {self.name}: ") for n in self.load_notes if n.startswith("warning:")]
        if warnings:
            ctx.facts[self.facts_key or f"{self.name}_model_files"] = "; ".join(warnings)
