"""Model files are code: a checkpoint whose pickle runs something (here it touches a marker
file, the portable stand-in for a shell command) is put at every path the tool reads a
model from. The marker is never created, the variant is unavailable or failed with one
line that names the file and how to get the verified one, and the batch goes on. Genuine
files in each real format still load; a file that differs from the catalogue is refused
before anything reads it; and no code in restore/ unpickles outside the one helper."""
import ast
import dataclasses
import importlib.util
import io
import json
import zipfile
from argparse import Namespace
from fractions import Fraction
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from restore.engine.config import RunConfig  # noqa: E402
from restore.engine.run import run  # noqa: E402
from restore.engine.variants import resolve_variants  # noqa: E402
from restore.errors import RestoreError  # noqa: E402
from restore.models import checkpoints  # noqa: E402
from restore.models.checkpoints import ModelRefused, load_tensors  # noqa: E402
from restore.models.devices import choose_device  # noqa: E402
from restore.io.writers import hash_file  # noqa: E402
from restore.models.store import CATALOGUE, check_file, fetch  # noqa: E402
from restore.stages import StageEnv  # noqa: E402
from restore.stages.bwe_hifigan import HifiganBweStage  # noqa: E402
from restore.stages.separate import DemucsStage, published  # noqa: E402
from tests.support.examples import band  # noqa: E402
from tests.support.random_demucs import random_htdemucs, save_hf_cache, save_repo  # noqa: E402
from tests.support.random_hifigan import save_random_hifigan  # noqa: E402

from .conftest import run_cli, write_mp3  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HIFIGAN = CATALOGUE["hifigan-bwe"]
AUDIOSR = CATALOGUE["audiosr-basic"]
SMALL_DEMUCS = dict(segment=Fraction(2))


class Touch:
    """Unpickling this calls Path.touch(marker): what a malicious checkpoint does with
    os.system, without depending on a shell."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def needs_audiosr():
    """audiosr's package __init__ needs torchaudio, which the project avoids: ask for the spec."""
    if importlib.util.find_spec("audiosr") is None:
        pytest.skip("audiosr is not installed (pip install --no-deps audiosr==0.0.7)")


def malicious(path: Path, marker: Path, layout: str = "state_dict") -> Path:
    """torch.save a checkpoint that touches `marker` when unpickled, shaped as `layout`:
    'state_dict' (AudioSR's {"state_dict": ...}) or 'demucs' (demucs's package)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "demucs":
        model = random_htdemucs(["drums", "bass", "other", "vocals"], **SMALL_DEMUCS)
        args, kwargs = model._init_args_kwargs
        content = {"klass": type(model), "args": args, "kwargs": kwargs, "state": model.state_dict(),
                   "training_args": Touch(marker)}
    else:
        content = {"state_dict": {"w": torch.zeros(2)}, "callbacks": Touch(marker)}
    torch.save(content, str(path))
    return path


def self_named(path_without_hash: Path) -> Path:
    """Rename `<sig>.th` to `<sig>-<its own sha256[:8]>.th`, as demucs's save_with_checksum names files."""
    named = path_without_hash.with_name(f"{path_without_hash.stem}-{hash_file(path_without_hash, 'sha256')[:8]}.th")
    path_without_hash.rename(named)
    return named


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "ran-code.marker"
    yield m
    assert not m.exists(), "a model file ran code"


@pytest.fixture
def songs(tmp_path):
    for i in range(2):
        write_mp3(tmp_path / "in" / f"{i} song.mp3", band(1.0, seed=i), bitrate=128)
    return tmp_path / "in"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No model of the developer's own is found: the library caches point at empty folders."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "home"))


def run_variant(songs: Path, out: Path, variants: str, models: Path, **options):
    """The real engine, in-process, on the two songs; returns {status: [results]} of the model variant."""
    summary = run(RunConfig(inputs=[str(songs)], out_dir=out, variants=resolve_variants(f"01,{variants}"),
                            models_dir=models, device="cpu", report=False, **options))
    assert summary.counts()["done"] >= 2                      # the baseline of both songs: the batch went on
    mine = [r for r in summary.results if r.variant != "01_baseline"]
    assert len(mine) == 2
    return mine


def test_the_test_file_really_runs_code(tmp_path):
    """The control: a full unpickle of the test checkpoint does touch the marker."""
    m = tmp_path / "control.marker"
    path = malicious(tmp_path / "evil.bin", m)
    torch.load(str(path), weights_only=False)
    assert m.exists()


