"""Plan: songs x variants -> jobs, each already done or to do (and why). Pure: reads the
`_done` markers, never audio, never models, never writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .markers import check_marker, config_hash, marker_path
from .scan import ScanResult, Track
from .stages import get_stage
from .variants import Variant


@dataclass
class Job:
    track: Track
    variant: Variant
    output: Path          # the final FLAC
    marker: Path
    config: dict
    config_hash: str
    versions: dict
    todo: bool
    reason: str           # "new", "input changed", "done", ...


@dataclass
class Plan:
    out_dir: Path
    jobs: list[Job]
    problems: list[tuple[Path, str]] = field(default_factory=list)  # inputs that cannot run

    def songs_with_work(self) -> list[tuple[Track, list[Job]]]:
        """Songs in scan order with their jobs still to do (song-major order)."""
        by_song: dict[Path, tuple[Track, list[Job]]] = {}
        for job in self.jobs:
            if job.todo:
                by_song.setdefault(job.track.path, (job.track, []))[1].append(job)
        return list(by_song.values())

    @property
    def done_jobs(self) -> list[Job]:
        return [j for j in self.jobs if not j.todo]


def stage_facts(variants: list[Variant]) -> tuple[dict[str, dict], dict[str, dict]]:
    """(config, versions) of every stage the variants use, by stage name."""
    names = {"decode", *(s for v in variants for s in v.steps)}
    stages = {n: get_stage(n) for n in names}
    return {n: s.config() for n, s in stages.items()}, {n: s.versions() for n, s in stages.items()}


def make_plan(scan: ScanResult, variants: list[Variant], out_dir: Path, verify: str = "quick", redo: bool = False) -> Plan:
    configs, versions = stage_facts(variants)
    hashes: dict = {}  # an input is hashed once however many variants check it
    jobs = []
    for track in scan.tracks:
        for variant in variants:
            cfg = variant.config(configs)
            ver = {f"{s}.{k}": v for s in ("decode", *variant.steps) for k, v in versions[s].items()}
            h = config_hash(cfg)
            marker = marker_path(out_dir, variant.name, track.rel)
            if redo:
                todo, reason = True, "--redo"
            else:
                check = check_marker(marker, track.path, out_dir, h, ver, verify, hashes)
                todo, reason = not check.done, check.reason
            jobs.append(Job(track, variant, out_dir / variant.name / Path(*track.output_rel(".flac").parts),
                            marker, cfg, h, ver, todo, reason))
    return Plan(out_dir, jobs, list(scan.problems))
