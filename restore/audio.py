"""The one audio value passed between stages."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CHANNELS = 8


def frames_at_rate(frames: int, rate_in: int, rate_out: int) -> int:
    """How many frames `frames` at rate_in last at rate_out: round(frames * rate_out / rate_in),
    half up, in integers. A stage that changes the rate must return exactly this many."""
    return (2 * frames * rate_out + rate_in) // (2 * rate_in)


@dataclass(frozen=True)
class Audio:
    """Audio in memory.

    samples: float32 array shaped [channels, frames]; full scale is +-1.0 (values
             beyond it are allowed in memory, writers clip and count them).
    rate:    sample rate in Hz.

    The layout is checked here, at the boundary, so that no stage has to guess
    whether it got [frames, channels] instead.
    """

    samples: np.ndarray
    rate: int

    def __post_init__(self) -> None:
        s = self.samples
        if not isinstance(s, np.ndarray) or s.ndim != 2:
            raise ValueError(f"Audio.samples must be a 2-D [channels, frames] array, got {getattr(s, 'shape', type(s))}")
        if s.dtype != np.float32:
            raise ValueError(f"Audio.samples must be float32, got {s.dtype}")
        if not 1 <= s.shape[0] <= MAX_CHANNELS:
            raise ValueError(
                f"Audio.samples has {s.shape[0]} channels; expected [channels, frames] with 1..{MAX_CHANNELS} channels "
                "(a [frames, channels] array must be transposed first)"
            )
        if int(self.rate) <= 0:
            raise ValueError(f"Audio.rate must be positive, got {self.rate}")

    @classmethod
    def from_frames_major(cls, data: np.ndarray, rate: int) -> "Audio":
        """Build from a [frames, channels] (or 1-D mono) array, as soundfile returns it."""
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        return cls(np.ascontiguousarray(data.T), int(rate))

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def frames(self) -> int:
        return self.samples.shape[1]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.rate


def fit_frames(samples: np.ndarray, frames: int) -> np.ndarray:
    """`samples` [..., T] trimmed or zero-padded at the end to exactly `frames` along the last
    axis: a resampler's output can be a frame longer or shorter than the exact length."""
    if samples.shape[-1] >= frames:
        return samples[..., :frames]
    return np.pad(samples, [(0, 0)] * (samples.ndim - 1) + [(0, frames - samples.shape[-1])])


class BlockBuffer:
    """Gathers [channels, n] blocks into one array, preallocated from a length estimate and
    grown if the estimate was short: memory is one copy of the song plus a block."""

    def __init__(self, channels: int, estimate: int):
        self.data = np.empty((channels, max(estimate, 1)), dtype=np.float32)
        self.frames = 0

    def append(self, block: np.ndarray) -> None:
        n = block.shape[1]
        if self.frames + n > self.data.shape[1]:
            grow = np.empty((self.data.shape[0], (self.frames + n) // 4 + n), np.float32)
            self.data = np.concatenate([self.data, grow], axis=1)
        self.data[:, self.frames:self.frames + n] = block
        self.frames += n

    def audio(self, rate: int) -> Audio:
        return Audio(self.data[:, :self.frames], rate)


class Stems(dict):
    """{stem name: Audio}: what a separating stage returns and a stage that works on stems
    (route) passes on. Each stem has the song's channel count and duration; stems may be at
    different rates once a stage has changed one (a bandwidth extension to 48 kHz).

    residual: the mixture minus the sum of the stems as they were separated (Audio at the
    mixture's rate and length), or None where nobody has measured it yet. Separators do not
    fill it (04_stems does not need it); a stage that changes the stems sets it from their
    separated state before changing them, so that the stage that sums them back (remix)
    can restore what the separation left out, whatever was done to the stems since. A plain
    dict of stems is accepted wherever Stems is: it has no residual.
    """

    def __init__(self, stems=(), residual: Audio | None = None):
        super().__init__(stems)
        self.residual = residual
