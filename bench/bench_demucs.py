#!/usr/bin/env python3
"""Demucs stems (04_stems) on the CPU: the wrapper's overhead against demucs's own API, and
the time and peak memory of a long song.

    flock /tmp/mp3restore-bench.lock python bench/bench_demucs.py                 # both parts
    python bench/bench_demucs.py --only overhead     # or long; --only may be repeated
    python bench/bench_demucs.py --only long --minutes 10

The model is the FULL-SIZE published htdemucs architecture (tests.support.random_demucs.FULL:
41.98 M parameters, 7.8 s segments) with random weights, saved as demucs's local repo
folder (htdemucs.yaml + <sig>-<hash>.th) and read by demucs's own loader. Compute cost does
not depend on the weight values, so timings and memory are those of the published model;
the stems are noise. Inputs are generated (restore.examples.band); making them is not timed.
Benchmarks print figures; they never assert.

  overhead  30 s stereo 44.1 kHz, shifts 1, overlap 0.25, after a warm-up: demucs's own
            `demucs.api.Separator.separate_tensor` (normalise, apply_model, scale back)
            against `DemucsStage.process` (the same, plus the mono/resample checks, the numpy
            conversions and the mixture residual). Each timed --reps times, alternating who goes first;
            the best of each compared. Target: overhead <= 5 %. As the machine's load moves
            wall times by more than that, the stage's time outside apply_model (its own work:
            normalising, conversions, the residual) is also given. Also the largest difference
            between the two sets of stems (the same seed draws the same shifts).
  long      a --minutes (10) stereo 44.1 kHz song through DemucsStage.process: wall time,
            real-time factor, peak RSS (VmHWM), with the full-size htdemucs (htdemucs_ft,
            a bag of 4 such models, takes 4x as long). Then the same song through the 4-model htdemucs_ft bag of TINY
            models (tests.support.random_demucs.TINY: compute is cheap, but the song-length
            buffers, which decide the peak on a long song, are the same as the real bag's).

Each measurement runs in a fresh child process (this one never imports torch), and peak
memory is the child's VmHWM, which exec resets.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_common_args, machine_line, run_parts, say, vm_hwm_mib, work_folder  # noqa: E402

MiB = 1 << 20


# ---------------------------------------------------------------- children (import torch)

def _song(seconds: float):
    import numpy as np
    from restore.audio import Audio
    from tests.support.examples import band
    # built in 60 s pieces, so that making it does not set the peak (band works in float64)
    parts = [band(min(60.0, seconds - s), seed=int(s) % 7).samples for s in np.arange(0, seconds, 60.0)]
    return Audio(np.ascontiguousarray(np.concatenate(parts, axis=1)), 44100)


def child_overhead(models: Path, reps: int) -> dict:
    import random

    import numpy as np
    import torch
    from demucs.api import Separator

    from restore.models.devices import choose_device
    from restore.stages import StageContext, StageEnv
    from restore.stages.separate import DemucsStage, SHIFT_SEED

    audio = _song(30.0)
    stage = DemucsStage(StageEnv(models_dir=models, options={"separate": {"model": "htdemucs", "shifts": 1, "overlap": 0.25}}))
    stage.load(choose_device("cpu"))
    theirs = Separator(model="htdemucs", repo=models / "demucs", device="cpu", shifts=1, overlap=0.25, split=True)
    wav = torch.from_numpy(audio.samples)

    def demucs_own():
        random.seed(SHIFT_SEED)
        return theirs.separate_tensor(wav, audio.rate)[1]

    # Time spent inside the outermost apply_model call of the stage (apply_model calls itself
    # per model, shift and segment: only the outer call counts), to give the stage's own share.
    import demucs.apply
    real_apply, inside, depth = demucs.apply.apply_model, [0.0], [0]

    def timed_apply(*a, **kw):
        depth[0] += 1
        t0 = time.perf_counter()
        try:
            return real_apply(*a, **kw)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                inside[0] += time.perf_counter() - t0

    demucs.apply.apply_model = timed_apply   # the stage imports it at call time; demucs.api holds its own
    ctx = StageContext()
    warm = _song(8.0)
    stage.process(warm, StageContext())                    # warm-up: allocator, kernels
    random.seed(SHIFT_SEED)
    theirs.separate_tensor(torch.from_numpy(warm.samples), 44100)
    times = {"demucs": [], "ours": [], "ours_outside": []}
    for rep in range(reps):
        for side in (("demucs", "ours") if rep % 2 == 0 else ("ours", "demucs")):  # alternate who goes first
            t0 = time.perf_counter()
            if side == "demucs":
                d = demucs_own()
            else:
                inside[0] = 0.0
                ours = stage.process(audio, ctx)
                times["ours_outside"].append(time.perf_counter() - t0 - inside[0])
            times[side].append(time.perf_counter() - t0)
    diff = max(float(np.max(np.abs(ours[k].samples - d[k].numpy()))) for k in ours)
    return {"times": times, "max_diff": diff, "residual_db": ctx.facts["stems_residual_db"],
            "threads": torch.get_num_threads(), "peak_mib": vm_hwm_mib(),
            "params_m": sum(p.numel() for p in stage.bag.parameters()) / 1e6}


def child_long(models: Path, minutes: float, model: str, threads: int) -> dict:
    import torch
    if threads:
        torch.set_num_threads(threads)
    from restore.models.devices import choose_device
    from restore.stages import StageContext, StageEnv
    from restore.stages.separate import DemucsStage

    audio = _song(60.0 * minutes)
    base = vm_hwm_mib()
    stage = DemucsStage(StageEnv(models_dir=models, options={"separate": {"model": model}}))
    stage.load(choose_device("cpu"))
    ctx = StageContext()
    t0 = time.perf_counter()
    stems = stage.process(audio, ctx)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rtf": seconds / audio.duration, "peak_mib": vm_hwm_mib(), "song_mib": audio.samples.nbytes / MiB,
            "before_mib": base, "stems": len(stems), "residual_db": ctx.facts["stems_residual_db"]}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        say("child", f"failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- parts (this process: no torch)

def make_models(work: Path) -> tuple[Path, Path]:
    """Full-size htdemucs and a tiny htdemucs_ft bag, each as a local repo folder."""
    code = ("import sys; from pathlib import Path; from tests.support.random_demucs import save_repo, FULL; "
            "w = Path(sys.argv[1]); save_repo(w / 'full' / 'demucs', 'htdemucs', **FULL); "
            "save_repo(w / 'tiny' / 'demucs', 'htdemucs_ft')")
    subprocess.run([sys.executable, "-c", code, str(work)], check=True, cwd=ROOT)
    for sub in ("full", "tiny"):
        files = sorted((work / sub / "demucs").glob("*.th"))
        say("model", f"{sub}: " + ", ".join(f"{p.name} {p.stat().st_size / MiB:.0f} MiB" for p in files))
    return work / "full", work / "tiny"


def part_overhead(full: Path, reps: int) -> None:
    r = run_child("overhead", str(full), str(reps))
    if not r:
        return
    best_d, best_o = min(r["times"]["demucs"]), min(r["times"]["ours"])
    say("overhead", f"htdemucs full size ({r['params_m']:.2f} M parameters), 30 s stereo 44.1 kHz, shifts 1, "
                    f"overlap 0.25, torch threads {r['threads']}")
    say("overhead", "demucs.api.Separator.separate_tensor: " + ", ".join(f"{t:.1f}" for t in r["times"]["demucs"]) + " s")
    say("overhead", "DemucsStage.process:                 " + ", ".join(f"{t:.1f}" for t in r["times"]["ours"]) + " s")
    say("overhead", f"best {best_o:.1f} s vs {best_d:.1f} s: overhead {100 * (best_o - best_d) / best_d:+.1f} % "
                    f"(RTF {best_o / 30:.2f}); peak RSS {r['peak_mib']:.0f} MiB (both models loaded)")
    share = [o / t for o, t in zip(r["times"]["ours_outside"], r["times"]["ours"])]
    say("overhead", "time of DemucsStage.process outside apply_model: "
                    + ", ".join(f"{o:.2f} s ({100 * f:.2f} %)" for o, f in zip(r["times"]["ours_outside"], share))
                    + ": the wrapper's own cost, free of the machine's load")
    say("overhead", f"largest difference between the two sets of stems {r['max_diff']:.2e} "
                    f"(the mix's DC offset: demucs adds it to every stem, the stage shares it); "
                    f"mixture residual (random weights) {r['residual_db']} dB")


def part_long(full: Path, tiny: Path, minutes: float, model: str) -> None:
    # The tiny bag runs on one torch thread: its time is not the point, and on 2 shared cores
    # torch's spinning threads made it slower than the full-size model.
    for label, folder, name, threads in ((f"{model}, full size", full, model, 0),
                                         ("htdemucs_ft bag of 4, tiny models, 1 thread", tiny, "htdemucs_ft", 1)):
        r = run_child("long", str(folder), str(minutes), name, str(threads))
        if not r:
            continue
        say("long", f"{minutes:g} min stereo 44.1 kHz, {label}: {r['seconds']:.0f} s (RTF {r['rtf']:.2f}), "
                    f"peak RSS {r['peak_mib']:.0f} MiB (song alone {r['song_mib']:.0f} MiB; "
                    f"{r['before_mib']:.0f} MiB before loading), {r['stems']} stems, residual {r['residual_db']} dB")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, models = sys.argv[2], Path(sys.argv[3])
        result = child_overhead(models, int(sys.argv[4])) if kind == "overhead" else \
            child_long(models, float(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
        print(json.dumps(result))
        return
    parts = ("overhead", "long")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, parts)
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions of each side in `overhead`")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the song in `long`")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    with work_folder("bench-demucs-", args.work, args.keep) as work:
        full, tiny = make_models(work)
        run_parts([("overhead", lambda: part_overhead(full, args.reps)),
                   ("long", lambda: part_long(full, tiny, args.minutes, "htdemucs"))],
                  args.only or list(parts))


if __name__ == "__main__":
    main()
