"""02_audiosr_direct / 03_audiosr_lp end to end with a small randomly initialised
LatentDiffusion built by audiosr's own classes from a reduced version of its own config,
saved as {"state_dict"} the way the published checkpoint is, loaded by the stage's real
loading code. Needs `pip install --no-deps audiosr==0.0.7` (skipped without it)."""
import importlib.util
import json
import sys

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
if importlib.util.find_spec("audiosr") is None:   # not importorskip: its __init__ needs torchaudio, which we avoid
    pytest.skip("audiosr is not installed (pip install --no-deps audiosr==0.0.7)", allow_module_level=True)
pytest.importorskip("scipy")

from restore.audio import Audio  # noqa: E402
from restore.errors import UsageError  # noqa: E402
from tests.support.examples import band  # noqa: E402
from restore.analysis.spectrum import band_power
from restore.analysis.loudness import integrated_lufs  # noqa: E402
from restore.models.store import CATALOGUE, find_model  # noqa: E402
from restore.models.devices import choose_device  # noqa: E402
from tests.support.random_audiosr import save_random_audiosr  # noqa: E402
from restore.stages import StageContext, StageEnv  # noqa: E402
from restore.stages.audiosr.stage import AudioSrStage, audiosr_cutoff_hz  # noqa: E402
from restore.stages.lowpass import LowpassStage, lowpass  # noqa: E402

from .conftest import cli_json, read_flac, write_mp3  # noqa: E402