def test_load_tensors_refuses_a_pickle_that_runs_code(tmp_path, marker):
    path = malicious(tmp_path / "evil.bin", marker)
    with pytest.raises(ModelRefused) as refused:
        load_tensors(path, what="the test checkpoint", fetch_name="audiosr-basic")
    line = refused.value.reason()
    assert str(path) in line and "more than tensors" in line and "models fetch audiosr-basic" in line
    assert "\n" not in line and "--trust-model-file" in line


def test_more_than_tensors_is_unpickled_only_when_published_or_trusted(tmp_path):
    """A harmless file that still needs a full unpickle (an argparse.Namespace, as a Lightning
    checkpoint carries): refused unless its bytes are the published file's or it is trusted."""
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "hparams": Namespace(lr=1e-4)}, str(path))
    spec = dataclasses.replace(AUDIOSR, sha256=hash_file(path, "sha256"))   # as if this were the published file
    check = check_file(spec, path)
    assert check.status == "published"
    with pytest.raises(ModelRefused, match="more than tensors"):
        load_tensors(path, what="x", fetch_name=None)
    with pytest.raises(ModelRefused, match="more than tensors"):          # a verdict without the hash is not enough
        load_tensors(path, what="x", fetch_name=None, check=check)
    assert load_tensors(path, what="x", fetch_name=None, check=check, published_sha256=spec.sha256)["hparams"].lr == 1e-4
    assert load_tensors(path, what="x", fetch_name=None, trusted=True)["hparams"].lr == 1e-4
    # The bytes are hashed again as they are unpickled: a file changed after the check is refused.
    torch.save({"state_dict": {"w": torch.zeros(3)}, "hparams": Namespace(lr=1.0)}, str(path))
    with pytest.raises(ModelRefused, match="changed since it was checked"):
        load_tensors(path, what="x", fetch_name=None, check=check, published_sha256=spec.sha256)


def test_a_damaged_checkpoint_is_one_clear_line(tmp_path):
    path = tmp_path / "cut.bin"
    torch.save({"w": torch.zeros(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(RestoreError) as err:
        load_tensors(path, what="the test checkpoint", fetch_name="audiosr-basic")
    assert not isinstance(err.value, ModelRefused) and str(path) in err.value.one_line()


# -- AudioSR --

@pytest.mark.parametrize("where", ["models folder", "Hugging Face cache"])
def test_audiosr_malicious_checkpoint(tmp_path, marker, songs, where):
    needs_audiosr()
    models = tmp_path / "models"
    if where == "models folder":
        path = malicious(models / AUDIOSR.filename, marker)
    else:
        path = malicious(tmp_path / "empty-hf" / "models--haoheliu--audiosr_basic" / "snapshots" / "abc" / "pytorch_model.bin",
                         marker)
    results = run_variant(songs, tmp_path / "out", "02", models)
    assert {r.status for r in results} == {"failed"}
    assert str(path) in results[0].reason and "more than tensors" in results[0].reason
    assert "models fetch audiosr-basic" in results[0].reason


def test_audiosr_checkpoint_config_may_change_numbers_only(tmp_path, marker):
    """A tensors-only checkpoint can still carry a config; audiosr imports and calls the
    classes a config names ("target"), so a config from a file may change sizes only."""
    needs_audiosr()
    from restore.stages.audiosr.compat import load_audiosr
    from restore.stages.audiosr.stage import load_engine
    params = load_audiosr()["basic_config"]()["model"]["params"]
    params["unet_config"]["target"] = "shutil.copyfile"
    params["unet_config"]["params"] = {"src": __file__, "dst": str(marker)}
    path = tmp_path / "pytorch_model.bin"
    torch.save({"state_dict": {}, "mp3restore_config": params}, str(path))
    with pytest.raises(ModelRefused, match=r"mp3restore_config changes a value that is not a number at /unet_config/target"):
        load_engine(path, "cpu", False)


def test_audiosr_file_differing_from_the_catalogue_is_refused_before_loading(tmp_path, monkeypatch):
    needs_audiosr()
    from restore.stages.audiosr.stage import AudioSrStage
    path = tmp_path / "models" / AUDIOSR.filename
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}}, str(path))
    stage = AudioSrStage(StageEnv(models_dir=tmp_path / "models"))
    stage.spec = dataclasses.replace(AUDIOSR, sha256="0" * 64)    # the catalogue's published hash, another file's
    assert "is not the published file" in stage.unavailable() and str(path) in stage.unavailable()

    def no_load(*a, **k):
        raise AssertionError("torch.load was called on a refused file")
    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(ModelRefused, match="is not the published file"):
        stage.load(choose_device("cpu"))


