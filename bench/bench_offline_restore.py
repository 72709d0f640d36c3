#!/usr/bin/env python3
"""11_offline_restore speed and memory through the real CLI (`mp3restore run`).

    python bench/bench_offline_restore.py                 # both parts (about 5 minutes on 2 cores)
    python bench/bench_offline_restore.py --only speed    # or memory; --only may be repeated
    python bench/bench_offline_restore.py --work /big/disk --keep

  speed   a 4-minute stereo 44.1 kHz 128 kbps song through `run --variants 11` (decode, the
          stage, the 24-bit FLAC write and the marker; no compare report), and through
          `--variants 01` alone for reference; best of --repeats runs each. Real-time factor =
          song seconds / wall seconds. The target is at least 40x on 2 cores (issue 14).
  memory  a 60-minute stereo 44.1 kHz song through `--variants 01` and `--variants 11`: peak
          RSS of each child process (os.wait4) and its wall time. The pipeline itself holds the
          decoded song (60 min stereo float32 = 1.27 GB); the stage adds its output (another
          1.27 GB) and a few 10 s blocks' STFTs.

The song is real music when the dev set has been built (build/devset/full_mix.flac, see
scripts/make_devset.py), else restore.examples.band; a 12 s clip is encoded once with LAME
3.100 (lameenc) and its MP3 frames repeated, so that making an hour of MP3 takes no time (each
copy starts with an empty bit reservoir: a valid stream). Benchmarks print; they never assert.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_common_args, cmd_text, machine_line, run_parts, say, work_folder  # noqa: E402

CLI = [sys.executable, str(ROOT / "mp3restore.py")]
CLIP_SECONDS = 12.0


def clip_mp3(kbps: int = 128) -> tuple[bytes, float, str]:
    """(MP3 bytes of one clip, its length in seconds, what it is)."""
    import numpy as np
    import soundfile as sf

    from restore.audio import Audio
    from tests.support.examples import band
    from restore.io.lame import encode_mp3

    source = ROOT / "build" / "devset" / "full_mix.flac"
    if source.exists():
        data, rate = sf.read(str(source), dtype="float32", always_2d=True)
        audio, what = Audio.from_frames_major(data[: int(CLIP_SECONDS * rate)], rate), f"{source.relative_to(ROOT)} (real music)"
    else:
        audio, what = band(CLIP_SECONDS, seed=1), "restore.examples.band (synthetic; build the dev set for real music)"
    # Whole MP3 frames only (1152 samples), so that the copies join on frame boundaries.
    frames = audio.frames // 1152 * 1152
    audio = Audio(np.ascontiguousarray(audio.samples[:, :frames]), audio.rate)
    return encode_mp3(audio, bitrate=kbps), frames / audio.rate, what


def song(path: Path, seconds: float) -> float:
    """Write an MP3 of about `seconds` (whole clips); returns its nominal length in seconds."""
    data, clip_s, what = clip_mp3()
    copies = max(1, round(seconds / clip_s))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data * copies)
    say("song", f"{path.name}: {copies} x {clip_s:.2f} s = {copies * clip_s / 60:.1f} min, 128 kbps, from {what}")
    return copies * clip_s


def run(args: list[str], work: Path) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS MiB, exit code, CPU seconds: user + system) of one CLI child.
    On a shared machine the CPU time is the steadier figure: the wall time counts the time
    other processes held the cores."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code:
        say("error", f"{cmd_text(args, work)} exited {code}: {err.strip()[-400:]}")
    return wall, usage.ru_maxrss / 1024, code, usage.ru_utime + usage.ru_stime


def variant_args(mp3: Path, out: Path, variants: str) -> list[str]:
    return [*CLI, "run", str(mp3), "--out", str(out), "--variants", variants, "--no-report", "-q", "--redo"]


def part_speed(work: Path, repeats: int) -> None:
    mp3 = work / "speed" / "song4min.mp3"
    seconds = song(mp3, 240.0)
    for variants in ("01", "11"):
        args = variant_args(mp3, work / "speed" / f"out{variants}", variants)
        runs = [run(args, work) for _ in range(repeats)]
        walls, cpus = [r[0] for r in runs], [r[3] for r in runs]
        best, cpu = min(walls), min(cpus)
        say("speed", f"--variants {variants}: best {best:.2f} s of {', '.join(f'{w:.2f}' for w in walls)} -> "
                     f"{seconds / best:.1f}x real time; CPU (user+sys) best {cpu:.2f} s -> {seconds / cpu:.1f}x "
                     f"real time per CPU second  ({cmd_text(args, work)})")
        say("speed", f"load average after: {os.getloadavg()[0]:.2f} (1 min)")


def part_memory(work: Path, minutes: float) -> None:
    mp3 = work / "memory" / "song60min.mp3"
    seconds = song(mp3, minutes * 60)
    decoded_mib = seconds * 44100 * 2 * 4 / (1 << 20)
    say("memory", f"one decoded copy of the song (stereo float32): {decoded_mib:.0f} MiB")
    for variants in ("01", "11"):
        args = variant_args(mp3, work / "memory" / f"out{variants}", variants)
        wall, rss, code, cpu = run(args, work)
        say("memory", f"--variants {variants}: peak RSS {rss:.0f} MiB ({rss / decoded_mib:.2f} song copies), "
                      f"{wall:.1f} s wall = {seconds / wall:.1f}x real time, CPU {cpu:.1f} s = {seconds / cpu:.1f}x, "
                      f"exit {code}  ({cmd_text(args, work)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, ("speed", "memory"))
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant in the speed part (best counts)")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the memory part's song")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    chosen = args.only or ["speed", "memory"]
    with work_folder("bench-offline-", args.work, args.keep) as work:
        run_parts([("speed", lambda: part_speed(work, args.repeats)),
                   ("memory", lambda: part_memory(work, args.minutes))], chosen)


if __name__ == "__main__":
    main()
