"""The master stage (07_mastered): loudness to a target by pyloudnorm, a true-peak ceiling by
pedalboard's limiter checked with an independent 4x meter (restore.analysis.loudness), at most
`max_limiting_db` of limiting, width and bass mono on mid/side. Real clips (tests/data), real
libraries; the judge of every true peak is `true_peak_dbtp`, not the stage's own facts."""
import json
import math

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pedalboard")
pyloudnorm = pytest.importorskip("pyloudnorm")

import restore.engine.variants as variants
from restore.analysis.loudness import loudness_range_lu, true_peak_dbtp
from restore.audio import Audio
from restore.engine.config import RunConfig
from restore.engine.run import run
from restore.errors import UsageError
from restore.stages import StageContext, StageEnv, get_stage
from restore.stages.master import MasterStage, mid_side

from .conftest import ROOT, read_flac, write_mp3

CEILING = -1.0


def clip(name: str) -> Audio:
    data, rate = sf.read(str(ROOT / "tests" / "data" / f"{name}.flac"), dtype="float32", always_2d=True)
    return Audio(np.ascontiguousarray(data.T), rate)


def lufs(audio: Audio) -> float:
    return pyloudnorm.Meter(audio.rate).integrated_loudness(audio.samples.T.astype(np.float64))


def at_lufs(audio: Audio, target: float) -> Audio:
    """`audio` scaled to `target` LUFS as pyloudnorm measures it (peaks may go over 0 dBFS:
    a remix of stems can)."""
    return Audio((audio.samples * 10 ** ((target - lufs(audio)) / 20)).astype(np.float32), audio.rate)


def master(audio: Audio, **options) -> tuple[Audio, dict, list[str]]:
    lines: list[str] = []
    ctx = StageContext(log=lines.append)
    out = get_stage("master", StageEnv(options={"master": options})).process(audio, ctx)
    assert out.samples.dtype == np.float32 and out.samples.shape == audio.samples.shape and out.rate == audio.rate
    return out, ctx.facts["master"], lines


def quiet_classical() -> Audio:
    """The piano with one sforzando: 12 dB louder for 0.1 s around its strongest moment,
    then all of it at -30 LUFS. Peaks 21.6 dB over the loudness: reaching -14 LUFS under a
    -1 dBTP ceiling would take 8.6 dB of limiting."""
    piano = clip("dark_piano")
    k = int(np.argmax(np.abs(piano.samples).max(axis=0)))
    envelope = np.full(piano.frames, 0.25, np.float32)
    envelope[max(0, k - 2205):k + 2205] = 1.0
    return at_lufs(Audio(piano.samples * envelope, piano.rate), -30.0)


def test_loud_material_is_turned_down_without_limiting():
    loud = at_lufs(clip("dark_piano"), -8.0)               # peaks 12.6 dB over its loudness: under -1 dBTP at -14 LUFS
    out, facts, lines = master(loud)
    assert abs(lufs(out) - (-14.0)) < 0.05
    assert facts["limiting_db"] == 0.0 and facts["reached"] is True and facts["gain_db"] == pytest.approx(-6.0, abs=0.01)
    assert "limiter_ceiling_dbtp" not in facts                    # the limiter never ran
    gain = 10 ** (facts["gain_db"] / 20)
    assert np.max(np.abs(out.samples - loud.samples * gain)) < 1e-3 * np.abs(out.samples).max()   # a gain, nothing else
    assert true_peak_dbtp(out) <= CEILING
    assert facts["lufs_before"] == pytest.approx(-8.0, abs=0.01) and facts["lufs_after"] == pytest.approx(lufs(out), abs=0.01)
    assert facts["true_peak_after_dbtp"] == pytest.approx(true_peak_dbtp(out), abs=0.01)
    assert any("reached" in line and "-14" in line for line in lines)


def test_loudness_range_changes_by_under_1_lu_without_limiting():
    """Measured independently (EBU Tech 3342, restore.analysis) on the input and the output."""
    for name, target in (("dark_piano", -14.0), ("bright_cymbals", -16.0)):  # the cymbals' peaks are 14 dB over their loudness
        loud = at_lufs(clip(name), -9.0)
        out, facts, _ = master(loud, target_lufs=target)
        assert facts["limiting_db"] == 0.0
        assert abs(loudness_range_lu(out) - loudness_range_lu(loud)) <= 1.0
        assert facts["lra_after"] == pytest.approx(loudness_range_lu(out), abs=0.01)