# -- Demucs --

def _demucs_layout(tmp_path: Path, layout: str, marker: Path) -> tuple[dict, Path, str]:
    """(stage options, the malicious file, how it must end: unavailable or failed)."""
    models = tmp_path / "models" / "demucs"
    if layout == "no hash in the name":
        return {"model": "htdemucs"}, malicious(models / "955717e8.th", marker, "demucs"), "unavailable"
    if layout == "its own hash in the name":           # demucs's own check passes: the content is what counts
        return {"model": "htdemucs"}, self_named(malicious(models / "955717e8.th", marker, "demucs")), "failed"
    if layout == "the published name":
        return {"model": "htdemucs"}, malicious(models / "955717e8-8726e21a.th", marker, "demucs"), "unavailable"
    if layout == "a bag of the user's own":
        (models / "htdemucs.yaml").parent.mkdir(parents=True, exist_ok=True)
        (models / "htdemucs.yaml").write_text("models: ['0123abcd']\n")
        return {"model": "htdemucs"}, self_named(malicious(models / "0123abcd.th", marker, "demucs")), "failed"
    if layout == "torch hub cache":
        hub = tmp_path / "empty-torch" / "hub" / "checkpoints"
        return {"model": "htdemucs_6s"}, malicious(hub / "5c90dfd2-34c22ccb.th", marker, "demucs"), "unavailable"
    if layout == "one file of the ft bag":
        files = save_repo(models, "htdemucs_ft", **SMALL_DEMUCS)
        evil = files[2].with_name(files[2].name.split("-")[0] + ".th")
        files[2].unlink()
        return {"model": "htdemucs_ft"}, self_named(malicious(evil, marker, "demucs")), "failed"
    raise ValueError(layout)


@pytest.mark.parametrize("layout", ["no hash in the name", "its own hash in the name", "the published name",
                                    "a bag of the user's own", "torch hub cache", "one file of the ft bag"])
def test_demucs_malicious_file(tmp_path, marker, songs, layout):
    options, path, status = _demucs_layout(tmp_path, layout, marker)
    results = run_variant(songs, tmp_path / "out", "04", tmp_path / "models", stage_options={"separate": options})
    assert {r.status for r in results} == {status}, results
    reason = results[0].reason
    assert str(path) in reason and f"models fetch {options['model']}" in reason and "\n" not in reason


def test_demucs_safetensors_naming_a_function_is_refused(tmp_path, marker, songs):
    """demucs's own safetensors loader imports and calls the class named in the header."""
    hf = tmp_path / "empty-hf"
    files = save_hf_cache(hf, "htdemucs", **SMALL_DEMUCS)
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(files[0]), metadata={"klass": "shutil.copyfile", "args": json.dumps([__file__, str(marker)]),
                                                             "kwargs": "{}"})
    control = tmp_path / "control.marker"
    save_file({"w": torch.zeros(1)}, str(tmp_path / "control.safetensors"),
              metadata={"klass": "shutil.copyfile", "args": json.dumps([__file__, str(control)]), "kwargs": "{}"})
    from demucs.hf import load_safetensors_model
    with pytest.raises(Exception):
        load_safetensors_model(tmp_path / "control.safetensors")
    assert control.exists()                                   # the control: demucs's loader ran it
    results = run_variant(songs, tmp_path / "out", "04", tmp_path / "models", stage_options={"separate": {"model": "htdemucs"}})
    assert {r.status for r in results} == {"failed"}
    assert "shutil.copyfile" in results[0].reason and str(files[0]) in results[0].reason


