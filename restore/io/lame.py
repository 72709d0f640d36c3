"""MP3 encoding with LAME 3.100 through lameenc: the ghost encodes a lossless original to hear
what MP3 throws away, and the tests and benchmarks make their MP3s with it."""
from __future__ import annotations

import lameenc
import numpy as np

from restore.audio import Audio


def encode_mp3(audio: Audio, bitrate: int = 192, vbr_quality: int | None = None, quality: int = 2) -> bytes:
    """MP3 bytes from LAME 3.100 via lameenc. No LAME/Xing tag is written, so a decode
    carries the 1105-sample delay (576 encoder + 529 decoder). CBR at `bitrate` kbps, or
    VBR at `vbr_quality` (0 best .. 9) when given."""
    enc = lameenc.Encoder()
    enc.set_in_sample_rate(audio.rate)
    enc.set_channels(audio.channels)
    enc.set_quality(quality)
    if vbr_quality is None:
        enc.set_bit_rate(bitrate)
    else:
        enc.set_vbr(4)  # vbr_mtrh, LAME's default VBR mode
        enc.set_vbr_quality(vbr_quality)
    pcm = np.clip(np.round(audio.samples.T * 32767), -32768, 32767).astype("<i2")
    return enc.encode(pcm.tobytes()) + enc.flush()
