"""Apollo codec-artifact restoration (variant 12_apollo): 44.1 kHz stereo in and out, exact
length, level kept below the MP3's cutoff.

Apollo (Kai Li and Yi Luo, "band-sequence modeling for high-quality audio restoration",
JusperLee/Apollo) is trained on MP3 at 24-128 kbps: besides the band above the encoder's
cutoff it repairs what the codec did below it (spectral holes, smeared transients, the
granular noise floor). The architecture is msst's Apollo class (restore/stages/msst_compat.py);
the weights are the official checkpoint (CC BY-SA 4.0) by default or the community
"universal" one (`--set apollo.model=universal`), read as tensors only through
restore/models/checkpoints.py.

How it runs: the model is loaded once per run (the model cache). Apollo is a mono model over
a batch, so left and right are two items of one call. Songs go through the one chunker in
10 s chunks with 0.5 s crossfades and 1 s of the real song either side of each chunk as
context: Apollo's receptive field is finite (80 band STFT frames of 10 ms hop, six layers of
three depthwise convolutions of width 7 over time: 54 frames, about 0.55 s, either side), so
with 1 s of context and chunk starts on its 441-sample frame grid every chunk equals one pass
over the whole song (tests/test_apollo.py measures it; bench/bench_apollo.py the seams of the
full-size model). Input at another rate is resampled to 44.1 kHz and back (soxr, very high
quality) and the facts say so. On CUDA it runs under float16 autocast (the STFTs stay float32:
cuFFT has no half-precision FFT of 882 points); on the CPU in float32. After the model, one
gain for both channels brings the band below the cutoff back to the input's level.
"""
from __future__ import annotations

import numpy as np

from restore.analysis.spectrum import level_match_gain
from restore.audio import Audio, fit_frames
from restore.models.checkpoints import load_tensors
from restore.models.chunking import ModelCost, OomPolicy, choose_chunking, overlap_add
from restore.errors import RestoreError
from restore.models.store import CATALOGUE, model_version
from restore.stages.base import ModelStage, StageContext
from restore.stages.msst_compat import MSST_VERSION, msst_model_unavailable
from restore.stages.options import Option, half_precision

RATE = 44100                  # what every published Apollo checkpoint is trained at
WIN_MS = 20                   # the STFT window of the published configs: 882 samples, hop 441
HOP = RATE * WIN_MS // 1000 // 2
CHUNK_SECONDS = 10.0
OVERLAP_SECONDS = 0.5
CONTEXT_SECONDS = 1.0         # > the receptive field (54 frames x 441 + one window: 0.56 s)
# Activation memory per item per second of input, float32, inference mode, full size
# (feature_dim 256): one 2-item x 3 s call on the CPU peaked at 1590 MiB RSS, about 300 of it
# torch itself and 66 the weights: (1590 - 366) / 6 = 204 MiB per item-second; rounded up.
COST = ModelCost(fixed_bytes=160 << 20, bytes_per_item_second=210 << 20)
MAX_MATCH_DB = 12.0           # beyond this the model is broken, and matching would only hide it
MODELS = {"official": "apollo", "universal": "apollo-universal"}
WHAT = "the Apollo checkpoint"


def _grid(seconds: float) -> float:
    """A chunk length on Apollo's frame grid (10 ms = 441 samples = one hop)."""
    if abs(seconds * 100 - round(seconds * 100)) > 1e-6:
        raise ValueError("must be a multiple of 0.01 s (Apollo's 441-sample frame hop)")
    return round(seconds * 100) / 100


def apollo_state_dict(checkpoint, path) -> dict:
    """The Apollo weights in a checkpoint as published: look2hear's BaseModel.serialize()
    ({"model_name", "state_dict", ...}: the official file), a Lightning checkpoint
    ({"state_dict": {"audio_model.<key>": ..., "discriminator.<key>": ...}}: the community
    ones) or a bare state dict. Returns {key: tensor} in the Apollo class's own names."""
    sd = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(sd, dict) or not sd:
        raise RestoreError(f"{WHAT} {path} holds no state dict")
    if any(k.startswith("audio_model.") for k in sd):
        sd = {k[len("audio_model."):]: v for k, v in sd.items() if k.startswith("audio_model.")}
    return sd