def test_demucs_genuine_files_load_from_every_layout(tmp_path, monkeypatch):
    """Random weights in each real layout: the models folder (demucs's local repo), torch
    hub's cache (shipped yaml) and the Hugging Face cache (safetensors)."""
    cpu = choose_device("cpu")
    save_repo(tmp_path / "models" / "demucs", "htdemucs", **SMALL_DEMUCS)
    stage = DemucsStage(StageEnv(models_dir=tmp_path / "models", options={"separate": {"model": "htdemucs"}}))
    assert stage.unavailable() is None
    stage.load(cpu)
    assert stage.sources == ["drums", "bass", "other", "vocals"]
    assert any("not the published file (955717e8-8726e21a.th)" in n for n in stage.load_notes)   # random weights: said so
    save_repo(tmp_path / "empty-torch" / "hub" / "checkpoints", "htdemucs_6s", with_yaml=False, **SMALL_DEMUCS)
    stage = DemucsStage(StageEnv(models_dir=tmp_path / "none", options={"separate": {"model": "htdemucs_6s"}}))
    stage.load(cpu)
    assert stage.weights.where == "torch hub cache" and len(stage.sources) == 6
    save_hf_cache(tmp_path / "empty-hf", "htdemucs_ft", **SMALL_DEMUCS)
    stage = DemucsStage(StageEnv(models_dir=tmp_path / "none"))
    stage.load(cpu)
    assert stage.weights.where == "Hugging Face cache" and len(stage.bag.models) == 4


def test_demucs_package_needing_more_loads_only_when_trusted(tmp_path):
    """A harmless package that names a class outside the allow-list (training arguments as
    an argparse.Namespace): refused, unless the person trusts that file."""
    models = tmp_path / "models" / "demucs"
    model = random_htdemucs(["drums", "bass", "other", "vocals"], **SMALL_DEMUCS)
    args, kwargs = model._init_args_kwargs
    models.mkdir(parents=True)
    path = models / "955717e8.th"
    torch.save({"klass": type(model), "args": args, "kwargs": kwargs, "state": model.state_dict(),
                "training_args": Namespace(epochs=1)}, str(path))
    path = self_named(path)
    env = dict(models_dir=tmp_path / "models", options={"separate": {"model": "htdemucs"}})
    with pytest.raises(ModelRefused, match="more than tensors"):
        DemucsStage(StageEnv(**env)).load(choose_device("cpu"))
    stage = DemucsStage(StageEnv(**env, trusted_model_files=(path,)))
    stage.load(choose_device("cpu"))
    assert any("--trust-model-file" in n and n.startswith("warning:") for n in stage.load_notes)


def test_catalogue_matches_what_demucs_ships():
    """The published names recorded here are those in demucs's own remote/files.txt, and
    each bag lists the signatures of demucs's yaml, in order."""
    import yaml
    from demucs.pretrained import REMOTE_ROOT
    shipped = {line.strip() for line in (REMOTE_ROOT / "files.txt").read_text().splitlines()}
    for spec in (s for s in CATALOGUE.values() if s.fmt == "demucs"):
        names = [Path(f.filename).name for f in spec.files()]
        assert set(names) <= shipped
        assert [n.split("-")[0] for n in names] == yaml.safe_load((REMOTE_ROOT / f"{spec.name}.yaml").read_text())["models"]
        assert all(f.sha256_prefix == Path(f.filename).stem.split("-")[1] for f in spec.files())
    assert set(published()) == {"955717e8", "f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d", "5c90dfd2"}


# -- HiFi-GAN+ --

@pytest.mark.parametrize("where", ["models folder", "library cache"])
def test_hifigan_pickle_in_place_of_torchscript(tmp_path, marker, songs, where):
    models = tmp_path / "models"
    base = models if where == "models folder" else tmp_path / "home" / ".local" / "hifi-gan-bwe"
    path = malicious(base / HIFIGAN.filename, marker)
    results = run_variant(songs, tmp_path / "out", "08", models)
    assert {r.status for r in results} == {"unavailable"}
    assert str(path) in results[0].reason and "not a TorchScript file" in results[0].reason
    assert "models fetch hifigan-bwe" in results[0].reason


def test_hifigan_torchscript_archive_with_a_malicious_pickle(tmp_path, marker, songs):
    """A real TorchScript archive whose data.pkl is the malicious pickle: it passes the format
    check, and torch's TorchScript unpickler refuses the global it names."""
    genuine = save_random_hifigan(tmp_path / "genuine.pt", stacks=1, layers=2, channels=8)
    buf = io.BytesIO()
    torch.save({"x": Touch(marker)}, buf)
    inner = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    evil_pkl = inner.read(next(n for n in inner.namelist() if n.endswith("data.pkl")))
    path = tmp_path / "models" / HIFIGAN.filename
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(genuine) as src, zipfile.ZipFile(path, "w") as out:
        for name in src.namelist():
            out.writestr(name, evil_pkl if name.endswith("/data.pkl") else src.read(name))
    results = run_variant(songs, tmp_path / "out", "08", tmp_path / "models")
    assert {r.status for r in results} == {"failed"}
    assert str(path) in results[0].reason and "cannot read" in results[0].reason


