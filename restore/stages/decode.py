"""Decode: MP3 file -> Audio at the file's own rate and channel count, gapless where possible.

Gapless: libsndfile decodes through mpg123, which reads the LAME/Xing tag and removes
the encoder delay, the decoder delay (529 samples) and the end padding, so the output
lines up with the encoder's input sample for sample. A file with no such tag (lameenc
writes none, nor do many old encoders) cannot be trimmed exactly: its decode keeps the
delay at the start (1105 samples, 25 ms at 44.1 kHz, for LAME) and the padding at the
end. We say so in the facts and the song's log rather than guess an encoder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import Audio
from ..errors import InputError
from ..metrics import effective_cutoff_hz, peak_dbfs, samples_over_full_scale
from ..mp3info import inspect
from . import StageContext

_BLOCK = 1 << 18  # frames per read: ~6 s at 44.1 kHz


class DecodeStage:
    name = "decode"
    revision = 1  # bump when the decoded samples would change

    def versions(self) -> dict:
        return {"decode": self.revision, "libsndfile": sf.__libsndfile_version__}

    def config(self) -> dict:
        return {"gapless": "lame-tag", "untagged": "keep-delay"}

    def load(self, device: str | None = None) -> None:
        pass

    def read(self, path: Path, ctx: StageContext) -> tuple[Audio, dict]:
        """Decode `path`. Returns the audio and the song's facts (rates in Hz, times in s).
        Raises InputError for files that are not MP3s, or are damaged unless
        ctx.options['accept_damaged'] is set."""
        info = inspect(path)
        if info.problems:
            if not ctx.options.get("accept_damaged"):
                raise InputError(info.problems[0], path, "--accept-damaged restores the part that is there")
            for problem in info.problems:
                ctx.log(f"warning: {problem}; restoring the part that is there (--accept-damaged)")
        audio = _decode_samples(path, info.expected_samples, ctx)
        if info.gapless:
            if audio.frames != info.expected_samples:
                ctx.log(f"note: decoded {audio.frames} frames, the LAME tag promises {info.expected_samples}")
        else:
            ctx.log("note: no LAME/Xing gapless tag, so the encoder delay (1105 samples for LAME) "
                    "is kept at the start and the padding at the end")
        facts = info.to_dict()
        facts.update(
            decoded_frames=audio.frames,
            duration=round(audio.duration, 3),
            decoded_channels=audio.channels,
            cutoff_hz=effective_cutoff_hz(audio),
            peak_dbfs=round(peak_dbfs(audio), 2),
            samples_over_full_scale=samples_over_full_scale(audio),
            decoder=f"libsndfile {sf.__libsndfile_version__} (mpg123)",
        )
        return audio, facts


def _decode_samples(path: Path, expected: int, ctx: StageContext) -> Audio:
    try:
        with sf.SoundFile(str(path)) as f:
            if f.format not in ("MP3", "MPEG"):  # soundfile names it MP3; libsndfile's container is MPEG
                raise InputError(f"not an MP3: the decoder reads it as {f.format}", path)
            capacity = max(f.frames, expected, _BLOCK) + 4 * 1152
            out = np.empty((f.channels, capacity), dtype=np.float32)
            block = np.empty((_BLOCK, f.channels), dtype=np.float32)
            pos = 0
            while True:
                n = f.read(_BLOCK, dtype="float32", always_2d=True, out=block).shape[0]
                if n == 0:
                    break
                if pos + n > capacity:  # the length estimate was short: grow once, generously
                    capacity = (pos + n) * 5 // 4
                    out = np.concatenate([out, np.empty((f.channels, capacity - out.shape[1]), np.float32)], axis=1)
                out[:, pos:pos + n] = block[:n].T
                pos += n
                ctx.progress(min(pos / max(expected, 1), 1.0))
            rate = f.samplerate
    except sf.LibsndfileError as exc:
        raise InputError(f"cannot decode ({exc.error_string})", path, "the file is damaged or not an MP3") from exc
    if pos == 0:
        raise InputError("no audio: the decoder found no samples", path)
    return Audio(out[:, :pos], rate)
