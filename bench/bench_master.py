#!/usr/bin/env python3
"""The master stage alone (07_mastered's last step) on a 4-minute stereo 44.1 kHz song, in
process: `MasterStage().process(audio, ctx)`, nothing read or written.

    python bench/bench_master.py                # about a minute on 2 cores
    python bench/bench_master.py --repeats 5

Cases (each song scaled by pyloudnorm's measure first; that is not timed):
  turned down  the piano at -8 LUFS, as loud masters and remixes: to -14 LUFS, no limiting
  turned up    the piano at -30 LUFS: to -14 LUFS, no limiting
  limited      the mix at -8 LUFS: its peaks need the limiter (2 dB at most), the rest stops short
  shaped       turned down, with --set master.width=1.3 --set master.mono_bass_hz=120
Then the parts on their own over the mix: pyloudnorm's integrated loudness, the 4x true-peak
meter, the loudness range, and pedalboard's BrickwallLimiter(true_peak=True).

Real-time factor = song seconds / seconds taken, best of --repeats, both by the wall clock
and by the process's CPU time (on a shared machine the wall clock also counts other
people's work; the CPU time does not). The target is at least 100x. The song is the dev
set's full mix repeated (build/devset/full_mix.flac, see scripts/make_devset.py) when it
has been built, else restore.examples.band. Benchmarks print; they never assert.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import load, machine_line, say  # noqa: E402

SECONDS = 240.0


def songs() -> dict[str, tuple[object, str]]:
    """{name: (4-minute Audio, what it is)}: the real piano clip of the tests repeated (its
    peaks sit 12.6 dB over its loudness: no limiting at -14 LUFS), and a song with harder
    peaks (16.6 dB over: limited), the dev set's full mix when built, else the example band."""
    import numpy as np
    import soundfile as sf

    from restore.audio import Audio
    from tests.support.examples import band

    def tiled(path: Path) -> Audio:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        reps = int(np.ceil(SECONDS * rate / len(data)))
        return Audio(np.ascontiguousarray(np.tile(data.T, (1, reps))[:, : int(SECONDS * rate)]), rate)

    out = {"piano": (tiled(ROOT / "tests" / "data" / "dark_piano.flac"), "tests/data/dark_piano.flac repeated (real piano)")}
    source = ROOT / "build" / "devset" / "full_mix.flac"
    out["mix"] = ((tiled(source), f"{source.relative_to(ROOT)} repeated (real music)") if source.exists()
                  else (band(SECONDS, seed=1), "restore.examples.band (synthetic; build the dev set for real music)"))
    return out


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, the last result)."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, result


def main() -> None:
    import numpy as np

    from restore.analysis.loudness import loudness_range_lu, true_peak_dbtp
    from restore.audio import Audio
    from restore.stages import StageContext, StageEnv, get_stage, package_version
    from restore.stages.master import integrated_lufs, limit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    say("versions", f"numpy {np.__version__}, pedalboard {package_version('pedalboard')}, "
                    f"pyloudnorm {package_version('pyloudnorm')}, scipy {package_version('scipy')}, soxr {package_version('soxr')}")
    sources = songs()
    for name, (audio, what) in sources.items():
        say("song", f"{name}: {what}: {audio.duration:.1f} s, {audio.channels} ch, {audio.rate} Hz")

    def at(audio: Audio, target: float) -> Audio:
        return Audio((audio.samples * 10 ** ((target - integrated_lufs(audio.samples, audio.rate)) / 20)).astype(np.float32),
                     audio.rate)

    def rtf(seconds: float) -> str:
        return f"{SECONDS / seconds:.0f}x"

    cases = (("turned down", "piano", -8.0, {}), ("turned up", "piano", -30.0, {}), ("limited", "mix", -8.0, {}),
             ("shaped", "piano", -8.0, {"width": "1.3", "mono_bass_hz": "120"}))
    for name, which, level, options in cases:
        source = at(sources[which][0], level)
        stage = get_stage("master", StageEnv(options={"master": options}))
        ctx = StageContext()
        wall, cpu, _ = timed(lambda: stage.process(source, ctx), args.repeats)
        f = ctx.facts["master"]
        say(name, f"{which} at {level:g} LUFS{' ' + str(options) if options else ''}: {wall:.2f} s wall ({rtf(wall)} real time), "
                  f"{cpu:.2f} s CPU ({rtf(cpu)}); {f['lufs_before']} -> {f['lufs_after']} LUFS, gain {f['gain_db']:+.2f} dB, "
                  f"limiting {f['limiting_db']} dB, true peak {f['true_peak_before_dbtp']} -> {f['true_peak_after_dbtp']} dBTP, "
                  f"LRA {f['lra_before']} -> {f['lra_after']} LU, reached {f['reached']}; {load()}")

    audio = sources["mix"][0]
    hot = at(audio, -14.0)
    for name, fn in (("pyloudnorm integrated", lambda: integrated_lufs(audio.samples, audio.rate)),
                     ("true peak 4x (soxr)", lambda: true_peak_dbtp(audio)),
                     ("loudness range", lambda: loudness_range_lu(audio)),
                     ("BrickwallLimiter(true_peak=True)", lambda: limit(hot.samples, audio.rate, -1.0, 100.0))):
        wall, cpu, _ = timed(fn, args.repeats)
        say("part", f"{name}: {wall:.2f} s wall ({rtf(wall)}), {cpu:.2f} s CPU ({rtf(cpu)})")
    say("done", load())


if __name__ == "__main__":
    main()
