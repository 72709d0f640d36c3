"""Golden outputs of every stage: a stage's output may change only with its revision.

A marker decides "redo this step" on the stage's revision, its model files and its config,
never on a library version alone (restore/engine/markers.py). So a change in what a stage
outputs must come with a revision bump. This module makes forgetting it fail a test: each
registered stage has a case here (a fixed input: a short `band()` or a committed MP3, fixed
seeds, tiny random models of the real architectures for the model stages), and
`stages.json` records, beside the stage's revision, a signature of the output that case
gives. `check(name, ...)` says what is wrong, or None:

- the output changed and the revision did not: "output of STAGE changed: bump its revision
  (restore/stages/X.py) and update tests/golden/stages.json (run: python -m tests.golden --update)";
- the revision changed: the record is updated with it (`--update`);
- a stage without a record, or a record without a stage.

Why a signature compared within a tolerance, and not a hash of rounded samples: the same code
gives outputs that differ by about 1e-7..1e-6 on another CPU, BLAS or torch build (summation
order, fused multiply-adds). Rounding a hundred thousand samples to 1e-4 before hashing
moves one of them across a rounding edge almost surely (each has a chance of about 1 % with
1e-6 of noise), and the hash changes with nothing changed. The signature is 8 blocks' RMS
and peak per channel plus 8 fixed random projections per channel (each as sensitive to a
change spread anywhere in the output as the RMS is), compared within TOLERANCE: machine
noise moves them by about 1e-6, a real change (the offline restore's constant that moved
the output by up to 0.51) by far more than 1e-4.

`python -m tests.golden --update [STAGE ...]` records the current outputs. It refuses a
stage whose output changed while its revision did not (that is the mistake this catches);
`--force` re-records anyway, for when the case's input changed, not the stage (a new
random-model layout, a new torch that initialises layers differently).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RECORDS = Path(__file__).resolve().parent / "stages.json"
INPUT_MP3 = Path(__file__).resolve().parent / "input.mp3"   # 1.5 s of band(seed=7), lameenc 128 kbps, committed
TOLERANCE = 1e-4     # on signature values of order 0.01-1 (see the module docstring)
BLOCKS = 8
PROJECTIONS = 8
SECONDS = 1.5
CUTOFF_HZ = 16000    # the decode's fact the stages that follow it are given


def signature(out) -> dict:
    """{"shape": {item: [channels, frames, rate]}, "values": [...]} of an Audio or a
    {stem: Audio} (items in name order)."""
    items = sorted(out.items()) if isinstance(out, dict) else [("audio", out)]
    shape, values = {}, []
    for name, audio in items:
        x = np.asarray(audio.samples, dtype=np.float64)
        shape[name] = [int(x.shape[0]), int(x.shape[1]), int(audio.rate)]
        frames = x.shape[1]
        rng = np.random.default_rng(12345)
        directions = rng.standard_normal((PROJECTIONS, frames)) / math.sqrt(max(frames, 1))
        for channel in x:
            for block in np.array_split(channel, BLOCKS):
                values += [math.sqrt(float(np.mean(block * block))) if block.size else 0.0,
                           float(np.abs(block).max()) if block.size else 0.0]
            values += [float(v) for v in directions @ channel]
    return {"shape": shape, "values": [round(v, 7) for v in values]}


def difference(a: dict, b: dict) -> str | None:
    """How two signatures differ beyond TOLERANCE, in words, or None."""
    if a["shape"] != b["shape"]:
        return f"shape {b['shape']} (was {a['shape']})"
    worst = max((abs(x - y) for x, y in zip(a["values"], b["values"])), default=0.0)
    return f"signature moved by up to {worst:.3g} (tolerance {TOLERANCE:g})" if worst > TOLERANCE else None


# ---- the cases: one per registered stage ----------------------------------------------------

@dataclass
class Case:
    """How to run one stage on its fixed input in `work` (a fresh folder for model files)."""
    stage: str
    run: Callable[[Path], object]
    needs: tuple[str, ...] = ()    # modules the case itself needs (torch for the random models)
    runs: tuple[str, ...] = ()     # other stages the case runs (the route's chains): their
                                   # revisions are recorded too, and a bump there is not this one's


def _band(seconds: float = SECONDS, seed: int = 7):
    from tests.support.examples import band
    return band(seconds, seed=seed)


def _ctx(**options):
    from restore.stages import StageContext
    return StageContext(options={"cutoff_hz": CUTOFF_HZ, "bitrate_kbps": 128, **options})


def _stage(name: str, models: Path | None = None, **options):
    from restore.stages import StageEnv, get_stage
    return get_stage(name, StageEnv(models_dir=models, options={name: options} if options else {}))


def _loaded(stage):
    from restore.models.devices import choose_device
    stage.load(choose_device("cpu"))
    return stage


def _stems(seconds: float = SECONDS):
    from restore.audio import Audio, Stems
    parts = {name: _band(seconds, seed=seed) for seed, name in enumerate(("vocals", "drums", "bass", "other"), start=11)}
    stems = Stems({name: Audio(a.samples * np.float32(0.25), a.rate) for name, a in parts.items()})
    source = Audio(sum(s.samples for s in stems.values()) * np.float32(1.02), 44100)   # a little the stems miss
    return stems, source


def _decode(work: Path):
    from restore.stages import StageContext
    audio, _ = _stage("decode").read(INPUT_MP3, StageContext())
    return audio


def _plain(name: str, **options):
    return lambda work: _stage(name, **options).process(_band(), _ctx())


def _hifigan(work: Path):
    from restore.models.store import CATALOGUE
    from tests.support.random_hifigan import save_random_hifigan
    save_random_hifigan(work / CATALOGUE["hifigan-bwe"].filename, seed=1, stacks=1, layers=4, channels=16)
    return _loaded(_stage("bwe_hifigan", work)).process(_band(), _ctx())


def _audiosr(work: Path):
    from restore.models.store import CATALOGUE
    from tests.support.random_audiosr import save_random_audiosr
    spec = CATALOGUE["audiosr-basic"]
    save_random_audiosr(work / spec.filename, seed=1, small=True)
    stage = _loaded(_stage("bwe_audiosr", work, ddim_steps="2", chunk_seconds="1.28"))
    return stage.process(_band(), _ctx())


def _separate(work: Path):
    from tests.support.random_demucs import save_repo
    save_repo(work / "demucs", "htdemucs_ft", seed=1, segment=Fraction(2))
    return _loaded(_stage("separate", work)).process(_band(), _ctx())


def _apollo(work: Path):
    from restore.models.store import CATALOGUE
    from tests.support.random_apollo import save_random_apollo
    save_random_apollo(work / CATALOGUE["apollo"].filename, seed=1)
    return _loaded(_stage("apollo", work)).process(_band(), _ctx())


def _stems_from(work: Path):
    import soundfile as sf
    stems, source = _stems()
    folder = work / "stems" / "Golden"
    folder.mkdir(parents=True)
    for name, audio in stems.items():
        sf.write(str(folder / f"{name}.flac"), audio.samples.T, audio.rate, subtype="PCM_24")
    return _stage("stems_from", folder=str(work / "stems")).process(source, _ctx(song="Golden.mp3"))


def _route(work: Path):
    from restore.stages import StageContext
    stems, source = _stems()
    # model-free chains, so the case runs everywhere; the model stages have their own cases
    route = _stage("route", work, vocals="offline_restore", drums="lowpass", bass="none", other="master")
    return route.process(stems, StageContext(options={"cutoff_hz": CUTOFF_HZ}, source=source))


def _remix(work: Path):
    from restore.stages import StageContext
    stems, source = _stems()
    return _stage("remix", drums_db="3").process(stems, StageContext(source=source))


CASES = {c.stage: c for c in (
    Case("decode", _decode),
    Case("lowpass", _plain("lowpass")),
    Case("bwe_hifigan", _hifigan, ("torch",)),
    Case("bwe_audiosr", _audiosr, ("torch",)),
    Case("separate", _separate, ("torch", "demucs")),
    Case("denoise", _plain("denoise")),
    Case("offline_restore", _plain("offline_restore")),
    Case("master", _plain("master")),
    Case("stems_from", _stems_from),
    Case("route", _route, runs=("offline_restore", "lowpass", "master")),
    Case("remix", _remix),
    Case("apollo", _apollo, ("torch",)),
)}


MODEL_FREE = ("decode", "lowpass", "denoise", "offline_restore", "master", "remix")


# ---- running and checking -------------------------------------------------------------------

def stage_class(name: str):
    from restore.stages import StageEnv, get_stage
    return type(get_stage(name, StageEnv()))


def revision_of(name: str) -> int | dict:
    """The stage's revision; for a case that runs other stages, {stage: revision} of all."""
    if not CASES[name].runs:
        return stage_class(name).revision
    return {n: stage_class(n).revision for n in (name, *CASES[name].runs)}


