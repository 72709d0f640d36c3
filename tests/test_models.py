"""Device choice, the model cache's load-once and make-room rules, the models folder."""
import sys

import pytest

from restore.errors import UsageError
from restore.models.store import CATALOGUE, ENV_MODELS, default_models_dir, find_model, models_dir, require_model, ModelMissing
from restore.models.cache import ModelCache
from restore.models.devices import choose_device, detect_devices, free_bytes


HAS_CUDA = any(d.kind == "cuda" for d in detect_devices())


def test_cpu_is_always_there():
    devices = detect_devices()
    assert devices[-1].kind == "cpu" and devices[-1].total_bytes > 0 and devices[-1].cpu_cores >= 1
    assert choose_device("cpu").kind == "cpu"


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: asking for it cannot fail here")
def test_a_missing_device_is_a_usage_error():
    with pytest.raises(UsageError, match=r"--device cuda is not available here \(present: .*cpu\)"):
        choose_device("cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU on this machine")
def test_auto_and_cuda_choose_the_gpu_where_there_is_one():
    assert choose_device("cuda").kind == "cuda" and choose_device("auto").kind == "cuda"
    assert free_bytes(choose_device("cuda")) > 0


class Loadable:
    def __init__(self, name, need, events):
        self.name, self.need, self.events = name, need, events

    def memory_bytes(self):
        return self.need

    def load(self, device):
        self.events.append(f"load {self.name}")

    def unload(self):
        self.events.append(f"unload {self.name}")


def test_cache_loads_once_and_makes_room():
    device = choose_device("cpu")
    events = []
    cache = ModelCache(device)
    small = cache.get("a", lambda: Loadable("a", 1, events))
    assert cache.get("a", lambda: Loadable("a", 1, events)) is small
    cache.get("b", lambda: Loadable("b", 1, events))          # fits beside a
    assert events == ["load a", "load b"] and cache.loads == {"a": 1, "b": 1}
    huge = free_bytes(device) + (1 << 30)                        # cannot fit beside anything
    cache.get("c", lambda: Loadable("c", huge, events))
    assert events[2:] == ["unload a", "unload b", "load c"]      # oldest first, then the load
    cache.release_all()
    assert events[-1] == "unload c" and cache.loaded == {}


def test_models_folder_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_MODELS, raising=False)
    assert models_dir() == default_models_dir()
    monkeypatch.setenv(ENV_MODELS, str(tmp_path / "env"))
    assert models_dir() == tmp_path / "env"
    assert models_dir(tmp_path / "flag") == tmp_path / "flag"


def test_model_found_in_its_librarys_cache(tmp_path, monkeypatch):
    spec = CATALOGUE["hifigan-bwe"]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    with pytest.raises(ModelMissing, match=f"put {spec.filename} in"):
        require_model(spec, tmp_path / "models")
    lib = tmp_path / ".local" / "hifi-gan-bwe" / spec.filename
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"x")
    assert find_model(spec, tmp_path / "models") == lib
    own = tmp_path / "models" / spec.filename
    own.parent.mkdir()
    own.write_bytes(b"y")
    assert find_model(spec, tmp_path / "models") == own         # the models folder comes first


def test_one_hugging_face_cache_for_every_model(monkeypatch, tmp_path):
    """huggingface_hub's own rules, in order; the AudioSR/HiFi-GAN+ store and the Demucs
    stage ask the same function."""
    from restore.models import store
    from restore.stages import separate
    assert separate.hf_hub_cache is store.hf_hub_cache
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert store.hf_hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert store.hf_hub_cache() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert store.hf_hub_cache() == tmp_path / "hub"


def test_the_device_line_names_the_device_and_the_torch_build(monkeypatch):
    from restore.models import devices
    line, warning = devices.device_line("cpu")
    assert line.startswith("cpu (") and "GiB free" in line and "torch " in line
    assert ("CUDA" in line) != ("CPU-only build" in line)
    monkeypatch.setattr(devices, "torch_available", lambda: False)
    assert devices.device_line() == ("CPU (torch is not installed: the model variants need it, see README)", None)


@pytest.mark.skipif(HAS_CUDA, reason="this machine's torch has CUDA")
def test_a_cpu_torch_beside_an_nvidia_gpu_is_a_warning_with_the_fix(monkeypatch):
    from restore.models import devices
    monkeypatch.setattr(devices, "nvidia_gpu_present", lambda: True)  # no NVIDIA driver can exist here
    line, warning = devices.device_line()
    assert "CPU-only build" in line
    assert "CPU-only build" in warning and devices.CUDA_TORCH_INSTALL in warning


def test_a_run_with_model_stages_says_where_they_run_first(tmp_path, monkeypatch):
    """Before any song (and in a dry run), only when a model stage has work."""
    import numpy as np

    import restore.engine.variants as variants
    import restore.stages as stages
    from restore.audio import Audio
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.events import Message, RecordingReporter, SongStarted
    from restore.stages.base import ModelStage
    from tests.support.examples import band

    from .conftest import write_mp3

    class Quiet(ModelStage):
        name = "quiet_model"

        def process(self, audio, ctx):
            return Audio(audio.samples * np.float32(0.5), audio.rate)

    monkeypatch.setitem(stages._REGISTRY, "quiet_model", f"{__name__}:Quiet")
    monkeypatch.setattr(sys.modules[__name__], "Quiet", Quiet, raising=False)
    v = variants.Variant("95_model", "a model stage (test)", steps=("quiet_model",))
    monkeypatch.setitem(variants.VARIANTS, v.name, v)
    write_mp3(tmp_path / "in" / "a.mp3", band(1.0))
    for chosen, dry in (("95", True), ("95", False), ("01", False)):
        reporter = RecordingReporter()
        run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / f"out{chosen}", dry_run=dry,
                      variants=variants.resolve_variants(chosen), report=False), reporter)
        said = [i for i, e in enumerate(reporter.events) if isinstance(e, Message) and "model stages run on" in e.text]
        started = [i for i, e in enumerate(reporter.events) if isinstance(e, SongStarted)]
        if chosen == "01":
            assert said == []
        else:
            assert len(said) == 1 and all(said[0] < i for i in started)
