"""--cluster: the same batch on a real Dask cluster (a `distributed.LocalCluster` with
worker processes on this machine), with the local run's outputs, markers and crash promises."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from restore.engine.config import RunConfig
from restore.engine.pathmap import PathMap
from restore.engine.run import run
from restore.engine.variants import resolve_variants
from restore.errors import SetupError, UsageError
from restore.events import Message, SongFinished
from restore.io.writers import TMP_MARK, hash_file

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

VARIANTS = "01,11"
SONGS = 4


def outputs(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): hash_file(p) for p in sorted(out.glob("[0-9]*/**/*.flac"))
            if TMP_MARK not in p.name}


def markers(out: Path) -> dict:
    """Every marker without what differs between two identical runs (when, how long)."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in ("seconds", "mtime_ns", "finished")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return {p.relative_to(out).as_posix(): clean(json.loads(p.read_text(encoding="utf-8")))
            for p in sorted((out / "_done").rglob("*.json"))}


def temps(out: Path) -> list:
    return [p for p in out.rglob("*") if TMP_MARK in p.name]


def assert_as_local(out: Path, library) -> None:
    """The outputs and markers of `out` are the local run's, and nothing partial is left."""
    _, ref_outputs, ref_markers = library
    assert outputs(out) == ref_outputs
    assert markers(out) == ref_markers
    assert not temps(out)


def config(library: Path, out: Path, cluster: str | None, **kw) -> RunConfig:
    return RunConfig(inputs=[str(library)], out_dir=out, variants=resolve_variants(VARIANTS), report=False,
                     cluster=cluster, **kw)


def wait_for_line(log: Path, prefix: str, thread: threading.Thread, timeout: float = 300.0) -> str:
    """The first line of `log` starting with `prefix`, once the program wrote it."""
    deadline = time.monotonic() + timeout
    while True:
        if log.exists():
            for line in log.read_text().splitlines():
                if line.startswith(prefix):
                    return line
        assert thread.is_alive(), f"the run ended before {prefix!r}"
        assert time.monotonic() < deadline, f"no {prefix!r} after {timeout:.0f} s"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from restore.io.lame import encode_mp3
    from tests.support.examples import band
    root = tmp_path_factory.mktemp("cluster")
    lib = root / "in"
    for i in range(SONGS):
        p = lib / "Band" / f"{i + 1:02d} Song.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_mp3(band(4.0, seed=20 + i), bitrate=160))
    local = root / "local"
    summary = run(config(lib, local, None))
    assert summary.counts()["done"] == SONGS * 2
    return lib, outputs(local), markers(local)


def local_cluster(**env):
    from distributed import LocalCluster
    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                        env={k: str(v) for k, v in env.items()})


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as c:
        yield c.scheduler_address


def test_a_batch_on_the_cluster_equals_a_local_run(library, cluster, tmp_path):
    lib = library[0]
    out = tmp_path / "out"
    summary = run(config(lib, out, cluster))
    assert summary.counts()["done"] == SONGS * 2 and summary.exit_code == 0
    assert_as_local(out, library)
    assert all(r.worker for r in summary.results), "each result names the worker that did it"
    # Each worker process loads a model once and keeps it for its next songs.
    assert 1 <= summary.model_loads["offline_restore"] <= 2 < SONGS
    # Dask's MALLOC_TRIM_THRESHOLD_ (twice the time for numpy stages) is undone in each worker.
    log = "".join(p.read_text(encoding="utf-8") for p in (out / "_logs").glob("run*.log"))
    assert "adaptive heap restored" in log
    # A rerun (local or on the cluster) finds everything done.
    again = run(config(lib, out, cluster))
    assert again.counts()["skipped"] == SONGS * 2 and again.counts()["done"] == 0


def test_a_worker_killed_mid_song_leaves_nothing_partial_and_the_song_is_redone(library, tmp_path):
    lib = library[0]
    out, log = tmp_path / "out", tmp_path / "checkpoints.log"
    # The first worker process to write audio stops mid-file and says so; the test kills it there.
    with local_cluster(MP3RESTORE_CHECKPOINT_LOG=log, MP3RESTORE_HOLD_AT="mid-audio") as c:
        result = {}
        thread = threading.Thread(target=lambda: result.update(summary=run(config(lib, out, c.scheduler_address))))
        thread.start()
        pid = int(wait_for_line(log, "hold mid-audio", thread).split()[-1])
        assert temps(out), "the held worker is mid-write"
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=600)
    assert result["summary"].counts()["done"] == SONGS * 2, result["summary"].results
    assert_as_local(out, library)


