"""The msst separators of the `separate` stage (SCNet XL IHF, BS-RoFormer 4-stem, the viperx
vocals + instrumental BS-RoFormer): tiny random models of the real msst classes, saved as MSST
publishes its checkpoints, read by the stage's own loader; MSST's chunking as ported equals
msst's own; a model with a finite receptive field gives through it what one whole-song pass
gives, within a stated tolerance; stereo, mono and other rates, exact length, stems that add
up; unavailable with the file and folder named; the two-stem set through 04-06; `auto`."""
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("msst", reason="msst is not installed (pip install --no-deps msst==0.1.0)")
pytest.importorskip("rotary_embedding_torch", reason="the separators extra is not installed")

from restore.engine.config import RunConfig  # noqa: E402
from restore.engine.run import run  # noqa: E402
from restore.engine.variants import resolve_variants  # noqa: E402
from restore.errors import RestoreError  # noqa: E402
from restore.models import store  # noqa: E402
from restore.models.checkpoints import ModelRefused  # noqa: E402
from restore.models.demix import demix  # noqa: E402
from restore.models.devices import choose_device  # noqa: E402
from restore.stages import StageContext, StageEnv, get_stage  # noqa: E402
from restore.stages.msst_compat import _root  # noqa: E402
from restore.stages.separate import DemucsStage, MsstStage  # noqa: E402
from restore.stages.separate.msst import model_call  # noqa: E402
from tests.support.examples import band  # noqa: E402
from tests.support.random_msst import random_separator, save_random_separator, tiny_spec  # noqa: E402

from .conftest import TRAINING_STACK, hide_developer_models, modules_imported_by, read_flac, write_mp3  # noqa: E402

NAMES = ("scnet_xl_ihf", "bs_roformer", "bs_roformer_vocals")
FOUR = ["drums", "bass", "other", "vocals"]
pytestmark = pytest.mark.filterwarnings("ignore:A window was not provided")   # SCNet's STFT, as trained
PUBLISHED = {name: store.CATALOGUE[name] for name in NAMES}   # before the fixture swaps in tiny configs


@pytest.fixture(autouse=True)
def tiny(monkeypatch, tmp_path, one_torch_thread):
    """The catalogue's msst entries with tiny configs of the same classes; one torch thread
    (2 shared cores); no model of the developer's own is found."""
    for name in NAMES:
        monkeypatch.setitem(store.CATALOGUE, name, tiny_spec(name))
    hide_developer_models(tmp_path, monkeypatch)


def stage_for(folder: Path, name: str, **options) -> MsstStage:
    stage = get_stage("separate", StageEnv(models_dir=folder, options={"separate": {"model": name, **options}}))
    assert isinstance(stage, MsstStage)
    return stage


def db(err: np.ndarray, ref: np.ndarray) -> float:
    return 10 * np.log10(max(float(np.sum(np.square(err.astype(np.float64)))), 1e-30) / float(np.sum(np.square(ref))))


def msst_demix():
    """msst's own demix (msst/utils/model_utils.py). Its module imports ml_collections for a
    type annotation only (ConfigDict); that one name is stood in for, nothing else."""
    sys.modules.setdefault("ml_collections", types.SimpleNamespace(ConfigDict=dict))
    spec = importlib.util.spec_from_file_location("msst_model_utils_for_test", _root() / "utils" / "model_utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.demix


class Config(types.SimpleNamespace):
    def __contains__(self, key):
        return key in self.__dict__


def test_importing_the_separators_pulls_no_training_stack():
    new = modules_imported_by("from restore.stages.msst_compat import separator_class\n"
                              "separator_class('scnet'); separator_class('bs_roformer')")
    msst = {m for m in new if m.split(".")[0] == "msst"}
    assert msst == {"msst", "msst.models", "msst.models.scnet", "msst.models.scnet.scnet",
                    "msst.models.scnet.separation", "msst.models.bs_roformer", "msst.models.bs_roformer.attend",
                    "msst.models.bs_roformer.bs_roformer"}
    assert not {m for m in new if m.split(".")[0] in TRAINING_STACK}


def test_the_published_scnet_config_builds_the_published_file():
    """SCNet XL IHF's config, as catalogued, builds 53.47 M float32 parameters: the published
    checkpoint's 214,063,778 bytes less under 0.1 % (the zip's headers), so the config fits it."""
    spec = PUBLISHED["scnet_xl_ihf"]
    model = random_separator("scnet_xl_ihf", config=spec.config["model"])
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2) == 53.47
    assert 0 < spec.approx_bytes - 4 * params < 0.001 * spec.approx_bytes
    assert spec.config["chunk_size"] == 485_100 and spec.config["num_overlap"] == 4


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", ["bare", "wrapped"])
def test_published_layouts_load_through_the_real_loader(tmp_path, name, layout):
    source = save_random_separator(tmp_path / store.CATALOGUE[name].filename, name, seed=3, layout=layout)
    stage = stage_for(tmp_path, name)
    assert stage.unavailable() is None
    stage.load(choose_device("cpu"))
    x = torch.from_numpy(band(0.3, seed=4).samples[None])
    with torch.inference_mode():
        assert torch.equal(stage.model(x), source(x))
    assert any("not verified" in n for n in stage.load_notes)     # a random file has no recorded hash