SPEC = CATALOGUE["audiosr-basic"]
# Fast settings for the small model: 1.28 s chunks (0.64 s crossfades), 2 DDIM steps.
FAST = ("--set", "bwe_audiosr.ddim_steps=2", "--set", "bwe_audiosr.chunk_seconds=1.28")
FAST_OPTS = {"ddim_steps": "2", "chunk_seconds": "1.28"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_random_audiosr(folder / SPEC.filename, seed=1, small=True)
    return folder


@pytest.fixture(scope="module")
def stage(models):
    s = AudioSrStage(StageEnv(models_dir=models, options={"bwe_audiosr": dict(FAST_OPTS)}))
    s.load(choose_device("cpu"))
    return s


@pytest.fixture(scope="module")
def batch_run(models, tmp_path_factory):
    """Two stereo songs through `mp3restore run` (01, 02, 03, 09, 10): the slow part, done once."""
    tmp = tmp_path_factory.mktemp("run")
    # 1.3 s: two 1.28 s chunks with a crossfade; 0.6 s: one chunk of its own length.
    for i, seconds in enumerate((1.3, 0.6)):
        write_mp3(tmp / "in" / f"{i} song.mp3", band(seconds, seed=i), bitrate=128)
    code, summary = cli_json("run", str(tmp / "in"), "--out", str(tmp / "out"), "--variants", "01,02,03,09,10",
                             "--models-dir", str(models), "--device", "cpu", *FAST, timeout=600)
    return tmp, code, summary


def test_batch_end_to_end(batch_run):
    tmp, code, summary = batch_run
    assert code == 0, summary
    assert summary["counts"]["done"] == 10, summary["results"]
    assert summary["model_loads"]["bwe_audiosr"] == 1             # one load for the whole batch, three variants
    for i in range(2):
        base, rate = read_flac(tmp / "out" / "01_baseline" / f"{i} song.flac")
        for variant in ("02_audiosr_direct", "03_audiosr_lp", "10_denoise_audiosr"):
            path = tmp / "out" / variant / f"{i} song.flac"
            info = sf.info(str(path))
            assert (info.samplerate, info.subtype, info.channels) == (48000, "PCM_24", 2)
            assert info.frames == (base.shape[1] * 48000 * 2 + rate) // (2 * rate)   # exact length
            out, _ = read_flac(path)
            # True stereo: the song's channels differ, and so do the outputs'.
            assert np.max(np.abs(out[0] - out[1])) > 0.05 * np.max(np.abs(out))
            if variant == "10_denoise_audiosr":
                continue  # its level is the denoised song's (the denoise takes up to 6 dB), not the decode's
            # Loudness kept: the band the MP3 kept has the baseline's power, and the whole song its loudness.
            b, o = Audio(base, rate), Audio(out, 48000)
            assert abs(10 * np.log10(band_power(o, 40, 12000) / band_power(b, 40, 12000))) < 0.5
            assert abs(integrated_lufs(o) - integrated_lufs(b)) < 1.5


def test_the_full_chain_starts_from_the_denoise_09_made(batch_run):
    """10_denoise_audiosr = denoise, then AudioSR: the denoise is run once per song (for 09)
    and reused, and the marker of 10 records what both steps did."""
    tmp, _, _ = batch_run
    log = (tmp / "out" / "_logs" / "0 song.log").read_text()
    assert "10_denoise_audiosr: reusing denoise from an earlier variant of this song" in log
    assert log.count("denoise: DeepFilterNet3") == 1
    facts = json.loads((tmp / "out" / "_done" / "10_denoise_audiosr" / "0 song.mp3.json").read_text())["stage_facts"]
    assert facts["denoise_atten_db"] == 6.0 and any(k.startswith("audiosr") or k.startswith("bwe_audiosr") for k in facts)
    # AudioSR ran on the denoised song, not on the decode: 10 is not 02.
    a, _ = read_flac(tmp / "out" / "02_audiosr_direct" / "0 song.flac")
    b, _ = read_flac(tmp / "out" / "10_denoise_audiosr" / "0 song.flac")
    assert np.max(np.abs(a - b)) > 1e-3


def test_lowpass_variant_records_its_cutoff(batch_run):
    tmp, _, summary = batch_run
    marker = json.loads((tmp / "out" / "_done" / "03_audiosr_lp" / "0 song.mp3.json").read_text())
    text = json.dumps(marker)
    assert "lowpass_hz" in text and "detected MP3 cutoff" in text
    log = (tmp / "out" / "_logs" / "0 song.log").read_text()
    assert "lowpass:" in log and "detected MP3 cutoff" in log and "bwe_audiosr: input cut at" in log


def test_seams_are_continuous(batch_run):
    """1.3 s in 1.28 s chunks (hop 0.64 s): the crossfade from 0.64 s to 1.28 s must not click: the
    largest sample step near a seam is no bigger than elsewhere."""
    tmp, _, _ = batch_run
    out, rate = read_flac(tmp / "out" / "02_audiosr_direct" / "0 song.flac")
    step = np.abs(np.diff(out, axis=1)).max(axis=0)
    near = np.zeros(step.shape, bool)
    for seam in (0.64, 1.28):   # where the crossfade starts and ends
        s = int(seam * rate)
        near[max(0, s - 64):s + 64] = True
    assert near.any() and step[near].max() <= 1.5 * step[~near].max()


def test_same_seed_same_output_and_batching_does_not_matter(stage):
    audio = band(0.6, seed=5)
    ctx = lambda: StageContext(options={"cutoff_hz": 16000})  # noqa: E731
    a = stage.process(audio, ctx()).samples
    b = stage.process(audio, ctx()).samples
    assert np.array_equal(a, b)
    # An item's noise is its own (seeded by the seed and its samples), not the batch's: the
    # left channel alone comes out as it does beside the right.
    items = (audio.samples[:, :15360] * 2).astype(np.float32)
    pair = stage.engine.generate(items, 2, 3.5, 42)
    alone = stage.engine.generate(items[:1].copy(), 2, 3.5, 42)
    assert np.allclose(pair[0], alone[0], atol=1e-5) and not np.allclose(pair[0], pair[1])
    other = AudioSrStage(StageEnv(options={"bwe_audiosr": {**FAST_OPTS, "seed": "7"}}))
    other.engine, other.device = stage.engine, stage.device
    c = other.process(audio, ctx()).samples
    assert not np.array_equal(a, c) and a.shape == c.shape


def test_out_of_memory_splits_the_batch_and_output_is_unchanged(stage):
    audio = band(0.6, seed=8)
    clean = stage.process(audio, StageContext(options={"cutoff_hz": 16000})).samples
    real = stage.engine.generate

    def flaky(items, *args, **kwargs):
        if len(items) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(items, *args, **kwargs)

    lines = []
    stage.engine.generate = flaky
    try:
        disturbed = stage.process(audio, StageContext(options={"cutoff_hz": 16000}, log=lines.append)).samples
    finally:
        del stage.engine.generate
    assert np.max(np.abs(disturbed - clean)) < 1e-5      # float rounding of a batch of 1 vs 2
    assert any("out of memory" in line for line in lines)


def test_output_never_reaches_the_stand_ins(stage):
    """The compatibility stand-ins (CLAP, torchaudio, transformers, librosa, torchvision)
    raise when touched: a finished output proves they were not used, and the real libraries
    are not left replaced in sys.modules."""
    from restore.stages.audiosr.compat import StandInUsed
    assert stage.engine.model.clap is not None
    with pytest.raises(StandInUsed):
        stage.engine.model.clap(torch.zeros(1, 10))
    with pytest.raises(StandInUsed):
        stage.engine.model.clap.get_unconditional_condition(1)
    for name in ("transformers", "torchaudio", "librosa", "torchvision", "huggingface_hub"):
        module = sys.modules.get(name)
        assert module is None or type(module).__name__ != "_StandInModule", name
    out = stage.process(band(0.7, seed=2), StageContext(options={"cutoff_hz": 16000}))
    assert out.rate == 48000 and np.isfinite(out.samples).all()


def test_lowpass_stage_cuts_at_the_cutoff_or_the_fallback():
    audio = band(1.0, seed=1)
    for detected, want, source in ((15000, 15000, "detected MP3 cutoff"), (None, 16000, "fallback")):
        ctx = StageContext(options={"cutoff_hz": detected})
        out = LowpassStage().process(audio, ctx)
        assert out.samples.shape == audio.samples.shape and out.rate == audio.rate
        assert ctx.facts["lowpass_hz"] == want and source in ctx.facts["lowpass_source"]
        above = band_power(out, want + 300, 22000) / band_power(audio, want + 300, 22000)
        below = band_power(out, 100, want - 1500) / band_power(audio, 100, want - 1500)
        assert above < 1e-3 and abs(10 * np.log10(below)) < 0.1


def test_cutoff_detection_finds_an_mp3_like_cliff():
    x = band(2.0, rate=48000, seed=3).samples
    cut = lowpass(x, 15000, 48000)
    assert 13500 < audiosr_cutoff_hz(cut) <= 15100


def test_bad_options_are_usage_errors(models):
    for bad in ({"ddim_steps": "zero"}, {"ddim_steps": "0"}, {"ddim_steps": "3"}, {"guidance_scale": "nan"}, {"chunk_seconds": "5"},
                {"half": "maybe"}, {"steps": "50"}):
        with pytest.raises(UsageError):
            AudioSrStage(StageEnv(models_dir=models, options={"bwe_audiosr": bad}))
    ok = AudioSrStage(StageEnv(models_dir=models, options={"bwe_audiosr": {"ddim_steps": "25", "guidance_scale": "2.5"}}))
    assert ok.config()["ddim_steps"] == 25 and ok.config()["guidance_scale"] == 2.5


def test_missing_weights_make_the_variants_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    write_mp3(tmp_path / "in" / "a.mp3", band(1.0), bitrate=128)
    empty = tmp_path / "no-models"
    code, summary = cli_json("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--variants", "01,02,03",
                             "--models-dir", str(empty), env={"HF_HUB_CACHE": str(tmp_path / "no-hub")})
    assert code == 0 and summary["counts"]["done"] == 1
    unavailable = [r for r in summary["results"] if r["status"] == "unavailable"]
    assert len(unavailable) == 2
    reason = unavailable[0]["reason"]
    assert "pytorch_model.bin" in reason and str(empty) in reason and "models fetch audiosr-basic" in reason


def test_found_in_the_hugging_face_cache(tmp_path, monkeypatch, models):
    snap = tmp_path / "hub" / "models--haoheliu--audiosr_basic" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "pytorch_model.bin").write_bytes((models / SPEC.filename).read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_model(SPEC, tmp_path / "empty") == snap / "pytorch_model.bin"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert find_model(SPEC, tmp_path / "empty") == snap / "pytorch_model.bin"


def test_the_installed_check_still_answers_after_audiosr_is_loaded(tmp_path):
    """The compatibility module loads audiosr without its package __init__; the plan's cheap
    'is it installed' check (importlib.util.find_spec) runs again afterwards, in the same
    process (the menu, a second run) and must not fail."""
    import importlib.util

    from restore.stages.audiosr.compat import load_audiosr
    load_audiosr()
    assert importlib.util.find_spec("audiosr") is not None
    why = AudioSrStage(StageEnv(models_dir=tmp_path)).unavailable()  # an empty models folder
    assert "audiosr-basic is missing" in why and "not installed" not in why


def _recording(engine, change=None):
    """Wraps engine.generate (an instance attribute; `del engine.generate` undoes it): records
    (items, half) of every call and lets `change(call_number, y)` alter one output."""
    real, calls = engine.generate, []

    def generate(items, *args, half=None, **kwargs):
        y = real(items, *args, half=half, **kwargs)
        calls.append((items.copy(), half))
        if change:
            change(len(calls), y)
        return y

    engine.generate = generate
    return calls


def test_suspect_flags_non_finite_and_absurd_outputs_only():
    from restore.stages.audiosr.stage import suspect
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 4800)) * 0.1).astype(np.float32)
    x[4] = 0                                          # a silent item
    y = x * np.float32(1.5)                           # +3.5 dB: a plausible output
    y[4] = 0.01 * rng.standard_normal(4800)           # quiet highs over silence: fine
    assert suspect(x, y) == [None] * 5
    y[0, 10] = np.nan
    y[1, 20] = np.inf
    y[2] = np.tanh(50 * x[2])                         # a saturated vocoder: full scale
    y[4] = 0.6                                        # silence turned into half the song's peak
    why = suspect(x, y)
    assert why[0] == why[1] == "output not finite" and why[3] is None
    assert "RMS" in why[2] and "peak" in why[4]   # a loud item saturates under its peak bound: its RMS shows it


