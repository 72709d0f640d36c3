"""Peak memory of the compare report on a long song.

    python bench/bench_report.py                # a 60-minute song, about 3-6 minutes here
    python bench/bench_report.py --minutes 10   # quicker

Writes one song's variants as an output folder would hold them, without running any stage
(the report reads FLACs, not how they were made): 01_baseline (24-bit, 44.1 kHz), a 44.1 kHz
variant (the baseline at -1 dB) and a 48 kHz one (the baseline resampled: the report draws
its difference picture at the baseline's rate). The source is 60 s of
tests.support.examples.band repeated. Then `python mp3restore.py report OUT` runs as a child
and its peak RSS is read from getrusage(RUSAGE_CHILDREN) after it ends (the child's own
figure: this process never holds the song). Prints the song's decoded size for scale.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from bench.common import ROOT, cmd_text, load, machine_line, say, work_folder  # noqa: E402

SONG = "Artist/Album/01 Long.flac"


def write_variants(out: Path, minutes: float) -> int:
    """The three variant FLACs of one song, written block by block; returns its frames."""
    import soxr

    from tests.support.examples import band

    piece = band(60.0, seed=3).samples.T.copy()           # [frames, 2] float32, 60 s
    repeats = max(1, int(round(minutes)))
    files = {}
    for name, rate in (("01_baseline", 44100), ("11_offline_restore", 44100), ("08_hifigan", 48000)):
        path = out / name / SONG
        path.parent.mkdir(parents=True, exist_ok=True)
        files[name] = sf.SoundFile(str(path), "w", rate, 2, "PCM_24", format="FLAC")
    stream = soxr.ResampleStream(44100, 48000, 2, dtype="float32", quality="HQ")
    for i in range(repeats):
        files["01_baseline"].write(piece)
        files["11_offline_restore"].write(piece * np.float32(10 ** (-1 / 20)))
        files["08_hifigan"].write(stream.resample_chunk(piece, last=i == repeats - 1))
    for f in files.values():
        f.close()
    return repeats * len(piece)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="the song's length (default 60)")
    parser.add_argument("--work", type=Path, help="make the temporary folder under this folder")
    parser.add_argument("--keep", action="store_true", help="leave the generated files")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    with work_folder("bench_report_", args.work, args.keep) as work:
        out = work / "out"
        t0 = time.perf_counter()
        frames = write_variants(out, args.minutes)
        say("setup", f"{frames / 44100 / 60:.1f} min stereo 44.1 kHz (decoded float32: "
                     f"{frames * 2 * 4 / 2**20:.0f} MiB) in 3 variants, written in {time.perf_counter() - t0:.0f} s")
        cmd = [sys.executable, str(ROOT / "mp3restore.py"), "report", str(out)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        took = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        say("report", f"{cmd_text(cmd, work)}: exit {done.returncode}, {took:.0f} s, "
                      f"peak RSS {peak:.0f} MiB ({peak / 1024:.2f} GiB); {load()}")
        if done.returncode:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", flush=True)


if __name__ == "__main__":
    main()