def test_the_client_killed_then_rerun_resumes(library, cluster, tmp_path):
    lib = library[0]
    out = tmp_path / "out"
    # The client dies as soon as its first song is reported done (the workers live on).
    crashed = run_cli("run", str(lib), "--out", str(out), "-v", VARIANTS, "--no-report", "-q", "--cluster", cluster,
                      env={"MP3RESTORE_CRASH_AT": "cluster-song-done"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert not (out / "_report" / "last_run.json").exists()
    summary = run(config(lib, out, cluster))
    counts = summary.counts()
    assert counts["failed"] == counts["busy"] == 0 and counts["skipped"] >= 2
    assert counts["done"] + counts["skipped"] == SONGS * 2
    assert_as_local(out, library)


def test_stop_on_the_cluster_cleans_up_and_resumes(library, cluster, tmp_path):
    lib, ref_outputs, _ = library
    out = tmp_path / "out"
    stop = threading.Event()

    class StopAfterFirstSong:
        def handle(self, event):
            if isinstance(event, SongFinished):
                stop.set()

    with pytest.raises(KeyboardInterrupt):
        run(config(lib, out, cluster), StopAfterFirstSong(), stop)
    written = json.loads((out / "_report" / "last_run.json").read_text())
    assert written["interrupted"] and written["counts"]["done"] >= 2
    assert not temps(out), "every song in progress was cleaned up before the run returned"
    summary = run(config(lib, out, cluster))
    assert summary.counts()["done"] + summary.counts()["skipped"] == SONGS * 2
    assert outputs(out) == ref_outputs


def test_a_worker_that_cannot_see_the_output_folder_is_named_before_any_work(library, cluster, tmp_path):
    lib, _, _ = library
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    cfg = config(lib, out, cluster, path_map=(f"{out}={elsewhere}",))
    with pytest.raises(SetupError) as caught:
        run(cfg)
    text = caught.value.one_line()
    assert "cannot see the output folder" in text and str(elsewhere) in text and "worker " in text
    assert not list(out.glob("[0-9]*")), "no work was sent"
    # The CLI says it in one line and exits 3 (an unusable output folder).
    proc = run_cli("run", str(lib), "--out", str(out), "-v", VARIANTS, "--cluster", cluster,
                   "--path-map", f"{out}={tmp_path / 'missing'}")
    assert proc.returncode == 3 and "cannot see the output folder" in proc.stderr


def test_an_unreachable_scheduler_and_a_path_map_without_cluster_are_clear_errors(library, tmp_path):
    lib, _, _ = library
    proc = run_cli("run", str(lib), "--out", str(tmp_path / "o"), "--path-map", "a=b")
    assert proc.returncode == 2 and "--path-map is for --cluster" in proc.stderr
    proc = run_cli("run", str(lib), "--out", str(tmp_path / "o"), "--cluster", "tcp://127.0.0.1:1")
    assert proc.returncode == 3 and "cannot reach the Dask scheduler" in proc.stderr


def test_a_local_run_never_imports_dask(library, tmp_path):
    lib, _, _ = library
    code = ("import sys; from pathlib import Path; from restore.engine.run import run; "
            "from restore.engine.config import RunConfig; from restore.engine.variants import resolve_variants; "
            f"run(RunConfig(inputs=[{str(lib)!r}], out_dir=Path({str(tmp_path / 'o')!r}), "
            "variants=resolve_variants('01'), report=False)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("spec, client, worker", [
    (r"Z:\music=/mnt/nas/music", r"Z:\music\Band\01 Song.mp3", "/mnt/nas/music/Band/01 Song.mp3"),
    (r"Z:\music=/mnt/nas/music", r"z:\MUSIC\a.mp3", "/mnt/nas/music/a.mp3"),  # Windows paths ignore case
    (r"/srv/out=D:\out", "/srv/out/01_baseline/a.flac", r"D:\out\01_baseline\a.flac"),
    (r"\\nas\music=/mnt/music", r"\\nas\music\a.mp3", "/mnt/music/a.mp3"),
    ("/srv=/a", "/srvx/a.mp3", "/srvx/a.mp3"),                  # a prefix is whole folders
    ("/srv/music=/m", "/srv/music", "/m"),
])
def test_path_map(spec, client, worker):
    paths = PathMap.parse([spec])
    assert paths.to_worker(client) == worker
    if client.casefold() == paths.to_client(worker).casefold() or paths.to_worker(client) == client:
        return
    raise AssertionError(f"{worker} maps back to {paths.to_client(worker)}, not {client}")


def test_path_map_longest_prefix_wins_and_bad_specs_are_usage_errors():
    paths = PathMap.parse(["/srv=/a", "/srv/music=/b"])
    assert paths.to_worker("/srv/music/x.mp3") == "/b/x.mp3"
    assert paths.to_worker("/srv/other/x.mp3") == "/a/other/x.mp3"
    for bad in ("nomap", "=/x", "/x="):
        with pytest.raises(UsageError):
            PathMap.parse([bad])


def test_songs_with_a_model_stage_go_to_the_worker_offering_a_gpu(tmp_path):
    """A worker started as a person would (`dask worker ADDRESS --resources GPU=1`) beside a
    plain one: every song that runs a model stage lands on it."""
    pytest.importorskip("torch")
    from distributed import Client
    from restore.models.store import CATALOGUE
    from tests.support.random_hifigan import save_random_hifigan
    from .conftest import write_mp3
    from tests.support.examples import band
    models = tmp_path / "models"
    save_random_hifigan(models / CATALOGUE["hifigan-bwe"].filename, seed=1, stacks=1, layers=4, channels=16)
    for i in range(3):
        write_mp3(tmp_path / "in" / f"{i} song.mp3", band(3.0, seed=i), bitrate=128)
    with local_cluster() as c:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        gpu = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", c.scheduler_address,
                                "--nthreads", "1", "--resources", "GPU=1", "--name", "gpu", "--no-dashboard"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Client(c.scheduler_address) as client:
                client.wait_for_workers(3, timeout=120)
            cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", models_dir=models, device="cpu",
                            variants=resolve_variants("01,08"), report=False, cluster=c.scheduler_address)
            summary = run(cfg)
        finally:
            gpu.terminate()
            gpu.wait(timeout=60)
    assert summary.counts()["done"] == 6, summary.results
    assert {r.worker.rsplit("/", 1)[1] for r in summary.results} == {"gpu"}