def test_a_nan_in_one_chunk_is_redone_in_float32_and_matches_a_float32_run(stage):
    """Half precision cannot run here (autocast is CUDA's): the engine is told it is in half
    precision (on the CPU that changes nothing) and one call's output gets a NaN in one item,
    as a float16 overflow would give. That item alone is redone with half=False."""
    audio = band(0.6, seed=12)
    clean_ctx = StageContext(options={"cutoff_hz": 16000})
    clean = stage.process(audio, clean_ctx).samples
    assert clean_ctx.facts["audiosr_fp32_redone"] == 0

    def poison(call, y):
        if call == 1:
            y[1, 5000] = np.nan

    calls = _recording(stage.engine, poison)
    stage.engine.half = True
    lines = []
    ctx = StageContext(options={"cutoff_hz": 16000}, log=lines.append)
    try:
        out = stage.process(audio, ctx).samples
    finally:
        del stage.engine.generate
        stage.engine.half = False
    assert [(len(items), half) for items, half in calls] == [(2, None), (1, False)]
    assert np.array_equal(calls[1][0][0], calls[0][0][1])          # the poisoned item, alone
    assert np.isfinite(out).all() and np.max(np.abs(out - clean)) < 1e-5
    assert ctx.facts["audiosr_fp32_redone"] == 1
    assert any("chunk 1 of 1, channel 2: output not finite in half precision; redone in float32" in line
               for line in lines), lines


