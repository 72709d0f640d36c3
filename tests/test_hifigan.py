"""08_hifigan end to end with a randomly initialised HiFi-GAN+ of the real architecture
(smaller), saved as TorchScript the way the published checkpoints are."""
import json
import re

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from restore.audio import Audio  # noqa: E402
from restore.engine.config import RunConfig  # noqa: E402
from tests.support.examples import band  # noqa: E402
from restore.models.store import CATALOGUE, verify  # noqa: E402
from restore.models.devices import choose_device  # noqa: E402
from restore.engine.run import run  # noqa: E402
from tests.support.random_hifigan import kaiser_resample, save_random_hifigan  # noqa: E402
from restore.stages import StageContext, StageEnv  # noqa: E402
from restore.stages.bwe_hifigan import HifiganBweStage  # noqa: E402
from restore.engine.variants import resolve_variants  # noqa: E402

from .conftest import cli_json, read_flac, run_cli, write_mp3  # noqa: E402

SPEC = CATALOGUE["hifigan-bwe"]
SMALL = dict(stacks=1, layers=4, channels=16)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_random_hifigan(folder / SPEC.filename, seed=1, **SMALL)
    return folder


@pytest.fixture
def three_songs(tmp_path):
    for i in range(3):
        write_mp3(tmp_path / "in" / f"{i} song.mp3", band(3.0, seed=i), bitrate=128)
    return tmp_path / "in"


def test_variant_end_to_end(tmp_path, models, three_songs):
    cfg = RunConfig(inputs=[str(three_songs)], out_dir=tmp_path / "out", models_dir=models,
                    variants=resolve_variants("01,08"), device="cpu")
    summary = run(cfg)
    assert summary.counts()["done"] == 6, summary.results
    assert summary.model_loads == {"bwe_hifigan": 1}            # one load for the whole batch
    for i in range(3):
        base, rate_b = read_flac(tmp_path / "out" / "01_baseline" / f"{i} song.flac")
        out = tmp_path / "out" / "08_hifigan" / f"{i} song.flac"
        info = sf.info(str(out))
        assert (info.samplerate, info.subtype, info.channels) == (48000, "PCM_24", 2)
        assert info.frames == (base.shape[1] * 48000 * 2 + 44100) // (2 * 44100)   # exact length
    marker = json.loads((tmp_path / "out" / "_done" / "08_hifigan" / "0 song.mp3.json").read_text())
    assert marker["versions"]["bwe_hifigan.model"].startswith(SPEC.name + ":")
    # Rerun: nothing loads, everything skipped.
    again = run(cfg)
    assert again.counts()["skipped"] == 6 and again.model_loads == {}


