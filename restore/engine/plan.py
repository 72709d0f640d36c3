"""Plan: songs x variants -> jobs, each done, to do (and why), or unavailable here (and
why). Pure: reads the `_done` markers, never audio, never models, never writes."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from restore.engine.markers import check_marker, config_hash, marker_path
from restore.engine.scan import ScanResult, Track
from restore.stages import StageEnv, StageProtocol, get_stage
from restore.engine.variants import VARIANTS, Variant
from restore.io.writers import fit_name


@dataclass
class Job:
    track: Track
    variant: Variant
    output: Path          # the final FLAC; for a stems variant, the song's folder of stem FLACs
    marker: Path
    config: dict
    config_hash: str
    versions: dict
    todo: bool
    reason: str           # "new", "input changed", "done", or why it is unavailable
    unavailable: bool = False
    libraries: dict = field(default_factory=dict)   # recorded in the marker, never compared


@dataclass
class Plan:
    out_dir: Path
    jobs: list[Job]
    problems: list[tuple[Path, str]] = field(default_factory=list)  # inputs that cannot run
    variants: list[Variant] = field(default_factory=list)
    stages: "Stages | None" = None  # the stage instances the run processes with
    warnings: list[tuple[Path, str]] = field(default_factory=list)  # inputs skipped, not failed (the scan's)

    def work(self, order: str = "song") -> list[tuple[Track, list[Job]]]:
        """The jobs still to do, grouped into work items in run order.
        "song": one item per song with all its variants (the decode shared; earliest
        complete songs). "stage": one item per variant and song, variant by variant (each
        model loaded once and used for every song before the next; best for overnight
        batches whose models do not fit in memory together)."""
        todo = [j for j in self.jobs if j.todo]
        if order == "stage":
            return [(j.track, [j]) for v in self.variants for j in todo if j.variant is v]
        by_song: dict[Path, tuple[Track, list[Job]]] = {}
        for job in todo:
            by_song.setdefault(job.track.path, (job.track, []))[1].append(job)
        return list(by_song.values())

    @property
    def done_jobs(self) -> list[Job]:
        return [j for j in self.jobs if not j.todo and not j.unavailable]

    @property
    def unavailable_jobs(self) -> list[Job]:
        return [j for j in self.jobs if j.unavailable]


class Stages:
    """Every stage a set of variants uses, each built once from the env (options parsed and
    checked: a bad one is a UsageError here, before any song; nothing loaded). The plan asks
    them for configs, versions and availability, and the run processes with these same
    instances. A stage that runs other stages (route) names them in `uses()`: they are
    built here too, so that the run loads each once, however many stages use it."""

    def __init__(self, variants, env: StageEnv):
        self.env = env
        self.by_name: dict[str, StageProtocol] = {}
        todo = sorted({"decode", *(s for v in variants for s in v.steps)})
        while todo:
            name = todo.pop(0)
            if name not in self.by_name:
                self.by_name[name] = get_stage(name, env)
                todo += [u for u in self.uses(name) if u not in self.by_name]
        self._why: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> StageProtocol:
        return self.by_name[name]

    def uses(self, name: str) -> tuple[str, ...]:
        """The stages stage `name` runs inside itself (route: its stems' chains), or ()."""
        uses = getattr(self.by_name[name], "uses", None)
        return tuple(uses()) if uses else ()

    def steps_with_uses(self, variant: Variant) -> list[str]:
        """The variant's steps and every stage they run inside them."""
        out: list[str] = []
        for step in variant.steps:
            for name in (step, *self.uses(step)):
                if name not in out:
                    out.append(name)
        return out

    def song_versions(self, variant: Variant, track: Track, cache: dict) -> dict:
        """What decides the variant's output for this one song besides the config: the files
        a stage reads for it (stems_from: the song's stem files), as `{"stage.key": value}`.
        Asked once per stage and song (`cache`)."""
        out = {}
        for step in variant.steps:
            per_song = getattr(self.by_name[step], "song_versions", None)
            if per_song is not None:
                if (step, track.rel) not in cache:
                    cache[step, track.rel] = per_song(track.rel)
                out.update({f"{step}.{k}": v for k, v in cache[step, track.rel].items()})
        return out

    def why_unavailable(self, name: str) -> str | None:
        """Why stage `name` cannot run here (asked once per stage), or None."""
        if name not in self._why:
            self._why[name] = self.by_name[name].unavailable()
        return self._why[name]

    def variant_status(self, variant: Variant) -> str | None:
        """Why `variant` cannot run here (its first stage that cannot), or None: it can."""
        return next((why for why in map(self.why_unavailable, variant.steps) if why), None)


def variant_status(variants, env: StageEnv | None = None) -> dict[str, str | None]:
    """{variant name: None if it can run here, else why not}: the one answer the CLI's
    `variants`, the menu and the default variant set all use."""
    variants = list(variants)
    stages = Stages(variants, env or StageEnv())
    return {v.name: stages.variant_status(v) for v in variants}


def default_variants(stages: Stages, variants=None) -> list[Variant]:
    """Every default variant (of `variants`, else the table) whose stages can run here (the
    baseline always can)."""
    return [v for v in (variants or VARIANTS.values()) if v.default and stages.variant_status(v) is None]


def stems_from_files(variants, env: StageEnv) -> list[Variant]:
    """With a stems folder given (`--stems-from DIR`, i.e. the stems_from stage's `folder`
    option), every variant's `separate` step is `stems_from`: the stems come from the files
    instead of Demucs. The variant keeps its name; its config names the step that ran, so a
    song made one way is redone the other."""
    if not env.options_for("stems_from").get("folder"):
        return list(variants)
    return [replace(v, steps=tuple("stems_from" if s == "separate" else s for s in v.steps)) for v in variants]


def output_path(out_dir: Path, variant: Variant, track: Track) -> Path:
    """OUT/<variant>/Artist/Album/Song.flac, or for stems the folder OUT/<variant>/Artist/Album/Song/.
    A FLAC name that would pass the file system's limit (a 255-byte Song.mp3) is cut, with a hash."""
    rel = Path(*track.output_rel("").parts)
    return out_dir / variant.name / (rel if variant.stems else rel.with_name(fit_name(rel.name, ".flac")))


def make_plan(scan: ScanResult, variants: list[Variant] | None, out_dir: Path, verify: str = "quick",
              redo: bool = False, env: StageEnv | None = None, stages: "Stages | None" = None) -> Plan:
    """Every (song, variant) job of the scan. `stages`: instances already built for these
    variants (a cluster worker plans each song with the ones it keeps loaded)."""
    env = env or StageEnv()
    candidates = stems_from_files(variants if variants is not None else VARIANTS.values(), env)
    stages = stages or Stages(candidates, env)
    variants = candidates if variants is not None else default_variants(stages, candidates)
    configs = {n: s.config() for n, s in stages.by_name.items()}
    versions = {n: s.versions() for n, s in stages.by_name.items()}
    libraries = {n: s.library_versions() for n, s in stages.by_name.items()}
    hashes: dict = {}  # an input is hashed once however many variants check it
    per_song: dict = {}
    jobs = []
    problems = list(scan.problems)
    limit = None if long_paths_allowed() else WINDOWS_MAX_PATH
    for track in scan.tracks:
        outputs = {v.name: output_path(out_dir, v, track) for v in variants}
        too_long = path_too_long(list(outputs.values()), limit)
        if too_long:
            problems.append((track.path, too_long))
            continue
        for variant in variants:
            cfg = variant.config(configs)
            ver = {f"{s}.{k}": v for s in ("decode", *variant.steps) for k, v in versions[s].items()}
            ver.update(stages.song_versions(variant, track, per_song))
            h = config_hash(cfg)
            marker = marker_path(out_dir, variant.name, track.rel)
            why_not = stages.variant_status(variant)
            unavailable = False
            if why_not:
                todo, reason, unavailable = False, why_not, True
            elif redo:
                todo, reason = True, "--redo"
            else:
                check = check_marker(marker, track.path, out_dir, h, ver, verify, hashes)
                todo, reason = not check.done, check.reason
            libs = {f"{s}.{k}": v for s in ("decode", *variant.steps) for k, v in libraries[s].items()}
            jobs.append(Job(track, variant, outputs[variant.name],
                            marker, cfg, h, ver, todo, reason, unavailable, libs))
    return Plan(out_dir, jobs, problems, list(variants), stages, list(scan.warnings))


WINDOWS_MAX_PATH = 259   # MAX_PATH is 260 characters with the terminating NUL
# What a write adds to an output's path at most: the temporary name beside it, a stem's name.
_WRITE_MARGIN = 40


def long_paths_allowed() -> bool:
    """Whether paths may be longer than Windows' 260 characters: always off Windows; on
    Windows when long paths are enabled (python.exe itself is long-path aware)."""
    if sys.platform != "win32":
        return True
    try:
        import winreg
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            return winreg.QueryValueEx(key, "LongPathsEnabled")[0] == 1
    except OSError:
        return False


def path_too_long(outputs: list[Path], limit: int | None) -> str | None:
    """Why a song's outputs cannot be written under a path-length limit (None: they can)."""
    if limit is None or not outputs:
        return None
    longest = max(outputs, key=lambda p: len(str(p)))
    length = len(str(longest)) + _WRITE_MARGIN
    if length <= limit:
        return None
    return (f"its output path would be about {length} characters, over Windows' {limit + 1}-character limit "
            f"({longest.parent.name}/{longest.name}): use a shorter output folder, or enable long paths in Windows")