def test_the_port_is_msst_s_own_demix():
    """restore/models/demix.py against msst 0.1.0's demix (batch_size 1), on a tiny SCNet,
    for a song shorter than two borders (no reflection padding) and a longer one: equal
    to float32 rounding (5e-7 of the peak)."""
    reference = msst_demix()
    model = random_separator("scnet_xl_ihf", seed=3)
    for seconds, chunk, overlap in ((0.3, 8820, 2), (2.0, 8820, 4), (2.0, 11025, 2)):
        x = band(seconds, seed=2).samples
        cfg = Config(audio=Config(chunk_size=chunk), inference=Config(num_overlap=overlap, batch_size=1),
                     training=Config(instruments=FOUR, target_instrument=None, use_amp=False))
        theirs = reference(cfg, model, x, "cpu", "scnet")
        theirs = np.stack([theirs[k] for k in FOUR])
        ours = demix(x, model_call(model, "cpu", False), chunk_size=chunk, num_overlap=overlap, batch_items=3)
        assert ours.shape == theirs.shape == (4, 2, x.shape[1])
        assert np.max(np.abs(ours - theirs)) <= 5e-7 * np.max(np.abs(theirs)), (seconds, chunk, overlap)


def test_chunked_equals_a_whole_song_pass_for_a_finite_receptive_field():
    """MSST's chunking (no context, linear fades of a tenth of a chunk) with a model of finite
    receptive field (65 taps): away from the song's first and last 32 samples (which MSST
    reflects rather than zero-pads) the chunks give what one pass over the song gives, to
    below -75 dB at 0.5 s chunks with 2 overlaps and -80 dB with 4 (about -80 and -83 dB
    measured; the published 11 s chunks put far fewer seams in a song).
    SCNet and the RoFormers see the whole chunk (LSTM, attention, GroupNorm): for them no
    chunking equals a whole-song pass, which is why the published one is kept."""
    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv1d(2, 8, 65, padding=32)

        def forward(self, x):
            return self.conv(x).reshape(x.shape[0], 4, 2, -1)
    call = model_call(Conv().eval(), "cpu", False)
    x = band(3.0, seed=4).samples
    whole = call(x[None])[0]
    inner = slice(32, -32)
    for overlap, bound in ((2, -75), (4, -80)):
        chunked = demix(x, call, chunk_size=22050, num_overlap=overlap)
        assert chunked.shape == whole.shape
        assert db(chunked[..., inner] - whole[..., inner], whole[..., inner]) < bound
    scnet = model_call(random_separator("scnet_xl_ihf", seed=3), "cpu", False)   # the control
    assert db(demix(x, scnet, chunk_size=22050, num_overlap=2) - scnet(x[None])[0], scnet(x[None])[0]) > -20


