#!/usr/bin/env python3
"""Engine benchmarks: decode+write speed, peak memory on long files, resume-check time.

    python bench/bench_engine.py                  # all three (about 6 minutes on 2 cores)
    python bench/bench_engine.py --only speed     # or rss, or resume; --only may be repeated
    python bench/bench_engine.py --work /big/disk --keep

Inputs are generated (restore.examples.band + encode_mp3: stereo 44.1 kHz, 192 kbps CBR,
LAME 3.100) into a temporary folder that is removed at the end (--keep leaves it).
Generating them is not timed. Benchmarks print figures; they never assert. Timings are
with a warm page cache: the inputs were just written, so they are in memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_common_args, cmd_text, machine_line, run_parts, say, work_folder  # noqa: E402

from restore.engine.variants import resolve_variants  # noqa: E402

CLI = [sys.executable, str(ROOT / "mp3restore.py")]
MiB = 1 << 20
BASELINE = resolve_variants("01_baseline")  # the engine's figures are the decode's: the default set now adds 09 and 11




def median(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_all(xs: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in xs)




# ---------------------------------------------------------------- input generation

def _song_bytes(job: tuple[float, int]) -> bytes:
    from tests.support.examples import band
    from restore.io.lame import encode_mp3
    seconds, seed = job
    return encode_mp3(band(seconds, seed=seed), bitrate=192)


def make_songs(seconds: float, seeds: list[int]) -> list[bytes]:
    """MP3 bytes for band(seconds, seed) for each seed, made on all cores (untimed)."""
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=max(1, min(len(seeds), os.cpu_count() or 1))) as pool:
        return list(pool.map(_song_bytes, [(seconds, s) for s in seeds]))


def run_cli(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"  ! exit code {proc.returncode} from {cmd_text(args)}\n  ! stderr tail: {proc.stderr[-800:]}", flush=True)
    return wall, proc


def last_run_counts(out: Path) -> dict:
    try:
        return json.loads((out / "_report" / "last_run.json").read_text())["counts"]
    except (OSError, ValueError, KeyError):
        return {}


def decoded_seconds(out: Path) -> float:
    """Sum of the decoded durations of every finished output, read from the FLACs."""
    import soundfile as sf
    return sum(sf.info(str(p)).duration for p in (out / "01_baseline").rglob("*.flac"))


# ---------------------------------------------------------------- a. speed

def bench_speed(work: Path, n_songs: int, seconds: float, repeats: int) -> None:
    S = "speed"
    import numpy as np  # noqa: F401  (loaded before timing the library call)
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from tests.support.examples import tag_mp3

    src = work / "speed_in"
    say(S, f"generating {n_songs} songs x {seconds:.0f} s (stereo 44.1 kHz, 192 kbps CBR), untimed ...")
    t0 = time.perf_counter()
    for i, data in enumerate(make_songs(seconds, list(range(n_songs)))):
        p = src / "Bench Band" / "Speed Album" / f"{i + 1:02d} Song {i + 1}.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        tag_mp3(p, f"Song {i + 1}", "Bench Band", "Speed Album", f"{i + 1}/{n_songs}")
    in_bytes = sum(p.stat().st_size for p in src.rglob("*.mp3"))
    say(S, f"  made in {time.perf_counter() - t0:.1f} s; inputs {in_bytes / MiB:.1f} MiB")

    cli_walls, lib_walls, audio_s, out_bytes = [], [], 0.0, 0
    for r in range(repeats):
        out = work / f"speed_out_cli{r}"
        args = CLI + ["run", str(src), "--out", str(out), "-q", "--variants", "01_baseline"]
        wall, _ = run_cli(args)
        cli_walls.append(wall)
        if r == 0:
            audio_s = decoded_seconds(out)
            out_bytes = sum(p.stat().st_size for p in (out / "01_baseline").rglob("*.flac"))
            say(S, f"command: {cmd_text(args[:3] + ['IN', '--out', 'OUT', '-q'])}   counts {last_run_counts(out)}")
        shutil.rmtree(out)
    for r in range(repeats):
        out = work / f"speed_out_lib{r}"
        t0 = time.perf_counter()
        summary = run(RunConfig(inputs=[str(src)], out_dir=out, variants=BASELINE))
        lib_walls.append(time.perf_counter() - t0)
        if r == 0:
            say(S, f"library: restore.engine.run.run(RunConfig(inputs=[IN], out_dir=OUT))   counts {summary.counts()}")
        shutil.rmtree(out)

    say(S, f"audio: {n_songs} songs, {audio_s:.1f} s decoded in total ({audio_s / 60:.1f} min); "
           f"FLAC 24-bit written {out_bytes / MiB:.1f} MiB")
    for name, walls in (("CLI subprocess (start-up included)", cli_walls), ("library call in-process", lib_walls)):
        m = median(walls)
        say(S, f"{name:36s}: wall {m:.3f} s (median of {len(walls)}: {fmt_all(walls)}) "
               f"-> {audio_s / m:.0f}x real time, {m / (audio_s / 60) * 1000:.1f} ms per audio minute")
    startup = [run_cli(CLI + ["variants"])[0] for _ in range(5)]
    say(S, f"CLI start-up floor (python mp3restore.py variants): {median(startup):.3f} s median of 5")
    _speed_breakdown(work, src)


def _speed_breakdown(work: Path, src: Path) -> None:
    """Where one song's time goes, in-process. Uses restore's internals where they exist
    (they change as the engine does): a piece that is missing is reported as n/a."""
    S = "speed"
    from restore.analysis.levels import PeakMeter
    from restore.analysis.spectrum import effective_cutoff_hz
    from restore.stages import StageContext, get_stage

    song = sorted(src.rglob("*.mp3"))[0]
    decoder = get_stage("decode")
    rows: list[tuple[str, float | None, str]] = []
    state: dict = {}

    def timed(name, fn, reps=3):
        try:
            vals = []
            for _ in range(reps):
                t0 = time.perf_counter()
                res = fn()
                vals.append(time.perf_counter() - t0)
            rows.append((name, min(vals), ""))
            return res
        except (ImportError, AttributeError, TypeError) as exc:
            rows.append((name, None, f"n/a in this version ({exc.__class__.__name__}: {exc})"))
            return None

    def fingerprint():
        from restore.engine.markers import file_record
        return file_record(song)

    def walk():
        from restore.io.mp3info import inspect
        return inspect(song)

    def stream_only():  # the decode as the streaming pipeline runs it: blocks, no whole-song buffer
        frames = 0
        for block in decoder.stream(song, StageContext()):
            frames += block.shape[1]
        return frames

    def peak_and_over():
        audio = state["audio"]
        meter = PeakMeter()
        meter.feed(audio.samples)
        return meter.peak_dbfs, meter.over

    def tags():
        from restore.io.tags import read_id3
        return read_id3(song)

    def write():
        from restore.io.writers import write_flac
        return write_flac(state["audio"], work / "speed_breakdown" / "song.flac", state.get("tags"), 24)

    def hash_flac():
        from restore.io.writers import hash_file
        return hash_file(work / "speed_breakdown" / "song.flac")

    timed("input fingerprint (stat + blake2b of the MP3)", fingerprint)
    timed("mp3info.inspect (frame walk)", walk)
    res = timed("decode stage read(): whole song + facts", lambda: decoder.read(song, StageContext()))
    if res is None:
        return
    state["audio"] = audio = res[0]
    if hasattr(decoder, "stream"):
        timed("decode stage stream(): blocks only (+ facts)", stream_only)
    timed("  metrics: effective_cutoff_hz (whole song)", lambda: effective_cutoff_hz(audio))
    timed("  metrics: sample peak + count over full scale", peak_and_over)
    state["tags"] = timed("read_id3", tags)
    written = timed("write_flac (encode + tags + hash + fsync)", write)
    timed("  of which blake2b of the FLAC", hash_flac)
    say(S, f"breakdown for one song ({audio.duration:.1f} s, best of 3, in-process):")
    for name, v, why in rows:
        if v is None:
            say(S, f"  {name:48s} {why}")
        else:
            say(S, f"  {name:48s} {v * 1000:8.1f} ms  ({audio.duration / v:.0f}x real time)")
    if written:
        say(S, f"  FLAC size {written['size'] / MiB:.1f} MiB")
    shutil.rmtree(work / "speed_breakdown", ignore_errors=True)


# ---------------------------------------------------------------- b. peak RSS

def measure_rss_child(cmd: list[str]) -> None:
    """Run in a fresh python process that has no other children: start `cmd`, sample its RSS
    with psutil every 50 ms, wait for it, then read ru_maxrss of the waited-for children.
    Prints one JSON line."""
    import psutil
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak_sampled, samples = 0, 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak_sampled = max(peak_sampled, rss)
            samples += 1
        except psutil.Error:
            pass
        time.sleep(0.05)
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    wall = time.perf_counter() - t0
    maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux
    print(json.dumps({"rc": proc.returncode, "wall": wall, "ru_maxrss_kb": maxrss_kb,
                      "psutil_peak": peak_sampled, "samples": samples, "stderr": err[-800:]}))


def rss_of(cmd: list[str]) -> dict:
    child = [sys.executable, str(Path(__file__).resolve()), "_measure-rss", "--"] + cmd
    proc = subprocess.run(child, capture_output=True, text=True)
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"  ! measuring child failed: {proc.stderr[-800:]}", flush=True)
        return {}
    if res["rc"] != 0:
        print(f"  ! exit code {res['rc']}: {res['stderr']}", flush=True)
    return res


def bench_rss(work: Path, minutes_list: list[int]) -> None:
    S = "rss"
    import soundfile as sf
    if platform.system() != "Linux":
        say(S, "ru_maxrss is in bytes on macOS and missing on Windows; these figures assume Linux (kB)")
    say(S, "generating a 60 s song (stereo 44.1 kHz, 192 kbps CBR), untimed; long files are copies of its MP3 frames")
    one_minute = make_songs(60.0, [0])[0]

    base = rss_of(CLI + ["variants"])
    base_mib = base.get("ru_maxrss_kb", 0) / 1024
    say(S, f"baseline: python mp3restore.py variants (imports only): peak RSS {base_mib:.0f} MiB")
    rows = []
    for minutes in minutes_list:
        src = work / f"rss_in_{minutes}"
        src.mkdir(parents=True)
        mp3 = src / f"long_{minutes}min.mp3"
        with open(mp3, "wb") as fh:
            for _ in range(minutes):
                fh.write(one_minute)
        out = work / f"rss_out_{minutes}"
        args = CLI + ["run", str(src), "--out", str(out), "-q", "--variants", "01_baseline"]
        res = rss_of(args)
        flacs = list((out / "01_baseline").rglob("*.flac"))
        if not res or not flacs:
            say(S, f"{minutes} min: no result")
            continue
        info = sf.info(str(flacs[0]))
        decoded_mib = info.frames * info.channels * 4 / MiB
        rss_mib = res["ru_maxrss_kb"] / 1024
        rows.append((minutes, info.duration, decoded_mib, rss_mib))
        say(S, f"{minutes:3d} min file ({mp3.stat().st_size / MiB:.1f} MiB MP3): command {cmd_text(args[:3] + ['IN', '--out', 'OUT', '-q'])}")
        say(S, f"    decoded {info.duration:.1f} s ({info.frames} frames x {info.channels} ch), float32 in memory = {decoded_mib:.0f} MiB; "
               f"FLAC {flacs[0].stat().st_size / MiB:.0f} MiB")
        say(S, f"    peak RSS {rss_mib:.0f} MiB (ru_maxrss), {res['psutil_peak'] / MiB:.0f} MiB (psutil, {res['samples']} samples at 50 ms); "
               f"above the import baseline: {rss_mib - base_mib:.0f} MiB = {(rss_mib - base_mib) / decoded_mib:.2f}x the decoded song; "
               f"wall {res['wall']:.1f} s ({info.duration / res['wall']:.0f}x real time)")
        if minutes == minutes_list[0]:
            _rss_attribution(mp3, work)
        shutil.rmtree(src)
        shutil.rmtree(out)
    if len(rows) >= 2:
        (m0, d0, a0, r0), (m1, d1, a1, r1) = rows[0], rows[-1]
        per_min = (r1 - r0) / ((d1 - d0) / 60)
        audio_per_min = (a1 - a0) / ((d1 - d0) / 60)
        say(S, f"growth: {per_min:.1f} MiB peak RSS per minute of stereo 44.1 kHz audio from {m0} to {m1} min "
               f"(decoded float32 alone is {audio_per_min:.1f} MiB per minute; ratio {per_min / audio_per_min:.2f})")
        if per_min < 0.05 * audio_per_min:
            say(S, f"        flat: peak RSS does not grow with the song's length (the song is not held in memory whole); "
                   f"peak {max(r0, r1):.0f} MiB")
        else:
            say(S, f"        extrapolated peak for a 120 min file: {r1 + per_min * (120 - d1 / 60):.0f} MiB")


def _rss_attribution(mp3: Path, work: Path) -> None:
    """Which step allocates what, measured in-process with tracemalloc (numpy reports its
    buffers to it): the whole library run, the decode stage's whole-song read, and the
    whole-song metric functions where this version still has them. Peak = the most
    memory held at once during the step on top of what was held before it."""
    S = "rss"
    import tracemalloc
    from restore.analysis.spectrum import effective_cutoff_hz
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.stages import StageContext, get_stage

    rows = []
    tracemalloc.start()

    def step(name, fn):
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        res = fn()
        now, peak = tracemalloc.get_traced_memory()
        rows.append((name, (peak - before) / MiB, (now - before) / MiB))
        return res

    try:
        step("restore.engine.run.run (what the CLI does)", lambda: run(RunConfig(inputs=[str(mp3)], out_dir=work / "attribution", variants=BASELINE)))
        audio, _ = step("decode stage read() (whole song in memory)", lambda: get_stage("decode").read(mp3, StageContext()))
        step("effective_cutoff_hz(audio)", lambda: effective_cutoff_hz(audio))
    finally:
        tracemalloc.stop()
    song = audio.samples.nbytes / MiB
    say(S, f"    where it goes (in-process, tracemalloc, same file; decoded song = {song:.0f} MiB):")
    for name, peak, kept in rows:
        say(S, f"      {name:44s} peak +{peak:7.1f} MiB ({peak / song:.2f}x song), still held after +{kept:7.1f} MiB")
    del audio
    shutil.rmtree(work / "attribution", ignore_errors=True)


# ---------------------------------------------------------------- c. resume

def bench_resume(work: Path, n_songs: int, seconds: float, distinct: int, repeats: int) -> None:
    S = "resume"
    from tests.support.examples import png_cover, tag_mp3
    from restore.io.writers import hash_file

    src = work / "resume_in"
    say(S, f"generating {n_songs} songs of {seconds:.0f} s ({distinct} distinct recordings, each file tagged "
           f"differently, with cover art), in Artist/Album folders, untimed ...")
    t0 = time.perf_counter()
    songs = make_songs(seconds, list(range(distinct)))
    per_album = 10
    for i in range(n_songs):
        artist, album, track = f"Artist {i // (2 * per_album) + 1:02d}", f"Album {(i // per_album) % 2 + 1}", i % per_album + 1
        p = src / artist / album / f"{track:02d} Title {i + 1}.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(songs[i % distinct])
        tag_mp3(p, f"Title {i + 1}", artist, album, f"{track}/{per_album}", cover=png_cover(seed=i))
    say(S, f"  made in {time.perf_counter() - t0:.1f} s")

    out = work / "resume_out"
    base = CLI + ["run", str(src), "--out", str(out), "--variants", "01_baseline"]
    wall, _ = run_cli(base + ["-q"])
    inputs = sorted(src.rglob("*.mp3"))
    outputs = sorted((out / "01_baseline").rglob("*.flac"))
    in_b, out_b = sum(p.stat().st_size for p in inputs), sum(p.stat().st_size for p in outputs)
    audio_s = decoded_seconds(out)
    say(S, f"first run (restores everything): {wall:.1f} s for {len(outputs)} songs, {audio_s:.0f} s of audio "
           f"({audio_s / wall:.0f}x real time); counts {last_run_counts(out)}")

    startup = [run_cli(CLI + ["variants"])[0] for _ in range(repeats)]
    say(S, f"CLI start-up floor (python mp3restore.py variants): {median(startup):.3f} s median of {repeats}")
    shown = cmd_text(CLI[:2]) + " run IN --out OUT"
    results = {}
    for label, extra in (("--verify quick", ["--verify", "quick", "-q"]),
                         ("--verify full", ["--verify", "full", "-q"]),
                         ("--dry-run", ["--dry-run", "-q"]),
                         ("--dry-run --verify full", ["--dry-run", "--verify", "full", "-q"])):
        walls, counts = [], None
        for _ in range(repeats):
            w, _ = run_cli(base + extra)
            walls.append(w)
            if "--dry-run" not in extra:
                counts = last_run_counts(out)
        results[label] = median(walls)
        note = f"; counts {counts}" if counts else ""
        say(S, f"second run, {label:24s}: {median(walls):.3f} s median of {repeats} ({fmt_all(walls)}); "
               f"command: {shown} {' '.join(extra)}{note}")

    hashed = in_b + out_b
    say(S, f"bytes a full check hashes: inputs {in_b / MiB:.1f} MiB + outputs {out_b / MiB:.1f} MiB "
           f"= {hashed / MiB:.1f} MiB ({hashed / 1e9:.3f} GB) in {len(inputs) + len(outputs)} files")
    quick, full = results["--verify quick"], results["--verify full"]
    per_gb = (full - quick) / (hashed / 1e9)
    say(S, f"quick check: {(quick - median(startup)) * 1000:.0f} ms above the CLI start-up floor for {n_songs} songs "
           f"(start-up dominates; the in-process figure below is the precise one)")
    from restore.engine.config import RunConfig
    from restore.engine.run import plan_run
    for verify in ("quick", "full"):
        walls = []
        for _ in range(max(repeats, 5)):
            t0 = time.perf_counter()
            plan = plan_run(RunConfig(inputs=[str(src)], out_dir=out, verify=verify, variants=BASELINE))
            walls.append(time.perf_counter() - t0)
        m = median(walls)
        say(S, f"in-process restore.engine.run.plan_run (scan + markers), verify={verify:5s}: {m * 1000:.1f} ms median of "
               f"{len(walls)} -> {m / n_songs * 1000:.3f} ms per song ({len(plan.done_jobs)} of {len(plan.jobs)} steps done)")
    if full > quick:
        say(S, f"full check: {full - quick:.3f} s more than quick -> {per_gb:.2f} s per GB of inputs+outputs "
               f"({hashed / 1e9 / (full - quick) * 1000:.0f} MB/s)")
    else:
        say(S, "full check: no slower than quick at this size (within noise); use more songs to measure it")
    # Cross-check: the hash alone, in-process, over the same files (warm cache).
    t0 = time.perf_counter()
    for p in inputs + outputs:
        hash_file(p)
    h = time.perf_counter() - t0
    say(S, f"cross-check: blake2b (restore.io.writers.hash_file) alone over the same files in-process: {h:.3f} s "
           f"-> {h / (hashed / 1e9):.2f} s per GB ({hashed / 1e9 / h * 1000:.0f} MB/s), warm page cache, one core")
    say(S, f"  so re-verifying 100 GB of inputs+outputs with --verify full takes about {max(per_gb, h / (hashed / 1e9)) * 100 / 60:.1f} min "
           f"when the disk reads faster than that; otherwise the disk's read speed decides")


# ---------------------------------------------------------------- main

def machine() -> None:
    print(machine_line(), flush=True)
    import numpy, miniaudio, soundfile
    print(f"[machine] numpy {numpy.__version__}, miniaudio {miniaudio.__version__}, soundfile {soundfile.__version__} "
          f"(libsndfile {soundfile.__libsndfile_version__})", flush=True)




def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_measure-rss"]:
        measure_rss_child(argv[argv.index("--") + 1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p, ("speed", "rss", "resume"))
    p.add_argument("--speed-songs", type=int, default=5)
    p.add_argument("--speed-seconds", type=float, default=240.0)
    p.add_argument("--speed-repeats", type=int, default=3)
    p.add_argument("--rss-minutes", default="10,60", help="comma-separated durations in minutes (default 10,60)")
    p.add_argument("--resume-songs", type=int, default=200)
    p.add_argument("--resume-seconds", type=float, default=20.0)
    p.add_argument("--resume-distinct", type=int, default=20, help="distinct recordings the songs are copies of")
    p.add_argument("--resume-repeats", type=int, default=3)
    a = p.parse_args(argv)
    parts = a.only or ["speed", "rss", "resume"]

    machine()
    with work_folder("mp3restore-bench-", a.work, a.keep) as work:
        run_parts([("speed", lambda: bench_speed(work, a.speed_songs, a.speed_seconds, a.speed_repeats)),
                   ("rss", lambda: bench_rss(work, [int(m) for m in a.rss_minutes.split(",") if m.strip()])),
                   ("resume", lambda: bench_resume(work, a.resume_songs, a.resume_seconds, a.resume_distinct,
                                                   a.resume_repeats))], parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