def test_quiet_material_stops_short_with_at_most_the_allowed_limiting():
    quiet = quiet_classical()
    out, facts, lines = master(quiet)
    measured = lufs(out)
    assert -30.0 + 5 < measured < -14.0 - 2                # louder, but well short of the target
    assert facts["reached"] is False and "stopped short" in facts["note"]
    assert facts["lufs_after"] == pytest.approx(measured, abs=0.01)
    assert 0 < facts["limiting_db"] <= 2.0 + 0.05
    assert true_peak_dbtp(out) <= CEILING
    # The limiter's own gain reduction, read off the signal: where the input is loud, the
    # output is at most 2 dB (and a hair) under the input times the static gain.
    gained = quiet.samples * 10 ** (facts["gain_db"] / 20)
    loudest = np.abs(gained).max(axis=0) > 10 ** ((CEILING - 6) / 20)
    taken = 20 * np.log10(np.abs(gained).max(axis=0)[loudest] / np.abs(out.samples).max(axis=0)[loudest])
    assert taken.max() <= 2.0 + 0.1
    assert any("not reached" in line for line in lines)


@pytest.mark.parametrize("cap", [0.0, 6.0])
def test_the_limiting_cap_is_an_option(cap):
    out, facts, _ = master(quiet_classical(), max_limiting_db=cap)
    assert facts["limiting_db"] <= cap + 0.05 and true_peak_dbtp(out) <= CEILING
    if cap == 0.0:
        assert "limiter_ceiling_dbtp" not in facts             # no limiting allowed: a static gain only
    else:
        assert facts["limiting_db"] > 4.0                      # more allowed, more taken: louder
        assert lufs(out) > master(quiet_classical())[1]["lufs_after"] + 2


def test_inter_sample_peaks_come_out_under_the_ceiling():
    """A quiet piano with short fs/4 sine bursts at 45 degrees: their samples sit 3 dB under
    their true peak, so after the stage's gain every sample is under the ceiling and only
    the inter-sample peaks are over it. An independent 4x meter judges the output."""
    piano = at_lufs(clip("dark_piano"), -40.0)
    t = np.arange(piano.frames)
    burst = np.zeros(piano.frames)
    for second in (0.5, 1.5, 2.5, 3.5):
        start = int(second * piano.rate)
        burst[start:start + 88] = np.sin(2 * np.pi * t[start:start + 88] / 4 + np.pi / 4) * 10 ** (-14 / 20)
    signal = Audio((piano.samples + burst).astype(np.float32), piano.rate)
    out, facts, _ = master(signal)
    gain = facts["gain_db"]
    sample_peak = 20 * np.log10(np.abs(signal.samples).max())
    assert sample_peak + gain < CEILING                         # every sample under the ceiling ...
    assert true_peak_dbtp(signal) + gain > CEILING + 1.0        # ... and the true peaks over it
    assert true_peak_dbtp(out) <= CEILING
    assert facts["true_peak_after_dbtp"] <= CEILING and facts["limiting_db"] <= 2.05


def test_a_sine_at_a_quarter_of_the_rate_shorter_than_a_gating_block():
    """fs/4 at 45 degrees, 0.2 s: samples at -3 dBFS, true peak 0 dBTP. Its loudness cannot
    be measured (one 400 ms block is longer), so the level is kept, and only the limiter
    brings the inter-sample peaks under the ceiling."""
    t = np.arange(int(0.2 * 44100))
    x = np.sin(2 * np.pi * t / 4 + np.pi / 4).astype(np.float32)
    signal = Audio(np.stack([x, x]), 44100)
    assert 20 * np.log10(np.abs(x).max()) < -2.9 and true_peak_dbtp(signal) > -0.1
    out, facts, _ = master(signal)
    assert true_peak_dbtp(out) <= CEILING
    assert facts["lufs_before"] is None and facts["lufs_after"] is None and facts["reached"] is False
    assert "not measurable" in facts["note"]
    assert 0 < facts["limiting_db"] <= 2.05


def test_a_clip_shorter_than_a_gating_block_keeps_its_level():
    short = Audio(np.ascontiguousarray(at_lufs(clip("dark_piano"), -20.0).samples[:, 44100:44100 + 8820]), 44100)
    out, facts, lines = master(short)
    assert facts["gain_db"] == 0.0 and facts["limiting_db"] == 0.0 and facts["lufs_before"] is None
    assert np.array_equal(out.samples, short.samples)
    assert any("not measurable" in line for line in lines)


def test_silence_stays_silence():
    silence = Audio(np.zeros((2, 44100 * 3), np.float32), 44100)
    out, facts, _ = master(silence)
    assert not np.any(out.samples)
    assert facts["gain_db"] == 0.0 and "silence" in facts["note"]
    json.dumps(facts)                                          # it goes into the marker


def test_mono_stays_mono():
    piano = at_lufs(clip("dark_piano"), -20.0)
    mono = at_lufs(Audio(np.ascontiguousarray(piano.samples[:1]), piano.rate), -20.0)
    out, facts, _ = master(mono, width=1.5, mono_bass_hz=120)
    assert out.channels == 1 and facts["reached"] and abs(lufs(out) - (-14.0)) < 0.5
    assert facts["lufs_after"] == pytest.approx(lufs(out), abs=0.01) and true_peak_dbtp(out) <= CEILING
    assert "width and bass mono do not apply" in facts["stereo"]
    dual = Audio(np.ascontiguousarray(np.concatenate([piano.samples[:1]] * 2)), piano.rate)
    out, facts, _ = master(dual, width=1.5, mono_bass_hz=120)
    assert np.array_equal(out.samples[0], out.samples[1])       # no side to widen, and the limiter is linked


