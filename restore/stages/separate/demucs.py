"""The Demucs backend of the `separate` stage (htdemucs_ft, htdemucs, htdemucs_6s):
{stem: Audio} at the song's own rate, channel count and exact length.

Demucs 4.1 is used as a library, in-process: its own loader reads the weights, once per run,
and its own `apply_model` runs them. The song goes through `apply_model(split=True)`: the
model's own 7.8 s segments (or shorter, `segment`), `overlap` between them with demucs's
triangular crossfade, and `shifts` random time shifts averaged. That is demucs's chunker, not
the project's (restore/models/chunking.py): the crossfade, the shift trick and the bag-of-models
weighting are part of what the published models were evaluated with, so they are kept as
they are. Only one segment at a time is on the device; the whole song's stems are kept in
(CPU) memory, 84.7 MiB per minute for 4 stereo stems at 44.1 kHz (bench/bench_demucs.py
measures the peak for a 10-minute song).

Around the model, as demucs's own Separator does: the mix is normalised by the mean and
standard deviation of its mid channel, and the stems are scaled back (the mean, a DC offset,
shared evenly among the stems rather than added to each, so that they add up to the mix).
A fixed seed for the random shifts, so that a rerun gives the same bytes. Resampling,
mono and the mixture check are the shared part (common.py).

Weights, looked for in this order (cheaply, by file name: no torch import):
1. the models folder, `<models>/demucs/`: demucs's local repo layout (`<name>.yaml` and
   one `<sig>-<hash>.th` per model; without the yaml, demucs's shipped one is used);
2. demucs's Hugging Face cache (`$HF_HUB_CACHE`, default `~/.cache/huggingface/hub`,
   `models--adefossez--HTDemucs-ft/snapshots/...`), read straight from the snapshot (no network);
3. torch hub's cache (`$TORCH_HOME/hub/checkpoints/<sig>-<hash>.th`), where demucs <= 4.0.1
   downloaded to.

The files are read here, not by demucs's loaders (which unpickle a `.th` file in full, and
skip the hash check for a file whose name carries none): a `.th` file must be named
`<sig>-<hash>.th`, its sha256 must start with that hash, and for a published signature the
name must be the published one (the catalogue, restore/models/store.py); it is then read as
tensors plus demucs's three model classes and Fraction (restore/models/checkpoints.py). A
safetensors file is data and JSON; its model class must be one of demucs's. Then demucs's
own `load_model` builds the model from that package, and `BagOfModels` the bag.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import warnings
from fractions import Fraction
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restore.errors import RestoreError, UsageError
from restore.models.checkpoints import ModelRefused, is_trusted, load_tensors, read_safetensors, refusal
from restore.models.store import CATALOGUE, ModelFile, ModelSpec, check_file, file_sha256, hf_hub_cache
from restore.stages.base import StageContext, package_version
from restore.stages.separate.common import AUTO, BEST_FIRST, MAX_SEGMENT, MODEL_RATE, SeparatorStage

FALLBACK = BEST_FIRST[-1]   # htdemucs_ft: what separate.model=auto takes when no better model's file is present
HF_NAMESPACE = "adefossez"
SHIFT_SEED = 0             # the random shifts are drawn from this seed: reruns give the same bytes


# -- where the weights are (cheap: file names and a small yaml, no torch) --

@dataclass(frozen=True)
class Weights:
    """A complete set of files for one bag."""

    where: str                # "models folder", "Hugging Face cache", "torch hub cache"
    bag_yaml: Path            # the bag: model signatures and per-source weights
    files: tuple[Path, ...]   # one weights file per model, in the bag's order

    def fingerprint(self) -> str:
        """Names and sizes of the files: the .th names carry a hash of their content and the
        Hugging Face snapshot folder is the commit, so this changes when the weights do."""
        h = hashlib.sha256()
        for p in (self.bag_yaml, *self.files):
            h.update(f"{p.parent.name}/{p.name}:{p.stat().st_size};".encode())
        return h.hexdigest()[:16]


def _demucs_remote() -> Path | None:
    """The yaml files demucs ships (demucs/remote/), found without importing demucs."""
    spec = importlib.util.find_spec("demucs")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "remote"


def torch_hub_checkpoints() -> Path:
    """Where torch.hub downloads checkpoints ($TORCH_HOME, default ~/.cache/torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(os.path.expandvars(home)).expanduser() / "hub" / "checkpoints"


def hf_repo_name(name: str) -> str:
    """demucs.hf's mapping: htdemucs -> HTDemucs, htdemucs_ft -> HTDemucs-ft."""
    if name == "htdemucs":
        return "HTDemucs"
    return "HTDemucs-" + name[len("htdemucs_"):] if name.startswith("htdemucs_") else "Demucs-" + name


def _signatures(bag_yaml: Path) -> list[str]:
    """The model signatures a bag yaml lists; [] when it cannot be read (then the bag counts
    as missing, and the reason names the files to put there)."""
    import yaml
    try:
        return [str(s) for s in yaml.safe_load(bag_yaml.read_text())["models"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []


def published() -> dict[str, tuple[ModelSpec, ModelFile]]:
    """The catalogue's published Demucs files by model signature: (bag, file)."""
    return {Path(f.filename).name.split("-")[0]: (spec, f)
            for spec in CATALOGUE.values() if spec.fmt == "demucs" for f in spec.files()}


def _th_files(folder: Path, sigs: list[str]) -> tuple[Path, ...] | None:
    """One file per signature: the published name first, then other hash-suffixed names,
    then a name without a hash (found, so that the refusal can name it, never loaded)."""
    known = published()
    found = []
    for sig in sigs:
        if not folder.is_dir():
            return None
        ours = [folder / Path(known[sig][1].filename).name] if sig in known else []
        matches = [p for p in ours if p.is_file()]
        matches += sorted(p for p in folder.glob(f"{sig}-*.th") if p.is_file() and p not in matches)
        matches += sorted(p for p in folder.glob(f"{sig}.th") if p.is_file())
        if not matches:
            return None
        found.append(matches[0])
    return tuple(found)


def locate(name: str, folder: Path) -> Weights | None:
    """The first complete set of files for bag `name`: the models folder's demucs/ subfolder,
    demucs's Hugging Face cache, torch hub's cache. None when none is complete."""
    remote = _demucs_remote()
    shipped = remote / f"{name}.yaml" if remote else None
    # 1. our models folder, demucs's local repo layout
    local = folder / "demucs"
    bag = local / f"{name}.yaml"
    bag = bag if bag.is_file() else shipped
    if bag is not None and bag.is_file():
        files = _th_files(local, _signatures(bag))
        if files:
            return Weights("models folder", bag, files)
    # 2. the Hugging Face hub cache (where demucs 4.1 downloads to)
    repo = hf_hub_cache() / f"models--{HF_NAMESPACE}--{hf_repo_name(name)}"
    snapshots = []
    ref = repo / "refs" / "main"
    if ref.is_file():
        snapshots.append(repo / "snapshots" / ref.read_text().strip())
    if (repo / "snapshots").is_dir():
        snapshots += sorted((repo / "snapshots").iterdir())
    for snap in snapshots:
        bag = snap / f"{name}.yaml"
        if bag.is_file():
            files = tuple(snap / f"{sig}.safetensors" for sig in _signatures(bag))
            if all(p.is_file() for p in files):
                return Weights("Hugging Face cache", bag, files)
    # 3. torch hub's cache (where demucs up to 4.0.1 downloaded to)
    if shipped is not None and shipped.is_file():
        files = _th_files(torch_hub_checkpoints(), _signatures(shipped))
        if files:
            return Weights("torch hub cache", shipped, files)
    return None


def missing_reason(name: str, folder: Path) -> str:
    """Which files are missing for `name`, where to put them, and how to get them."""
    remote = _demucs_remote()
    shipped = remote / f"{name}.yaml" if remote else None
    sigs = _signatures(shipped) if shipped is not None and shipped.is_file() else []
    known = published()
    files = ", ".join(Path(known[s][1].filename).name if s in known else f"{s}-*.th" for s in sigs) or "its .th files"
    return (f"demucs model {name} is missing: put {files} in {folder / 'demucs'} "
            f"(`mp3restore models fetch {name}` downloads and checks them), or have demucs download it "
            f"into its cache ({hf_hub_cache()})")


_HASH_SUFFIX = re.compile(r"[0-9a-f]{8,64}")


def file_problem(path: Path, bag: str, trusted=()) -> ModelRefused | None:
    """None if the weights file at `path` may be read, else the refusal. A `.th` file must
    carry a hash in its name (demucs itself checks only such names) and its sha256 must
    start with that hash; a file with a published name must be the published file (its
    8-digit hash checked). A safetensors file holds no code: no name rule. A file the
    person trusts (--trust-model-file) passes. What passes is still read as tensors only."""
    if path.suffix != ".th" or is_trusted(path, trusted):
        return None
    what = f"the Demucs model file ({bag})"
    sig, dash, suffix = path.stem.rpartition("-")
    if not dash or not _HASH_SUFFIX.fullmatch(suffix):
        return refusal(path, what, "its name carries no hash (<signature>-<first 8 hex digits of its sha256>.th), "
                                   "so nothing says what file it is", bag)
    record = published().get(sig)
    if record is not None and Path(record[1].filename).name == path.name:
        check = check_file(record[0], path, record[1])
        return None if check.ok else refusal(path, what, f"it is not the published file ({check.detail})", bag)
    digest = file_sha256(path)
    if not digest.startswith(suffix):
        return refusal(path, what, f"its sha256 {digest[:12]}... does not start with {suffix}, as its name says", bag)
    return None


def file_warning(path: Path, trusted=()) -> str | None:
    """Why a weights file that passes file_problem is still not the published one (for the
    log and the report), or None for a published file."""
    if is_trusted(path, trusted):
        return f"loaded {path} because --trust-model-file names it"
    if path.suffix != ".th":
        return None   # the Hugging Face cache: said once per bag (load)
    record = published().get(path.stem.rpartition("-")[0])
    if record is None:
        return f"{path.name} is not a published demucs model; its hash matches its name; read as tensors only"
    if Path(record[1].filename).name != path.name:
        return (f"{path.name} is not the published file ({Path(record[1].filename).name}); its hash matches its name; "
                "read as tensors only")
    return None


def weights_problem(weights: Weights, bag: str, trusted=()) -> ModelRefused | None:
    """The first file of `weights` that would be refused (file_problem), or None."""
    return next((p for p in (file_problem(f, bag, trusted) for f in weights.files) if p is not None), None)


def _model_classes() -> dict[str, type]:
    """demucs's model classes by dotted name: what a package may name, and nothing else."""
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs
    return {f"{k.__module__}.{k.__name__}": k for k in (HTDemucs, HDemucs, Demucs)}


def _decode_json(value):
    """demucs.hf's encoding of init arguments: fractions are tagged objects."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {k: _decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_json(v) for v in value]
    return value


def load_demucs_model(path: Path, bag: str, trusted=()):
    """One model of a bag from a `.th` package or a safetensors file, checked (file_problem)
    and read without running anything from the file; demucs's own load_model then builds it
    from the package (class, arguments, state)."""
    problem = file_problem(path, bag, trusted)
    if problem is not None:
        raise problem
    what = f"the Demucs model file ({bag})"
    classes = _model_classes()
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
        klass = classes.get(meta.get("klass", ""))
        if klass is None:
            raise refusal(path, what, f"it names the class {str(meta.get('klass'))[:80]!r}, not one of demucs's models", bag)
        if "structure" in meta:
            raise refusal(path, what, "it is a quantized (diffq) model, which this tool does not read", bag)
        try:
            args, kwargs = _decode_json(json.loads(meta["args"])), _decode_json(json.loads(meta["kwargs"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RestoreError(f"cannot read {what} {path}: its header lacks the model's arguments ({exc})") from None
        package = {"klass": klass, "args": args, "kwargs": kwargs, "state": state}
    else:
        package = load_tensors(path, what=what, fetch_name=bag, allow=[*classes.values(), Fraction],
                               trusted=is_trusted(path, trusted))
        if not isinstance(package, dict) or package.get("klass") not in classes.values():
            raise refusal(path, what, "it is not a demucs model package", bag)
    state = package.get("state")
    if not isinstance(state, dict) or "__quantized" in state:
        raise refusal(path, what, "its state is not plain weights (a quantized diffq model?)", bag)
    if not isinstance(package.get("args"), (list, tuple)) or not isinstance(package.get("kwargs"), dict):
        raise refusal(path, what, "its model arguments are not a list and a mapping", bag)
    from demucs.states import load_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # demucs warns about arguments an older class version had
        return load_model(package)        # a dict: demucs builds the class and sets the state, no torch.load


def load_bag(name: str, weights: Weights, trusted=()):
    """The BagOfModels for `name` from `weights`, in eval mode: the bag's yaml (safe_load) and
    each model through load_demucs_model, never through demucs's own file loaders."""
    import yaml
    from demucs.apply import BagOfModels
    bag = yaml.safe_load(weights.bag_yaml.read_text())
    models = [load_demucs_model(path, name, trusted) for path in weights.files]
    return BagOfModels(models, bag.get("weights"), bag.get("segment")).eval()


# -- the stage --

class DemucsStage(SeparatorStage):
    """Demucs stems (04_stems, and the separation 05-07 start from)."""

    backend = "demucs"
    libraries = ("demucs", "torch", "soxr", "numpy")

    def __init__(self, env=None, model_name: str | None = None):
        super().__init__(env, model_name)
        if self.model_name == AUTO:
            self.model_name = FALLBACK
        # "auto" for shifts and overlap means demucs's defaults as this stage uses them
        self.shifts = 1 if self.opts["shifts"] is None else self.opts["shifts"]
        self.overlap = 0.25 if self.opts["overlap"] is None else self.opts["overlap"]
        self.segment = self.opts["segment"]
        self.bag = None
        self.weights: Weights | None = None

    # -- what the plan asks (cheap: no torch import, no model load) --
    def unavailable(self) -> str | None:
        if package_version("torch") == "absent":
            return 'torch is not installed (pip install -e ".[stems]" -c constraints-cpu.txt, see README)'
        if package_version("demucs") == "absent" or _demucs_remote() is None:
            return 'demucs is not installed (pip install -e ".[stems]" -c constraints-cpu.txt, see README)'
        weights = locate(self.model_name, self.models_dir)
        if weights is None:
            return missing_reason(self.model_name, self.models_dir) + (self.auto_note if self.auto else "")
        problem = weights_problem(weights, self.model_name, self.trusted)
        return None if problem is None else problem.reason()

    @property
    def auto_note(self) -> str:
        """For separate.model=auto: which better model's file would have been taken."""
        best = BEST_FIRST[0]
        return f" (separate.model=auto would take {best}, the best, with {CATALOGUE[best].filename} in {self.models_dir})"

    def versions(self) -> dict:
        weights = locate(self.model_name, self.models_dir) if _demucs_remote() else None
        model = f"{self.model_name}:{weights.fingerprint()}" if weights else "missing"
        return {"separate": self.revision, "model": model}

    def config(self) -> dict:
        return {"model": self.model_name, "shifts": self.shifts, "overlap": self.overlap,
                "segment": self.segment if self.segment is not None else "model",
                "model_rate": MODEL_RATE, "resample": "soxr-vhq", "shift_seed": SHIFT_SEED}

    def memory_bytes(self) -> int:
        """Weights (as float32) plus one segment's activations (about 1.5 GiB for htdemucs)."""
        weights = self.weights or locate(self.model_name, self.models_dir)
        size = sum(p.stat().st_size for p in weights.files) if weights else 340 << 20
        # .th files hold half-precision weights, safetensors float32
        return 2 * size + (3 << 29)

    # -- heavy --
    def load(self, device) -> None:
        weights = locate(self.model_name, self.models_dir)
        if weights is None:
            raise RestoreError(missing_reason(self.model_name, self.models_dir))
        try:
            bag = load_bag(self.model_name, weights, self.trusted)
        except RestoreError:   # refused or unreadable: its own line names the file
            raise
        except Exception as exc:  # a damaged file, a version demucs cannot read
            raise RestoreError(f"demucs could not load {self.model_name} from the {weights.where} "
                               f"({weights.files[0].parent}): {exc.__class__.__name__}: {exc}") from exc
        warned = [w for w in (file_warning(p, self.trusted) for p in weights.files) if w]
        self.load_notes = [f"warning: separate: {w}" for w in warned]
        if weights.where == "Hugging Face cache":
            self.load_notes.append(f"separate: {self.model_name} read from safetensors files (data only, no code); "
                                   "no published hashes are known for them")
        elif not warned:
            self.load_notes.append(f"separate: {self.model_name}: the published files, each sha256 starting with the "
                                   "hash its name carries")
        if self.segment is not None and self.segment > bag.max_allowed_segment:
            raise UsageError(f"separate.segment={self.segment:g} is longer than {self.model_name} was trained on "
                             f"({float(bag.max_allowed_segment):g} s)")
        if bag.samplerate != MODEL_RATE or bag.audio_channels != 2:
            raise RestoreError(f"{self.model_name} expects {bag.samplerate} Hz, {bag.audio_channels} channels; "
                               f"this stage feeds {MODEL_RATE} Hz stereo")
        self.bag = bag.to(device.torch_device)
        self.device, self.weights = device, weights

    def unload(self) -> None:
        self.bag = None

    @property
    def sources(self) -> list[str]:
        return list(self.bag.sources)

    def describe(self) -> str:
        return (f"{self.model_name} ({self.weights.where}), shifts {self.shifts}, overlap {self.overlap:g}, "
                f"segment {self.segment or 'model'}")

    def separate_mix(self, mix: np.ndarray, ctx: StageContext) -> tuple[list[str], np.ndarray]:
        """A [2, T] mix at 44.1 kHz -> (sources, [S, 2, T]), normalised as demucs's Separator does."""
        ref = mix.mean(axis=0)  # demucs's Separator: normalise by the mid channel's mean and std
        mean, std = float(ref.mean()), float(ref.std()) + 1e-8
        estimates = self._separate((mix - mean) / std, ctx)     # [S, 2, T44] float32
        estimates *= std
        # demucs's Separator adds the mean back to every stem, so their sum carries it S times;
        # shared evenly, the stems add up to the mix (a DC offset belongs to no instrument).
        estimates += mean / len(estimates)
        return self.sources, estimates

    def _separate(self, mix: np.ndarray, ctx: StageContext) -> np.ndarray:
        """demucs's apply_model on a normalised [2, T] mix at 44.1 kHz -> [S, 2, T]. The mix
        and the stems stay in CPU memory; only segments go to the device. Out of device
        memory: free it, say so, and do the song on the CPU."""
        import torch
        from demucs.apply import apply_model
        from restore.models.devices import is_out_of_memory, release_device_memory

        frames = mix.shape[1]
        seg_frames = int(MODEL_RATE * (self.segment or MAX_SEGMENT))
        shifts = max(self.shifts, 1)
        total = len(self.bag.models) * shifts

        def callback(d: dict) -> None:  # called at the start and end of each segment
            if d.get("state") == "end":
                within = min(1.0, (d.get("segment_offset", 0) + seg_frames) / frames)
                ctx.progress(min(1.0, (d.get("model_idx_in_bag", 0) * shifts + d.get("shift_idx", 0) + within) / total))

        def run(device: str) -> np.ndarray:
            state = random.getstate()  # apply_model draws its shifts from the global `random`
            random.seed(SHIFT_SEED)
            try:
                with torch.inference_mode():
                    out = apply_model(self.bag, torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32))[None],
                                      shifts=self.shifts, split=True, overlap=self.overlap, segment=self.segment,
                                      device=device, progress=False, callback=callback)
            finally:
                random.setstate(state)
            return out[0].numpy()

        try:
            return run(self.device.torch_device)
        except Exception as exc:
            if self.device.kind == "cpu" or not is_out_of_memory(exc):
                raise
            ctx.log(f"separate: out of memory on {self.device.torch_device}; this song runs on the CPU")
            release_device_memory(self.device)
            return run("cpu")

