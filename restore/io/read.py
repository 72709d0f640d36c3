"""Reading lossless audio files (FLAC, WAV, AIFF) into `Audio`: the one reader the report,
the ghost and stems brought from elsewhere use."""
from __future__ import annotations

from pathlib import Path

import soundfile as sf

from restore.audio import Audio


def read_audio(path: Path) -> Audio:
    """The whole file as float32 [channels, frames] at its own rate. Raises what soundfile
    raises (soundfile.LibsndfileError, a RuntimeError, for a file it cannot read; OSError)
    and ValueError for a shape Audio refuses (more than 8 channels)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Audio.from_frames_major(data, rate)
