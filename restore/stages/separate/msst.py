"""The msst backend of the `separate` stage: SCNet XL IHF and the BS-RoFormers, the
Music-Source-Separation-Training project's classes (msst 0.1.0, imported bare:
restore/stages/msst_compat.py) with its published checkpoints and configs.

- Weights: one checkpoint per model, in `<models>/msst/` (the catalogue, restore/models/store.py,
  names the file, its URL, size, licence and sha256 where known), read as tensors only
  (restore/models/checkpoints.py): a plain state dict as MSST saves it, or one under
  "state_dict" / "model_state_dict". The class is built from the published config's values,
  kept as data in the catalogue, and the weights must fit it exactly (strict).
- Chunking: MSST's own (restore/models/demix.py): the published chunk_size and num_overlap,
  linear fades of a tenth of a chunk, reflect-padded borders. That is how the published
  scores were measured, and these models see a whole chunk at once, so the project's
  chunker could not reproduce a whole-song pass anyway.
- A model that gives one target (the viperx vocal RoFormer: vocals) gives a second stem,
  "instrumental": the mix minus the target, as MSST's inference does with
  --extract_instrumental. The stem set says so (`vocals`, `instrumental`), and the routes
  send `instrumental` through its own route (other's by default).
- No normalisation around the model: the published configs have `inference.normalize: false`.
- On CUDA, float16 autocast, as MSST runs them (`training.use_amp: true`); on the CPU, float32.
  Out of device memory, the song runs on the CPU.
"""
from __future__ import annotations

import numpy as np

from restore.errors import RestoreError
from restore.models.checkpoints import load_tensors
from restore.models.demix import demix
from restore.models.store import CATALOGUE, model_version
from restore.stages.base import StageContext, package_version
from restore.stages.msst_compat import MSST_VERSION, msst_model_unavailable
from restore.stages.separate.common import AUTO, BEST_FIRST, MODEL_RATE, SeparatorStage

INSTRUMENTAL = "instrumental"   # the mix minus the target, for a model that gives only the target
# Memory of one chunk's activations (float32), beyond the weights: bench/bench_separators.py
# measured SCNet XL IHF at 1804 MiB peak RSS with 433 MiB before the load and 204 MiB of
# weights, about 1.2 GiB; 3 GiB leaves room for the RoFormers' attention (bench/RESULTS.md).
CHUNK_BYTES = 3 << 30