def test_a_non_finite_float32_output_fails_the_song(stage):
    from restore.errors import RestoreError

    def poison(call, y):
        y[0, :] = np.inf

    _recording(stage.engine, poison)
    try:
        with pytest.raises(RestoreError, match="not finite"):
            stage.process(band(0.6, seed=13), StageContext(options={"cutoff_hz": 16000}))
    finally:
        del stage.engine.generate


def test_dc_offset_is_removed_before_the_gain_and_not_put_back(stage):
    """AudioSR's normalize_wav removes the mean before its peak gain and its output keeps
    the DC-free input's low band: the model sees the same items with or without an offset,
    and the output has none."""
    audio = band(0.6, seed=4)
    offset = np.array([[0.01], [-0.02]], np.float32)
    shifted = Audio(audio.samples + offset, audio.rate)
    seen = []
    for a in (audio, shifted):
        calls = _recording(stage.engine)
        ctx = StageContext(options={"cutoff_hz": 16000})
        try:
            out = stage.process(a, ctx).samples
        finally:
            del stage.engine.generate
        seen.append((calls[0][0], out, ctx.facts["audiosr_dc_removed"]))
    (plain, _, dc_plain), (moved, out, dc_moved) = seen
    assert np.max(np.abs(moved - plain)) < 1e-5
    assert np.allclose(np.array(dc_moved) - np.array(dc_plain), offset[:, 0], atol=1e-5)
    assert np.max(np.abs(out.mean(axis=1))) < 1e-4
    # What the removal spares the conditioning: the lowest mel bins of an item with the
    # offset left in (scaled like the model's input) are far from the clean item's.
    mel = lambda x: stage.engine.log_mel(torch.from_numpy(np.ascontiguousarray(x))).numpy()[..., :4]  # noqa: E731
    assert np.max(np.abs(mel(moved) - mel(plain))) < 0.05
    assert np.max(np.abs(mel(plain + np.float32(0.01)) - mel(plain))) > 1.0