# -- --jobs N: songs side by side on this machine (engine/localcluster.py) ----------------------

def test_jobs_runs_songs_side_by_side_as_a_local_run(library, tmp_path):
    """--jobs 2: a private cluster of two worker processes on 127.0.0.1, the local run's
    outputs and markers, both processes used, stopped when the run ends."""
    lib = library[0]
    out = tmp_path / "out"
    summary = run(config(lib, out, None, jobs=2))
    assert summary.counts()["done"] == SONGS * 2 and summary.exit_code == 0
    assert_as_local(out, library)
    assert {r.worker.rsplit("/", 1)[1] for r in summary.results} == {"song-1", "song-2"}
    log = "".join(p.read_text(encoding="utf-8") for p in (out / "_logs").glob("run*.log"))
    assert "2 songs at once (worker processes on this machine, tcp://127.0.0.1:" in log
    assert "adaptive heap restored" in log
    # The workers are gone with the run: nothing listens at the scheduler's address any more.
    address = log.split("worker processes on this machine, ")[1].split(")")[0]
    from distributed import Client
    with pytest.raises(OSError):
        Client(address, timeout="2s")


def test_jobs_sends_every_song_with_a_model_stage_to_one_worker(tmp_path):
    """Songs with a model stage run one at a time in the worker that offers the MODELS
    resource (one set of models in memory, no two songs on one GPU)."""
    pytest.importorskip("torch")
    from restore.models.store import CATALOGUE
    from tests.support.random_hifigan import save_random_hifigan
    from tests.support.examples import band
    from .conftest import write_mp3
    models = tmp_path / "models"
    save_random_hifigan(models / CATALOGUE["hifigan-bwe"].filename, seed=1, stacks=1, layers=4, channels=16)
    for i in range(3):
        write_mp3(tmp_path / "in" / f"{i} song.mp3", band(3.0, seed=i), bitrate=128)
    cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", models_dir=models, device="cpu",
                    variants=resolve_variants("01,08"), report=False, jobs=3)
    summary = run(cfg)
    assert summary.counts()["done"] == 6, summary.results
    assert {r.worker.rsplit("/", 1)[1] for r in summary.results} == {"song-1"}
    assert summary.model_loads == {"bwe_hifigan": 1}


def test_jobs_usage_errors(library, tmp_path):
    lib, _, _ = library
    proc = run_cli("run", str(lib), "--out", str(tmp_path / "o"), "--jobs", "0")
    assert proc.returncode == 2 and "'0' is not a number of songs" in proc.stderr
    proc = run_cli("run", str(lib), "--out", str(tmp_path / "o"), "--jobs", "2", "--cluster", "tcp://127.0.0.1:1")
    assert proc.returncode == 2 and "--jobs is for this machine" in proc.stderr


def test_jobs_without_dask_says_what_to_install(library, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(UsageError, match=r"--jobs 2 needs Dask distributed.*mp3restore\[cluster\]"):
        run(config(library[0], tmp_path / "out", None, jobs=2))


def test_stop_with_jobs_cleans_up_stops_the_processes_and_resumes(library, tmp_path):
    """A Ctrl+C during a --jobs run: the songs in progress are cleaned up, the private
    cluster is gone when the run returns, and the same command resumes."""
    lib, ref_outputs, _ = library
    out = tmp_path / "out"
    stop = threading.Event()
    said: list[str] = []

    class StopAfterFirstSong:
        def handle(self, event):
            if isinstance(event, Message):
                said.append(event.text)
            if isinstance(event, SongFinished):
                stop.set()

    with pytest.raises(KeyboardInterrupt):
        run(config(lib, out, None, jobs=2), StopAfterFirstSong(), stop)
    assert not temps(out), "every song in progress was cleaned up before the run returned"
    address = next(t for t in said if "songs at once" in t).split("machine, ")[1].split(")")[0]
    from distributed import Client
    with pytest.raises(OSError):
        Client(address, timeout="2s")
    summary = run(config(lib, out, None, jobs=2))
    assert summary.counts()["done"] + summary.counts()["skipped"] == SONGS * 2
    assert outputs(out) == ref_outputs
