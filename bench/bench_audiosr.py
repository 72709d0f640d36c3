"""AudioSR on the CPU, full-size architecture with random weights (compute cost does not
depend on weight values): time per stereo minute of music for the seed's scheme and ours.

Measured: the model load (build + checkpoint load through the stage's loader), and per
chunk length L and batch size B: the fixed cost per call (mel + conditioner VAE encoder,
VAE decoder, vocoder) and the cost of one classifier-free-guided DDIM step (two UNet
passes). A few steps are measured and the rest extrapolated (the steps cost the same).
One item per call except one 2-item call at 5.12 s (the CPU is compute-bound: a call of
B items costs B times one item, which that call checks; totals for 2 items use it). The
seed's 60 s chunks (61.44 s once padded) are too slow to measure here: their costs are
extrapolated: a DDIM step by a + b L + c L^2 through 5.12, 10.24 and 20.48 s (attention is
quadratic in L), the fixed part by a + b L through 2.56, 5.12 and 10.24 s (convolutions
dominate it; the VAE's own attention would only add to it). Printed, never asserted.

`batch` (issue #19): at 5.12 s, calls of 1 and 2 items: one guided DDIM step with the
conditional and unconditional UNet passes as one call of 2B items (the stage's
GuidedModel) against audiosr's two calls of B, interleaved round by round (a shared
machine's load changes hit both alike).
`parts` and `totals` time audiosr's two passes (as measured before GuidedModel).

    flock /tmp/mp3restore-bench.lock python bench/bench_audiosr.py [--only parts|totals|batch]
        [--steps 4] [--work DIR] [--keep]
"""
from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_args, load, machine_line, say, work_folder  # noqa: E402

PARTS = ("load", "parts", "totals", "batch")
DDIM_STEPS = 50
OVERLAP = 0.64


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def measure(engine, seconds: float, items: int, steps: int, fixed: bool = True) -> dict:
    """Seconds for one call of `items` items of `seconds` s: the fixed parts, and one DDIM
    step (audiosr's two UNet passes) as the median time between step ends (the first
    step's set-up excluded)."""
    import torch

    from restore.stages.audiosr.compat import load_audiosr
    lib = load_audiosr()
    m = engine.model
    n = int(round(seconds * 48000))
    x = torch.from_numpy((np.random.default_rng(0).standard_normal((items, n)) * 0.05).astype(np.float32))
    out = {}
    with torch.inference_mode():
        t = time.perf_counter()
        mel = engine.log_mel(x)
        c = m.cond_stage_models[0].vae.encode(mel[:, None]).sample()
        out["encode"] = time.perf_counter() - t
        sampler = lib["DDIMSampler"](m, device=engine.device)
        ends = []
        samples, _ = sampler.sample(steps, items, tuple(c.shape[1:]), {"concat_lowpass_cond": c}, verbose=False, eta=1.0,
                                    unconditional_guidance_scale=3.5,
                                    unconditional_conditioning={"concat_lowpass_cond": torch.full_like(c, -11.4981)},
                                    callback=lambda i: ends.append(time.perf_counter()))
        out["step"] = float(np.median(np.diff(ends)))
        if not fixed:
            return out
        t = time.perf_counter()
        mel_out = m.decode_first_stage(samples)
        out["decode"] = time.perf_counter() - t
        t = time.perf_counter()
        m.first_stage_model.vocoder(mel_out.squeeze(1).permute(0, 2, 1))
        out["vocoder"] = time.perf_counter() - t
    out["fixed"] = out["encode"] + out["decode"] + out["vocoder"]
    return out


def fit(lengths, values, at: float, degree: int) -> float:
    """Least-squares polynomial of `degree` in L through the points, at `at`; a quadratic
    whose L^2 term comes out negative (noise) falls back to a straight line."""
    coeffs = np.polyfit(np.asarray(lengths), np.asarray(values), deg=degree)
    if degree == 2 and coeffs[0] < 0:
        coeffs = np.polyfit(np.asarray(lengths), np.asarray(values), deg=1)
    return float(np.polyval(coeffs, at))


def guided_steps(engine, c, steps: int, batched: bool) -> float:
    """Median seconds of one guided DDIM step on the conditions c, one pass or audiosr's two."""
    import torch

    from restore.stages.audiosr.compat import load_audiosr
    from restore.stages.audiosr.stage import GuidedModel
    m = engine.model
    uncond = {"concat_lowpass_cond": torch.full_like(c, -11.4981)}
    guide = {"unconditional_guidance_scale": 3.5, "unconditional_conditioning": uncond}
    model = m
    if batched:
        model, guide = GuidedModel(m, uncond, 3.5), {"unconditional_guidance_scale": 1.0}
    ends = []
    with torch.inference_mode():
        load_audiosr()["DDIMSampler"](model, device=engine.device).sample(
            steps, len(c), tuple(c.shape[1:]), {"concat_lowpass_cond": c}, verbose=False, eta=1.0, **guide,
            callback=lambda i: ends.append(time.perf_counter()))
    return float(np.median(np.diff(ends)))