def apollo_shape(sd: dict, path) -> dict:
    """Apollo's constructor arguments read from the weights' shapes: feature_dim (the band
    bottleneck), layer (the band-sequence blocks) and win (ms) from the first band's width
    (win * 44.1 / 160 bins: 5 at the published 20 ms)."""
    try:
        feature_dim = int(sd["BN.0.1.weight"].shape[0])
        band = (int(sd["BN.0.0.weight"].shape[0]) - 1) // 2
        last = (int(sd["BN.79.0.weight"].shape[0]) - 1) // 2
        layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("net."))
    except (KeyError, ValueError, IndexError):
        raise RestoreError(f"{WHAT} {path} is not an Apollo model (no BN.0, BN.79 or net.* weights)",
                           hint="it may be another model's file") from None

    def fits(ms: int) -> bool:   # Apollo's 80 bands: 79 of win/160 bins, the rest of the win/2 + 1 in the last
        n = RATE * ms // 1000
        return n // 160 == band and n // 2 + 1 - 79 * band == last
    win = WIN_MS if fits(WIN_MS) else next((ms for ms in range(1, 500) if fits(ms)), None)
    if win is None:
        raise RestoreError(f"{WHAT} {path} has band widths no 44.1 kHz Apollo window gives ({band}, {last})")
    return {"sr": RATE, "win": win, "feature_dim": feature_dim, "layer": layer}


class ApolloStage(ModelStage):
    """Apollo codec-artifact restoration at 44.1 kHz (12_apollo)."""

    name = "apollo"
    revision = 1
    libraries = ("torch", "msst", "soxr", "numpy")
    facts_key = "apollo_model_file"
    options = (
        Option("model", "choice", "official",
               "official: JusperLee's MP3 model (CC BY-SA 4.0); universal: the community model for any lossy codec",
               choices=tuple(MODELS)),
        Option("chunk_seconds", "float", CHUNK_SECONDS, "chunk length in seconds (1 s of context either side, 0.5 s crossfade)",
               2.5, 60.0, check=_grid, note="a multiple of 0.01 s"),
        Option("half", "text", "auto", "float16 autocast (auto: on CUDA; the CPU always runs float32)",
               values="auto, on or off", check=half_precision),
    )

    def __init__(self, env=None):
        super().__init__(env)
        self.spec = CATALOGUE[MODELS[self.opts["model"]]]
        self.model = self.cpu_model = self.device = None
        self.shape: dict = {}
        self.half = False

    # -- what the plan asks (cheap: no torch import, no model load) --
    def unavailable(self) -> str | None:
        return msst_model_unavailable(self.spec, self.models_dir, WHAT, self.trusted, "apollo")

    def versions(self) -> dict:
        return {"apollo": self.revision, "model": model_version(self.spec, self.models_dir)}

    def config(self) -> dict:
        return {**self.opts, "rate": RATE, "overlap_s": OVERLAP_SECONDS, "context_s": CONTEXT_SECONDS,
                "level": "match-below-cutoff"}

    def memory_bytes(self) -> int:
        item_s = self.opts["chunk_seconds"] + 2 * CONTEXT_SECONDS
        return COST.fixed_bytes + int(2 * item_s * COST.bytes_per_item_second)

    # -- heavy --
    def load(self, device) -> None:
        path, trusted, check = self.checked_model_file(self.spec, WHAT)
        from torch.torch_version import TorchVersion   # serialize() records torch.__version__: a str subclass
        checkpoint = load_tensors(path, what=WHAT, fetch_name=self.spec.name, allow=(TorchVersion,), check=check,
                                  published_sha256=self.spec.sha256, trusted=trusted)
        self.model = build_apollo(checkpoint, path)
        self.shape = dict(self.model.shape)
        self.load_notes.append(f"apollo: {self.spec.name}: feature_dim {self.shape['feature_dim']}, "
                                 f"{self.shape['layer']} layers, {self.shape['win']} ms window")
        self.device = device
        self.half = device.kind == "cuda" if self.opts["half"] == "auto" else bool(self.opts["half"]) and device.kind == "cuda"
        if device.kind != "cpu":  # the out-of-memory fallback runs single chunks on the CPU
            import copy
            self.cpu_model = copy.deepcopy(self.model)
            self.model = self.model.to(device.torch_device)

    def unload(self) -> None:
        self.model = self.cpu_model = None

    def process(self, audio: Audio, ctx: StageContext) -> Audio:
        """[C, T] at any rate -> [C, T] at the same rate (44.1 kHz inside)."""
        self.report_load_notes(ctx)
        from restore.models.devices import free_bytes, is_out_of_memory, release_device_memory
        x = _resample(audio.samples, audio.rate, RATE)
        if audio.rate != RATE:
            ctx.facts["apollo_resampled"] = f"{audio.rate} Hz -> {RATE} Hz -> {audio.rate} Hz (soxr VHQ)"
            ctx.log(f"apollo: resampled {audio.rate} Hz to {RATE} Hz for the model and back")
        chunk = self.opts["chunk_seconds"]
        chunk_s, items = choose_chunking(free_bytes(self.device), COST, audio.channels, chunk + 2 * CONTEXT_SECONDS,
                                         min_seconds=2 * CONTEXT_SECONDS + 2 * OVERLAP_SECONDS + 0.5,
                                         max_items=audio.channels if self.device.kind == "cpu" else 8)
        chunk_s = max(round(chunk_s - 2 * CONTEXT_SECONDS, 2), 2 * OVERLAP_SECONDS)   # back to the chunk without context
        if chunk_s < chunk:
            ctx.log(f"apollo: {chunk_s:.2f} s chunks to fit the free memory")
        oom = OomPolicy(is_oom=is_out_of_memory, free=lambda: release_device_memory(self.device),
                        fallback=model_call(self.cpu_model, "cpu", False) if self.cpu_model is not None else None)
        stats: dict = {}
        y = overlap_add(x, model_call(self.model, self.device.torch_device, self.half), rate_in=RATE, rate_out=RATE,
                        chunk_seconds=chunk_s, overlap_seconds=OVERLAP_SECONDS, context_seconds=CONTEXT_SECONDS,
                        batch_items=items, oom=oom, log=ctx.log, progress=ctx.progress, stats=stats)
        y = fit_frames(_resample(y, RATE, audio.rate), audio.frames)
        out = Audio(np.ascontiguousarray(y, dtype=np.float32), audio.rate)
        cutoff = ctx.options.get("cutoff_hz") or 16000.0
        top = min(cutoff, 16000.0)
        gain = level_match_gain(audio, out, top)
        change_db = float(20 * np.log10(gain))
        ctx.facts["apollo_precision"] = "float16 autocast" if self.half else "float32"
        if abs(change_db) > MAX_MATCH_DB:  # a model this far off is broken; do not make it worse
            ctx.log(f"warning: apollo: the model changed the level below {top:.0f} Hz by {-change_db:+.1f} dB; "
                    "left as it came out")
            return out
        ctx.facts["apollo_level_match_db"] = round(change_db, 2)
        ctx.log(f"apollo: {stats.get('calls', 0)} model calls, level matched below {top:.0f} Hz with {change_db:+.2f} dB")
        return Audio((out.samples * np.float32(gain)).astype(np.float32), audio.rate)


