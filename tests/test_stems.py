"""04_stems: Demucs 4.1 through its own loader and apply_model, with small randomly
initialised HTDemucs models (the real class) saved in demucs's own layouts: a local repo
folder (<models>/demucs/<name>.yaml + <sig>-<hash>.th), the Hugging Face hub cache and
torch hub's cache. The wrapper's arithmetic (resampling, normalisation, shifts, crossfades,
mono) is checked with a model that splits the mix evenly, whose stems must add up to it."""
import json
import random
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from demucs.apply import BagOfModels  # noqa: E402

from restore.audio import Audio  # noqa: E402
from restore.errors import UsageError  # noqa: E402
from tests.support.examples import band  # noqa: E402
from restore.models.devices import choose_device, DeviceInfo  # noqa: E402
from tests.support.random_demucs import save_hf_cache, save_repo  # noqa: E402
from restore.stages import StageContext, StageEnv  # noqa: E402
from restore.stages.separate import DemucsStage, locate, mixture_residual_db  # noqa: E402

from .conftest import cli_json, hide_developer_models, read_flac, write_mp3  # noqa: E402

FOUR = ["drums", "bass", "other", "vocals"]


# The test models were "trained" on 2 s segments: every segment is padded to that length,
# so a short one keeps the tests fast (the published models' 7.8 s is checked by the options).
SMALL = dict(segment=Fraction(2))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, one_torch_thread):
    """No model of the developer's own is found; one torch thread."""
    hide_developer_models(tmp_path, monkeypatch)