class HalfLevelResampler(torch.nn.Module):
    """Same call signature as HiFi-GAN+: (x [B, 1, T], sample_rate) -> 48 kHz, at half level."""

    def forward(self, x: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return 0.5 * kaiser_resample(x, sample_rate, 48000)


def test_level_below_cutoff_kept_and_stereo_is_true(tmp_path, models):
    folder = tmp_path / "m"
    folder.mkdir()
    torch.jit.save(torch.jit.script(HalfLevelResampler()), str(folder / SPEC.filename))
    stage = HifiganBweStage(StageEnv(models_dir=folder))
    stage.load(choose_device("cpu"))
    audio = band(5.0, seed=2)
    lines = []
    out = stage.process(audio, StageContext(options={"cutoff_hz": 17000.0}, log=lines.append))
    from restore.analysis.spectrum import band_power
    ratio = band_power(out, 40, 16000) / band_power(audio, 40, 16000)
    assert abs(10 * np.log10(ratio)) < 0.1                        # the model's -6 dB undone
    (matched,) = [float(re.search(r"with ([+-][0-9.]+) dB", line).group(1)) for line in lines if "level matched" in line]
    assert 5.8 < matched < 6.2
    # True stereo: each channel comes out as if it went through alone.
    for ch in range(2):
        alone = stage.process(Audio(audio.samples[ch:ch + 1].copy(), audio.rate), StageContext(options={"cutoff_hz": 17000.0}))
        gain_diff = np.max(np.abs(alone.samples[0] - out.samples[ch]))
        assert gain_diff < 0.05 * np.max(np.abs(out.samples[ch]))   # same up to the (shared) level gain


def test_a_broken_model_is_not_level_matched(tmp_path, models, three_songs):
    """The random small net is far off in level: the stage leaves it and says so."""
    stage = HifiganBweStage(StageEnv(models_dir=models))
    stage.load(choose_device("cpu"))
    lines = []
    stage.process(band(2.0), StageContext(options={"cutoff_hz": 16000.0}, log=lines.append))
    assert any("left as it came out" in line for line in lines)


def test_stage_order_loads_once_and_releases(tmp_path, models, three_songs):
    cfg = RunConfig(inputs=[str(three_songs)], out_dir=tmp_path / "out", models_dir=models,
                    variants=resolve_variants("01,08"), device="cpu", order="stage")
    summary = run(cfg)
    assert summary.counts()["done"] == 6 and summary.model_loads == {"bwe_hifigan": 1}
    log = next((tmp_path / "out" / "_logs").glob("run-*.log")).read_text()
    assert "releasing bwe_hifigan: no later song needs it" in log


def test_out_of_memory_falls_back_and_output_is_unchanged(models):
    audio = band(4.0, seed=9)
    stage = HifiganBweStage(StageEnv(models_dir=models))
    stage.load(choose_device("cpu"))
    ctx = StageContext(options={"cutoff_hz": 16000.0})
    clean = stage.process(audio, ctx).samples

    real = stage.model
    calls = {"n": 0}

    class FlakyGpu:
        """Runs out of memory on any batch of two, and on every third single item."""
        def __call__(self, x, rate):
            calls["n"] += 1
            if x.shape[0] > 1 or calls["n"] % 3 == 0:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(x, rate)

    lines = []
    stage.model, stage.cpu_model = FlakyGpu(), real
    disturbed = stage.process(audio, StageContext(options={"cutoff_hz": 16000.0}, log=lines.append)).samples
    assert np.max(np.abs(disturbed - clean)) < 1e-5
    assert any("out of memory" in line for line in lines)


def test_missing_model_is_unavailable_not_a_crash(tmp_path, three_songs):
    empty = tmp_path / "no-models"
    code, summary = cli_json("run", str(three_songs), "--out", str(tmp_path / "out"), "--variants", "01,08",
                             "--models-dir", str(empty))
    assert code == 0
    unavailable = [r for r in summary["results"] if r["status"] == "unavailable"]
    assert len(unavailable) == 3 and summary["counts"]["done"] == 3
    reason = unavailable[0]["reason"]
    assert SPEC.filename in reason and str(empty) in reason and "models fetch hifigan-bwe" in reason
    # By default only what can run here is planned: no noise about missing models.
    code, summary = cli_json("run", str(three_songs), "--out", str(tmp_path / "out2"), "--models-dir", str(empty),
                             default_variants=True)
    assert code == 0 and summary["counts"]["unavailable"] == 0 and summary["counts"]["failed"] == 0
    made = {r["variant"] for r in summary["results"] if r["status"] == "done"}
    assert "01_baseline" in made and "08_hifigan" not in made


def test_models_command_lists_and_verifies(tmp_path, models):
    listing = run_cli("models", "--models-dir", str(models))
    assert listing.returncode == 0 and "hifigan-bwe" in listing.stderr and "yes" in listing.stderr
    assert run_cli("models", "verify", "--models-dir", str(models)).returncode == 0
    assert verify(SPEC, models / SPEC.filename) is None

    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"w": torch.zeros(3)}, str(bad / SPEC.filename))       # a state dict, not TorchScript
    proc = run_cli("models", "verify", "--models-dir", str(bad))
    assert proc.returncode == 1 and "not a TorchScript file" in proc.stderr
    (bad / SPEC.filename).write_bytes(b"truncated download")
    assert "not a TorchScript file" in verify(SPEC, bad / SPEC.filename)
    (bad / (SPEC.filename + ".sha256")).write_text("0" * 64 + "\n")
    assert "hash mismatch" in verify(SPEC, bad / SPEC.filename)


def test_fetch_without_network_is_one_clear_line(tmp_path):
    proc = run_cli("models", "fetch", "hifigan-bwe", "--models-dir", str(tmp_path), env={"https_proxy": "http://127.0.0.1:9"})
    assert proc.returncode == 3
    assert "cannot download hifigan-bwe" in proc.stderr and "put it in" in proc.stderr
    assert list(tmp_path.iterdir()) == []                               # nothing half-downloaded


def test_cpu_runs_one_channel_pair_per_call(models):
    """On the CPU bigger batches only cost memory (102 MiB per item-second measured): a long
    song must go through two items (left, right) per model call, whatever RAM is free."""
    stage = HifiganBweStage(StageEnv(models_dir=models))
    stage.load(choose_device("cpu"))
    real = stage.model
    sizes = []

    def counting(x, rate):
        sizes.append(x.shape[0])
        return real(x, rate)

    stage.model = counting
    stage.process(band(30.0, seed=4), StageContext(options={"cutoff_hz": 16000.0}))
    assert len(sizes) >= 3 and set(sizes) == {2}


def test_cpu_allocation_failure_counts_as_out_of_memory():
    from restore.models.devices import is_out_of_memory as _is_oom
    assert _is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 15 GB"))
    assert _is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not _is_oom(RuntimeError("shape mismatch"))
