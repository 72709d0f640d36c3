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

`perminute` (issue #19), side by side in one run, seconds per stereo minute of music:
- ours at the defaults: the stage's own AudioSrEngine.generate on one 5.12 s chunk of both
  channels (one call of 2 items, DDIM, each guided step one UNet pass over 4), `--steps`
  steps timed, fixed part (encode, VAE decode, vocoder) = the call less its steps; 14
  chunks per minute (0.64 s crossfades), one model load per run;
- ours with sampler=dpmpp (25 steps, each one guided UNet call: timed on the same chunk);
- ours with chunks_per_call=2: the guided step of a call of 4 items (two chunks), against
  two calls of 2 (the fixed parts scale with the items on a CPU: counted so);
- the person's plan: 60 s chunks (61.44 s padded), each channel alone with audiosr's own
  two UNet passes per step, the model loaded again for every chunk (the load timed here
  with the stage's loader: the plan's fresh process also imports and builds CLAP, so this
  is a floor). Its step is fitted through one item's steps at 5.12, 10.24 and 20.48 s
  (a + b L + c L^2: attention is quadratic), its fixed part scaled in proportion from ours
  at 5.12 s (61.44 s of one item is too slow to run here). Both extrapolations are stated
  with the figures.

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

PARTS = ("load", "parts", "totals", "batch", "perminute")
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


def step_times(engine, seconds: float, items: int, steps: int, *, sampler: str = "ddim", batched: bool = True) -> float:
    """Median seconds of one guided step (guidance 3.5) for a call of `items` items of
    `seconds` s: DDIM (GuidedModel's one pass over 2B, or audiosr's two passes of B) or
    DPM-Solver++; the first step's set-up excluded."""
    import torch

    from restore.stages.audiosr import dpmpp
    from restore.stages.audiosr.stage import UNCOND_LATENT, GuidedModel
    x = torch.from_numpy((np.random.default_rng(1).standard_normal((items, int(round(seconds * 48000)))) * 0.05)
                         .astype(np.float32))
    with torch.inference_mode():
        c = engine.model.cond_stage_models[0].vae.encode(engine.log_mel(x)[:, None]).sample()
    if sampler == "ddim":
        return guided_steps(engine, c, steps, batched)
    uncond = {"concat_lowpass_cond": torch.full_like(c, UNCOND_LATENT)}
    ends = []
    with torch.inference_mode():
        dpmpp.sample(GuidedModel(engine.model, uncond, 3.5), steps, torch.randn(c.shape), {"concat_lowpass_cond": c},
                     callback=lambda i: ends.append(time.perf_counter()))
    return float(np.median(np.diff(ends)))


def per_minute(engine, ckpt, steps: int, load_s: float) -> None:
    """Seconds per stereo minute: ours at the defaults, with dpmpp 25, with two chunks per
    call, and the person's plan's scheme, in one run (see the module docstring)."""
    from restore.stages.audiosr.stage import load_engine
    items = (np.random.default_rng(2).standard_normal((2, 245760)) * 0.05).astype(np.float32)
    ends = []
    t0 = time.perf_counter()
    engine.generate(items, steps, 3.5, 42, on_step=lambda i: ends.append(time.perf_counter()))
    call = time.perf_counter() - t0
    step2 = float(np.median(np.diff(ends)))
    fixed2 = call - steps * step2
    say("perminute", f"ours: one call of 2 items x 5.12 s, {steps} DDIM steps: {call:.1f} s = fixed {fixed2:.1f} s "
                     f"+ {steps} x {step2:.2f} s per guided step; {load()}")
    dpm2 = step_times(engine, 5.12, 2, 3, sampler="dpmpp")
    say("perminute", f"ours, sampler=dpmpp: one guided step of 2 items {dpm2:.2f} s ({dpm2 / step2:.2f} x DDIM's); {load()}")
    step4 = step_times(engine, 5.12, 4, 4)
    say("perminute", f"ours, chunks_per_call=2: one guided step of 4 items {step4:.2f} s = {step4 / (2 * step2):.2f} x "
                     f"two calls of 2; {load()}")
    t = time.perf_counter()
    load_engine(ckpt, "cpu", False)
    reload_s = time.perf_counter() - t
    one = {L: step_times(engine, L, 1, 4 if L < 20 else 2, batched=False) for L in (5.12, 10.24, 20.48)}
    say("perminute", "plan: one item, audiosr's two passes: one guided step " +
        ", ".join(f"{one[L]:.2f} s at {L} s" for L in one) + f"; model reload {reload_s:.1f} s; {load()}")
    step61 = fit(list(one), list(one.values()), 61.44, 2)
    fixed61 = fixed2 / 2 * 61.44 / 5.12
    chunks = 1 + math.ceil((60.0 - 5.12) / (5.12 - OVERLAP))
    rows = [
        ("ours, defaults (5.12 s, DDIM 50, both channels per call)", chunks * (fixed2 + DDIM_STEPS * step2) + load_s),
        ("ours, sampler=dpmpp, 25 steps", chunks * (fixed2 + 25 * dpm2) + load_s),
        ("ours, chunks_per_call=2 (DDIM 50)", math.ceil(chunks / 2) * (2 * fixed2 + DDIM_STEPS * step4) + load_s),
        ("plan: 61.44 s chunks, per channel, reload per chunk (DDIM 50)",
         2 * (reload_s + fixed61 + DDIM_STEPS * step61)),
    ]
    plan = rows[-1][1]
    say("perminute", f"per stereo minute ({chunks} chunks of 5.12 s; the plan's 61.44 s step {step61:.1f} s fitted, "
                     f"fixed {fixed61:.0f} s scaled from ours; ours counted with one load of {load_s:.1f} s):")
    for name, total in rows:
        say("perminute", f"  {name:64s} {total:8.0f} s = {total / 60:6.1f} min  plan / this {plan / total:5.2f} "
                         f"(goal 8)")
    say("perminute", f"peak RSS {peak_rss_gib():.2f} GiB")


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
        if "perminute" in only:
            per_minute(engine, ckpt, max(args.steps, 4), load_s)
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
