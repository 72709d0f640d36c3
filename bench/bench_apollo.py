#!/usr/bin/env python3
"""Apollo (12_apollo) benchmarks on the CPU: cost of the full-size model, seams, loads per run.

    python bench/bench_apollo.py                        # all three
    python bench/bench_apollo.py --only rtf --seconds 4 # or seams, or loads; --only may be repeated

  rtf    the FULL-SIZE official architecture (msst's Apollo, sr 44100, win 20, feature_dim 256,
         layer 6: 16.54 M parameters) with random weights, saved in the official checkpoint's
         layout and loaded by ApolloStage, processes a --seconds stereo 44.1 kHz song
         (tests.support.examples.band) on the CPU: load time, seconds per audio second, peak
         RSS (ru_maxrss of a fresh child process: this one never imports torch). Compute does
         not depend on the weights' values, so the timing is the published model's.
  seams  Apollo with the full model's receptive field (6 layers: 54 frames of 441 samples
         either side) but feature_dim 16, so that one pass over a whole --seam-seconds song
         fits: the stage's own chunking (10 s chunks, 0.5 s crossfade, 1 s context) against
         that whole-song pass, as the worst seam's error energy over the signal's energy in
         its crossfade and 0.1 s either side (dB), and the same chunking without context.
  loads  three 1.5 s songs through the engine (tiny random Apollo): model loads per run.

Benchmarks print figures; they never assert.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_common_args, machine_line, run_parts, say, work_folder  # noqa: E402

PARTS = ("rtf", "seams", "loads")


def child_rtf(work: Path, seconds: float) -> dict:
    from restore.models.devices import choose_device
    from restore.models.store import CATALOGUE
    from restore.stages import StageContext, StageEnv
    from restore.stages.apollo import ApolloStage
    from tests.support.examples import band
    from tests.support.random_apollo import save_random_apollo
    import torch
    save_random_apollo(work / "models" / CATALOGUE["apollo"].filename, feature_dim=256, layer=6)
    t0 = time.perf_counter()
    stage = ApolloStage(StageEnv(models_dir=work / "models"))
    stage.load(choose_device("cpu"))
    load_s = time.perf_counter() - t0
    audio = band(seconds, seed=1)
    ctx = StageContext(options={"cutoff_hz": 16000.0})
    t0 = time.perf_counter()
    out = stage.process(audio, ctx)
    wall = time.perf_counter() - t0
    return {"load_s": load_s, "wall_s": wall, "per_audio_s": wall / seconds, "frames_ok": out.frames == audio.frames,
            "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "params_m": sum(p.numel() for p in stage.model.parameters()) / 1e6}


def child_seams(seconds: float) -> dict:
    import numpy as np
    from restore.models.chunking import overlap_add, plan_chunks
    from restore.stages import apollo
    from tests.support.examples import band
    from tests.support.random_apollo import random_apollo
    model = random_apollo(seed=2, feature_dim=16, layer=6)
    call = apollo.model_call(model, "cpu", False)
    x = band(seconds, seed=3).samples[:1].copy()
    geometry = dict(rate_in=apollo.RATE, rate_out=apollo.RATE, chunk_seconds=apollo.CHUNK_SECONDS,
                    overlap_seconds=apollo.OVERLAP_SECONDS)
    plan = plan_chunks(x.shape[1], **geometry, context_seconds=apollo.CONTEXT_SECONDS)
    starts = [k * plan.hop_in for k in range(1, plan.count)]   # where chunk k begins: its crossfade follows
    t0 = time.perf_counter()
    whole = overlap_add(x, call, rate_in=apollo.RATE, rate_out=apollo.RATE, chunk_seconds=seconds + 1,
                        overlap_seconds=0.0, context_seconds=apollo.CONTEXT_SECONDS)
    result = {"chunks": plan.count, "whole_s": time.perf_counter() - t0}
    margin = apollo.RATE // 10
    for name, context in (("context", apollo.CONTEXT_SECONDS), ("no_context", 0.0)):
        y = overlap_add(x, call, **geometry, context_seconds=context)
        worst = -np.inf
        for s in starts:   # the crossfade and 0.1 s either side
            lo, hi = s - margin, s + plan.overlap_in + margin
            err = np.sum(np.square(y[:, lo:hi].astype(np.float64) - whole[:, lo:hi]))
            ref = np.sum(np.square(whole[:, lo:hi].astype(np.float64)))
            worst = max(worst, float(10 * np.log10(max(err, 1e-30) / ref)))
        result[name + "_seam_db"] = worst
        inner = slice(apollo.RATE, -apollo.RATE)   # away from the song's ends, where the whole pass's zeros differ
        result[name + "_max_abs"] = float(np.max(np.abs(y[:, inner] - whole[:, inner])) / np.max(np.abs(whole)))
    return result


def run_child(part: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", part, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        say(part, f"child failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, PARTS)
    parser.add_argument("--seconds", type=float, default=4.0, help="song length for rtf (default 4 s)")
    parser.add_argument("--seam-seconds", type=float, default=20.0, help="song length for seams (default 20 s: 3 chunks)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        part, *rest = args.child
        result = child_rtf(Path(rest[0]), float(rest[1])) if part == "rtf" else child_seams(float(rest[0]))
        print(json.dumps(result))
        return 0
    print(machine_line(), flush=True)
    with work_folder("bench-apollo-", args.work, args.keep) as work:
        def rtf():
            r = run_child("rtf", str(work), str(args.seconds))
            if r:
                say("rtf", f"full-size Apollo ({r['params_m']:.2f} M parameters, random weights), {args.seconds:g} s stereo "
                           f"44.1 kHz, CPU, {r['threads']} torch threads: load {r['load_s']:.1f} s, process {r['wall_s']:.1f} s "
                           f"= {r['per_audio_s']:.1f} s per audio second; peak RSS {r['rss_peak_mib']:.0f} MiB; "
                           f"exact length: {r['frames_ok']}")

        def seams():
            r = run_child("seams", str(args.seam_seconds))
            if r:
                say("seams", f"{args.seam_seconds:g} s mono, {r['chunks']} chunks of 10 s (0.5 s crossfade), Apollo with "
                             f"the full receptive field (feature_dim 16, 6 layers), against one whole-song pass "
                             f"({r['whole_s']:.0f} s): worst seam {r['context_seam_db']:.1f} dB with 1 s context "
                             f"(max |diff| {r['context_max_abs']:.1e} of peak), {r['no_context_seam_db']:.1f} dB without "
                             f"(max |diff| {r['no_context_max_abs']:.1e})")

        def loads():
            from restore.engine.config import RunConfig
            from restore.engine.run import run
            from restore.engine.variants import resolve_variants
            from restore.models.store import CATALOGUE
            from tests.conftest import write_mp3
            from tests.support.examples import band
            from tests.support.random_apollo import save_random_apollo
            save_random_apollo(work / "tiny" / CATALOGUE["apollo"].filename)
            for i in range(3):
                write_mp3(work / "in" / f"{i}.mp3", band(1.5, seed=i), bitrate=128)
            summary = run(RunConfig(inputs=[str(work / "in")], out_dir=work / "out", models_dir=work / "tiny",
                                    variants=resolve_variants("12"), device="cpu", report=False))
            say("loads", f"3 songs, variant 12_apollo: {summary.counts()} model loads {summary.model_loads}")

        run_parts([("rtf", rtf), ("seams", seams), ("loads", loads)], args.only or list(PARTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