def test_hifigan_unverified_model_loads_with_a_warning_in_log_and_report(tmp_path, songs):
    models = tmp_path / "models"
    path = save_random_hifigan(models / HIFIGAN.filename, stacks=1, layers=2, channels=8)
    out = tmp_path / "out"
    results = run_variant(songs, out, "08", models)
    assert {r.status for r in results} == {"done"}
    log = (out / "_logs" / "0 song.log").read_text()
    assert f"warning: bwe_hifigan: the model file {path} is not verified" in log
    facts = json.loads((out / "_done" / "08_hifigan" / "0 song.mp3.json").read_text())["stage_facts"]
    assert "is not verified" in facts["bwe_hifigan_model_file"]
    # With the hash `models fetch` records, it is known: no warning.
    (models / (HIFIGAN.filename + ".sha256")).write_text(f"{hash_file(path, 'sha256')}  {HIFIGAN.filename}\n")
    results = run_variant(songs, tmp_path / "out2", "08", models)
    assert {r.status for r in results} == {"done"}
    log = (tmp_path / "out2" / "_logs" / "0 song.log").read_text()
    assert "not verified" not in log and "sha256 matches the one recorded when it was fetched" in log


def test_hifigan_file_differing_from_the_catalogue_is_refused_before_loading(tmp_path, songs, monkeypatch):
    models = tmp_path / "models"
    path = save_random_hifigan(models / HIFIGAN.filename, stacks=1, layers=2, channels=8)
    (models / (HIFIGAN.filename + ".sha256")).write_text("0" * 64 + "\n")   # what `fetch` recorded: another file
    results = run_variant(songs, tmp_path / "out", "08", models)
    assert {r.status for r in results} == {"unavailable"}
    assert "recorded when it was fetched" in results[0].reason and str(path) in results[0].reason
    stage = HifiganBweStage(StageEnv(models_dir=models))
    stage.spec = dataclasses.replace(HIFIGAN, sha256="1" * 64)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called on a refused file"))
    with pytest.raises(ModelRefused, match="is not the published file"):
        stage.load(choose_device("cpu"))
    # Trusted by name, it loads (the log says so).
    stage = HifiganBweStage(StageEnv(models_dir=models, trusted_model_files=(path,)))
    assert stage.unavailable() is None
    monkeypatch.undo()
    stage.load(choose_device("cpu"))
    assert stage.load_notes[0].startswith(f"warning: bwe_hifigan: loading {path} because --trust-model-file")


# -- the model manager --

def test_models_verify_checks_demucs_files_against_their_published_names(tmp_path):
    models = tmp_path / "models"
    (models / "demucs").mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, str(models / "demucs" / "955717e8-8726e21a.th"))
    proc = run_cli("models", "verify", "htdemucs", "--models-dir", str(models))
    assert proc.returncode == 1 and "does not start with 8726e21a" in proc.stderr
    proc = run_cli("models", "verify", "htdemucs_ft", "--models-dir", str(models))
    assert proc.returncode == 0 and proc.stderr.count("missing") == 4


def test_fetch_refuses_a_download_that_is_not_the_published_file(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        headers = {"Content-Length": "5"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Response(b"hello"))
    with pytest.raises(RestoreError, match="does not start with 8726e21a"):
        fetch(CATALOGUE["htdemucs"], tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))                # nothing bad left behind


def test_trust_flag_reaches_the_run_log(tmp_path, songs):
    trusted = tmp_path / "mine.th"
    trusted.write_bytes(b"x")
    proc = run_cli("run", str(songs), "--out", str(tmp_path / "out"), "--trust-model-file", str(trusted))
    assert proc.returncode == 0, proc.stderr
    runlog = next((tmp_path / "out" / "_logs").glob("run-*.log")).read_text()
    assert f"warning: --trust-model-file {trusted}" in runlog


# -- no full unpickle anywhere else --

LOADERS = {"get_model", "get_hf_model", "load_safetensors_model", "load_state_dict_from_url", "LocalRepo",
           "BagOnlyRepo", "RemoteRepo", "AnyModelRepo", "hf_hub_download", "Unpickler", "loads", "load_pretrained"}
HELPER = ("restore/models/checkpoints.py", "_full_unpickle")