def child_env(tmp_path) -> dict:
    return {"HF_HUB_CACHE": str(tmp_path / "empty-hf"), "TORCH_HOME": str(tmp_path / "empty-torch"),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_repo(folder / "demucs", "htdemucs_ft", seed=1, **SMALL)
    save_repo(folder / "demucs", "htdemucs_6s", seed=5, **SMALL)
    return folder


@pytest.fixture
def songs(tmp_path):
    write_mp3(tmp_path / "in" / "Artist" / "One.mp3", band(3.0, seed=1), bitrate=128)
    write_mp3(tmp_path / "in" / "Artist" / "Two mono 48k.mp3", band(2.0, rate=48000, channels=1, seed=2), bitrate=96)
    return tmp_path / "in"


def test_end_to_end_four_stems_resume_and_six_stems(tmp_path, models, songs):
    out = tmp_path / "out"
    args = ("run", str(songs), "--out", str(out), "--variants", "01,04", "--models-dir", str(models), "--device", "cpu")
    code, summary = cli_json(*args, env=child_env(tmp_path))
    assert code == 0 and summary["counts"]["done"] == 4, summary["results"]
    for song, rate, channels in (("One", 44100, 2), ("Two mono 48k", 48000, 1)):
        base, base_rate = read_flac(out / "01_baseline" / "Artist" / f"{song}.flac")
        folder = out / "04_stems" / "Artist" / song
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.flac" for s in FOUR)
        total = np.zeros_like(base)
        for stem in FOUR:
            info = sf.info(str(folder / f"{stem}.flac"))
            assert (info.samplerate, info.channels, info.subtype) == (rate, channels, "PCM_24")
            assert info.frames == base.shape[1] and base_rate == rate        # the decode's exact length
            total += read_flac(folder / f"{stem}.flac")[0]
        marker = json.loads((out / "_done" / "04_stems" / "Artist" / f"{song}.mp3.json").read_text())
        assert len(marker["outputs"]) == 4
        assert marker["config"]["steps"][-1] == {"stage": "separate", "config": DemucsStage(StageEnv()).config()}
        assert marker["versions"]["separate.model"].startswith("htdemucs_ft:")
        # The residual recorded is the one the stems on disk give (up to 24-bit rounding).
        recorded = marker["stage_facts"]["stems_residual_db"]
        measured = 10 * np.log10(np.sum((total - base) ** 2) / np.sum(base ** 2))
        assert abs(recorded - measured) < 0.5, (recorded, measured)
    log = (out / "_logs" / "Artist" / "Two mono 48k.log").read_text()
    assert "resampled 48000 -> 44100 -> 48000 Hz" in log and "mono duplicated to stereo" in log

    # Rerun: everything is done, nothing loads.
    code, again = cli_json(*args, env=child_env(tmp_path))
    assert code == 0 and again["counts"]["skipped"] == 4 and again["counts"]["done"] == 0
    assert not again.get("model_loads")

    # Another model: the config changed, the song is redone with 6 stems, and no stem of
    # the 4-stem separation is left beside them.
    code, six = cli_json(*args, "--set", "separate.model=htdemucs_6s", env=child_env(tmp_path))
    assert code == 0 and six["counts"]["done"] == 2 and six["counts"]["skipped"] == 2, six["results"]
    folder = out / "04_stems" / "Artist" / "One"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.flac" for s in FOUR + ["guitar", "piano"])


def test_missing_weights_make_the_variant_unavailable(tmp_path, songs):
    empty = tmp_path / "no-models"
    code, summary = cli_json("run", str(songs), "--out", str(tmp_path / "out"), "--variants", "01,04",
                             "--models-dir", str(empty), env=child_env(tmp_path))
    assert code == 0 and summary["counts"]["done"] == 2
    unavailable = [r for r in summary["results"] if r["status"] == "unavailable"]
    assert len(unavailable) == 2
    reason = unavailable[0]["reason"]
    assert "htdemucs_ft" in reason and str(empty / "demucs") in reason and "f7e0c4bc-ba3fe64a.th" in reason and "models fetch htdemucs_ft" in reason
    assert str(tmp_path / "empty-hf") in reason                       # where demucs's own download would go
    # Incomplete is missing too: 3 of the bag's 4 files.
    partial = tmp_path / "partial"
    files = save_repo(partial / "demucs", "htdemucs_ft", **SMALL)
    files[-1].unlink()
    assert "04573f0d-f3cf25b2.th" in DemucsStage(StageEnv(models_dir=partial)).unavailable()


def test_found_in_demucs_caches(tmp_path, monkeypatch):
    """demucs 4.1 downloads into the Hugging Face cache, 4.0 into torch hub's: both are used,
    through demucs's own loaders, without the network."""
    hf = tmp_path / "hf"
    save_hf_cache(hf, "htdemucs", seed=3, **SMALL)
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))  # read once, at import
    stage = DemucsStage(StageEnv(models_dir=tmp_path / "none", options={"separate": {"model": "htdemucs"}}))
    assert stage.unavailable() is None
    offline = huggingface_hub.constants.HF_HUB_OFFLINE
    stage.load(choose_device("cpu"))
    assert stage.weights.where == "Hugging Face cache" and stage.sources == FOUR
    assert huggingface_hub.constants.HF_HUB_OFFLINE == offline              # set for the load only
    ctx = StageContext()
    stems = stage.process(band(1.5, seed=4), ctx)
    assert list(stems) == FOUR and ctx.facts["stems_model"] == "htdemucs"

    torch_home = tmp_path / "torch"
    save_repo(torch_home / "hub" / "checkpoints", "htdemucs_6s", with_yaml=False, **SMALL)   # demucs's shipped yaml
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    stage = DemucsStage(StageEnv(models_dir=tmp_path / "none", options={"separate": {"model": "htdemucs_6s"}}))
    assert locate("htdemucs_6s", tmp_path / "none").where == "torch hub cache"
    stage.load(choose_device("cpu"))
    assert stage.sources == FOUR + ["guitar", "piano"]


class EvenSplit(torch.nn.Module):
    """A 'separator' whose stems are the mix divided evenly: they must add up to the mix and
    each must equal mix / S, sample for sample, whatever the wrapper does around it."""

    def __init__(self, sources):
        super().__init__()
        self.sources, self.samplerate, self.audio_channels = list(sources), 44100, 2
        self.segment = Fraction(39, 5)
        self.unused = torch.nn.Parameter(torch.zeros(1))   # apply_model asks a model for its device

    def forward(self, x):
        return x[:, None].repeat(1, len(self.sources), 1, 1) / len(self.sources)


def _even_stage(models, **options) -> DemucsStage:
    stage = DemucsStage(StageEnv(models_dir=models, options={"separate": options}))
    stage.load(choose_device("cpu"))
    stage.bag = BagOfModels([EvenSplit(FOUR), EvenSplit(FOUR)])   # a bag, as every named model is
    return stage


def _band_limited(seconds, rate, channels, seed=0) -> Audio:
    """The band, low-passed at 90 % of the lower Nyquist frequency (the song's or the model's),
    as an MP3 encoder's lowpass does: what a round trip through 44.1 kHz can keep."""
    a = band(seconds, rate=rate, channels=channels, seed=seed).samples
    spectrum = np.fft.rfft(a, axis=1)
    spectrum[:, np.fft.rfftfreq(a.shape[1], 1 / rate) > 0.9 * min(rate, 44100) / 2] = 0
    return Audio(np.fft.irfft(spectrum, a.shape[1], axis=1).astype(np.float32), rate)


