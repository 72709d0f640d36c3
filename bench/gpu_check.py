#!/usr/bin/env python3
"""The prepared GPU check (issue #19): one script, a few minutes on one CUDA GPU (about 8 on
an H200 at most; `--budget` guards the AudioSR part's sweeps), run when a GPU is lent.

Full-size architectures with random weights (compute and memory do not depend on weight
values; numerical error does, so the float16 errors below are those of random weights:
a trained model's activations may be larger, which is what the stage's per-chunk guard is
for). Measured, per model, float32 against float16 (the stages' `half=auto` on CUDA):

- AudioSR (the stage's own AudioSrEngine.generate, audiosr 0.0.7's classes, the UNet's
  zero-initialised output layers given small random weights so that it predicts something):
  a call of both channels of one 5.12 s chunk at 50 DDIM steps in float32 and float16 (the
  same noise): time, peak VRAM (torch.cuda.max_memory_allocated), the float16 latents' and
  waveform's error against float32, where the call's time goes (encode, guided steps,
  decode + vocoder); the same in float16 with sampler=dpmpp at 25 steps; calls of 1, 2, 4
  and 8 chunks (both channels each) at 10 steps: seconds per chunk and peak VRAM, and what
  the stage's chunks_per_call=auto picks with this GPU's free memory; the person's plan's
  scheme (one 61.44 s item of one channel, audiosr's two UNet passes per step, float32,
  a model reload per chunk) at 10 steps, extrapolated to 50; seconds per stereo minute for
  ours and for the plan, and their ratio (the goal: at least 8).
- Apollo (msst's class at the published size: feature_dim 256, 6 layers), a call of 2
  items of 10 s at 44.1 kHz, and of 8 items.
- HTDemucs (demucs 4.1's class at the published size), one 7.8 s stereo segment, batch 1
  and 4; skipped when demucs is not installed.

Writes JSON (--out) and prints a table. Each part is caught: a failure is recorded and the
next part runs. `--cpu-smoke` runs the same code on the CPU with tiny models and lengths (a
minute or two), to check the script before a GPU is lent; its figures mean nothing, and
float16 is float32 there (autocast is CUDA's).

    python bench/gpu_check.py --out $OUT/gpu_check.json         # on the GPU machine
    python bench/gpu_check.py --cpu-smoke --out /tmp/gpu_check.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DDIM_STEPS = 50
OVERLAP = 0.64


class Clock:
    """Wall seconds with the device's queue drained at both ends; peak memory per part."""

    def __init__(self, device: str):
        import torch
        self.cuda = device.startswith("cuda")
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / (1 << 30) if self.cuda else None


def rel_db(err, ref) -> float:
    """Error energy over reference energy, dB (-inf when equal)."""
    e = float(np.sum(np.square(np.asarray(err, np.float64))))
    r = float(np.sum(np.square(np.asarray(ref, np.float64)))) or 1e-30
    return 10 * math.log10(e / r) if e > 0 else float("-inf")


