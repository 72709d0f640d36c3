"""The ghost: what an MP3 threw away, to be heard on its own.

People have tried to hear it by subtracting the MP3 from its original and got "either a
noisier or quieter version of what I put in". The cause is misalignment and level: an
MP3 decode is late (1105 samples for LAME without a gapless tag, 0 with one) and its
level is not quite the original's, so a plain subtraction cancels almost nothing. Here
the MP3 is first lined up to the sample and matched in level (metrics.align: the lag and
gain found are reported), and then subtracted four ways:

- difference: original - mp3, in the time domain.
- complex:    STFT(original) - STFT(mp3), inverse STFT. The STFT is linear and
              reconstructs perfectly, so this equals `difference` within float rounding;
              it is kept because people try it, and the equality is the lesson.
- polar:      |O| - |M| floored at 0, with the original's phase: only what the MP3 made
              quieter, nothing it added (pre-echo, quantisation noise).
- mask:       the original's bins where the MP3 is more than mask_db quieter, silence
              elsewhere: what the encoder dropped outright (above its lowpass, masked detail).

Pure: no files (ghost_cli writes them). The STFT is Hann 2048 / hop 512 with weighted
overlap-add, so istft(stft(x)) == x and every ghost has the original's exact length.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from restore.audio import Audio
from restore.analysis.blocks import BAND_EDGES, energy, FLOOR_DB, ratio_db, resample
from restore.analysis.compare import align, apply_alignment, band_energies
from restore.analysis.stft import GHOST

METHODS = ("difference", "complex", "polar", "mask")
MAX_LAG_S = 0.5             # MP3 delays are a few thousand samples at most; this leaves room
_STFT = GHOST               # Hann 2048, hop 512, float64
stft, istft = _STFT.stft, _STFT.istft


class GhostError(ValueError):
    """The two inputs cannot make a ghost (different channel counts, nothing in common)."""


def _stft_methods(original: np.ndarray, mp3: np.ndarray, mask_db: float, batch: int = 256) -> dict[str, np.ndarray]:
    """The three STFT ghosts, a batch of frames at a time (memory: a batch of spectra plus
    the outputs), each float32 [channels, n]."""
    channels, n = original.shape
    outs = {m: _STFT.padded(channels, n, np.float32) for m in ("complex", "polar", "mask")}
    keep_below = 10 ** (-mask_db / 20)
    total = _STFT.frame_count(n)
    for f0 in range(0, total, batch):
        f1 = min(total, f0 + batch)
        o, m = _STFT.analyse(original, f0, f1), _STFT.analyse(mp3, f0, f1)
        mag_o, mag_m = np.abs(o), np.abs(m)
        _STFT.overlap_add(o - m, f0, outs["complex"])
        phase = np.divide(o, mag_o, out=np.ones_like(o), where=mag_o > 0)
        _STFT.overlap_add(np.maximum(mag_o - mag_m, 0.0) * phase, f0, outs["polar"])
        _STFT.overlap_add(np.where(mag_m < mag_o * keep_below, o, 0), f0, outs["mask"])
    return {k: v[:, _STFT.pad:_STFT.pad + n] for k, v in outs.items()}


@dataclass(frozen=True)
class GhostResult:
    """What make_ghost found. Levels are dB against the original: energy_db over the whole
    song, bands_db per band of metrics.BAND_EDGES (None where the original's band is
    empty); a ghost that is silent reads metrics.FLOOR_DB (-200)."""

    lag: int                        # frames the MP3 was late (at the original's rate; negative: early)
    gain: float                     # the MP3's level against the original (divided out before subtracting)
    mask_db: float
    rate: int
    mp3: Audio                      # the MP3 lined up and level-matched: what was subtracted
    ghosts: dict[str, Audio]        # METHODS -> float32 [channels, original frames]
    energy_db: dict[str, float]
    bands_db: dict[str, dict[str, float | None]]
    uncovered_frames: int           # frames of the original with no MP3 under them (kept whole in the ghost)

    def to_dict(self) -> dict:
        """JSON-ready summary (no audio)."""
        return {
            "lag_samples": self.lag,
            "lag_ms": round(1000 * self.lag / self.rate, 3),
            "gain": round(self.gain, 6),
            "gain_db": round(ratio_db(self.gain, 20), 3),
            "mask_db": self.mask_db,
            "uncovered_frames": self.uncovered_frames,
            "band_edges_hz": list(BAND_EDGES),
            "methods": {m: {"energy_db": round(self.energy_db[m], 3),
                            "bands_db": {k: None if v is None else round(v, 3) for k, v in self.bands_db[m].items()}}
                        for m in self.ghosts},
        }


def make_ghost(original: Audio, mp3: Audio, mask_db: float = 6.0) -> GhostResult:
    """What `mp3` lacks of `original`, by every method in METHODS. The MP3 is resampled
    to the original's rate if it differs, lined up (within +-0.5 s) and divided by its
    gain; each ghost has the original's rate, channels and exact length. Raises
    GhostError if the channel counts differ or the two share no signal."""
    if mp3.channels != original.channels:
        raise GhostError(f"the original has {original.channels} channel(s) and the MP3 {mp3.channels}: "
                         "a ghost needs the same channel layout")
    mp3 = resample(mp3, original.rate)
    lag, gain = align(mp3, original, MAX_LAG_S)
    if gain is None:
        raise GhostError("the MP3 and the original share no signal (silence, or not the same recording)")
    lined = apply_alignment(mp3, lag, gain, original.frames)
    covered = max(0, min(original.frames, mp3.frames - lag) - max(0, -lag))
    o = original.samples
    ghosts = {"difference": Audio(o - lined.samples, original.rate)}
    ghosts.update({k: Audio(v, original.rate) for k, v in _stft_methods(o, lined.samples, mask_db).items()})
    ghosts = {m: ghosts[m] for m in METHODS}
    total, ref_bands = energy(original), band_energies(original)
    energy_db, bands_db = {}, {}
    for name, ghost in ghosts.items():
        energy_db[name] = ratio_db(energy(ghost) / total) if total > 0 else FLOOR_DB
        bands = band_energies(ghost)
        bands_db[name] = {k: (ratio_db(bands[k] / r) if r > 0 else None) for k, r in ref_bands.items()}
    return GhostResult(lag, gain, mask_db, original.rate, lined, ghosts, energy_db, bands_db,
                       original.frames - covered)
