"""The one compatibility layer between mp3restore and the msst 0.1.0 package (MIT, the
Music-Source-Separation-Training project packaged): where its model classes come from.

msst is installed without its declared dependencies (`pip install --no-deps msst==0.1.0`):
it pins torch<2.12 and pulls librosa, matplotlib, ml-collections and omegaconf, none of
which the model classes need at inference. Importing `msst.models.look2hear.models.apollo`
the ordinary way also runs `msst/__init__.py`, which imports its experiment, inference,
training and validation facades (yaml, tqdm, argparse, multiprocessing, ...). So the
packages on the way to a model file (`msst`, `msst.models`, ...) are registered here as bare
packages with their real folder as `__path__`: the model file and what it imports itself
run, their `__init__` files never do. Apollo's module then needs torch and numpy only.

Apollo's constructor prints its band widths, and the RoFormers' attention module prints
which CUDA kernel it takes: stages never print, so every msst module's `print` is
silenced. tests/test_apollo.py and tests/test_separators.py prove the imports pull no
training stack (BS-RoFormer's module needs einops, beartype and rotary_embedding_torch;
the Mel-Band RoFormer's would also pull librosa and numba, which is why it is not offered).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from restore.models.checkpoints import model_file_problem
from restore.models.store import find_model, missing
from restore.stages.bare_package import register_bare_package
from restore.stages.base import package_version

MSST_VERSION = "0.1.0"
INSTALL = "pip install --no-deps msst==0.1.0 (see README)"


def msst_installed() -> bool:
    """Whether the msst package is installed (reads the import system only: imports nothing)."""
    return importlib.util.find_spec("msst") is not None


def msst_model_unavailable(spec, models_dir, what: str, trusted, extra: str) -> str | None:
    """Why a stage built on an msst class cannot run here (torch, msst, its model file, that
    file's check), or None. `extra` names the pyproject extra that brings torch."""
    if package_version("torch") == "absent":
        return f'torch is not installed (pip install -e ".[{extra}]", see README)'
    if not msst_installed():
        return f"msst is not installed ({INSTALL})"
    path = find_model(spec, models_dir)
    if path is None:
        return missing(spec, models_dir).reason()
    return model_file_problem(spec, path, what, trusted)


def _root() -> Path:
    spec = importlib.util.find_spec("msst")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"msst is not installed ({INSTALL})")
    return Path(list(spec.submodule_search_locations)[0])


def msst_module(dotted: str) -> types.ModuleType:
    """The msst module `dotted` (e.g. "msst.models.look2hear.models.apollo"), imported with
    every package above it bare (see the module docstring). Raises ImportError naming how
    to install msst, or the module the model file itself lacks."""
    if not dotted.startswith("msst."):
        raise ValueError(f"not an msst module: {dotted}")
    root = _root()
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        register_bare_package(".".join(parts[:i]), root.joinpath(*parts[1:i]))
    module = importlib.import_module(dotted)
    for name, loaded in list(sys.modules.items()):   # the module and what it imported of msst
        if name.split(".")[0] == "msst" and loaded is not None:
            loaded.print = _silent
    return module


def _silent(*args, **kwargs) -> None:
    """In place of `print` in msst's modules: Apollo prints its band widths, Attend its kernel."""


def apollo_class():
    """msst's Apollo (look2hear): Apollo(sr, win [ms], feature_dim, layer)."""
    return msst_module("msst.models.look2hear.models.apollo").Apollo


# The separators' classes by the name the catalogue gives their family (ModelSpec.config["class"]).
SEPARATORS = {
    "scnet": ("msst.models.scnet.scnet", "SCNet"),
    "bs_roformer": ("msst.models.bs_roformer.bs_roformer", "BSRoformer"),
}


def separator_class(family: str):
    """msst's SCNet or BSRoformer class."""
    module, name = SEPARATORS[family]
    return getattr(msst_module(module), name)
