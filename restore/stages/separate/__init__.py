"""The `separate` stage (04_stems, and the separation 05-07 start from): the song's decode
in, `Stems` out ({stem: Audio} at its rate, channel count and exact length).

`--set separate.model=NAME` chooses the model; each model family has its backend, a
`SeparatorStage` (common.py: the options, the model table, everything around the model):
- demucs.py: htdemucs_ft, htdemucs, htdemucs_6s through demucs 4.1's own apply_model;
- msst.py: scnet_xl_ihf, bs_roformer, bs_roformer_vocals through msst's classes and
  MSST's published chunking (restore/models/demix.py).
`auto` (the default) is the best published MUSDB18-HQ score among the models whose weights
are licensed for this use and can be fetched, present here: SCNet XL IHF (10.08 dB, MIT)
when its file is in the models folder, else htdemucs_ft (9.0 dB, MIT), as before. The
RoFormers are chosen by name only (bs_roformer scores lower; bs_roformer_vocals's weights
carry no licence).

`separate_stage(env)` is what the stage registry builds: the backend of the chosen model.
"""
from __future__ import annotations

from restore.models.store import CATALOGUE, find_model, hf_hub_cache
from restore.stages.base import StageEnv
from restore.stages.msst_compat import msst_installed
from restore.stages.options import parse_options
from restore.stages.separate.common import AUTO, BEST_FIRST, MODELS, OPTIONS, SeparatorStage, mixture_residual_db
from restore.stages.separate.demucs import SHIFT_SEED, DemucsStage, locate, missing_reason, published
from restore.stages.separate.msst import MsstStage

__all__ = ["DemucsStage", "MsstStage", "SeparatorStage", "SHIFT_SEED", "hf_hub_cache", "locate", "missing_reason",
           "mixture_residual_db", "published", "resolve_model", "separate_stage"]

BACKENDS = {"demucs": DemucsStage, "msst": MsstStage}


def resolve_model(env: StageEnv) -> str:
    """The model `separate.model` names; for auto, the first of BEST_FIRST whose file is in
    the models folder (cheap: a file lookup, no hashing), else the last of them."""
    name = parse_options("separate", OPTIONS, env.options_for("separate"))["model"]
    if name != AUTO:
        return name
    from restore.models.store import models_dir
    folder = models_dir(env.models_dir)
    for candidate in BEST_FIRST[:-1]:
        if msst_installed() and find_model(CATALOGUE[candidate], folder) is not None:
            return candidate
    return BEST_FIRST[-1]


def separate_stage(env: StageEnv | None = None) -> SeparatorStage:
    """The `separate` stage for `env`'s options: the backend of the model chosen."""
    env = env or StageEnv()
    name = resolve_model(env)
    return BACKENDS[MODELS[name][0]](env, name)
