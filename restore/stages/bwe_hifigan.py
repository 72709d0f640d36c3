"""HiFi-GAN+ bandwidth extension (variant 08_hifigan): 48 kHz out, true stereo, exact length.

The published checkpoints (hifi-gan-bwe) are TorchScript files, loaded here with
torch.jit.load (through restore/models/checkpoints.py: checked against the catalogue, and
refused if it is not a TorchScript file), once per run, without the hifi-gan-bwe package or
torchaudio. A file with no published or recorded hash loads with a warning in every song's
log and in the report. The model is
mono: each channel is one item, and left and right go through it together (batched) in
12 s chunks with 1 s crossfades through the one chunker. Not the package's own streaming,
which drops the tail after the last full window and misplaces crossfades when the input
is not 48 kHz. After the model, one gain for all channels brings the band below the MP3's
cutoff back to the input's level (the log says by how much), so the variant adds highs
without changing loudness.
"""
from __future__ import annotations


import numpy as np

from restore.audio import Audio
from restore.models.chunking import ModelCost, OomPolicy, choose_chunking, overlap_add
from restore.analysis.spectrum import level_match_gain
from restore.models.checkpoints import load_torchscript, model_file_problem
from restore.models.store import CATALOGUE, find_model, missing, model_version
from restore.stages.base import ModelStage, StageContext, package_version

OUT_RATE = 48000
CHUNK_SECONDS = 12.0
OVERLAP_SECONDS = 1.0         # covers the WaveNet's receptive field (13120 samples, 0.27 s) with room
# Activation memory per item per second of input, float32, inference mode: bench/bench_hifigan.py
# measured 102 MiB on the full-size architecture (a 12-item x 12 s call took 14.4 GiB); rounded up.
COST = ModelCost(fixed_bytes=64 << 20, bytes_per_item_second=110 << 20)
MAX_MATCH_DB = 12.0           # beyond this the model is broken, and matching would only hide it
WHAT = "the HiFi-GAN+ TorchScript model (hifigan-bwe)"


class HifiganBweStage(ModelStage):
    """HiFi-GAN+ bandwidth extension to 48 kHz (08_hifigan). No options."""

    name = "bwe_hifigan"
    revision = 1
    libraries = ("torch", "numpy")
    spec = CATALOGUE["hifigan-bwe"]
    facts_key = "bwe_hifigan_model_file"

    def __init__(self, env=None):
        super().__init__(env)
        self.model = None
        self.cpu_model = None
        self.device = None

    # -- what the plan asks (cheap: no torch import, no model load) --
    def unavailable(self) -> str | None:
        if package_version("torch") == "absent":
            return 'torch is not installed (pip install -e ".[neural]", see README)'
        path = find_model(self.spec, self.models_dir)
        if path is None:
            return missing(self.spec, self.models_dir).reason()
        return model_file_problem(self.spec, path, WHAT, self.trusted)

    def versions(self) -> dict:
        model = model_version(self.spec, self.models_dir)
        return {"bwe_hifigan": self.revision, "model": model}

    def config(self) -> dict:
        return {"out_rate": OUT_RATE, "chunk_s": CHUNK_SECONDS, "overlap_s": OVERLAP_SECONDS, "level": "match-below-cutoff"}

    def memory_bytes(self) -> int:
        return COST.fixed_bytes + int(2 * CHUNK_SECONDS * COST.bytes_per_item_second)

    # -- heavy --
    def load(self, device) -> None:
        path, _, _ = self.checked_model_file(self.spec, WHAT)
        self.device = device
        self.model = load_torchscript(path, device.torch_device, what=WHAT, fetch_name=self.spec.name).eval()
        if device.kind != "cpu":  # the out-of-memory fallback runs single chunks on the CPU
            self.cpu_model = load_torchscript(path, "cpu", what=WHAT, fetch_name=self.spec.name).eval()

    def unload(self) -> None:
        self.model = self.cpu_model = None

    def process(self, audio: Audio, ctx: StageContext) -> Audio:
        """[C, T] at any rate -> [C, round(T * 48000 / rate)] at 48 kHz."""
        import torch
        self.report_load_notes(ctx)

        def run(model, device: str):
            def call(items: np.ndarray) -> np.ndarray:  # [B, n] -> [B, n * 48000 / rate]
                with torch.inference_mode():
                    x = torch.from_numpy(np.ascontiguousarray(items)).to(device)[:, None, :]
                    return model(x, audio.rate)[:, 0, :].float().cpu().numpy()
            return call

        from restore.models.devices import free_bytes, is_out_of_memory, release_device_memory
        # On the CPU the model is compute-bound (1 item: 2.51 s per item-second, 4 items: 2.43), so
        # bigger batches only cost memory and make progress jumpier: one channel pair at a time.
        max_items = audio.channels if self.device.kind == "cpu" else 16
        chunk_s, items = choose_chunking(free_bytes(self.device), COST, audio.channels, CHUNK_SECONDS, max_items=max_items)
        if chunk_s < CHUNK_SECONDS:
            ctx.log(f"bwe_hifigan: {chunk_s:.1f} s chunks to fit the free memory")
        oom = OomPolicy(
            is_oom=is_out_of_memory,
            free=lambda: release_device_memory(self.device),
            fallback=run(self.cpu_model, "cpu") if self.cpu_model is not None else None,
        )
        stats: dict = {}
        y = overlap_add(audio.samples, run(self.model, self.device.torch_device), rate_in=audio.rate, rate_out=OUT_RATE,
                        chunk_seconds=chunk_s, overlap_seconds=OVERLAP_SECONDS, batch_items=items, oom=oom,
                        log=ctx.log, progress=ctx.progress, stats=stats)
        out = Audio(y, OUT_RATE)
        cutoff = ctx.options.get("cutoff_hz") or 16000.0
        top = min(cutoff, 16000.0)
        gain = level_match_gain(audio, out, top)
        change_db = 20 * np.log10(gain)
        if abs(change_db) > MAX_MATCH_DB:  # a model this far off is broken; do not make it worse
            ctx.log(f"warning: bwe_hifigan: the model changed the level below {top:.0f} Hz by {-change_db:+.1f} dB; "
                    "left as it came out")
            return out
        ctx.log(f"bwe_hifigan: {stats.get('calls', 0)} model calls, level matched below {top:.0f} Hz with {change_db:+.2f} dB")
        return Audio((y * np.float32(gain)).astype(np.float32), OUT_RATE)
