"""A run killed with SIGKILL at any point leaves no partial output, and a rerun finishes
with outputs identical to an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from restore.io.writers import TMP_MARK, hash_file

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def outputs(out):
    return {p.relative_to(out).as_posix(): hash_file(p) for p in sorted((out / "01_baseline").rglob("*.flac"))
            if TMP_MARK not in p.name}


def temps(out):
    return [p for p in out.rglob("*") if TMP_MARK in p.name]


def wait_for(condition, proc, what, timeout=300.0):
    """Poll `condition` until it holds while `proc` runs; fail if the run ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.005)


def assert_consistent(out, reference):
    """Every visible output is whole (identical to the uninterrupted run's), and every marker
    vouches only for outputs that exist with its hash."""
    for rel, digest in outputs(out).items():
        assert reference[rel] == digest, f"partial or different output visible: {rel}"
    for marker in (out / "_done").rglob("*.json"):
        for o in json.loads(marker.read_text())["outputs"]:
            assert hash_file(out / o["path"]) == o["hash"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.support.examples import band
    from restore.io.lame import encode_mp3
    root = tmp_path_factory.mktemp("crash")
    library = root / "in"
    for i in range(3):
        p = library / "Band" / f"{i + 1:02d} Song.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_mp3(band(4.0, seed=10 + i), bitrate=160))
    proc = run_cli("run", str(library), "--out", str(root / "ref"), "-q")
    assert proc.returncode == 0, proc.stderr
    return library, outputs(root / "ref")


# before-replace counts every atomic write: 1 = song 1's FLAC, 2 = song 1's marker, 3 = song 2's FLAC...
@pytest.mark.parametrize("point", ["mid-audio:1", "before-tags:2", "before-replace:1", "after-output:2",
                                   "before-replace:4", "before-replace:5"])
def test_killed_at_a_checkpoint(tmp_path, reference, point):
    library, ref = reference
    out = tmp_path / "out"
    crashed = run_cli("run", str(library), "--out", str(out), "-q", env={"MP3RESTORE_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert_consistent(out, ref)
    if point.startswith(("mid-audio", "before-tags", "before-replace:1", "before-replace:5")):
        assert temps(out), "the crash should have left a temporary file behind"
    again = run_cli("run", str(library), "--out", str(out), "-q")
    assert again.returncode == 0, again.stderr
    assert outputs(out) == ref
    assert temps(out) == []


@pytest.fixture(scope="module")
def long_library(tmp_path_factory):
    """Three 4-minute songs (seconds of work each), so that a kill at a point the run reports
    always lands while it is still running; and their uninterrupted outputs."""
    from tests.support.examples import band
    from restore.io.lame import encode_mp3
    root = tmp_path_factory.mktemp("crash-long")
    half_minute = encode_mp3(band(30.0, seed=21), bitrate=128)
    for i in range(3):
        (root / "in").mkdir(exist_ok=True)
        (root / "in" / f"{i + 1:02d} Long.mp3").write_bytes(half_minute * 8)
    proc = run_cli("run", str(root / "in"), "--out", str(root / "ref"), "-q")
    assert proc.returncode == 0, proc.stderr
    return root / "in", outputs(root / "ref")


def _wait_for(log, line: str, proc, limit_s: float = 300.0) -> None:
    """Until the run reports `line` in its checkpoint log (it must still be running)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if log.exists() and line in log.read_text().splitlines():
            return
        assert proc.poll() is None, f"the run ended before it reported {line!r}"
        time.sleep(0.005)
    raise AssertionError(f"the run never reported {line!r}")


# Points the run reports: song n's FLAC starts (mid-audio n), an atomic replace is next
# (before-replace: 1 = song 1's FLAC, 2 = its marker, 3 = song 2's FLAC, ...). The kill comes
# from outside, a moment after the report, wherever the run has got to by then.
@pytest.mark.parametrize("point", ["mid-audio 1", "before-replace 1", "before-replace 2", "mid-audio 2",
                                   "before-replace 4", "mid-audio 3"])
def test_killed_mid_run_from_outside(tmp_path, long_library, point):
    library, ref = long_library
    out, log = tmp_path / "out", tmp_path / "checkpoints.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "mp3restore.py"), "run", str(library), "--out", str(out), "-q",
                             "--no-report", "--variants", "01_baseline"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MP3RESTORE_CHECKPOINT_LOG": str(log)})
    try:
        _wait_for(log, point, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL             # the kill landed: the run did not finish first
    assert not (out / "_report" / "last_run.json").exists()  # written only when a run ends
    assert_consistent(out, ref)
    again = run_cli("run", str(library), "--out", str(out), "-q")
    assert again.returncode == 0, again.stderr
    assert outputs(out) == ref and temps(out) == []


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    from tests.support.examples import band
    from restore.io.lame import encode_mp3
    library = tmp_path / "in"
    library.mkdir()
    minute = encode_mp3(band(30.0, seed=5), bitrate=128)
    for i in range(3):
        (library / f"{i} long.mp3").write_bytes(minute * 16)  # 8 minutes each: about 2 s of work
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "mp3restore.py"), "run", str(library), "--out", str(out), "--no-report",
                             "--variants", "01_baseline"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Not after a fixed time (a loaded machine finished first): when a FLAC is being written.
    wait_for(lambda: [p for p in temps(out) if p.suffix == ".flac"], proc, "a FLAC being written")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again" in err
    assert temps(out) == []
    summary = json.loads((out / "_report" / "last_run.json").read_text())
    assert summary["interrupted"] is True and summary["counts"]["done"] < 3
    again = run_cli("run", str(library), "--out", str(out), "-q", "--json")
    assert again.returncode == 0
    statuses = [r["status"] for r in json.loads(again.stdout)["results"]]
    assert sorted(statuses) == sorted(["done"] * (3 - summary["counts"]["done"]) + ["skipped"] * summary["counts"]["done"])