def batch_part(engine, steps: int, rounds: int = 3) -> None:
    """At 5.12 s, for calls of 1 and 2 items: one guided step with the guidance's two UNet
    passes as one call of 2B (the stage's GuidedModel) and as audiosr's two calls of B,
    interleaved over `rounds` rounds so that load changes on a shared machine hit both
    alike; the fastest round of each is kept."""
    import torch
    for items in (1, 2):
        x = torch.from_numpy((np.random.default_rng(0).standard_normal((items, 245760)) * 0.05).astype(np.float32))
        with torch.inference_mode():
            c = engine.model.cond_stage_models[0].vae.encode(engine.log_mel(x)[:, None]).sample()
        one, two = [], []
        for _ in range(rounds):
            two.append(guided_steps(engine, c, steps, batched=False))
            one.append(guided_steps(engine, c, steps, batched=True))
        say("batch", f"L= 5.12 s, {items} item{'s' if items > 1 else ' '} per call: one guided step, audiosr's two "
                     f"passes {min(two):6.2f} s, one pass of {2 * items} {min(one):6.2f} s = {min(one) / min(two):.2f} x "
                     f"(rounds: {', '.join(f'{a:.2f}/{b:.2f}' for a, b in zip(two, one))}); {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, PARTS)
    ap.add_argument("--steps", type=int, default=4, help="DDIM steps run per configuration (default 4: 3 timed)")
    args = ap.parse_args()
    import torch

    from tests.support.random_audiosr import save_random_audiosr
    from restore.stages.audiosr.stage import load_engine
    print(machine_line())
    say("torch", f"{torch.__version__}, {torch.get_num_threads()} threads")
    with work_folder("bench-audiosr-", args.work, args.keep) as work:
        ckpt = work / "audiosr_basic" / "pytorch_model.bin"
        t = time.perf_counter()
        save_random_audiosr(ckpt, seed=0, small=False)
        say("model", f"full-size random checkpoint written in {time.perf_counter() - t:.1f} s, "
                     f"{ckpt.stat().st_size / 1e9:.2f} GB")
        t = time.perf_counter()
        engine = load_engine(ckpt, "cpu", False)
        load_s = time.perf_counter() - t
        params = sum(p.numel() for p in engine.model.parameters())
        say("load", f"{load_s:.1f} s (build + load_state_dict, checkpoint in the page cache); "
                    f"{params / 1e6:.0f} M parameters kept in use; peak RSS {peak_rss_gib():.2f} GiB")

        measure(engine, 0.64, 1, 2)   # warm-up: the first call pays for kernel set-up and allocations
        only = set(args.only or PARTS)
        if "batch" in only:
            batch_part(engine, args.steps)
        if not only & {"parts", "totals"}:
            return
        rows = {}
        for seconds in (2.56, 5.12, 10.24):
            r = measure(engine, seconds, 1, args.steps)
            rows[seconds] = r
            say("parts", f"L={seconds:5.2f} s, 1 item: encode {r['encode']:6.2f} s, decode {r['decode']:6.2f} s, "
                         f"vocoder {r['vocoder']:6.2f} s, fixed {r['fixed']:6.2f} s; one CFG step {r['step']:6.2f} s "
                         f"= {r['step'] / seconds:.3f} s per audio-second; peak RSS {peak_rss_gib():.2f} GiB")
        pair = measure(engine, 5.12, 2, args.steps, fixed=False)
        say("parts", f"L= 5.12 s, 2 items: one CFG step {pair['step']:6.2f} s = {pair['step'] / rows[5.12]['step']:.2f} x "
                     f"one item; peak RSS {peak_rss_gib():.2f} GiB")
        long = measure(engine, 20.48, 1, 2, fixed=False)   # 2 steps: one timed
        say("parts", f"L=20.48 s, 1 item: one CFG step {long['step']:6.2f} s = {long['step'] / 20.48:.3f} s per "
                     f"audio-second; peak RSS {peak_rss_gib():.2f} GiB")

        # Ours: L-second chunks with 0.64 s crossfades, both channels in one call (on the CPU
        # as dear as two calls of one), one load per run.
        def ours(seconds: float) -> tuple[float, int]:
            count = 1 + math.ceil((60.0 - seconds) / (seconds - OVERLAP))
            r = rows[seconds]
            return count * 2 * (r["fixed"] + DDIM_STEPS * r["step"]), count

        say("totals", f"per stereo minute at {DDIM_STEPS} steps (each step as timed above, {args.steps - 1} timed per length):")
        best = None
        for seconds in (2.56, 5.12, 10.24):
            total, count = ours(seconds)
            say("totals", f"  ours, {seconds:5.2f} s chunks: {count} chunks x 2 channels, {total / 60:7.1f} min "
                          f"(+ one model load of {load_s:.0f} s per run)")
            best = min(best or (total, seconds), (total, seconds))
        # Seed: 60 s chunks (61.44 s padded), each channel alone, a model load per chunk.
        step61 = fit([5.12, 10.24, 20.48], [rows[5.12]["step"], rows[10.24]["step"], long["step"]], 61.44, 2)
        fixed61 = fit([2.56, 5.12, 10.24], [rows[s]["fixed"] for s in (2.56, 5.12, 10.24)], 61.44, 1)
        seed_total = 2 * (load_s + fixed61 + DDIM_STEPS * step61)
        say("totals", f"  seed, 61.44 s chunks, channels alone, a load per chunk: 2 x ({load_s:.0f} s load + "
                      f"{fixed61:.0f} s fixed + {DDIM_STEPS} x {step61:.1f} s per step (extrapolated)) = {seed_total / 60:7.1f} min")
        ours_total = ours(5.12)[0] + load_s
        say("totals", f"  ratio seed / ours (5.12 s chunks, one load): {seed_total / ours_total:.2f}; "
                      f"fastest chunk length measured: {best[1]} s; peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
