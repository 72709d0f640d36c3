"""Reading lossless audio files (FLAC, WAV, AIFF) into `Audio`: the one reader the report,
the ghost and stems brought from elsewhere use.

Files are read block by block straight into the [channels, frames] array, so reading a song
costs one copy of it (soundfile's whole-file read gives [frames, channels] and the
transpose a second: 2.4 GiB at once for an hour of stereo 44.1 kHz)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from restore.audio import Audio

_BLOCK = 1 << 16   # frames read at a time


def read_audio(path: Path) -> Audio:
    """The whole file as float32 [channels, frames] at its own rate, the same samples as
    soundfile's whole-file read. Raises what soundfile raises (soundfile.LibsndfileError, a
    RuntimeError, for a file it cannot read; OSError) and ValueError for a shape Audio
    refuses (more than 8 channels)."""
    with sf.SoundFile(str(path)) as f:
        out = np.empty((f.channels, max(f.frames, 0)), np.float32)
        done = 0
        while True:
            block = f.read(_BLOCK, dtype="float32", always_2d=True)
            if not len(block):
                break
            if done + len(block) > out.shape[1]:   # a header that undercounts: grow
                out = np.concatenate([out[:, :done], np.empty((f.channels, len(block)), np.float32)], axis=1)
            out[:, done:done + len(block)] = block.T
            done += len(block)
        return Audio(out[:, :done] if done < out.shape[1] else out, int(f.samplerate))


def read_resampled(path: Path, rate: int) -> Audio:
    """The file at `rate` Hz, resampled block by block as it is read (soxr, very high
    quality, the quality of restore.analysis.blocks.resample, equal to it within 1e-6):
    memory is the result and a block, never the file's samples as well. The length is the
    one-shot resampler's: frames * rate / file rate, halves rounded up."""
    import soxr

    with sf.SoundFile(str(path)) as f:
        if f.samplerate == rate:
            return read_audio(path)
        expected = (2 * f.frames * rate + f.samplerate) // (2 * f.samplerate)
        out = np.zeros((f.channels, expected), np.float32)
        stream = soxr.ResampleStream(f.samplerate, rate, f.channels, dtype="float32", quality="VHQ")
        done = 0
        while True:
            block = f.read(_BLOCK, dtype="float32", always_2d=True)
            last = len(block) < _BLOCK
            y = stream.resample_chunk(np.ascontiguousarray(block), last=last)
            take = min(len(y), expected - done)
            if take > 0:
                out[:, done:done + take] = y[:take].T
                done += take
            if last:
                break
        return Audio(out, rate)