def test_a_song_shorter_than_a_chunk_is_padded_to_the_full_chunk_and_comes_out_exact(stage):
    """A 3 s song at 44.1 kHz with the default 5.12 s chunks: the model gets one 5.12 s
    item (zeros after the song), the output is exactly 3 s at 48 kHz."""
    short = AudioSrStage(StageEnv(options={"bwe_audiosr": {"ddim_steps": "2"}}))
    short.engine, short.device = stage.engine, stage.device
    audio = Audio(band(3.0, rate=44100, seed=6).samples[:1].copy(), 44100)   # mono: one item
    assert audio.frames == 132300
    calls = _recording(stage.engine)
    lines = []
    try:
        out = short.process(audio, StageContext(options={"cutoff_hz": 16000}, log=lines.append))
    finally:
        del stage.engine.generate
    (items, _), = calls
    assert items.shape == (1, 245760) and not items[0, 144000:].any() and items[0, :144000].any()
    assert out.rate == 48000 and out.samples.shape == (1, 144000) and np.isfinite(out.samples).all()
    assert any("shorter than one chunk: padded with silence to 5.12 s" in line for line in lines), lines


def test_guidance_in_one_unet_pass_equals_audiosrs_two_passes(stage):
    """GuidedModel runs the conditional and unconditional UNet passes of a step as one call;
    audiosr's own DDIM sampler, given the same start and eta 0 (no step noise), must land on
    the same latents as with its two passes."""
    m, engine = stage.engine.model, stage.engine
    x = torch.from_numpy((band(0.64, rate=48000, seed=9).samples * 2).astype(np.float32))
    # The UNet's last layers start at zero (latent diffusion's zero_module): a random UNet
    # predicts zero whatever its input. Wake them for this test, then put the zeros back.
    zeros = [q for q in m.model.parameters() if not q.any()]
    assert zeros
    with torch.no_grad():
        for q in zeros:
            q.normal_(0, 0.02, generator=torch.Generator().manual_seed(q.numel()))
    try:
        one, two, unguided = _three_samplings(m, engine, x)
    finally:
        with torch.no_grad():
            for q in zeros:
                q.zero_()
    scale = float(two.abs().max())
    assert float((one - two).abs().max()) < 1e-4 * scale
    assert float((unguided - two).abs().max()) > 1e-2 * scale   # the guidance matters: the test can fail


