"""DPM-Solver++(2M) for AudioSR's latent diffusion: the multistep second-order solver of
the diffusion probability-flow ODE in data-prediction form (Lu et al. 2022,
"DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
Algorithm 2), on the model's own discrete schedule. audiosr 0.0.7 ships DDIM and PLMS
only; this is the `sampler=dpmpp` option, offered for cost (20-25 model calls where DDIM
takes 50), its quality against DDIM 50 unjudged without the real weights.

With alpha_t = sqrt(alphas_cumprod[t]), sigma_t = sqrt(1 - alphas_cumprod[t]) and
lambda_t = log(alpha_t / sigma_t), h_i = lambda_{t_i} - lambda_{t_{i-1}}, each step is
    x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (exp(-h_i) - 1) D_i
with D_i = x0_{i-1} (the first step: DPM-Solver++1, which is DDIM with eta 0) and after it
D_i = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2}, r_i = h_{i-1} / h_i, where x0_j is
the model's prediction of the clean latent at t_j (from its v, eps or x0 output). The last
step, down to t = 0, is always first order (the reference implementation's
lower_order_final, which diffusers also applies whenever the schedule ends at the data):
its log-SNR jump is several times the step before it (r ~ 0.25 on audiosr's cosine
schedule at 25 steps), and the second-order extrapolation over it overshoots: on the toy
problem of tests/test_audiosr.py it made 25 steps no better than DDIM's 25.
Deterministic: the only noise is x_T.

No torch at import (the stage imports it when it runs).
"""
from __future__ import annotations

import numpy as np


def timesteps(steps: int, start: int = 999) -> np.ndarray:
    """The steps + 1 integer times the solver visits, from `start` down to 0, uniform in t
    (DPM-Solver++'s advice for guided sampling): int64 [steps + 1]."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    t = np.round(np.linspace(start, 0, steps + 1)).astype(np.int64)
    if len(np.unique(t)) != steps + 1:
        raise ValueError(f"{steps} steps do not fit in {start + 1} timesteps")
    return t


def start_time(alphas_cumprod: np.ndarray) -> int:
    """The last time whose alphas_cumprod is above zero: audiosr's cosine schedule ends at
    exactly 0 (t = 999), where the log-SNR is -inf and an eps-predicting model's clean
    estimate is 0/0. At t = 998 it is 2.4e-6: the start noise is pure noise all the same."""
    above = np.nonzero(alphas_cumprod > 0)[0]
    if not len(above):
        raise ValueError("alphas_cumprod is zero everywhere")
    return int(above[-1])


def predict_x0(model_out, x, alpha: float, sigma: float, parameterization: str):
    """The clean-latent prediction from the model's output at x_t = alpha x0 + sigma eps."""
    if parameterization == "v":          # v = alpha eps - sigma x0
        return alpha * x - sigma * model_out
    if parameterization == "eps":
        return (x - sigma * model_out) / alpha
    if parameterization == "x0":
        return model_out
    raise ValueError(f"unknown parameterization {parameterization!r}")


def sample(model, steps: int, x_T, cond, callback=None):
    """Run DPM-Solver++(2M) from x_T (the start noise, [B, ...] float32 on the model's
    device) at the last time with alphas_cumprod > 0 (see start_time) to t = 0, returning the latents (same shape and dtype as x_T; audiosr's DDIM
    likewise returns x at alphas_cumprod[0], not a separate final denoise).

    model: anything with apply_model(x, t, cond) (t: int64 [B]), alphas_cumprod (one
    value per trained time, tensor or array) and parameterization ("v" for audiosr_basic,
    "eps" or "x0"); the stage passes GuidedModel, so each step is one
    guided model call. callback(i): after step i (0-based), as audiosr's DDIM calls it."""
    import torch

    abar = np.asarray(torch.as_tensor(model.alphas_cumprod).detach().cpu().double().numpy())
    ts = timesteps(steps, start_time(abar))
    alpha = np.sqrt(abar[ts])
    sigma = np.sqrt(1.0 - abar[ts])
    if not (sigma > 0).all():
        raise ValueError("alphas_cumprod reaches 1: log-SNR undefined")
    lam = np.log(alpha) - np.log(sigma)
    x = x_T
    b = x.shape[0]
    prev_x0, prev_h = None, None
    for i in range(steps):
        t = torch.full((b,), int(ts[i]), device=x.device, dtype=torch.long)
        out = model.apply_model(x, t, cond).to(x.dtype)
        x0 = predict_x0(out, x, float(alpha[i]), float(sigma[i]), model.parameterization)
        h = float(lam[i + 1] - lam[i])
        last = i == steps - 1
        if prev_x0 is None or last:
            d = x0
        else:
            r = prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
        x = float(sigma[i + 1] / sigma[i]) * x - float(alpha[i + 1] * np.expm1(-h)) * d
        prev_x0, prev_h = x0, h
        if callback:
            callback(i)
    return x