class EvenSplit(torch.nn.Module):
    """msst's call signature; each of `n` stems is the mix / n: the stems add up to it."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        return (x / self.n)[:, None].repeat(1, self.n, 1, 1)


@pytest.mark.parametrize("rate,channels", [(44100, 2), (48000, 1), (32000, 2)])
def test_stereo_mono_rates_exact_length_and_stems_that_add_up(tmp_path, rate, channels):
    save_random_separator(tmp_path / store.CATALOGUE["scnet_xl_ihf"].filename, "scnet_xl_ihf")
    stage = stage_for(tmp_path, "scnet_xl_ihf")
    stage.load(choose_device("cpu"))
    stage.model = EvenSplit(4)
    audio = band(0.77, rate=rate, channels=channels, seed=5)
    lines = []
    ctx = StageContext(log=lines.append)
    stems = stage.process(audio, ctx)
    assert list(stems) == FOUR and stems.residual is None
    for s in stems.values():
        assert s.rate == rate and s.samples.shape == audio.samples.shape and s.samples.dtype == np.float32
    total = sum(s.samples for s in stems.values())
    # the mix as the model saw it: at 44.1 kHz, stereo (what soxr keeps of a 48 kHz band is below 22.05 kHz)
    from restore.audio import fit_frames
    from restore.stages.separate.common import resample
    seen = fit_frames(resample(resample(audio.samples, rate, 44100), 44100, rate), audio.frames)
    assert db(total - seen, seen) < -90
    assert ctx.facts["stems"] == FOUR and ctx.facts["stems_model"] == "scnet_xl_ihf"
    assert "scnet_xl_ihf, chunks of 0.2 s, num_overlap 4" in lines[-1]
    # level: a random model's stems at the mix's level, order of magnitude (no gain lost in the wrapper)
    stage.load(choose_device("cpu"))
    out = stage.process(audio, StageContext())
    assert all(np.isfinite(s.samples).all() for s in out.values())


def test_vocals_and_instrumental_add_up_to_the_mix(tmp_path):
    save_random_separator(tmp_path / store.CATALOGUE["bs_roformer_vocals"].filename, "bs_roformer_vocals")
    stage = stage_for(tmp_path, "bs_roformer_vocals")
    stage.load(choose_device("cpu"))
    audio = band(0.6, seed=6)
    ctx = StageContext()
    stems = stage.process(audio, ctx)
    assert list(stems) == ["vocals", "instrumental"] == ctx.facts["stems"] == stage.config()["stems"]
    assert db(stems["vocals"].samples + stems["instrumental"].samples - audio.samples, audio.samples) < -100


def test_unavailable_names_the_file_and_folder(tmp_path, monkeypatch):
    folder = tmp_path / "nothing"
    for name in NAMES:
        reason = stage_for(folder, name).unavailable()
        assert f"model {name} is missing" in reason and str(folder) in reason
        assert store.CATALOGUE[name].filename in reason.replace("\\", "/")
    # auto with nothing present: htdemucs_ft's files, and that scnet_xl_ihf's would be taken
    stage = get_stage("separate", StageEnv(models_dir=folder))
    assert isinstance(stage, DemucsStage) and stage.model_name == "htdemucs_ft"
    reason = stage.unavailable()
    if "demucs is not installed" not in reason:
        assert "f7e0c4bc-ba3fe64a.th" in reason and "msst/model_scnet_ep_36_sdr_10.0891.ckpt" in reason
    import restore.stages.msst_compat as compat  # where the msst stages ask whether it is installed
    monkeypatch.setattr(compat, "msst_installed", lambda: False)
    assert "msst is not installed" in stage_for(folder, "bs_roformer").unavailable()


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Touch:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran.marker",))
    path = tmp_path / store.CATALOGUE["scnet_xl_ihf"].filename
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Touch()}, str(path))
    with pytest.raises(ModelRefused, match="more than tensors"):
        stage_for(tmp_path, "scnet_xl_ihf").load(choose_device("cpu"))
    assert not (tmp_path / "ran.marker").exists()
    torch.save({"encoder.0.weight": torch.zeros(1)}, str(path))   # tensors, but not this model's
    with pytest.raises(RestoreError, match="does not fit msst 0.1.0's SCNet"):
        stage_for(tmp_path, "scnet_xl_ihf").load(choose_device("cpu"))


def test_auto_takes_scnet_when_its_file_is_there(tmp_path):
    assert get_stage("separate", StageEnv(models_dir=tmp_path)).model_name == "htdemucs_ft"
    save_random_separator(tmp_path / store.CATALOGUE["scnet_xl_ihf"].filename, "scnet_xl_ihf")
    stage = get_stage("separate", StageEnv(models_dir=tmp_path))
    assert isinstance(stage, MsstStage) and stage.model_name == "scnet_xl_ihf" and stage.config()["model"] == "scnet_xl_ihf"
    chosen = get_stage("separate", StageEnv(models_dir=tmp_path, options={"separate": {"model": "htdemucs"}}))
    assert isinstance(chosen, DemucsStage) and chosen.model_name == "htdemucs"


def test_two_stems_through_04_to_06_with_their_own_routes(tmp_path):
    """vocals + instrumental: 04 writes the two, 05 routes the instrumental (other's route by
    default, its own when set), 06 gives back the decode when the routes change nothing;
    one separation, one load."""
    models = tmp_path / "models"
    save_random_separator(models / store.CATALOGUE["bs_roformer_vocals"].filename, "bs_roformer_vocals", seed=2)
    write_mp3(tmp_path / "in" / "a.mp3", band(1.2, seed=1), bitrate=128)
    write_mp3(tmp_path / "in" / "b mono.mp3", band(1.0, channels=1, seed=2), bitrate=96)
    options = {"separate": {"model": "bs_roformer_vocals"}, "route": {"vocals": "none", "other": "none"}}
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", device="cpu", report=False,
                            variants=resolve_variants("01,04,05,06"), models_dir=models, stage_options=options))
    assert {r.status for r in summary.results} == {"done"} and len(summary.results) == 8, summary.results
    assert summary.model_loads["separate"] == 1
    out = tmp_path / "out"
    for song in ("a", "b mono"):
        base, rate = read_flac(out / "01_baseline" / f"{song}.flac")
        assert sorted(p.name for p in (out / "04_stems" / song).iterdir()) == ["instrumental.flac", "vocals.flac"]
        assert sorted(p.name for p in (out / "05_stems_enhanced" / song).iterdir()) == ["instrumental.flac", "vocals.flac"]
        remix, _ = read_flac(out / "06_remixed" / f"{song}.flac")
        assert remix.shape == base.shape and db(remix - base, base) < -90
        facts = json.loads((out / "_done" / "05_stems_enhanced" / f"{song}.mp3.json").read_text())["stage_facts"]
        assert facts["stems"] == ["vocals", "instrumental"] and facts["instrumental.route"] == "none"  # other's route
    route = get_stage("route", StageEnv(options={"route": {"instrumental": "offline_restore", "other": "none"}}))
    assert route.route_of("instrumental") == ("offline_restore",) and route.route_of("other") == ()