def _three_samplings(m, engine, x):
    from restore.stages.audiosr.compat import load_audiosr
    from restore.stages.audiosr.stage import UNCOND_LATENT, GuidedModel
    with torch.inference_mode():
        c = m.cond_stage_models[0].vae.encode(engine.log_mel(x)[:, None]).mean
        uncond = {"concat_lowpass_cond": torch.full_like(c, UNCOND_LATENT)}
        start = torch.randn(c.shape, generator=torch.Generator().manual_seed(0))

        def sample(model, **guide):
            sampler = load_audiosr()["DDIMSampler"](model, device=engine.device)
            out, _ = sampler.sample(2, len(x), tuple(c.shape[1:]), {"concat_lowpass_cond": c}, verbose=False,
                                    eta=0.0, x_T=start.clone(), **guide)
            return out

        two = sample(m, unconditional_guidance_scale=3.5, unconditional_conditioning=uncond)
        one = sample(GuidedModel(m, uncond, 3.5), unconditional_guidance_scale=1.0, unconditional_conditioning=None)
        unguided = sample(m, unconditional_guidance_scale=1.0, unconditional_conditioning=None)
    return one, two, unguided


class _Awake:
    """The UNet's last layers start at zero (latent diffusion's zero_module): a random UNet
    predicts zero whatever its input. Wakes them (seeded) for a test, then puts the zeros back."""

    def __init__(self, m):
        self.zeros = [q for q in m.model.parameters() if not q.any()]
        assert self.zeros

    def __enter__(self):
        with torch.no_grad():
            for q in self.zeros:
                q.normal_(0, 0.02, generator=torch.Generator().manual_seed(q.numel()))

    def __exit__(self, *exc):
        with torch.no_grad():
            for q in self.zeros:
                q.zero_()


class _Latents:
    """Records the latents the sampler hands the VAE decoder (what the sampler made: the
    tiny random VAE and vocoder turn nearly any latent into nearly the same sound)."""

    def __init__(self, m):
        self.m, self.seen = m, []

    def __enter__(self):
        real = self.m.decode_first_stage
        self.m.decode_first_stage = lambda z, *a, **k: (self.seen.append(z.clone()), real(z, *a, **k))[1]
        return self.seen

    def __exit__(self, *exc):
        del self.m.decode_first_stage


def _with_options(stage, **options):
    """A stage sharing `stage`'s loaded engine, with other options."""
    other = AudioSrStage(StageEnv(options={"bwe_audiosr": {**FAST_OPTS, **options}}))
    other.engine, other.device = stage.engine, stage.device
    return other


def test_neighbouring_chunks_in_one_call_equal_one_chunk_at_a_time(stage):
    """2.0 s stereo in 1.28 s chunks is 3 chunks: chunks_per_call=3 makes one call of 6 items
    (both channels of the three chunks), 1 makes three calls of 2; with the same seed each
    item draws the same noise, so the outputs are equal up to float rounding (1e-5 of the
    song's peak), with a UNet that does not predict zero."""
    audio = band(2.0, seed=21)
    outs, shapes, latents = {}, {}, {}
    with _Awake(stage.engine.model):
        for chunks in (1, 3):
            calls = _recording(stage.engine)
            lines = []
            try:
                with _Latents(stage.engine.model) as seen:
                    outs[chunks] = _with_options(stage, chunks_per_call=str(chunks)).process(
                        audio, StageContext(options={"cutoff_hz": 16000}, log=lines.append)).samples
            finally:
                del stage.engine.generate
            latents[chunks] = torch.cat(seen)
            shapes[chunks] = [len(items) for items, _ in calls]
            assert any(f"3 chunks of 1.28 s in {len(calls)} calls of up to {2 * chunks} items" in line
                       for line in lines), lines
        unbatched = _with_options(stage, chunks_per_call="1", seed="7").process(
            audio, StageContext(options={"cutoff_hz": 16000})).samples
    assert shapes == {1: [2, 2, 2], 3: [6]}
    peak = float(np.max(np.abs(outs[1])))
    assert np.max(np.abs(outs[3] - outs[1])) < 1e-5 * peak
    scale = float(latents[1].abs().max())
    assert float((latents[3] - latents[1]).abs().max()) < 1e-4 * scale    # item by item, the same latents
    assert np.max(np.abs(unbatched - outs[1])) > 1e-3 * peak     # another seed differs: the test can fail


