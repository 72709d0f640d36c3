"""Two runs pointed at the same output folder split the work; nothing is done twice or
corrupted."""
import json
import os
import signal
import subprocess
import sys
from unittest.mock import ANY

from tests.support.examples import band
from restore.io.lame import encode_mp3
from restore.io.writers import TMP_MARK, hash_file

from .conftest import ROOT
from .test_crash import _wait_for as wait_for_checkpoint


def test_two_runs_at_once_share_the_work(tmp_path):
    library = tmp_path / "in"
    for i in range(6):
        p = library / f"{i:02d} Song.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_mp3(band(5.0, seed=i), bitrate=128))
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "mp3restore.py"), "run", str(library), "--out", str(out), "-q", "--json", "--no-report",
           "--variants", "01_baseline"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]

    done = [r["song"] for res in results for r in res["results"] if r["status"] == "done"]
    assert sorted(done) == sorted(set(done)), "a song was written by both runs"
    # Every song was done by exactly one run; the other skipped it or left it to the first.
    assert sorted(done) == [f"{i:02d} Song.mp3" for i in range(6)]
    for res in results:
        assert {r["status"] for r in res["results"]} <= {"done", "skipped", "busy"}

    flacs = sorted((out / "01_baseline").glob("*.flac"))
    assert len(flacs) == 6 and not [p for p in out.rglob("*") if TMP_MARK in p.name]
    for marker in (out / "_done" / "01_baseline").glob("*.json"):
        (o,) = json.loads(marker.read_text())["outputs"]
        assert hash_file(out / o["path"]) == o["hash"]


HOLD_CLAIM = """
import sys
from pathlib import Path
from restore.engine.locking import lock_path, try_claim
lock = try_claim(lock_path(Path(sys.argv[1]), sys.argv[2]))
print("held" if lock else "not held", flush=True)
sys.stdin.read()  # hold it until killed (or stdin closes)
"""


def hold_claim(out, key):
    """A real second process holding the claim `key` ("variant/song path") in `out`, as a
    run working on that song does; kill it to free the claim the way a crash does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(out), key], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def _two_songs(tmp_path):
    library = tmp_path / "in"
    library.mkdir()
    for i in range(2):
        (library / f"{i:02d} Song.mp3").write_bytes(encode_mp3(band(2.0, seed=30 + i), bitrate=128))
    return library


def _start_run(library, out, log, *flags):
    return subprocess.Popen([sys.executable, str(ROOT / "mp3restore.py"), "run", str(library), "--out", str(out), *flags,
                             "--json", "--no-report", "--variants", "01_baseline"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MP3RESTORE_CHECKPOINT_LOG": str(log)})


def test_a_claim_freed_by_a_dead_run_is_retried(tmp_path):
    """The run holding a song dies: the surviving run, which waited while the lock said the
    holder lived, takes the song over, does it, and exits 0 (it said 'left to another
    run' and exited 0 with the song undone)."""
    library, out, log = _two_songs(tmp_path), tmp_path / "out", tmp_path / "checkpoints.log"
    holder = hold_claim(out, "01_baseline/00 Song.mp3")
    run = _start_run(library, out, log)   # not -q: one line per finished song
    try:
        wait_for_checkpoint(log, "waiting-for-claim 1", run)
        assert run.poll() is None and (out / "01_baseline" / "01 Song.flac").exists()  # the free song is done
        holder.kill()                       # the holder dies: the OS frees its lock
        holder.wait()
        stdout, stderr = run.communicate(timeout=300)
    finally:
        holder.kill()
        run.kill()
    assert run.returncode == 0, stderr
    summary = json.loads(stdout)
    assert {r["song"]: r["status"] for r in summary["results"]} == {"00 Song.mp3": "done", "01 Song.mp3": "done"}
    assert (out / "01_baseline" / "00 Song.flac").is_file() and summary["exit_code"] == 0
    finished = [line for line in stderr.splitlines() if "00 Song.mp3 (" in line]
    assert len(finished) == 1 and "] done 00 Song.mp3" in finished[0], stderr   # counted once, when done
    assert "another run is working on it; tried again after the other songs" in stderr



def test_work_left_to_another_run_is_not_exit_0(tmp_path):
    from restore.engine.summary import JobResult, RunSummary
    summary = RunSummary(tmp_path, results=[JobResult("a.mp3", "01_baseline", "done"),
                                            JobResult("b.mp3", "01_baseline", "busy", "another run is working on it")])
    assert summary.exit_code == 1


def test_a_run_stopped_while_waiting_says_what_is_left(tmp_path):
    """Ctrl+C while a live run holds a song: exit 130, and the summary (--json and
    last_run.json) names the song left to the other run and why."""
    library, out, log = _two_songs(tmp_path), tmp_path / "out", tmp_path / "checkpoints.log"
    holder = hold_claim(out, "01_baseline/00 Song.mp3")
    run = _start_run(library, out, log, "-q")
    try:
        wait_for_checkpoint(log, "waiting-for-claim 1", run)
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=300)
    finally:
        holder.kill()
        run.kill()
    assert run.returncode == 130, stderr
    summary = json.loads(stdout)
    got = {r["song"]: r for r in summary["results"]}
    assert got["01 Song.mp3"]["status"] == "done" and got["00 Song.mp3"]["status"] == "busy"
    assert "another run" in got["00 Song.mp3"]["reason"]
    assert summary["exit_code"] == 130 and summary["interrupted"] is True
    assert json.loads((out / "_report" / "last_run.json").read_text()) == {**summary, "seconds": ANY}
