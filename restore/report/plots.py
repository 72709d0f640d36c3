"""Pictures people read: spectrograms on a common scale (PNG, matplotlib, no display needed).

Every spectrogram of one song is drawn with the same frequency axis, colour scale and
size, so that pictures side by side compare honestly: a variant cannot look brighter
because its picture was scaled differently.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restore.audio import Audio

N_FFT = 2048
HOP = 512


@dataclass(frozen=True)
class SpectrogramScale:
    """What every picture of one song shares."""

    max_hz: float = 24000.0      # top of the frequency axis (the highest Nyquist among the variants)
    db_min: float = -110.0       # colour scale in dBFS (full-scale sine = 0 dB)
    db_max: float = 0.0


def spectrogram_db(audio: Audio, max_frames: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times s [T], freqs Hz [F], dBFS [F, T]) of the channel-averaged power, Hann 2048/512,
    decimated in time to at most `max_frames` columns (a picture needs no more)."""
    x = np.asarray(audio.samples, dtype=np.float32)   # no copy of a float32 song
    n = audio.frames
    hop = max(HOP, (max(n - N_FFT, 0) // HOP + 1) // max_frames * HOP or HOP)
    starts = np.arange(0, max(n - N_FFT, 0) + 1, hop)
    window = np.hanning(N_FFT).astype(np.float32)
    norm = (window.sum() / 2) ** 2  # a full-scale sine reads 0 dB
    power = np.zeros((N_FFT // 2 + 1, len(starts)), np.float64)
    for i in range(0, len(starts), 256):
        idx = starts[i:i + 256]
        seg = np.stack([x[:, s:s + N_FFT] if s + N_FFT <= n else np.pad(x[:, s:], ((0, 0), (0, s + N_FFT - n))) for s in idx])
        power[:, i:i + len(idx)] = (np.abs(np.fft.rfft(seg * window, axis=-1)) ** 2).mean(axis=1).T / norm
    db = 10 * np.log10(power + 1e-20)
    return starts / audio.rate, np.fft.rfftfreq(N_FFT, 1 / audio.rate), db


def spectrogram_png(audio: Audio, path: Path, title: str, scale: SpectrogramScale = SpectrogramScale(),
                    diff_against: Audio | tuple | None = None, diff_label: str = "dB vs baseline") -> Path:
    """Draw `audio`'s spectrogram (or, with `diff_against`, the dB difference audio - other,
    on a -30..+30 dB diverging scale, compared at the same instants and frequencies up to
    the lower Nyquist) to `path`, written atomically. `diff_against` may be the other's
    `spectrogram_db` itself, so that the other song need not stay in memory."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from restore.io.writers import atomic_output

    times, freqs, db = spectrogram_db(audio)
    cmap, vmin, vmax, label = "magma", scale.db_min, scale.db_max, "dBFS"
    if diff_against is not None:
        t2, f2, db2 = diff_against if isinstance(diff_against, tuple) else spectrogram_db(diff_against)
        f_common = freqs[freqs <= min(freqs[-1], f2[-1])]
        t_common = times[times <= t2[-1]] if len(t2) else times[:0]
        a = _regrid(db, times, freqs, t_common, f_common)
        b = _regrid(db2, t2, f2, t_common, f_common)
        db, freqs, times = np.clip(a, scale.db_min, None) - np.clip(b, scale.db_min, None), f_common, t_common
        cmap, vmin, vmax, label = "RdBu_r", -30.0, 30.0, diff_label
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    # imshow, not pcolormesh: the grid is regular, and it draws ten times faster
    extent = (0.0, float(times[-1]) if len(times) else 0.0, 0.0, float(freqs[-1]) / 1000 if len(freqs) else 0.0)
    image = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    ax.set_ylim(0, scale.max_hz / 1000)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kHz")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    with atomic_output(path, "writing a spectrogram") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _regrid(db: np.ndarray, times: np.ndarray, freqs: np.ndarray, t_new: np.ndarray, f_new: np.ndarray) -> np.ndarray:
    """db [F, T] sampled at (freqs, times) -> [len(f_new), len(t_new)], linear in both."""
    if len(times) == 0 or len(t_new) == 0:
        return np.zeros((len(f_new), len(t_new)))
    by_freq = np.array([np.interp(f_new, freqs, db[:, c]) for c in range(db.shape[1])]).T   # [F_new, T]
    return np.array([np.interp(t_new, times, row) for row in by_freq])