def unsafe_calls(source: str, filename: str) -> list[str]:
    """Every place in `source` that could unpickle a file in full: torch.load without
    weights_only=True (outside the one helper), weights_only given anything but True,
    pickle/torch.jit loads outside restore/models/checkpoints.py, demucs's and the hub's
    own loaders anywhere, numpy's allow_pickle=True, and a local server on anything but
    127.0.0.1."""
    found = []
    tree = ast.parse(source)
    spans = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            spans[node.name] = (node.lineno, node.end_lineno)

    def where(node) -> str:
        return f"{filename}:{node.lineno}"

    def inside_helper(node) -> bool:
        lo, hi = spans.get(HELPER[1], (0, -1))
        return filename == HELPER[0] and lo <= node.lineno <= hi

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        owner = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""
        kw = {k.arg: k.value for k in node.keywords}
        weights_only = kw.get("weights_only")
        safe = isinstance(weights_only, ast.Constant) and weights_only.value is True
        if name == "load" and owner.endswith("torch") and not safe and not inside_helper(node):
            found.append(f"{where(node)}: torch.load without weights_only=True")
        elif "weights_only" in kw and not safe and not inside_helper(node):
            found.append(f"{where(node)}: weights_only={ast.unparse(weights_only)}")
        if name in ("load", "loads") and owner in ("pickle", "cPickle", "dill", "joblib", "torch.jit", "jit") \
                and filename != HELPER[0]:
            found.append(f"{where(node)}: {owner}.{name} outside restore/models/checkpoints.py")
        if name in LOADERS and owner not in ("json", "yaml"):
            found.append(f"{where(node)}: {name} (a library's own model loader)")
        if name == "load_model" and not (node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "package"):
            found.append(f"{where(node)}: demucs's load_model with a path (it unpickles in full); pass it the package")
        allow = kw.get("allow_pickle")
        if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
            found.append(f"{where(node)}: allow_pickle")
        if name.endswith("HTTPServer") or name == "TCPServer":
            host = node.args[0].elts[0] if node.args and isinstance(node.args[0], ast.Tuple) else None
            if not (isinstance(host, ast.Constant) and host.value == "127.0.0.1"):
                found.append(f"{where(node)}: a server not bound to 127.0.0.1")
    for i, line in enumerate(source.splitlines(), 1):
        lo, hi = spans.get(HELPER[1], (0, -1)) if filename == HELPER[0] else (0, -1)
        if "weights_only=False" in line.replace(" ", "") and not lo <= i <= hi:
            found.append(f"{filename}:{i}: weights_only=False")
    return found


def test_no_code_path_unpickles_a_file_that_is_not_verified():
    problems = []
    for path in sorted((ROOT / "restore").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        problems += unsafe_calls(path.read_text(encoding="utf-8"), rel)
    assert problems == [], "\n".join(problems)
    # The one helper is really there, and really guarded.
    helper = (ROOT / HELPER[0]).read_text(encoding="utf-8")
    assert f"def {HELPER[1]}(" in helper and "weights_only=False" in helper
    assert checkpoints._full_unpickle.__kwdefaults__ is None   # published_sha256 and trusted must be given


def test_the_scan_finds_what_it_looks_for():
    bad = '''
import torch, pickle
def f(p):
    a = torch.load(p)
    b = torch.load(p, weights_only=False)
    c = torch.jit.load(p)
    d = pickle.load(open(p, "rb"))
    from demucs.pretrained import get_model
    e = get_model("htdemucs", repo=p)
    g = load_model(p)
    h = np.load(p, allow_pickle=True)
    s = ThreadingHTTPServer(("0.0.0.0", 8000), None)
    ok = torch.load(p, weights_only=True)
'''
    found = unsafe_calls(bad, "restore/x.py")
    for line in (4, 5, 6, 7, 9, 10, 11, 12):
        assert any(f":{line}:" in f for f in found), (line, found)
    assert not any(":13:" in f for f in found)


def test_every_model_in_the_catalogue_has_a_format_the_loaders_check():
    """A model added later comes with a format restore/models/checkpoints.py and `verify` know,
    and a Demucs file with the hash prefix its published name carries."""
    for spec in CATALOGUE.values():
        assert spec.fmt in ("torch", "torchscript", "demucs"), spec.name
        if spec.fmt == "demucs":
            assert all(f.sha256_prefix for f in spec.files()), spec.name
