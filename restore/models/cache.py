"""The model cache: each model-backed stage is loaded at most once per run per device, kept
while the plan still needs it, and released before a model that would not fit beside it is
loaded. `loads` counts loads per stage (the benchmarks and tests read it).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

from restore.models.devices import DeviceInfo, free_bytes, release_device_memory


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
        need = int(stage.memory_bytes())
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
            stage.unload()
            del stage
            release_device_memory(self.device)

    def release_all(self) -> None:
        for name in list(self.loaded):
            self.release(name)
