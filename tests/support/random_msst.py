"""Randomly initialised separators of the real msst classes (SCNet, BSRoformer), small,
saved as the MSST project publishes its checkpoints: `torch.save(model.state_dict())`, the
class's own keys (encoder.0..., separation_net..., layers.0..., mask_estimators.0...), or
that state dict under "state_dict" as a training checkpoint keeps it.

`tiny_spec(name)` is the catalogue's entry with a small config of the same class in place
of the published one (and no published sha256, which a random file cannot have): the
stage, its loader and the chunking are the real ones.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from restore.models.store import CATALOGUE
from restore.stages.msst_compat import separator_class

TINY_SCNET = {"sources": ["drums", "bass", "other", "vocals"], "audio_channels": 2, "dims": [4, 8, 16, 16],
              "nfft": 256, "hop_size": 64, "win_size": 256, "normalized": True, "band_SR": [0.225, 0.372, 0.403],
              "band_stride": [1, 4, 4], "band_kernel": [3, 4, 4], "conv_depths": [1, 1, 1], "compress": 2,
              "conv_kernel": 3, "num_dplayer": 2, "expand": 1}


def tiny_roformer(stems: int) -> dict:
    return {"dim": 16, "depth": 1, "stereo": True, "num_stems": stems, "time_transformer_depth": 1,
            "freq_transformer_depth": 1, "freqs_per_bands": (8,) * 15 + (9,), "dim_head": 8, "heads": 2,
            "dim_freqs_in": 129, "stft_n_fft": 256, "stft_hop_length": 64, "stft_win_length": 256,
            "mask_estimator_depth": 1, "mlp_expansion_factor": 1}


TINY = {"scnet_xl_ihf": TINY_SCNET, "bs_roformer": tiny_roformer(4), "bs_roformer_vocals": tiny_roformer(1)}
CHUNK = 8820   # 0.2 s: short chunks keep the tests fast and give a song several of them


def tiny_spec(name: str, chunk_size: int = CHUNK):
    spec = CATALOGUE[name]
    return replace(spec, sha256=None, config={**spec.config, "model": TINY[name], "chunk_size": chunk_size})


def random_separator(name: str, seed: int = 0, config: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = CATALOGUE[name]
    return separator_class(spec.config["class"])(**(config or TINY[name])).eval()


def save_random_separator(path: Path, name: str, seed: int = 0, layout: str = "bare") -> torch.nn.Module:
    """Save a tiny random `name` at `path` ("bare": the state dict, as MSST saves it;
    "wrapped": {"state_dict": ..., "epoch": ...}); returns the model."""
    model = random_separator(name, seed)
    sd = model.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd if layout == "bare" else {"state_dict": sd, "epoch": 36}, str(path))
    return model
