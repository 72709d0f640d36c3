"""Devices: `detect_devices()` / `choose_device("auto"|"cuda"|"mps"|"cpu")` say what can run
models here, with memory figures (bytes); free memory, out-of-memory recognition and giving
cached memory back. torch is optional: without it there is only the CPU.
"""
from __future__ import annotations

import gc
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from restore.errors import UsageError


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


# The fix for a CPU-only torch on a machine with an NVIDIA GPU (torch's own CUDA 12.8 wheels:
# they run on any driver from 570 up; pytorch.org lists the others).
CUDA_TORCH_INSTALL = "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu128"


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is installed (its nvidia-smi is there), whatever torch can see."""
    import shutil
    import sys
    if shutil.which("nvidia-smi"):
        return True
    return sys.platform == "win32" and (Path(os.environ.get("SystemRoot", r"C:\Windows")) / "System32" / "nvidia-smi.exe").exists()


def device_line(preference: str = "auto") -> tuple[str, str | None]:
    """(what model stages will use, a warning or None) for a person to read: the device with
    its free memory, and the torch build (CUDA version or CPU-only). The warning says how to
    fix a CPU-only torch on a machine with an NVIDIA GPU. Imports torch when it is there."""
    if not torch_available():
        return "CPU (torch is not installed: the model variants need it, see README)", None
    import torch
    build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build")
    try:
        line = f"{choose_device(preference).describe()}; {build}"
    except UsageError as exc:
        line = f"{exc.one_line()}; {build}"
    warning = None
    if not torch.version.cuda and nvidia_gpu_present():
        warning = (f"an NVIDIA GPU is here but torch is a CPU-only build, so model variants run on the CPU "
                   f"(hours per song): {CUDA_TORCH_INSTALL}")
    return line, warning
