"""12_apollo with tiny random Apollo models of the real class (msst's look2hear Apollo),
saved in the published checkpoints' layouts and read by the real loader: the import pulls
no training stack, chunked equals one pass over the whole song, stereo, exact length, level
below the cutoff, resampling of other rates, unavailable with the file and folder named,
and a malicious pickle at the model's path never runs."""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("msst", reason="msst is not installed (pip install --no-deps msst==0.1.0)")

from restore.audio import Audio  # noqa: E402
from restore.engine.config import RunConfig  # noqa: E402
from restore.engine.run import run  # noqa: E402
from restore.engine.variants import resolve_variants  # noqa: E402
from restore.errors import UsageError  # noqa: E402
from restore.models.checkpoints import ModelRefused  # noqa: E402
from restore.models.chunking import overlap_add, plan_chunks  # noqa: E402
from restore.models.devices import choose_device  # noqa: E402
from restore.models.store import CATALOGUE  # noqa: E402
from restore.stages import StageContext, StageEnv, get_stage  # noqa: E402
from restore.stages.apollo import ApolloStage, model_call  # noqa: E402
from tests.support.examples import band  # noqa: E402
from tests.support.random_apollo import random_apollo, save_random_apollo  # noqa: E402

from .conftest import TRAINING_STACK, modules_imported_by, read_flac, write_mp3  # noqa: E402