def test_width_scales_the_side_and_bass_mono_removes_it_below_the_crossover():
    piano = at_lufs(clip("dark_piano"), -20.0)
    x = piano.samples.astype(np.float64)
    mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2
    for width in (0.0, 0.5, 2.0):
        y = mid_side(piano.samples, piano.rate, width, 0).astype(np.float64)
        assert np.allclose((y[0] + y[1]) / 2, mid, atol=1e-6) and np.allclose((y[0] - y[1]) / 2, width * side, atol=1e-6)
    y = mid_side(piano.samples, piano.rate, 1.0, 150).astype(np.float64)
    assert np.allclose((y[0] + y[1]) / 2, mid, atol=1e-6)      # the mid is untouched
    out_side = np.abs(np.fft.rfft((y[0] - y[1]) / 2)) ** 2
    in_side = np.abs(np.fft.rfft(side)) ** 2
    f = np.fft.rfftfreq(piano.frames, 1 / piano.rate)
    low, high = (f > 20) & (f < 60), (f > 600) & (f < 4000)
    assert 10 * np.log10(out_side[low].sum() / in_side[low].sum()) < -20       # the side's bass is gone
    assert abs(10 * np.log10(out_side[high].sum() / in_side[high].sum())) < 0.1  # above it, untouched
    # Through the stage: width 0 is mono in two channels.
    out, facts, _ = master(piano, width=0.0)
    assert np.array_equal(out.samples[0], out.samples[1]) and facts["width"] == 0.0


def test_options_are_declared_and_refused_with_their_rule():
    stage = get_stage("master")
    assert stage.opts == {"target_lufs": -14.0, "ceiling_dbtp": -1.0, "max_limiting_db": 2.0, "width": 1.0,
                          "mono_bass_hz": 0, "release_ms": 100.0}
    assert stage.config()["width"] == 1.0
    for key, value, words in (("target_lufs", "-40", "out of range"), ("ceiling_dbtp", "0.5", "out of range"),
                              ("max_limiting_db", "-1", "out of range"), ("width", "3", "out of range"),
                              ("mono_bass_hz", "10", "at least 20 Hz"), ("release_ms", "fast", "not a number")):
        with pytest.raises(UsageError, match=words):
            get_stage("master", StageEnv(options={"master": {key: value}}))
    tuned = get_stage("master", StageEnv(options={"master": {"target_lufs": "-16", "width": "1.2", "mono_bass_hz": "120"}}))
    assert tuned.config() != stage.config() and tuned.opts["mono_bass_hz"] == 120


def test_unavailable_says_what_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pedalboard" else real(name, *a))
    reason = MasterStage().unavailable()
    assert "pedalboard" in reason and '.[master]' in reason and "GPL" in reason


def test_any_variant_plus_master_runs_through_the_engine(tmp_path):
    """`--variants 01+master`: the decode mastered, beside the baseline, in 01_baseline_mastered
    (07_mastered itself is the remix of the stems). The marker holds the facts; ReplayGain
    tags are dropped; the report's players are loudness-matched anyway."""
    chosen = variants.resolve_variants("01,01+master")
    assert [v.name for v in chosen] == ["01_baseline", "01_baseline_mastered"]
    assert chosen[1].steps == ("master",) and not chosen[1].keeps_loudness and not chosen[1].default
    write_mp3(tmp_path / "in" / "s.mp3", at_lufs(clip("bright_cymbals"), -20.0), bitrate=192)
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", report=False, variants=chosen,
                            stage_options={"master": {"target_lufs": "-16"}}))
    assert summary.counts()["done"] == 2, summary.results
    base, rate = read_flac(tmp_path / "out" / "01_baseline" / "s.flac")
    mastered, rate_m = read_flac(tmp_path / "out" / "01_baseline_mastered" / "s.flac")
    assert rate_m == rate and mastered.shape == base.shape
    assert abs(lufs(Audio(mastered, rate)) - (-16.0)) < 0.2
    assert true_peak_dbtp(Audio(mastered, rate)) <= CEILING + 0.001           # 24-bit rounding on top
    marker = json.loads((tmp_path / "out" / "_done" / "01_baseline_mastered" / "s.mp3.json").read_text())
    facts = marker["stage_facts"]["master"]
    assert facts["target_lufs"] == -16.0 and facts["reached"] is True and math.isfinite(facts["gain_db"])
    assert marker["config"]["steps"][-1] == {"stage": "master", "config": get_stage(
        "master", StageEnv(options={"master": {"target_lufs": "-16"}})).config()}


@pytest.mark.parametrize("spec, words", [("04+master", "makes stems"), ("01+louder", r"only \+master")])
def test_plus_master_refuses_what_it_cannot_master(spec, words):
    with pytest.raises(UsageError, match=words):
        variants.resolve_variants(spec)
