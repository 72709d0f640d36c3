"""Randomly initialised Apollo models of the real class (msst's look2hear Apollo), saved in
the layouts the published checkpoints have:

- "serialize": look2hear's BaseModel.serialize(), the official JusperLee/Apollo
  pytorch_model.bin: {"model_name": "Apollo", "state_dict": {<Apollo keys>}, "model_args":
  {"n_sample_rate": 2}, "infos": {"software_versions": {"torch_version": torch.__version__
  (a TorchVersion), "pytorch_lightning_version": str}}};
- "lightning": a PyTorch Lightning checkpoint of look2hear's training module, as the
  community checkpoints are: {"state_dict": {"audio_model.<key>": ..., "discriminator.<key>":
  ...}, "epoch", "global_step", "pytorch-lightning_version", ...};
- "bare": the state dict alone.
"""
from __future__ import annotations

from pathlib import Path

import torch

from restore.stages.msst_compat import apollo_class

TINY = dict(feature_dim=16, layer=1)   # 60 k parameters (feature_dim: 8 heads of at least 2); receptive field 9 frames (0.1 s) either side


def random_apollo(seed: int = 0, feature_dim: int = 16, layer: int = 1, win: int = 20):
    torch.manual_seed(seed)
    return apollo_class()(sr=44100, win=win, feature_dim=feature_dim, layer=layer).eval()


def save_random_apollo(path: Path, layout: str = "serialize", seed: int = 0, **shape) -> torch.nn.Module:
    """Save a random Apollo at `path` in `layout`; returns the model."""
    model = random_apollo(seed, **{**TINY, **shape})
    sd = model.state_dict()
    if layout == "serialize":
        content = {"model_name": "Apollo", "state_dict": sd, "model_args": {"n_sample_rate": 2},
                   "infos": {"software_versions": {"torch_version": torch.__version__,
                                                   "pytorch_lightning_version": "2.0.9"}}}
    elif layout == "lightning":
        content = {"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "2.0.9",
                   "state_dict": {**{f"audio_model.{k}": v for k, v in sd.items()},
                                  "discriminator.conv.weight": torch.zeros(4, 2, 3)}}
    elif layout == "bare":
        content = sd
    else:
        raise ValueError(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, str(path))
    return model
