"""Two runs pointed at the same output folder split the work; nothing is done twice or
corrupted."""
import json
import subprocess
import sys

from tests.support.examples import band
from restore.io.lame import encode_mp3
from restore.io.writers import TMP_MARK, hash_file

from .conftest import ROOT


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
