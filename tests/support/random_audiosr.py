"""Randomly initialised AudioSR models for tests and benchmarks, saved in the published
checkpoint's format ({"state_dict": ...}, torch.save), built with audiosr's own classes
and config (through restore/stages/audiosr/compat.py). The product never uses these.

- `small=True`: audiosr's config with fewer channels and layers (same classes, same
  latent grid and mel size), a few MB; the checkpoint carries that reduced config under
  "mp3restore_config" / "mp3restore_vocoder", which the loader reads when present (the
  published checkpoint has neither: it is built from audiosr's own config).
- `small=False`: the full architecture (1.09 B parameters without CLAP; the UNet 258 M).
"""
from __future__ import annotations

import copy
from pathlib import Path

SMALL_VOCODER = {"upsample_initial_channel": 64, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]}


def small_params(full: dict) -> dict:
    """audiosr's config["model"]["params"] reduced: VAEs with 32 channels at every level and one
    res block per level, a UNet with 32 channels at every level (attention heads of 32
    need at least that) and one res block, the 16-channel latent and the 8x grid kept."""
    p = copy.deepcopy(full)
    small_vae = {"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1}   # GroupNorm needs 32 channels
    p["first_stage_config"]["params"]["ddconfig"].update(small_vae)
    p["first_stage_config"]["params"].pop("reload_from_ckpt", None)
    p["cond_stage_config"]["concat_lowpass_cond"]["params"]["first_stage_config"]["params"]["ddconfig"].update(small_vae)
    p["unet_config"]["params"].update({"model_channels": 32, "channel_mult": [1, 1, 1, 1], "num_res_blocks": 1})
    return p


def save_random_audiosr(path: Path, seed: int = 0, small: bool = True) -> Path:
    """Build a random-weight LatentDiffusion and torch.save it to `path` as {"state_dict"}
    (plus the reduced config when small). The VAE scale factor is set to a plausible 0.5
    (the published model stores its own)."""
    import torch

    from restore.stages.audiosr.compat import build_latent_diffusion, load_audiosr
    torch.manual_seed(seed)
    full = load_audiosr()["basic_config"]()["model"]["params"]
    params = small_params(full) if small else full
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = build_latent_diffusion(params, vocoder=SMALL_VOCODER if small else None)
    model.scale_factor.fill_(0.5)
    ckpt = {"state_dict": model.state_dict()}
    if small:
        ckpt["mp3restore_config"] = params
        ckpt["mp3restore_vocoder"] = SMALL_VOCODER
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, str(path))
    return path
