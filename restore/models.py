"""Device choice and the model cache.

- `detect_devices()` / `choose_device("auto"|"cuda"|"mps"|"cpu")`: what can run models here,
  with memory figures (bytes). torch is optional: without it there is only the CPU.
- `ModelCache`: each model-backed stage is loaded at most once per run per device, kept while
  the plan still needs it, and released before a model that would not fit beside it is
  loaded. `loads` counts loads per stage (the benchmarks and tests read it).
"""
from __future__ import annotations

import gc
import importlib.util
import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import psutil

from .errors import UsageError


@dataclass(frozen=True)
class DeviceInfo:
    kind: str                  # "cuda", "mps" or "cpu"
    torch_device: str          # what torch calls it: "cuda:0", "mps", "cpu"
    name: str                  # e.g. "NVIDIA GeForce RTX 3080 Laptop GPU", or the CPU
    total_bytes: int           # device memory (RAM for the CPU and MPS)
    free_bytes: int
    cpu_cores: int

    def describe(self) -> str:
        gib = 1 << 30
        return f"{self.kind} ({self.name}): {self.free_bytes / gib:.1f} of {self.total_bytes / gib:.1f} GiB free"


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _cpu() -> DeviceInfo:
    mem = psutil.virtual_memory()
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    import platform
    return DeviceInfo("cpu", "cpu", platform.processor() or platform.machine() or "CPU", mem.total, mem.available, cores)


def detect_devices() -> list[DeviceInfo]:
    """Every device that can run models here, best first; the CPU is always last."""
    found = []
    if torch_available():
        import torch
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                found.append(DeviceInfo("cuda", f"cuda:{i}", torch.cuda.get_device_name(i), total, free, _cpu().cpu_cores))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            cpu = _cpu()  # Apple silicon shares memory with the CPU
            found.append(DeviceInfo("mps", "mps", "Apple GPU (MPS)", cpu.total_bytes, cpu.free_bytes, cpu.cpu_cores))
    found.append(_cpu())
    return found


def choose_device(preference: str = "auto") -> DeviceInfo:
    """`auto`: the first of CUDA, MPS, CPU that is present. Asking for one that is not
    present is a usage error that says what is."""
    devices = detect_devices()
    if preference == "auto":
        return devices[0]
    for device in devices:
        if device.kind == preference:
            return device
    present = ", ".join(d.kind for d in devices)
    hint = "install a CUDA build of torch (see README)" if preference == "cuda" else None
    raise UsageError(f"--device {preference} is not available here (present: {present})", hint=hint)


def free_bytes(device: DeviceInfo) -> int:
    """Memory free now on `device`, in bytes."""
    if device.kind == "cuda":
        import torch
        return int(torch.cuda.mem_get_info(int(device.torch_device.split(":")[1]))[0])
    return int(psutil.virtual_memory().available)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's ("can't allocate memory"): what
    model stages answer with smaller chunks, then the CPU."""
    import torch
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def release_device_memory(device: DeviceInfo) -> None:
    """Give cached allocator memory back (after a model is dropped, or after an OOM)."""
    gc.collect()
    if device.kind == "cuda":
        import torch
        torch.cuda.empty_cache()


class ModelCache:
    """Loaded stages by name, for one run on one device.

    get(name, make) returns the loaded stage, loading it (make() then .load(device)) only
    the first time. Before a load, models that would leave too little room are released
    (least recently used first): a stage states its need with `memory_bytes()`.
    """

    def __init__(self, device: DeviceInfo, log: Callable[[str], None] = lambda line: None):
        self.device = device
        self.log = log
        self.loaded: dict[str, object] = {}
        self.loads: Counter = Counter()

    def get(self, name: str, make: Callable[[], object]):
        if name in self.loaded:
            stage = self.loaded.pop(name)
            self.loaded[name] = stage  # most recently used last
            return stage
        stage = make()
        need = int(getattr(stage, "memory_bytes", lambda: 0)())
        while self.loaded and need > free_bytes(self.device):
            oldest = next(iter(self.loaded))
            self.log(f"releasing {oldest} to make room for {name}")
            self.release(oldest)
        stage.load(self.device)
        self.loads[name] += 1
        self.loaded[name] = stage
        self.log(f"loaded {name} on {self.device.torch_device}")
        return stage

    def release(self, name: str) -> None:
        stage = self.loaded.pop(name, None)
        if stage is not None:
            unload = getattr(stage, "unload", None)
            if unload:
                unload()
            del stage
            release_device_memory(self.device)

    def release_all(self) -> None:
        for name in list(self.loaded):
            self.release(name)