@pytest.mark.parametrize("rate,channels,limit_db", [(44100, 2, -100), (48000, 1, -50), (32000, 2, -50)])
def test_stems_add_up_and_line_up(models, rate, channels, limit_db):
    audio = _band_limited(9.0, rate, channels)   # more than one 7.8 s segment: crossfades are crossed
    stage = _even_stage(models, shifts="2", overlap="0.3")
    ctx = StageContext()
    stems = stage.process(audio, ctx)
    assert list(stems) == FOUR
    for s in stems.values():
        assert (s.channels, s.frames, s.rate) == (audio.channels, audio.frames, audio.rate)
        # each stem is the mix / 4, in place: no lag, no gain change, no lost tail
        err = 10 * np.log10(np.sum((s.samples - audio.samples / 4) ** 2) / np.sum((audio.samples / 4) ** 2))
        assert err < limit_db, err
    assert ctx.facts["stems_residual_db"] < limit_db
    assert ctx.facts["stems_residual_db"] == pytest.approx(mixture_residual_db(audio, list(stems.values())), abs=0.01)


def test_residual_measure():
    mix = band(1.0)
    half = Audio(mix.samples * 0.5, mix.rate)
    assert mixture_residual_db(mix, [half, half]) < -120                 # adds up exactly
    assert mixture_residual_db(mix, [half]) == pytest.approx(-6.02, abs=0.01)
    assert mixture_residual_db(mix, [Audio(np.zeros_like(mix.samples), mix.rate)]) == pytest.approx(0.0)
    silence = Audio(np.zeros((2, 100), np.float32), 44100)
    assert mixture_residual_db(silence, [silence]) is None


def test_random_shifts_are_seeded(models):
    """shifts draw random offsets: seeded, so a rerun writes the same bytes, and the caller's
    random state is left as it was."""
    stage = DemucsStage(StageEnv(models_dir=models, options={"separate": {"shifts": 2, "model": "htdemucs_6s"}}))
    stage.load(choose_device("cpu"))
    audio = band(2.0, seed=7)
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    progress = []
    first = stage.process(audio, StageContext(progress=progress.append))
    assert random.random() == expected_next
    second = stage.process(audio, StageContext())
    assert all(np.array_equal(first[k].samples, second[k].samples) for k in first)
    assert progress and progress[-1] == 1.0 and all(0 <= p <= 1 for p in progress)


def test_options_are_checked_and_decide_the_config(models):
    def make(**opts):
        return DemucsStage(StageEnv(models_dir=models, options={"separate": opts}))

    assert make().config()["model"] == "htdemucs_ft"
    assert make(segment="6.5").config() != make().config()
    assert make(shifts="0", overlap="0.5").config()["shifts"] == 0
    assert make(segment="auto").config()["segment"] == "model"
    for bad, words in (({"segment": "8"}, "longer than they were trained on"),
                       ({"model": "mdx_extra"}, "htdemucs_6s"),
                       ({"shifts": "two"}, "not a number"),
                       ({"overlap": "1"}, "out of range"),
                       ({"jobs": "4"}, "no option jobs")):
        with pytest.raises(UsageError, match=words):
            make(**bad)
    # The limit the loaded model states is checked too (these test models: 2 s).
    with pytest.raises(UsageError, match=r"longer than htdemucs_6s was trained on \(2 s\)"):
        make(segment="5", model="htdemucs_6s").load(choose_device("cpu"))


def test_out_of_memory_on_the_gpu_runs_the_song_on_the_cpu(models):
    audio = band(2.0, seed=8)
    stage = DemucsStage(StageEnv(models_dir=models, options={"separate": {"model": "htdemucs_6s"}}))
    stage.load(choose_device("cpu"))
    clean = stage.process(audio, StageContext())

    inner = stage.bag.models[0]
    real_forward = inner.forward
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(x)

    inner.forward = flaky
    cpu = choose_device("cpu")
    stage.device = DeviceInfo("cuda", "cpu", "pretend GPU", cpu.total_bytes, cpu.free_bytes, cpu.cpu_cores)
    lines = []
    disturbed = stage.process(audio, StageContext(log=lines.append))
    assert any("out of memory on cpu; this song runs on the CPU" in line for line in lines)
    assert all(np.array_equal(clean[k].samples, disturbed[k].samples) for k in clean)