def audiosr_part(device: str, smoke: bool, work: Path, clock: Clock, budget: float) -> dict:
    import torch

    from restore.models.devices import DeviceInfo, free_bytes
    from restore.stages import StageEnv
    from restore.stages.audiosr.stage import AudioSrStage, load_engine, suspect
    from tests.support.random_audiosr import save_random_audiosr
    start = time.perf_counter()
    out: dict = {}
    seconds = 1.28 if smoke else 5.12
    steps, dpm_steps, sweep_steps = (2, 3, 2) if smoke else (DDIM_STEPS, 25, 10)
    ckpt = work / "audiosr_basic" / "pytorch_model.bin"
    t = time.perf_counter()
    save_random_audiosr(ckpt, seed=0, small=smoke)
    out["checkpoint_written_s"] = round(time.perf_counter() - t, 1)
    t = clock.now()
    engine = load_engine(ckpt, device, half=False)
    out["load_s"] = round(clock.now() - t, 2)
    m = engine.model
    with torch.no_grad():   # wake the UNet's zero-initialised output layers (zero_module)
        for q in m.model.parameters():
            if not q.any():
                q.normal_(0, 0.02, generator=torch.Generator().manual_seed(q.numel()))
    n = int(round(seconds * 48000))
    rng = np.random.default_rng(0)
    items = (rng.standard_normal((2, n)) * 0.1).astype(np.float32)

    def timed_call(x, k, half, sampler="ddim", record=False):
        """(seconds, peak GiB, output, latents, phases) of one generate call."""
        latents, ends = [], []
        real = m.decode_first_stage
        if record:
            m.decode_first_stage = lambda z, *a, **kw: (latents.append(z.float().cpu()), real(z, *a, **kw))[1]
        clock.reset_peak()
        t0 = clock.now()
        try:
            y = engine.generate(x, k, 3.5, 42, on_step=lambda i: ends.append(clock.now()), half=half, sampler=sampler)
        finally:
            if record:
                del m.decode_first_stage
        t1 = clock.now()
        steps_s = float(np.median(np.diff(ends))) if len(ends) > 1 else (ends[0] - t0 if ends else 0.0)
        phases = {"encode_s": round(ends[0] - t0 - steps_s, 3) if ends else None, "step_s": round(steps_s, 4),
                  "decode_vocoder_s": round(t1 - ends[-1], 3) if ends else None}
        return t1 - t0, clock.peak_gib(), y, (latents[0] if latents else None), phases

    runs = {}
    for half in (False, True):
        s, peak, y, z, phases = timed_call(items, steps, half, record=True)
        runs[half] = (y, z)
        out["fp16" if half else "fp32"] = {"seconds": round(s, 2), "peak_vram_gib": peak, **phases,
                                           "suspect": [w for w in suspect(items, y) if w]}
    (y32, z32), (y16, z16) = runs[False], runs[True]
    out["fp16_error"] = {"latents_rel_db": round(rel_db(z16 - z32, z32), 1),
                         "wave_rel_db": round(rel_db(y16 - y32, y32), 1),
                         "wave_max_abs": float(np.max(np.abs(y16 - y32))), "finite": bool(np.isfinite(y16).all())}
    s, peak, _, _, phases = timed_call(items, dpm_steps, True, sampler="dpmpp")
    out["fp16_dpmpp"] = {"steps": dpm_steps, "seconds": round(s, 2), "peak_vram_gib": peak, **phases}

    # The person's plan: one channel of a 61.44 s chunk, audiosr's two passes, float32, a reload per chunk.
    plan_seconds = 2.56 if smoke else 61.44
    plan_steps = 2 if smoke else 10
    if time.perf_counter() - start > budget:
        out["plan"] = "skipped: over the part's time budget"
    else:
        t = clock.now()
        del engine
        clock.reset_peak()
        engine = load_engine(ckpt, device, half=False)
        reload_s = clock.now() - t
        engine.batched_guidance = False
        m = engine.model
        one = (rng.standard_normal((1, int(round(plan_seconds * 48000)))) * 0.1).astype(np.float32)
        s, peak, _, _, phases = timed_call(one, plan_steps, False)
        fixed = s - plan_steps * phases["step_s"]
        out["plan"] = {"chunk_s": plan_seconds, "steps_run": plan_steps, "seconds": round(s, 2), "peak_vram_gib": peak,
                       "reload_s": round(reload_s, 2), **phases}
        plan_minute = 2 * (60.0 / plan_seconds if smoke else 1) * (reload_s + fixed + DDIM_STEPS * phases["step_s"])
        engine.batched_guidance = True   # the sweep below is ours
    sweep = {}
    for chunks in ((1, 2) if smoke else (1, 2, 4, 8)):
        if time.perf_counter() - start > budget:
            sweep[chunks] = "skipped: over the part's time budget"
            continue
        x = np.tile(items, (chunks, 1))
        try:
            s, peak, _, _, _ = timed_call(x, sweep_steps, True)
            sweep[chunks] = {"seconds_per_chunk": round(s / chunks, 3), "peak_vram_gib": peak}
        except torch.cuda.OutOfMemoryError:
            sweep[chunks] = "out of memory"
            torch.cuda.empty_cache()
    out["chunks_per_call_fp16"] = {"steps": sweep_steps, **{str(k): v for k, v in sweep.items()}}
    stage = AudioSrStage(StageEnv())
    kind = "cuda" if device.startswith("cuda") else "cpu"
    stage.device = DeviceInfo(kind, device, "", 0, 0, 1)
    free = free_bytes(stage.device)
    out["auto_chunks_per_call"] = {"free_gib": round(free / (1 << 30), 1),
                                   "items_per_call": stage._batching(2, free)[1]}

    # Per stereo minute (smoke: the same arithmetic on its tiny lengths).
    chunks = 1 + math.ceil((60.0 - seconds) / (seconds - OVERLAP))
    fp16 = out["fp16"]
    ours = chunks * (fp16["seconds"] - (steps - DDIM_STEPS) * fp16["step_s"]) + out["load_s"]
    if not isinstance(out.get("plan"), dict):
        return out
    plan = plan_minute
    # With chunks_per_call=auto: ours scaled by the sweep's seconds per chunk at auto's
    # chunk count against one chunk per call (same steps; an estimate).
    auto_chunks = max(1, out["auto_chunks_per_call"]["items_per_call"] // 2)
    usable = {int(k): v["seconds_per_chunk"] for k, v in sweep.items() if isinstance(v, dict) and int(k) <= auto_chunks}
    scale = usable[max(usable)] / usable[1] if 1 in usable else 1.0
    dpm = out["fp16_dpmpp"]
    ours_dpm = chunks * (dpm["seconds"] - (dpm_steps - 25) * dpm["step_s"]) + out["load_s"]
    out["per_stereo_minute"] = {"ours_1_chunk_per_call_fp16_s": round(ours, 1),
                                "ours_auto_chunks_fp16_s_est": round((ours - out["load_s"]) * scale + out["load_s"], 1),
                                "ours_dpmpp25_fp16_s": round(ours_dpm, 1), "plan_s": round(plan, 1),
                                "plan_over_ours_1_chunk": round(plan / ours, 2), "goal": 8,
                                "real_time_1_chunk": round(ours / 60, 3)}
    return out


def apollo_part(device: str, smoke: bool, clock: Clock) -> dict:
    from restore.stages.apollo import model_call
    from tests.support.random_apollo import random_apollo
    shape = dict(feature_dim=16, layer=1) if smoke else dict(feature_dim=256, layer=6)
    model = random_apollo(0, **shape).to(device)
    seconds = 1.0 if smoke else 10.0
    items = (np.random.default_rng(3).standard_normal((2, int(seconds * 44100))) * 0.1).astype(np.float32)
    out, ys = {"shape": shape, "seconds_of_audio": seconds}, {}
    for half in (False, True):
        call = model_call(model, device, half and device.startswith("cuda"))
        call(items[:, :4410])                      # warm-up
        clock.reset_peak()
        t = clock.now()
        ys[half] = call(items)
        out["fp16" if half else "fp32"] = {"seconds": round(clock.now() - t, 3), "peak_vram_gib": clock.peak_gib()}
    out["fp16_error"] = {"rel_db": round(rel_db(ys[True] - ys[False], ys[False]), 1),
                         "finite": bool(np.isfinite(ys[True]).all())}
    call = model_call(model, device, device.startswith("cuda"))
    clock.reset_peak()
    t = clock.now()
    call(np.tile(items, (4, 1)))
    out["fp16_8_items"] = {"seconds": round(clock.now() - t, 3), "peak_vram_gib": clock.peak_gib()}
    return out


def demucs_part(device: str, smoke: bool, clock: Clock) -> dict:
    import importlib.util
    if importlib.util.find_spec("demucs") is None:
        return {"skipped": "demucs is not installed"}
    import torch

    from tests.support.random_demucs import FULL, SOURCES, random_htdemucs
    arch = {} if smoke else FULL
    model = random_htdemucs(SOURCES[4], 0, **arch).to(device)
    frames = int(float(model.segment) * 44100)
    x = torch.from_numpy((np.random.default_rng(4).standard_normal((4, 2, frames)) * 0.1).astype(np.float32)).to(device)
    out, ys = {"arch": arch or "tiny", "segment_s": float(model.segment)}, {}
    import contextlib
    for half in (False, True):
        autocast = (torch.autocast("cuda", dtype=torch.float16) if half and device.startswith("cuda")
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            model(x[:1])                            # warm-up
            clock.reset_peak()
            t = clock.now()
            ys[half] = model(x[:1]).float().cpu().numpy()
            out["fp16" if half else "fp32"] = {"seconds": round(clock.now() - t, 3), "peak_vram_gib": clock.peak_gib()}
            if half:
                clock.reset_peak()
                t = clock.now()
                model(x)
                out["fp16_batch_4"] = {"seconds": round(clock.now() - t, 3), "peak_vram_gib": clock.peak_gib()}
    out["fp16_error"] = {"rel_db": round(rel_db(ys[True] - ys[False], ys[False]), 1),
                         "finite": bool(np.isfinite(ys[True]).all())}
    return out


def table(results: dict) -> str:
    """One line per measured figure: part, what, value."""
    lines = [f"{'part':9s} {'figure':44s} value", "-" * 72]

    def walk(part, prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(part, f"{prefix}.{k}" if prefix else k, v)
        else:
            lines.append(f"{part:9s} {prefix:44s} {value}")
    for part, value in results.items():
        walk(part, "", value)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU: checks the script, figures meaningless")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON goes")
    ap.add_argument("--budget", type=float, default=240.0,
                    help="seconds into the AudioSR part after which its remaining sweeps are skipped (GPU only)")
    ap.add_argument("--only", action="append", choices=("audiosr", "apollo", "demucs"))
    args = ap.parse_args()
    import torch
    if args.cpu_smoke:
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda:0"
    else:
        sys.exit("no CUDA GPU here (torch.cuda.is_available() is False); --cpu-smoke checks the script on the CPU")
    results: dict = {"machine": {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
                                 "name": torch.cuda.get_device_name(0) if device != "cpu" else "cpu",
                                 "cpu_smoke": args.cpu_smoke}}
    clock = Clock(device)
    budget = math.inf if args.cpu_smoke else args.budget   # the smoke run checks every path
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        parts = {"audiosr": lambda: audiosr_part(device, args.cpu_smoke, Path(work), clock, budget),
                 "apollo": lambda: apollo_part(device, args.cpu_smoke, clock),
                 "demucs": lambda: demucs_part(device, args.cpu_smoke, clock)}
        for name, part in parts.items():
            if args.only and name not in args.only:
                continue
            t = time.perf_counter()
            try:
                results[name] = part()
            except Exception as exc:   # one part's failure is a figure too; the next part runs
                results[name] = {"failed": f"{type(exc).__name__}: {exc}"[:300],
                                 "traceback": traceback.format_exc()[-1500:]}
            results[name]["part_s"] = round(time.perf_counter() - t, 1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1, default=str))   # what is done survives a timeout
    results["total_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    print(f"[gpu_check] JSON: {args.out}")


if __name__ == "__main__":
    main()
