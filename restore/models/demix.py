"""The Music-Source-Separation-Training project's chunking ("demix", generic mode), the way
its separators' published scores were measured: SCNet and the RoFormers see the whole chunk
at once (a dual-path LSTM, attention over time), so a chunk's output depends on all of it
and no amount of context makes chunks equal one pass over the song: the published
geometry and window are kept instead of the project's chunker (restore/models/chunking.py).

Ported from msst 0.1.0 `msst.utils.model_utils.demix` (MIT), whose module imports
ml_collections, tqdm, the optimizers and torch.distributed; tests/test_separators.py runs
both on the same model and finds them equal. What it does, for a [2, T] mix:
- chunks of `chunk_size` frames every `step = chunk_size // num_overlap` frames;
- the song padded by `border = chunk_size - step` frames either side by reflection (when
  it is longer than 2 x border), and the last chunk padded to full length by reflection
  (zeros when less than half a chunk is left);
- each chunk's output weighted by a window with linear fades of chunk_size // 10 frames
  (`torch.linspace(0, 1, n)`), no fade-in on the first chunk and no fade-out on the last;
  summed, divided by the summed weights, the border cut off.
One difference, on purpose: msst builds the window per batch (with batch_size > 1 every
chunk of the first batch loses its fade-in); here it is per chunk, which is msst with
batch_size=1, so the output does not depend on how many chunks share a call.

No torch here: `model` is float32 [items, 2, chunk_size] -> [items, stems, 2, chunk_size]
on numpy arrays, as the project's chunker takes it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Model = Callable[[np.ndarray], np.ndarray]


def fade_window(chunk_size: int, fade_size: int) -> np.ndarray:
    """msst's _getWindowingArray: ones with linear fades (0 -> 1, 1 -> 0) of fade_size frames."""
    window = np.ones(chunk_size, np.float32)
    if fade_size > 0:
        window[:fade_size] = np.linspace(0, 1, fade_size, dtype=np.float32)
        window[-fade_size:] = np.linspace(1, 0, fade_size, dtype=np.float32)
    return window


def chunk_starts(frames: int, chunk_size: int, num_overlap: int) -> list[int]:
    """Where msst's chunks start in the (border-padded) signal of `frames` frames."""
    return list(range(0, frames, chunk_size // num_overlap))


def demix(mix: np.ndarray, model: Model, *, chunk_size: int, num_overlap: int, batch_items: int = 1,
          progress: Callable[[float], None] = lambda f: None) -> np.ndarray:
    """float32 [2, T] -> [stems, 2, T] by msst's overlap-add (see the module docstring).
    `batch_items` chunks go to the model per call (the output does not depend on it)."""
    if chunk_size < 1 or not 1 <= num_overlap <= chunk_size:
        raise ValueError(f"need chunk_size >= 1 and 1 <= num_overlap <= chunk_size, got {chunk_size}, {num_overlap}")
    length = mix.shape[-1]
    step = chunk_size // num_overlap
    fade = chunk_size // 10
    border = chunk_size - step
    padded = length > 2 * border and border > 0
    x = np.pad(mix, ((0, 0), (border, border)), mode="reflect") if padded else mix
    frames = x.shape[-1]
    starts = chunk_starts(frames, chunk_size, num_overlap)
    window = fade_window(chunk_size, fade)
    result = counter = None
    for first in range(0, len(starts), max(1, batch_items)):
        batch = starts[first:first + max(1, batch_items)]
        parts = []
        for start in batch:
            part = x[:, start:start + chunk_size]
            n = part.shape[-1]
            if n < chunk_size:  # msst: reflect when more than half a chunk is left, else zeros
                mode = "reflect" if n > chunk_size // 2 else "constant"
                part = np.pad(part, ((0, 0), (0, chunk_size - n)), mode=mode)
            parts.append(part)
        out = np.asarray(model(np.ascontiguousarray(np.stack(parts), dtype=np.float32)), dtype=np.float32)
        if result is None:
            result = np.zeros((out.shape[1], *x.shape), np.float32)
            counter = np.zeros(x.shape[-1], np.float32)
        for j, start in enumerate(batch):
            n = min(chunk_size, frames - start)
            w = window.copy()
            if start == 0:
                w[:fade] = 1
            if start + step >= frames and fade:
                w[-fade:] = 1
            result[..., start:start + n] += out[j, ..., :n] * w[:n]
            counter[start:start + n] += w[:n]
        progress(min(1.0, (first + len(batch)) / len(starts)))
    with np.errstate(invalid="ignore", divide="ignore"):
        est = result / counter
    np.nan_to_num(est, copy=False, nan=0.0)
    return est[..., border:-border] if padded else est
