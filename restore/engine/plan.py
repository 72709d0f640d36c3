"""Plan: songs x variants -> jobs, each done, to do (and why), or unavailable here (and
why). Pure: reads the `_done` markers, never audio, never models, never writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from restore.engine.markers import check_marker, config_hash, marker_path
from restore.engine.scan import ScanResult, Track
from restore.stages import StageEnv, get_stage
from restore.engine.variants import VARIANTS, Variant


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


@dataclass
class Plan:
    out_dir: Path
    jobs: list[Job]
    problems: list[tuple[Path, str]] = field(default_factory=list)  # inputs that cannot run
    variants: list[Variant] = field(default_factory=list)

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


def stage_facts(variants: list[Variant], env: StageEnv) -> tuple[dict[str, dict], dict[str, dict], dict[str, str | None]]:
    """(config, versions, why unavailable) of every stage the variants use, by stage name."""
    names = {"decode", *(s for v in variants for s in v.steps)}
    stages = {n: get_stage(n, env) for n in names}
    return ({n: s.config() for n, s in stages.items()}, {n: s.versions() for n, s in stages.items()},
            {n: s.unavailable() for n, s in stages.items()})


def default_variants(env: StageEnv) -> list[Variant]:
    """Every variant whose stages can run here (the baseline always can)."""
    _, _, missing = stage_facts(list(VARIANTS.values()), env)
    return [v for v in VARIANTS.values() if not any(missing[s] for s in v.steps)]


def output_path(out_dir: Path, variant: Variant, track: Track) -> Path:
    """OUT/<variant>/Artist/Album/Song.flac, or for stems the folder OUT/<variant>/Artist/Album/Song/."""
    rel = Path(*track.output_rel(".flac").parts)
    return out_dir / variant.name / (rel.with_suffix("") if variant.stems else rel)


def make_plan(scan: ScanResult, variants: list[Variant] | None, out_dir: Path, verify: str = "quick",
              redo: bool = False, env: StageEnv | None = None) -> Plan:
    env = env or StageEnv()
    variants = variants if variants is not None else default_variants(env)
    configs, versions, missing = stage_facts(variants, env)
    hashes: dict = {}  # an input is hashed once however many variants check it
    jobs = []
    for track in scan.tracks:
        for variant in variants:
            cfg = variant.config(configs)
            ver = {f"{s}.{k}": v for s in ("decode", *variant.steps) for k, v in versions[s].items()}
            h = config_hash(cfg)
            marker = marker_path(out_dir, variant.name, track.rel)
            why_not = next((missing[s] for s in variant.steps if missing[s]), None)
            unavailable = False
            if why_not:
                todo, reason, unavailable = False, why_not, True
            elif redo:
                todo, reason = True, "--redo"
            else:
                check = check_marker(marker, track.path, out_dir, h, ver, verify, hashes)
                todo, reason = not check.done, check.reason
            jobs.append(Job(track, variant, output_path(out_dir, variant, track),
                            marker, cfg, h, ver, todo, reason, unavailable))
    return Plan(out_dir, jobs, list(scan.problems), list(variants))