def test_chunks_per_call_auto_fills_free_gpu_memory_and_one_chunk_on_the_cpu(models):
    from restore.models.devices import DeviceInfo
    from restore.stages.audiosr.stage import COST
    gib = 1 << 30
    auto = AudioSrStage(StageEnv(models_dir=models))
    asked = AudioSrStage(StageEnv(models_dir=models, options={"bwe_audiosr": {"chunks_per_call": "3"}}))
    for stage_, kind, free, want in ((auto, "cpu", 64 * gib, 2), (auto, "cuda", 141 * gib, 16), (auto, "cuda", 14 * gib, 4),
                                     (auto, "cuda", 1 * gib, 2), (asked, "cpu", 64 * gib, 6), (asked, "cpu", 8 * gib, 2)):
        stage_.device = DeviceInfo(kind, kind, "test", free, free, 2)
        chunk_s, items = stage_._batching(2, free)
        assert (chunk_s, items) == (5.12, want), (kind, free, items)
    # 14 GiB: 0.8 x 14 GiB less the weights leaves room for 4 items of 5.12 s (two chunks)
    assert int((0.8 * 14 * gib - COST.fixed_bytes) // (COST.bytes_per_item_second * 5.12)) in (4, 5)


def test_dpmpp_sampler_runs_one_guided_call_per_step(stage):
    """sampler=dpmpp: dpmpp_steps UNet calls per chunk, each over the conditional and the
    unconditional items together; same length out, finite, not DDIM's output, and the
    choice is in the stage's config (it names a different output)."""
    audio = band(0.6, seed=22)
    m = stage.engine.model
    real, calls = m.apply_model, []

    def apply_model(x, t, cond):
        calls.append(len(x))
        return real(x, t, cond)

    dpm = _with_options(stage, sampler="dpmpp", dpmpp_steps="3")
    lines = []
    with _Awake(m):
        m.apply_model = apply_model
        try:
            out = dpm.process(audio, StageContext(options={"cutoff_hz": 16000}, log=lines.append))
        finally:
            del m.apply_model
        items = (audio.samples[:, :30720] * 2).astype(np.float32)
        raw = {}
        for sampler, n in (("dpmpp", 3), ("ddim", 2)):
            with _Latents(m) as seen:
                stage.engine.generate(items, n, 3.5, 42, sampler=sampler)
            raw[sampler] = seen[0]
    assert calls == [4, 4, 4]                      # 3 steps, 2 channels x (conditional + unconditional)
    assert out.samples.shape == (2, 28800) and np.isfinite(out.samples).all()
    # What the sampler makes: not DDIM's latents.
    assert float((raw["dpmpp"] - raw["ddim"]).abs().max()) > 1e-2 * float(raw["ddim"].abs().max())
    assert dpm.config()["sampler"] == "dpmpp-2m" and "ddim_steps" not in dpm.config()
    assert "sampler" not in stage.config() and stage.config()["ddim_steps"] == 2
    assert any("3 DPM-Solver++(2M) steps" in line for line in lines), lines


class _ToyDiffusion:
    """A diffusion 'model' for data whose every element is drawn from a mixture of Gaussians
    (means m, deviations s, weights w): its prediction is the exact posterior mean
    E[x0 | x_t] on audiosr's own cosine schedule (1000 steps), given as v (as audiosr_basic
    predicts) or eps. The probability-flow ODE is then what both samplers solve."""

    def __init__(self, means, sds, weights, parameterization="v"):
        from restore.stages.audiosr.compat import load_audiosr
        load_audiosr()
        from audiosr.latent_diffusion.modules.diffusionmodules.util import make_beta_schedule
        betas = make_beta_schedule("cosine", 1000)
        abar = np.cumprod(1 - betas)
        self.num_timesteps, self.parameterization, self.device = 1000, parameterization, torch.device("cpu")
        self.betas = torch.tensor(betas, dtype=torch.float32)
        self.alphas_cumprod = torch.tensor(abar, dtype=torch.float32)
        self.alphas_cumprod_prev = torch.tensor(np.append(1.0, abar[:-1]), dtype=torch.float32)
        self.m, self.s, self.w = (torch.tensor(v, dtype=torch.float64) for v in (means, sds, weights))

    def _ab(self, t):
        a = self.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
        return a.sqrt(), (1 - a).sqrt()

    def apply_model(self, x, t, cond):
        a, s = self._ab(t)
        xe, ae, se = x.double()[..., None], a[..., None], s[..., None]
        var = ae ** 2 * self.s ** 2 + se ** 2
        r = torch.softmax(torch.log(self.w) - 0.5 * torch.log(var) - 0.5 * (xe - ae * self.m) ** 2 / var, -1)
        x0 = (r * (self.m + ae * self.s ** 2 / var * (xe - ae * self.m))).sum(-1)
        eps = (x.double() - a * x0) / s
        return (a * eps - s * x0 if self.parameterization == "v" else eps).float()

    def predict_eps_from_z_and_v(self, x, t, v):     # what audiosr's DDIM calls for a v model
        a, s = self._ab(t)
        return (a * v + s * x).float()

    def predict_start_from_z_and_v(self, x, t, v):
        a, s = self._ab(t)
        return (a * x - s * v).float()


def _toy_ddim(model, steps, x_T):
    from restore.stages.audiosr.compat import load_audiosr
    out, _ = load_audiosr()["DDIMSampler"](model, device=torch.device("cpu")).sample(
        steps, len(x_T), tuple(x_T.shape[1:]), None, verbose=False, eta=0.0, x_T=x_T.clone())
    return out.double()


def test_dpmpp_converges_to_the_ode_solution_and_beats_ddim_at_equal_steps():
    """Gaussian data: the probability-flow ODE is solved exactly ((x_t - alpha_t mu) /
    sqrt(alpha_t^2 s^2 + sigma_t^2) is constant along it). DPM-Solver++ with 20-25 steps
    lands within 0.02 of it (DDIM with eta 0 at 25 steps: 0.12 off; at 500: 0.006), for a v-
    and an eps-predicting model. A two-mode mixture (no closed form): DPM-Solver++ 25 lies
    within 0.1 of DDIM 500 and at least 3 times closer than DDIM 25."""
    from restore.stages.audiosr import dpmpp
    x_T = torch.randn(4, 1, 16, 8, generator=torch.Generator().manual_seed(0))
    for parameterization in ("v", "eps"):
        toy = _ToyDiffusion([0.3], [0.5], [1.0], parameterization)
        a = toy.alphas_cumprod.double()
        top = dpmpp.start_time(a.numpy())      # 998: alphas_cumprod is 0 at 999
        exact = a[0].sqrt() * 0.3 + (a[0] * 0.25 + 1 - a[0]).sqrt() * (x_T.double() - a[top].sqrt() * 0.3) / (
            a[top] * 0.25 + 1 - a[top]).sqrt()
        err = {n: float((dpmpp.sample(toy, n, x_T.clone(), None).double() - exact).abs().max()) for n in (20, 25)}
        ddim25 = float((_toy_ddim(toy, 25, x_T) - exact).abs().max())
        assert max(err.values()) < 0.02 and ddim25 > 5 * max(err.values()), (parameterization, err, ddim25)
    toy = _ToyDiffusion([-0.6, 0.5], [0.1, 0.2], [0.4, 0.6])
    reference = _toy_ddim(toy, 500, x_T)
    dpm25 = float((dpmpp.sample(toy, 25, x_T.clone(), None).double() - reference).abs().max())
    ddim25 = float((_toy_ddim(toy, 25, x_T) - reference).abs().max())
    assert dpm25 < 0.1 and 3 * dpm25 < ddim25, (dpm25, ddim25)
