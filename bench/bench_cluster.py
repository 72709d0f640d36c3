#!/usr/bin/env python3
"""--cluster and --jobs benchmarks on this machine: songs per minute for the offline restore
(11) with 1 and 2 single-threaded Dask workers (a LocalCluster with worker processes), against
the same batch run locally, and the cost per song of going through the scheduler; then the
default variants (01, 11) with `--jobs 2` (its private cluster's start-up and stop timed in,
as a person pays them on every run) against `--jobs 1`.

    python bench/bench_cluster.py                 # 8 songs of 30 s (about 2 minutes on 2 cores)
    python bench/bench_cluster.py --songs 8 --seconds 60
    python bench/bench_cluster.py --only jobs --songs 8 --seconds 240

Every run, local or clustered, is limited to one thread per process (OMP/MKL/OpenBLAS=1)
so that "2 workers" means two cores. Cluster start-up is not timed (a person starts the
workers once), and a first small batch warms the fresh worker processes (their imports)
and is reported apart; connecting, checking the workers' paths and the run are timed. Prints figures;
asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"  # before numpy: the local run gets one core, as each worker does

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import load, machine_line, say, work_folder  # noqa: E402

from restore.engine.config import RunConfig  # noqa: E402
from restore.engine.run import run  # noqa: E402
from restore.engine.variants import resolve_variants  # noqa: E402


def make_songs(folder: Path, songs: int, seconds: float) -> Path:
    from restore.io.lame import encode_mp3
    from tests.support.examples import band
    for i in range(songs):
        path = folder / "in" / f"{i + 1:02d} Song.mp3"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_mp3(band(seconds, seed=i), bitrate=192))
    return folder / "in"


def timed_run(library: Path, out: Path, variants: str, cluster: str | None, jobs: int = 1) -> tuple[float, dict]:
    cfg = RunConfig(inputs=[str(library)], out_dir=out, variants=resolve_variants(variants), report=False,
                    cluster=cluster, jobs=jobs)
    t0 = time.perf_counter()
    summary = run(cfg)
    seconds = time.perf_counter() - t0
    assert summary.counts()["done"] == len(list(library.glob("*.mp3"))) * len(cfg.variants), summary.counts()
    return seconds, summary.model_loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each song")
    parser.add_argument("--work", help="folder for the generated songs and outputs (default: a temporary one)")
    parser.add_argument("--only", choices=("cluster", "jobs"), help="one part (default: both)")
    args = parser.parse_args()

    print(machine_line())
    with work_folder("cluster-", Path(args.work) if args.work else None, keep=False) as work:
        library = make_songs(work, args.songs, args.seconds)
        tiny = make_songs(work / "tiny", args.songs, 1.0)
        if args.only != "jobs":
            cluster_part(args, work, library, tiny)
        if args.only != "cluster":
            jobs_part(args, work, library, tiny)


def jobs_part(args, work: Path, library: Path, tiny: Path) -> None:
    """The default variants with --jobs 1 and 2: the whole run, the private cluster's
    start-up and stop included."""
    audio_min = args.songs * args.seconds / 60
    say("jobs", f"{args.songs} songs of {args.seconds:.0f} s, variants 01 and 11; {load()}")
    timed_run(tiny, work / "jobs-warm", "01,11", None)  # this process's imports
    rates = {}
    for jobs in (1, 2):
        seconds, _ = timed_run(library, work / f"jobs{jobs}", "01,11", None, jobs=jobs)
        rates[jobs] = args.songs / seconds * 60
        say("jobs", f"--jobs {jobs}: {seconds:.1f} s, {rates[jobs]:.1f} songs/min, "
                    f"{audio_min * 60 / seconds:.1f}x real time")
    start, _ = timed_run(tiny, work / "jobs-tiny", "01", None, jobs=2)
    say("jobs", f"--jobs 2 / --jobs 1: {rates[2] / rates[1]:.2f}x; a run of {args.songs} 1 s songs of 01 with "
                f"--jobs 2, start-up and stop included: {start:.1f} s; {load()}")


def cluster_part(args, work: Path, library: Path, tiny: Path) -> None:
    from distributed import LocalCluster
    audio_min = args.songs * args.seconds / 60
    say("cluster", f"{args.songs} songs of {args.seconds:.0f} s, variant 11_offline_restore; {load()}")
    timed_run(tiny, work / "warm-local", "01,11", None)  # imports, as the workers' first batch
    local, _ = timed_run(library, work / "local", "11", None)
    say("cluster", f"local run (1 thread): {local:.1f} s, {args.songs / local * 60:.1f} songs/min, "
                   f"{audio_min * 60 / local:.1f}x real time")
    local_tiny, _ = timed_run(tiny, work / "local-tiny", "01", None)
    rates = {}
    for workers in (1, 2):
        env = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          env=env) as cluster:
            address = cluster.scheduler_address
            # Fresh worker processes import mp3restore, numpy, soxr...: once per worker,
            # timed apart from the batch (a person starts the workers once for many songs).
            cold, _ = timed_run(tiny, work / f"warm{workers}", "01,11", address)
            seconds, loads = timed_run(library, work / f"c{workers}", "11", address)
            rates[workers] = args.songs / seconds * 60
            say("cluster", f"{workers} worker(s): {seconds:.1f} s, {rates[workers]:.1f} songs/min, "
                           f"{audio_min * 60 / seconds:.1f}x real time, model loads {loads} "
                           f"(first batch on the fresh workers, {args.songs} songs of 1 s: {cold:.1f} s)")
            if workers == 1:
                tiny_s, _ = timed_run(tiny, work / "c-tiny", "01", address)
                say("cluster", f"overhead per song through the scheduler: "
                               f"{(seconds - local) / args.songs * 1000:.0f} ms ({args.seconds:.0f} s songs, 11), "
                               f"{(tiny_s - local_tiny) / args.songs * 1000:.0f} ms (1 s songs, 01: local "
                               f"{local_tiny / args.songs * 1000:.0f} ms/song, cluster {tiny_s / args.songs * 1000:.0f} "
                               "ms/song, including the path check)")
    say("cluster", f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x; {load()}")


if __name__ == "__main__":
    main()