def source_of(name: str) -> str:
    """The file that holds the stage's revision, relative to the repository (for the message)."""
    return Path(inspect.getsourcefile(stage_class(name))).resolve().relative_to(ROOT).as_posix()


def why_not_here(name: str) -> str | None:
    """Why the case cannot run on this machine (a package missing), or None."""
    import importlib.util
    for module in CASES[name].needs:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if name in MODEL_FREE:   # the others would name the model file the case makes itself
        from restore.stages import StageEnv, get_stage
        return get_stage(name, StageEnv()).unavailable()
    return None


def isolated_model_caches(work: Path) -> dict[str, str]:
    """Environment that hides the developer's own downloads (Hugging Face, torch hub)."""
    return {"HF_HUB_CACHE": str(work / "empty-hf"), "TORCH_HOME": str(work / "empty-torch")}


def output_of(name: str) -> dict:
    """Run the stage's case in a fresh folder; returns its output's signature."""
    with tempfile.TemporaryDirectory(prefix=f"golden-{name}-") as tmp:
        work = Path(tmp)
        saved = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "TORCH_HOME")}
        os.environ.update(isolated_model_caches(work))
        try:
            return signature(CASES[name].run(work))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def load_records(path: Path = RECORDS) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def update_command(name: str | None = None) -> str:
    return "python -m tests.golden --update" + (f" {name}" if name else "")


def check(name: str, revision: int | dict, got: dict, record: dict | None) -> str | None:
    """What is wrong with stage `name` at `revision` giving `got`, against its record; None: fine."""
    if record is None:
        return f"{name} has no golden record in tests/golden/stages.json (run: {update_command(name)})"
    if record["revision"] != revision:
        return (f"{name} is at revision {revision}, tests/golden/stages.json records revision "
                f"{record['revision']}: record its output (run: {update_command(name)})")
    moved = difference(record, got)
    if moved:
        return (f"output of {name} changed: bump its revision ({source_of(name)}) and update "
                f"tests/golden/stages.json (run: {update_command()}); {moved}")
    return None
