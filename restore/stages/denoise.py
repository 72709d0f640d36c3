"""DeepFilterNet3 denoise (variants 09, 10). Placeholder until the engine lands."""
from __future__ import annotations


class DeepFilterStage:
    name = "denoise"

    def __init__(self, env=None):
        self.env = env

    def unavailable(self) -> str | None:
        return "not built yet"

    def versions(self) -> dict:
        return {"denoise": 0}

    def config(self) -> dict:
        return {}

    def load(self, device=None) -> None:
        raise RuntimeError("not built yet")

    def process(self, audio, ctx):
        raise RuntimeError("not built yet")
