"""Decode: MP3 file -> float32 [channels, frames] at the file's own rate and channel count,
gapless where possible; streamed in blocks, so a song that only needs the decode never
sits in memory whole.

Decoder: dr_mp3 (miniaudio). Not libsndfile: libsndfile stops reading at mpg123's length
estimate, which for a VBR file without a Xing header assumes CBR and cut a 20 s test song
to 9.2 s. dr_mp3 and mpg123 agree within 4.5e-5 (both within the ISO 11172-4 bound of 2^-14).

Gapless: dr_mp3 reads the LAME/Xing tag and removes the encoder delay, the decoder delay
(529 samples) and the end padding, so the output lines up with the encoder's input
sample for sample. A file with no such tag (lameenc writes none, nor do many old
encoders) cannot be trimmed exactly: its decode keeps the delay at the start (1105
samples, 25 ms at 44.1 kHz, for LAME) and the padding at the end. We say so in the facts
and the song's log rather than guess an encoder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import miniaudio
import numpy as np

from restore.audio import Audio, BlockBuffer
from restore.errors import InputError
from restore.analysis.levels import PeakMeter
from restore.analysis.spectrum import cutoff_from_spectrum, SpectrumAccumulator
from restore.io.mp3info import Mp3Info, inspect
from restore.stages.base import Stage, StageContext

BLOCK_FRAMES = 1 << 16  # ~1.5 s at 44.1 kHz: 512 KiB of stereo float32


class DecodeStage(Stage):
    """The source of every variant: MP3 -> Audio and the song's facts, gapless where a tag
    says how (see the module docstring). No options."""

    name = "decode"
    revision = 1  # bump when the decoded samples would change

    def versions(self) -> dict:
        return {"decode": self.revision, "miniaudio": miniaudio.__version__, "miniaudio_lib": miniaudio.lib_version()}

    def config(self) -> dict:
        return {"gapless": "lame-tag", "untagged": "keep-delay"}

    def stream(self, path: Path, ctx: StageContext) -> "Decoding":
        """Start decoding `path`: checks the file first and raises InputError for files that
        are not MP3s, or are damaged unless ctx.options['accept_damaged'] is set."""
        info = inspect(path)
        if info.layer != 3:
            raise InputError(f"MPEG layer {'I' * info.layer} audio named .mp3 is not supported", path,
                             "convert it to FLAC with ffmpeg; mp3restore restores MP3 (layer III)")
        if info.problems:
            if not ctx.options.get("accept_damaged"):
                raise InputError(info.problems[0], path, "--accept-damaged restores the part that is there")
            for problem in info.problems:
                ctx.log(f"warning: {problem}; restoring the part that is there (--accept-damaged)")
        return Decoding(path, info, ctx)

    def read(self, path: Path, ctx: StageContext) -> tuple[Audio, dict]:
        """Decode `path` whole. Returns the audio and the song's facts (see Decoding.facts)."""
        decoding = self.stream(path, ctx)
        buffer = BlockBuffer(decoding.channels, decoding.max_frames)
        for block in decoding:
            buffer.append(block)
        return buffer.audio(decoding.rate), decoding.facts()


class Decoding:
    """One pass over an MP3: iterate for float32 [channels, n] blocks (n <= BLOCK_FRAMES);
    `facts()` after the last block. Raises InputError if the decoder fails."""

    def __init__(self, path: Path, info: Mp3Info, ctx: StageContext):
        self.path, self.info, self.ctx = path, info, ctx
        self.rate, self.channels = info.rate, info.channels
        self.max_frames = info.frames * info.samples_per_frame  # gapless trimming only removes
        self.frames = 0
        self._spectrum = SpectrumAccumulator(info.expected_samples, info.channels)
        self._peak = PeakMeter()

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            stream = miniaudio.stream_file(str(self.path), output_format=miniaudio.SampleFormat.FLOAT32,
                                           nchannels=self.channels, sample_rate=self.rate, frames_to_read=BLOCK_FRAMES)
            chunk = next(stream, None)
            while chunk is not None and len(chunk):
                block = np.frombuffer(chunk, dtype=np.float32).reshape(-1, self.channels).T.copy()
                self.frames += block.shape[1]
                self._spectrum.feed(block)
                self._peak.feed(block)
                self.ctx.progress(min(self.frames / max(self.max_frames, 1), 1.0))
                yield block
                try:
                    chunk = stream.send(BLOCK_FRAMES)
                except StopIteration:
                    chunk = None
        except miniaudio.DecodeError as exc:
            raise InputError(f"cannot decode ({exc})", self.path, "the file is damaged or not an MP3") from exc
        if self.frames == 0:
            raise InputError("no audio: the decoder found no samples", self.path)
        info = self.info
        if info.gapless and self.frames != info.expected_samples:
            self.ctx.log(f"note: decoded {self.frames} frames, the LAME tag promises {info.expected_samples}")
        if not info.gapless:
            self.ctx.log("note: no LAME/Xing gapless tag, so the encoder delay (1105 samples for LAME) "
                         "is kept at the start and the padding at the end")

    def facts(self) -> dict:
        """What the file says (mp3info) and what the decode measured: rates in Hz, times in s."""
        facts = self.info.to_dict()
        facts.update(
            decoded_frames=self.frames,
            duration=round(self.frames / self.rate, 3),
            cutoff_hz=cutoff_from_spectrum(self._spectrum.spectrum_db(), self.rate),
            peak_dbfs=round(self._peak.peak_dbfs, 2),
            samples_over_full_scale=self._peak.over,
            decoder=f"dr_mp3 (miniaudio {miniaudio.__version__})",
        )
        return facts