def state_dict_of(checkpoint, path, what: str) -> dict:
    """The weights in an MSST checkpoint: a plain state dict (what MSST saves), or one under
    "state_dict" / "model_state_dict"; a DataParallel "module." prefix is taken off."""
    sd = checkpoint
    if isinstance(sd, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd:
        raise RestoreError(f"{what} {path} holds no state dict")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def build_separator(spec, checkpoint, path):
    """The msst class of `spec` built from its published config, with the checkpoint's
    weights (strict), on the CPU, in eval mode. A checkpoint that does not fit is a
    RestoreError naming the file."""
    from restore.stages.msst_compat import separator_class
    what = f"the {spec.name} checkpoint"
    sd = state_dict_of(checkpoint, path, what)
    model = separator_class(spec.config["class"])(**spec.config["model"])
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise RestoreError(f"{what} {path} does not fit msst {MSST_VERSION}'s {type(model).__name__} with the "
                           f"published config ({str(exc).splitlines()[0][:200]})") from None
    return model.eval()


def model_call(model, device: str, half: bool):
    """demix's model function: float32 [items, 2, n] -> [items, stems, 2, n] (numpy)."""
    def call(batch: np.ndarray) -> np.ndarray:
        import contextlib
        import warnings
        import torch
        autocast = torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext()
        with torch.inference_mode(), autocast, warnings.catch_warnings():
            # SCNet's STFT has no window on purpose (rectangular, as trained): torch warns each call
            warnings.filterwarnings("ignore", message="A window was not provided")
            return model(torch.from_numpy(batch).to(device)).float().cpu().numpy()
    return call


class MsstStage(SeparatorStage):
    """SCNet and BS-RoFormer stems through msst's classes (04-07 with separate.model=NAME)."""

    backend = "msst"
    libraries = ("msst", "torch", "soxr", "numpy")

    def __init__(self, env=None, model_name: str | None = None):
        super().__init__(env, model_name)
        if self.model_name == AUTO:
            self.model_name = BEST_FIRST[0]
        self.spec = CATALOGUE[self.model_name]
        self.num_overlap = self.opts["num_overlap"] or self.spec.config["num_overlap"]
        self.model = self.cpu_model = None
        self.half = False
        self.what = f"the {self.model_name} checkpoint"

    @property
    def outputs(self) -> list[str]:
        """The stems, in order: the model's instruments, or its target and the instrumental."""
        target = self.spec.config.get("target")
        return [target, INSTRUMENTAL] if target else list(self.spec.config["instruments"])

    # -- what the plan asks (cheap: no torch import, no model load) --
    def unavailable(self) -> str | None:
        return msst_model_unavailable(self.spec, self.models_dir, self.what, self.trusted, "separators")

    def versions(self) -> dict:
        return {"separate": self.revision, "model": model_version(self.spec, self.models_dir),
                "msst": package_version("msst"), "torch": package_version("torch")}

    def config(self) -> dict:
        return {"model": self.model_name, "stems": self.outputs, "chunk_size": self.spec.config["chunk_size"],
                "num_overlap": self.num_overlap, "chunking": "msst demix", "model_rate": MODEL_RATE,
                "resample": "soxr-vhq"}

    def memory_bytes(self) -> int:
        return self.spec.approx_bytes + CHUNK_BYTES

    # -- heavy --
    def load(self, device) -> None:
        path, trusted, check = self.checked_model_file(self.spec, self.what)
        checkpoint = load_tensors(path, what=self.what, fetch_name=self.spec.name, check=check,
                                  published_sha256=self.spec.sha256, trusted=trusted)
        self.model = build_separator(self.spec, checkpoint, path)
        del checkpoint
        self.device = device
        self.half = device.kind == "cuda"
        if device.kind != "cpu":  # the out-of-memory fallback runs the song on the CPU
            import copy
            self.cpu_model = copy.deepcopy(self.model)
            self.model = self.model.to(device.torch_device)

    def unload(self) -> None:
        self.model = self.cpu_model = None

    def describe(self) -> str:
        return (f"{self.model_name}, chunks of {self.spec.config['chunk_size'] / MODEL_RATE:g} s, "
                f"num_overlap {self.num_overlap}{', float16 autocast' if self.half else ''}")

    def separate_mix(self, mix: np.ndarray, ctx: StageContext) -> tuple[list[str], np.ndarray]:
        """A [2, T] mix at 44.1 kHz -> (stems, [S, 2, T]) by msst's demix."""
        from restore.models.devices import is_out_of_memory, release_device_memory

        def run(model, device: str, half: bool) -> np.ndarray:
            return demix(mix, model_call(model, device, half), chunk_size=self.spec.config["chunk_size"],
                         num_overlap=self.num_overlap, progress=ctx.progress)
        try:
            est = run(self.model, self.device.torch_device, self.half)
        except Exception as exc:
            if self.cpu_model is None or not is_out_of_memory(exc):
                raise
            ctx.log(f"separate: out of memory on {self.device.torch_device}; this song runs on the CPU")
            release_device_memory(self.device)
            est = run(self.cpu_model, "cpu", False)
        if self.spec.config.get("target"):
            est = np.concatenate([est[:1], (mix - est[0])[None]], axis=0)
        if len(est) != len(self.outputs):
            raise RestoreError(f"{self.model_name} gave {len(est)} stems, its config says {len(self.outputs)}")
        return self.outputs, est
