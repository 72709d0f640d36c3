"""Fixtures: real MP3s made on the spot from a synthesised band, by LAME 3.100 twice over:
lameenc (no gapless tag) and Debian's `lame` command (writes the LAME tag, as real
archives have). `.ci/run` installs `lame`; without it the tagged-file tests skip."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from restore.audio import Audio
from restore.engine.config import RunConfig
from tests.support.examples import band, png_cover, tag_mp3
from restore.io.lame import encode_mp3
from restore.engine.run import run
from restore.engine.variants import resolve_variants

ROOT = Path(__file__).resolve().parent.parent
LAME = shutil.which("lame")
needs_lame = pytest.mark.skipif(LAME is None, reason="Debian's `lame` command is not installed (apt-get install lame)")


def write_mp3(path: Path, audio: Audio, bitrate: int = 192, vbr_quality: int | None = None) -> Path:
    """An MP3 without a gapless tag (lameenc)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp3(audio, bitrate=bitrate, vbr_quality=vbr_quality))
    return path


def write_tagged_mp3(path: Path, audio: Audio, *lame_args: str) -> Path:
    """An MP3 with a LAME gapless tag, by the `lame` command (default 192 kbps CBR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path.with_suffix(".src.wav")
    sf.write(str(wav), audio.samples.T, audio.rate, subtype="PCM_16")
    subprocess.run([LAME, "--quiet", *(lame_args or ("-b", "192")), str(wav), str(path)], check=True)
    wav.unlink()
    return path


def pcm16(audio: Audio) -> np.ndarray:
    """The audio as the encoder saw it (16-bit), float32 [channels, frames]."""
    return (np.clip(np.round(audio.samples * 32767), -32768, 32767) / 32767).astype(np.float32)


def lag_of(decoded: np.ndarray, source: np.ndarray, max_lag: int = 3000) -> int:
    """Samples by which `decoded` (1-D) is late against `source` (1-D), by cross-correlation."""
    n = min(len(source), len(decoded), 1 << 16)
    spec = np.fft.rfft(decoded[:n + max_lag], 2 * (n + max_lag)) * np.conj(np.fft.rfft(source[:n], 2 * (n + max_lag)))
    corr = np.fft.irfft(spec)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    values = np.r_[corr[:max_lag + 1], corr[-max_lag:]]
    return int(lags[np.argmax(values)])


def read_flac(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T, rate


# What a model class must not drag in: training stacks, downloaders, plotting (a model file is
# imported for inference only).
TRAINING_STACK = ("lightning", "pytorch_lightning", "wandb", "accelerate", "librosa", "numba", "omegaconf",
                  "ml_collections", "yaml", "tqdm", "transformers", "torchaudio", "huggingface_hub", "matplotlib")


def modules_imported_by(code: str) -> list[str]:
    """The modules that `code` imports beyond torch and numpy, in a fresh interpreter."""
    script = f"import sys; import torch, numpy; before = set(sys.modules)\n{code}\n" \
             "print('\\n'.join(sorted(set(sys.modules) - before)))"
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""}).stdout.split()


def hide_developer_models(tmp_path: Path, monkeypatch) -> None:
    """The developer's own model downloads must not be found: the Hugging Face and torch
    caches point at empty folders."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: on 2 cores shared with other work, torch's spinning
    threads made the model tests 4x slower."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def song() -> Audio:
    """Six seconds of the band, stereo 44.1 kHz."""
    return band(6.0, seed=3)


@pytest.fixture
def library(tmp_path: Path, song: Audio) -> Path:
    """A small tagged library: Artist/Album/ with three songs, one with cover art."""
    root = tmp_path / "in"
    for i, name in enumerate(("01 One.mp3", "02 Two.mp3", "03 Three.mp3")):
        p = write_mp3(root / "Artist" / "Album" / name, band(3.0, seed=i), bitrate=128 + 64 * (i % 2))
        tag_mp3(p, name[3:-4], "Artist", "Album", f"{i + 1}/3", cover=png_cover(seed=i) if i == 0 else None)
    return root


def run_lib(inputs, out: Path, **options):
    """Run the pipeline in-process; returns the summary. No compare report unless asked:
    tests/test_report.py covers it, and pictures would slow every other test. Only the
    baseline unless `variants` is given (variants=None: the default set): the engine's
    tests are about the engine, and every restoring variant has its own tests."""
    options.setdefault("report", False)
    options.setdefault("variants", resolve_variants("01_baseline"))
    return run(RunConfig(inputs=[str(i) for i in inputs], out_dir=out, **options))


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, report: bool = False,
            default_variants: bool = False) -> subprocess.CompletedProcess:
    """`python mp3restore.py ARGS` in a subprocess (the real entry point); a `run` writes no
    compare report unless report=True, and makes only the baseline unless --variants is
    given or default_variants=True (as run_lib)."""
    if args and args[0] == "run" and not report:
        args = (*args, "--no-report")
    if args and args[0] == "run" and not default_variants and not {"--variants", "-v"} & set(args):
        args = (*args, "--variants", "01_baseline")
    base = {k: v for k, v in os.environ.items() if k != "MP3RESTORE_CRASH_AT"}
    full_env = {**base, "PYTHONIOENCODING": "utf-8", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "mp3restore.py"), *args], capture_output=True,
                          text=True, encoding="utf-8", env=full_env, timeout=timeout)


def cli_json(*args: str, **kw) -> tuple[int, dict]:
    """`run ... --json -q` (without the compare report); returns (exit code, summary)."""
    proc = run_cli(*args, "--json", "-q", **kw)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


def by_status(summary) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in (summary.results if hasattr(summary, "results") else [type("R", (), x) for x in summary["results"]]):
        out.setdefault(r.status, []).append(r.song)
    return out
