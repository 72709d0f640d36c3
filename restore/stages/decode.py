"""Decode: MP3 file -> float32 [channels, frames] at the file's own rate and channel count,
gapless where possible; streamed in blocks, so a song that only needs the decode never
sits in memory whole.

Decoder: dr_mp3 (miniaudio). Not libsndfile: libsndfile stops reading at mpg123's length
estimate, which for a VBR file without a Xing header assumes CBR and cut a 20 s test song
to 9.2 s. dr_mp3 and mpg123 agree within 4.5e-5 (both within the ISO 11172-4 bound of 2^-14).

Only the audio frames reach the decoder: the bytes between the tags (ID3v2 at the start;
ID3v1, APE, Lyrics3 or an ID3v2 at the end, as mp3info finds them), without the Xing/Info
or VBRI frame. Given the whole file, dr_mp3 dropped the last frame and the end trim when
a tag followed the audio (0 to 1152 samples short, depending on the song's length).

Gapless: where the file says how (a LAME tag whose checksum holds, as LAME and ffmpeg
write; else an iTunes `iTunSMPB` comment that adds up to the file's frames) the encoder
delay plus the decoder's 529 samples are skipped and the output stops after the song's
own length, so it lines up with the encoder's input sample for sample. A file with no such
data (lameenc and shine write none; a bare Xing or a VBRI header does not say) cannot be
trimmed exactly: its decode keeps the delay at the start (1105 samples, 25 ms at 44.1 kHz,
for LAME; 1057 for shine) and the padding at the end. We say so, and why, in the facts
(`gapless_note`) and the song's log rather than guess an encoder.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

import miniaudio
import numpy as np

from restore.audio import Audio, BlockBuffer
from restore.errors import InputError, input_read_error
from restore.analysis.levels import PeakMeter
from restore.analysis.spectrum import cutoff_from_spectrum, SpectrumAccumulator
from restore.io.mp3info import DECODER_DELAY, Mp3Info, inspect
from restore.stages.base import Stage, StageContext

BLOCK_FRAMES = 1 << 16  # ~1.5 s at 44.1 kHz: 512 KiB of stereo float32


class DecodeStage(Stage):
    """The source of every variant: MP3 -> Audio and the song's facts, gapless where a tag
    says how (see the module docstring). No options."""

    name = "decode"
    revision = 2  # bump when the decoded samples would change (2: audio bytes only, own gapless trim)

    libraries = ("miniaudio", "numpy")

    def library_versions(self) -> dict:
        return {**super().library_versions(), "miniaudio_lib": miniaudio.lib_version()}

    def config(self) -> dict:
        return {"gapless": "lame-tag, iTunSMPB", "untagged": "keep-delay"}

    def stream(self, path: Path, ctx: StageContext) -> "Decoding":
        """Start decoding `path`: checks the file first and raises InputError for files that
        are not MP3s, or are damaged unless ctx.options['accept_damaged'] is set."""
        info = inspect(path)
        if info.layer != 3:
            raise InputError(f"MPEG layer {'I' * info.layer} audio named .mp3 is not supported", path,
                             "convert it to FLAC with ffmpeg; mp3restore restores MP3 (layer III)")
        if info.container:
            ctx.log(f"note: the MP3 stream is wrapped in a {info.container} container; its data chunk is decoded")
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


@contextlib.contextmanager
def _callback_errors() -> Iterator[list[BaseException]]:
    """Collect the exceptions raised inside miniaudio's read callback. They cannot cross
    its C code: cffi hands them to sys.unraisablehook, and the decoder takes the failed
    read for the end of its input. A Ctrl+C that arrives during a decoder call lands there
    (the callback is the first Python code to run), so without this it would vanish and
    the song end early. The caller raises what was collected."""
    caught: list[BaseException] = []
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if "cffi callback" in (unraisable.err_msg or "") and unraisable.exc_value is not None:
            caught.append(unraisable.exc_value)
        else:
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield caught
    finally:
        sys.unraisablehook = previous


class _AudioBytes(miniaudio.StreamableSource):
    """The bytes [start, end) of a file, as the decoder's input: what lies outside (tags)
    never reaches it. miniaudio keeps an exception of `read` in `error_in_readcallback`."""

    def __init__(self, path: Path, start: int, end: int):
        self.fh = open(path, "rb")
        self.start, self.end, self.pos = start, end, start
        self.fh.seek(start)

    def read(self, num_bytes: int) -> bytes:
        data = self.fh.read(max(min(num_bytes, self.end - self.pos), 0))
        self.pos += len(data)
        return data

    def seek(self, offset: int, origin: miniaudio.SeekOrigin) -> bool:
        base = {miniaudio.SeekOrigin.START: self.start, miniaudio.SeekOrigin.CURRENT: self.pos,
                miniaudio.SeekOrigin.END: self.end}[origin]
        self.pos = min(max(base + offset, self.start), self.end)
        self.fh.seek(self.pos)
        return True

    def close(self) -> None:
        self.fh.close()


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

    def _raw_blocks(self, caught: list[BaseException]) -> Iterator[np.ndarray]:
        """Every sample the decoder makes of the audio frames, untrimmed. The decoder must
        read every byte of them: if it stops short (an exception in its read callback), the
        song fails or the exception (a Ctrl+C) goes on, never a short decode."""
        info = self.info
        try:
            source = _AudioBytes(self.path, info.audio_start, info.audio_end)
        except OSError as exc:
            raise input_read_error(self.path, exc) from exc
        with source:
            try:
                stream = miniaudio.stream_any(source, miniaudio.FileFormat.MP3, miniaudio.SampleFormat.FLOAT32,
                                              self.channels, self.rate, BLOCK_FRAMES)
                for chunk in stream:
                    if caught:
                        raise caught[0]
                    if not len(chunk):
                        break
                    yield np.frombuffer(chunk, dtype=np.float32).reshape(-1, self.channels).T
            except miniaudio.DecodeError as exc:
                failed = source.error_in_readcallback
                if isinstance(failed, OSError):
                    raise input_read_error(self.path, failed) from failed
                raise InputError(f"cannot decode ({exc})", self.path, "the file is damaged or not an MP3") from exc
            if caught:
                raise caught[0]
            if isinstance(source.error_in_readcallback, OSError):
                raise input_read_error(self.path, source.error_in_readcallback) from source.error_in_readcallback
            if source.pos < source.end:
                raise InputError(f"the decoder stopped at byte {source.pos} of {source.end}", self.path,
                                 "the file is damaged")

    def __iter__(self) -> Iterator[np.ndarray]:
        info = self.info
        skip = info.encoder_delay + DECODER_DELAY if info.gapless else 0
        keep = info.expected_samples if info.gapless else None
        raw = 0
        with _callback_errors() as caught:
            blocks = self._raw_blocks(caught)
            try:
                for block in blocks:
                    lo, raw = max(skip - raw, 0), raw + block.shape[1]
                    block = block[:, lo:] if keep is None else block[:, lo:lo + keep - self.frames]
                    if block.shape[1]:
                        block = np.ascontiguousarray(block)
                        self.frames += block.shape[1]
                        self._spectrum.feed(block)
                        self._peak.feed(block)
                        self.ctx.progress(min(self.frames / max(self.max_frames, 1), 1.0))
                        yield block
                    if keep is not None and self.frames >= keep:
                        break  # the rest is the encoder's padding
            finally:
                blocks.close()
            if caught:  # a Ctrl+C while the padding was decoded: the song is whole, the run stops
                raise caught[0]
        if self.frames == 0:
            raise InputError("no audio: the decoder found no samples", self.path)
        if info.gapless and self.frames != info.expected_samples:
            self.ctx.log(f"note: decoded {self.frames} frames, the {info.gapless_from} promises {info.expected_samples}")
        if not info.gapless:
            self.ctx.log(f"note: no gapless data ({info.gapless_note}), so the encoder delay (1105 samples for "
                         "LAME) is kept at the start and the padding at the end")

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
