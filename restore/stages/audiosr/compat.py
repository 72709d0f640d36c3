"""The one compatibility layer between mp3restore and the audiosr 0.0.7 package.

audiosr is installed without its declared dependencies (its pins, numpy<=1.23.5,
librosa==0.9.2, transformers==4.30.2, torchvision, torchaudio, gradio..., do not install
beside modern packages). Super-resolution needs only its model classes: LatentDiffusion
(the UNet, the two VAEs, the HiFi-GAN vocoder inside them) and the DDIM sampler, which
need torch, numpy, einops, tqdm, soundfile, matplotlib, scipy and Pillow. Importing them
still reaches code that super-resolution never runs:

- `audiosr/__init__.py` and `audiosr/utilities/__init__.py` import the file pipeline, the
  training datasets, torchaudio, huggingface_hub and librosa: the two packages are
  registered here with their real folder as `__path__`, so their submodules import but
  those `__init__` files never run;
- CLAP (audiosr.clap), AudioMAE and the phoneme encoder are text/audio conditioners of
  AudioLDM; `clap.training.data` downloads the roberta tokenizer from the hub at import,
  and `DDPM.__init__` builds a CLAP model (HTSAT + RoBERTa, via transformers) that
  super-resolution never calls (it conditions on the low-passed mel only). Their modules
  are replaced by stand-ins, and `CLAPAudioEmbeddingClassifierFreev2` by `UnusedModel`:
  no parameters, and any call raises `StandInUsed`;
- librosa (used only by `LatentDiffusion.postprocessing`, which we replace with our own
  band keep), torchvision (`make_grid`, for training pictures), torchaudio and
  transformers (CLAP, the datasets), huggingface_hub and progressbar (the downloader):
  stand-in modules are put in sys.modules only while audiosr is imported, and only for
  names not already imported, then removed, so other code in the process sees the real
  libraries (or none).

Every stand-in raises `StandInUsed` when touched, so an output that exists was made
without them (tests/test_audiosr.py also proves that the CLAP stand-in is never called).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from restore.stages.bare_package import register_bare_package

AUDIOSR_VERSION = "0.0.7"

# Third-party modules audiosr imports at module level but super-resolution never calls.
_THIRD_PARTY = ("librosa", "librosa.filters", "torchvision", "torchvision.utils", "torchvision.datasets",
                "torchaudio", "transformers", "huggingface_hub", "progressbar")
# audiosr's own modules for AudioLDM's text/audio conditioners (never used by super-resolution).
_AUDIOSR_UNUSED = ("audiosr.clap.open_clip", "audiosr.clap.training.data",
                   "audiosr.latent_diffusion.modules.audiomae.AudioMAE",
                   "audiosr.latent_diffusion.modules.phoneme_encoder.encoder")


class StandInUsed(RuntimeError):
    """Code that super-resolution should never reach was reached."""


class _Raiser:
    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise StandInUsed(f"{self._name} is a stand-in (restore/stages/audiosr/compat.py): super-resolution must not use it")

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Raiser(f"{self._name}.{attr}")

    def __mro_entries__(self, bases):  # `class X(stand_in.Base)` still defines a class
        return (object,)


class _StandInModule(types.ModuleType):
    """A module whose every attribute is a `_Raiser`."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Raiser(f"{self.__name__}.{attr}")


def _unused_model_class():
    import torch

    class UnusedModel(torch.nn.Module):
        """Stands in for AudioLDM's CLAP conditioner, which DDPM.__init__ builds and
        super-resolution never calls. No parameters; any use raises."""

        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, *args, **kwargs):
            raise StandInUsed("the CLAP conditioner was called: super-resolution must not use it")

        def __getattr__(self, attr: str):
            if attr.startswith("_") or attr in ("training",):
                return super().__getattr__(attr)
            raise StandInUsed(f"CLAP.{attr} was used: super-resolution must not use it")

    return UnusedModel


def audiosr_installed() -> bool:
    return importlib.util.find_spec("audiosr") is not None


def _package_dir() -> Path:
    spec = importlib.util.find_spec("audiosr")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("audiosr is not installed (pip install --no-deps audiosr==0.0.7, see README)")
    return Path(list(spec.submodule_search_locations)[0])


_loaded: dict | None = None


def load_audiosr() -> dict:
    """Import the audiosr classes super-resolution needs, once per process. Returns
    {"LatentDiffusion", "DDIMSampler", "ddim_module", "hifigan", "utilities_model",
    "basic_config", "UnusedModel"}."""
    global _loaded
    if _loaded is not None:
        return _loaded
    import torch  # noqa: F401  (before any stand-in: torch must be the real one)

    root = _package_dir()
    added: list[str] = []

    def put(name: str, module: types.ModuleType) -> None:
        if name not in sys.modules:
            sys.modules[name] = module
            added.append(name)

    try:
        for name in _THIRD_PARTY:
            if name in sys.modules:
                continue
            parent = name.rpartition(".")[0]
            if parent and not isinstance(sys.modules.get(parent), _StandInModule):
                continue  # the real parent is imported: leave its submodules to it
            put(name, _StandInModule(name))
        # The two packages whose __init__ we skip: their folders, not their code.
        for name, folder in (("audiosr", root), ("audiosr.utilities", root / "utilities")):
            register_bare_package(name, folder)
        for name in _AUDIOSR_UNUSED:
            put(name, _StandInModule(name))

        ddpm = importlib.import_module("audiosr.latent_diffusion.models.ddpm")
        ddim = importlib.import_module("audiosr.latent_diffusion.models.ddim")
        hifigan = importlib.import_module("audiosr.hifigan")
        utilities_model = importlib.import_module("audiosr.utilities.model")
        utils = importlib.import_module("audiosr.utils")   # get_basic_config: audiosr's own model config
    finally:
        for name in added:  # other code in this process sees the real libraries again
            if name.partition(".")[0] != "audiosr":
                sys.modules.pop(name, None)
    unused = _unused_model_class()
    ddpm.CLAPAudioEmbeddingClassifierFreev2 = unused
    # Stages never print: silence the sampler's progress bar and banners (progress goes
    # through the sampler's callback instead) and the parameter count DDPM prints.
    ddim.tqdm = lambda iterable, **kwargs: iterable
    ddim.print = lambda *args, **kwargs: None
    ddpm.count_params = lambda model, verbose=False: sum(p.numel() for p in model.parameters())
    _loaded = {"LatentDiffusion": ddpm.LatentDiffusion, "DDIMSampler": ddim.DDIMSampler, "ddim_module": ddim,
               "hifigan": hifigan, "utilities_model": utilities_model, "basic_config": utils.get_basic_config,
               "UnusedModel": unused}
    return _loaded


def build_latent_diffusion(params: dict, vocoder: dict | None = None):
    """A LatentDiffusion from `params` (audiosr's config["model"]["params"]) on the CPU, in
    eval mode, with audiosr's own classes. `vocoder` overrides keys of audiosr's hard-coded
    48 kHz HiFi-GAN config (the small test models use it); None keeps it.
    EMA weights are not built (use_ema=False): audiosr's generate_batch samples with the
    live weights, its EMA scope is commented out."""
    import copy

    lib = load_audiosr()
    params = copy.deepcopy(params)
    params["use_ema"] = False
    params["device"] = "cpu"
    um = lib["utilities_model"]
    original = um.get_vocoder_config_48k
    if vocoder:
        um.get_vocoder_config_48k = lambda: {**original(), **vocoder}
    try:
        model = lib["LatentDiffusion"](**params)
    finally:
        um.get_vocoder_config_48k = original
    return model.eval()