OFFICIAL = CATALOGUE["apollo"]
UNIVERSAL = CATALOGUE["apollo-universal"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No model of the developer's own is found: the Hugging Face cache is an empty folder."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_random_apollo(folder / OFFICIAL.filename, seed=1)
    return folder


def loaded(folder: Path, **options) -> ApolloStage:
    stage = ApolloStage(StageEnv(models_dir=folder, options={"apollo": options}))
    stage.load(choose_device("cpu"))
    return stage


def seam_energy_db(chunked: np.ndarray, whole: np.ndarray, seams: list[int], half_width: int) -> float:
    """The worst seam: 10*log10 of the energy of (chunked - whole) within `half_width`
    frames of a seam over the energy of `whole` there, in dB."""
    worst = -np.inf
    for s in seams:
        lo, hi = max(s - half_width, 0), s + half_width
        err = float(np.sum(np.square(chunked[:, lo:hi].astype(np.float64) - whole[:, lo:hi])))
        ref = float(np.sum(np.square(whole[:, lo:hi].astype(np.float64))))
        worst = max(worst, 10 * np.log10(max(err, 1e-30) / ref))
    return worst


def test_importing_apollo_pulls_no_training_stack():
    """Only the model file and what it imports itself run: not msst's __init__ (its
    experiment, inference and training facades) nor anything of a training stack."""
    new = modules_imported_by("from restore.stages.msst_compat import apollo_class; apollo_class()")
    msst = {m for m in new if m.split(".")[0] == "msst"}
    assert msst == {"msst", "msst.models", "msst.models.look2hear", "msst.models.look2hear.models",
                    "msst.models.look2hear.models.apollo", "msst.models.look2hear.models.base_model"}
    assert not {m for m in new if m.split(".")[0] in TRAINING_STACK}


def test_the_real_class_at_full_size_is_the_published_one():
    """Apollo(sr=44100, win=20, feature_dim=256, layer=6): 16.54 M parameters, as published."""
    model = random_apollo(feature_dim=256, layer=6)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 16.54


@pytest.mark.parametrize("layout", ["serialize", "lightning", "bare"])
def test_every_published_layout_loads_through_the_real_loader(tmp_path, layout):
    folder = tmp_path / "m"
    source = save_random_apollo(folder / OFFICIAL.filename, layout=layout, seed=3, feature_dim=32, layer=2)
    stage = loaded(folder)
    assert stage.shape == {"sr": 44100, "win": 20, "feature_dim": 32, "layer": 2}
    x = torch.from_numpy(band(0.5, seed=4).samples[:1])[:, None, :]
    with torch.inference_mode():
        assert torch.equal(stage.model(x), source(x))


def test_chunked_equals_a_whole_song_pass_and_context_is_what_makes_it(models):
    """A model with a finite receptive field (the tiny Apollo's: 9 frames of 441 samples
    and a window, 0.11 s) and chunks on its frame grid: with context beyond the receptive
    field the chunks equal one pass over the whole song; without, the seams show."""
    model = random_apollo(seed=5)
    call = model_call(model, "cpu", False)
    x = band(2.0, seed=6).samples[:1].copy()
    geometry = dict(rate_in=44100, rate_out=44100, chunk_seconds=0.6, overlap_seconds=0.1)
    whole = overlap_add(x, call, rate_in=44100, rate_out=44100, chunk_seconds=10.0, overlap_seconds=0.0,
                        context_seconds=0.2)
    plan = plan_chunks(x.shape[1], **geometry, context_seconds=0.2)
    assert plan.count == 4
    seams = [k * plan.hop_in + plan.overlap_in // 2 for k in range(1, plan.count)]
    chunked = overlap_add(x, call, **geometry, context_seconds=0.2)
    bare = overlap_add(x, call, **geometry, context_seconds=0.0)
    with_context = seam_energy_db(chunked, whole, seams, 2205)
    without = seam_energy_db(bare, whole, seams, 2205)
    assert with_context < -80, with_context            # float rounding only
    assert without > -60, without                       # the control: without context the edges differ
    assert np.max(np.abs(chunked - whole)) <= 1e-4 * np.max(np.abs(whole))


def test_stereo_length_and_level(models, monkeypatch):
    stage = loaded(models)
    left = band(1.7, seed=7).samples[0]
    audio = Audio(np.stack([left, np.zeros_like(left)]), 44100)   # a silent right channel stays its own
    ctx = StageContext(options={"cutoff_hz": 16000.0})
    out = stage.process(audio, ctx)
    assert out.samples.shape == audio.samples.shape and out.rate == 44100 and out.samples.dtype == np.float32
    # Each channel is its own item: left alone gives the same left.
    alone = stage.process(Audio(left[None, :].copy(), 44100), StageContext(options={"cutoff_hz": 16000.0}))
    np.testing.assert_allclose(out.samples[0], alone.samples[0], atol=1e-5)

    class HalfLevel(torch.nn.Module):   # Apollo's call signature, at half level: the stage undoes it
        def forward(self, x):
            return 0.5 * x
    stage.model = HalfLevel()
    audio = band(2.0, seed=8)
    ctx = StageContext(options={"cutoff_hz": 16000.0})
    out = stage.process(audio, ctx)
    from restore.analysis.spectrum import band_power
    assert abs(10 * np.log10(band_power(out, 40, 16000) / band_power(audio, 40, 16000))) < 0.05
    assert ctx.facts["apollo_level_match_db"] == pytest.approx(6.02, abs=0.05)
    assert ctx.facts["apollo_precision"] == "float32" and "apollo_resampled" not in ctx.facts


def test_other_rates_are_resampled_in_and_out_and_the_facts_say_so(models):
    stage = loaded(models)

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x
    stage.model = Identity()
    audio = band(1.3, rate=48000, seed=9)
    ctx = StageContext(options={"cutoff_hz": 16000.0})
    out = stage.process(audio, ctx)
    assert out.rate == 48000 and out.samples.shape == audio.samples.shape
    assert ctx.facts["apollo_resampled"] == "48000 Hz -> 44100 Hz -> 48000 Hz (soxr VHQ)"
    from restore.analysis.spectrum import band_power   # soxr's round trip is transparent below 20 kHz
    err = Audio(out.samples - audio.samples, 48000)
    assert 10 * np.log10(band_power(err, 40, 20000) / band_power(audio, 40, 20000)) < -50


def test_unavailable_names_the_file_and_folder(tmp_path):
    folder = tmp_path / "nothing"
    reason = ApolloStage(StageEnv(models_dir=folder)).unavailable()
    assert "apollo is missing" in reason and "apollo/pytorch_model.bin" in reason.replace("\\", "/")
    assert str(folder) in reason
    universal = ApolloStage(StageEnv(models_dir=folder, options={"apollo": {"model": "universal"}}))
    assert "apollo_universal_model.ckpt" in universal.unavailable() and str(folder) in universal.unavailable()


def test_options_are_checked():
    with pytest.raises(UsageError, match="multiple of 0.01 s"):
        ApolloStage(StageEnv(options={"apollo": {"chunk_seconds": "10.005"}}))
    with pytest.raises(UsageError, match="one of official, universal"):
        ApolloStage(StageEnv(options={"apollo": {"model": "big"}}))
    stage = get_stage("apollo", StageEnv(options={"apollo": {"model": "universal"}}))
    assert stage.spec is UNIVERSAL and stage.config()["model"] == "universal"


def test_universal_lightning_checkpoint_loads(tmp_path):
    folder = tmp_path / "m"
    save_random_apollo(folder / UNIVERSAL.filename, layout="lightning", seed=2, feature_dim=16)
    stage = loaded(folder, model="universal")
    assert stage.shape["feature_dim"] == 16
    assert any("apollo-universal: feature_dim 16" in n for n in stage.load_notes)


def test_a_malicious_pickle_at_the_model_path_never_runs(tmp_path):
    class Touch:
        def __init__(self, marker):
            self.marker = marker

        def __reduce__(self):
            return (Path.touch, (self.marker,))
    marker = tmp_path / "ran-code.marker"
    path = tmp_path / "m" / OFFICIAL.filename
    path.parent.mkdir(parents=True)
    torch.save({"model_name": "Apollo", "state_dict": {"w": torch.zeros(2)}, "infos": Touch(marker)}, str(path))
    with pytest.raises(ModelRefused) as refused:
        loaded(tmp_path / "m")
    assert str(path) in refused.value.reason() and "more than tensors" in refused.value.reason()
    assert "models fetch apollo" in refused.value.reason()
    songs = tmp_path / "in"
    for i in range(2):
        write_mp3(songs / f"{i} song.mp3", band(1.0, seed=i), bitrate=128)
    summary = run(RunConfig(inputs=[str(songs)], out_dir=tmp_path / "out", variants=resolve_variants("01,12"),
                            models_dir=tmp_path / "m", device="cpu", report=False))
    mine = [r for r in summary.results if r.variant == "12_apollo"]
    assert summary.counts()["done"] == 2 and {r.status for r in mine} == {"failed"}   # the batch went on
    assert str(path) in mine[0].reason
    assert not marker.exists(), "the model file ran code"


def test_variant_end_to_end_loads_once(tmp_path, models):
    songs = tmp_path / "in"
    for i in range(2):
        write_mp3(songs / f"{i} song.mp3", band(1.5, seed=i), bitrate=96)   # LAME makes 96 kbps 32 kHz
    cfg = RunConfig(inputs=[str(songs)], out_dir=tmp_path / "out", models_dir=models,
                    variants=resolve_variants("01,12"), device="cpu", report=False)
    summary = run(cfg)
    assert summary.counts()["done"] == 4, summary.results
    assert summary.model_loads == {"apollo": 1}
    for i in range(2):
        base, rate_b = read_flac(tmp_path / "out" / "01_baseline" / f"{i} song.flac")
        out, rate = read_flac(tmp_path / "out" / "12_apollo" / f"{i} song.flac")
        assert rate == rate_b == 32000 and out.shape == base.shape   # the song's rate and length
    marker = json.loads((tmp_path / "out" / "_done" / "12_apollo" / "0 song.mp3.json").read_text())
    assert marker["versions"]["apollo.model"].startswith("apollo:")
    assert marker["stage_facts"]["apollo_precision"] == "float32"
    assert marker["stage_facts"]["apollo_resampled"] == "32000 Hz -> 44100 Hz -> 32000 Hz (soxr VHQ)"