def build_apollo(checkpoint, path):
    """msst's Apollo with the checkpoint's weights, on the CPU, in eval mode; `.shape` holds
    its constructor arguments. A checkpoint that does not fit the class is a RestoreError
    naming the file."""
    from restore.stages.msst_compat import apollo_class
    sd = apollo_state_dict(checkpoint, path)
    shape = apollo_shape(sd, path)
    model = apollo_class()(**shape)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise RestoreError(f"{WHAT} {path} does not fit msst {MSST_VERSION}'s Apollo "
                           f"({str(exc).splitlines()[0][:200]})") from None
    model.shape = shape
    return model.eval()


def model_call(model, device: str, half: bool):
    """The chunker's model function: float32 [items, n] at 44.1 kHz -> [items, n]. Each item
    is one channel (Apollo folds channels into its batch); float16 autocast on CUDA when
    `half` (Apollo's STFTs take float32 input and its output goes back to complex64)."""
    def call(items: np.ndarray) -> np.ndarray:
        import contextlib
        import torch
        autocast = torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            x = torch.from_numpy(np.ascontiguousarray(items)).to(device)[:, None, :]
            return model(x)[:, 0, :].float().cpu().numpy()
    return call


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """[C, T] float32 from rate_in to rate_out (soxr, very high quality); as is when equal."""
    if rate_in == rate_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    import soxr
    return np.ascontiguousarray(soxr.resample(np.ascontiguousarray(x.T), rate_in, rate_out, quality="VHQ").T,
                                dtype=np.float32)
