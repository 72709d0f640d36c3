"""The quality harness (bench/quality.py) on the committed real clips (tests/data): MP3s made
by LAME, decoded by the pipeline, scored against the lossless source. ViSQOL is left out
(about 3x real time here); everything else is the harness's real path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import quality
from restore.analysis import spectrum
from restore.audio import Audio

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory) -> dict:
    """One harness run over both test clips at 128 kbps, controls only, no ViSQOL."""
    out = tmp_path_factory.mktemp("quality")
    code = quality.main(["--devset", str(DATA), "--variants", "", "--bitrates", "128", "--no-visqol",
                         "--out", str(out)])
    assert code == 0
    data = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    rows = {(r["clip"], r["kbps"], r["kind"], r["row"].split(" ")[0]): r for r in data["results"]}
    return {"out": out, "rows": rows, "data": data}


def row(harness_run, clip: str, which: str) -> dict:
    return harness_run["rows"][(clip, 128, "control", which)]


def decode_of(harness_run, clip: str) -> Audio:
    return quality.read_audio(harness_run["out"] / "runs" / "01_baseline" / f"{clip}_128k.flac")


def test_source_against_itself_is_perfect_and_the_decode_is_not(harness_run):
    source = quality.read_audio(DATA / "bright_cymbals.flac")
    perfect = quality.score(source, source, cutoff_hz=16000.0, with_visqol=False)
    assert perfect["lsd_full"] == 0 and perfect["lsd_above_16k"] == 0 and perfect["si_sdr"] >= 100
    dec = row(harness_run, "bright_cymbals", "decode")["scores"]
    # lameenc writes no gapless tag: the harness must have found LAME's 1105-sample delay
    assert dec["lag_samples"] == 1105
    # 128 kbps cuts the cymbals' top octave: far from the source above 16 kHz, closer below
    assert dec["lsd_above_16k"] > 10 > dec["lsd_below_16k"] > 1
    assert dec["band_error_db"]["16000-20000"] < -6
    assert 0 < dec["si_sdr"] < 40
    assert quality.verdict(perfect, dec, row(harness_run, "bright_cymbals", "noise")["scores"]) == "better"


def test_noise_control_is_minus_80_dbfs_above_the_cutoff_only(harness_run):
    decode = decode_of(harness_run, "bright_cymbals")
    cutoff, how = quality.control_edge(decode, 128)
    assert how == "measured" and 15500 < cutoff < 17500, cutoff  # LAME's 128 kbps lowpass
    control, edge = quality.noise_control(decode, cutoff)
    assert edge == cutoff and control.samples.shape == decode.samples.shape and control.rate == decode.rate
    noise = control.samples.astype(np.float64) - decode.samples
    rms_db = 10 * np.log10(np.mean(np.square(noise), axis=1))
    assert np.allclose(rms_db, -80.0, atol=0.05), rms_db
    n = Audio(noise.astype(np.float32), decode.rate)
    below, above = spectrum.band_power(n, 0, cutoff - 300), spectrum.band_power(n, cutoff, decode.rate / 2)
    assert 10 * np.log10(above / below) > 60
    assert abs(np.corrcoef(noise)[0, 1]) < 0.05            # independent per channel: not dual mono
    again, _ = quality.noise_control(decode, cutoff)
    assert np.array_equal(again.samples, control.samples)  # seeded: the same control every run


def test_control_edge_falls_back_to_lames_lowpass_on_dark_music(harness_run):
    # Nothing up there, so no cliff to measure: LAME's nominal 128 kbps lowpass is the edge.
    assert quality.control_edge(decode_of(harness_run, "dark_piano"), 128) == (17000.0, "LAME nominal")
    assert row(harness_run, "dark_piano", "noise")["row"].endswith(">17.0k")


def test_noise_control_fakes_a_gain_on_bright_and_hurts_dark(harness_run):
    bright_dec, bright_noise = (row(harness_run, "bright_cymbals", k)["scores"] for k in ("decode", "noise"))
    dark_dec, dark_noise = (row(harness_run, "dark_piano", k)["scores"] for k in ("decode", "noise"))
    # The trap: on bright material noise "improves" the high band while restoring nothing ...
    assert bright_noise["lsd_above_16k"] < bright_dec["lsd_above_16k"] - 1.0
    assert bright_noise["lsd_below_16k"] == pytest.approx(bright_dec["lsd_below_16k"], abs=0.01)
    # ... and on dark material (nothing above 10 kHz to restore) it makes things worse.
    assert dark_dec["lsd_above_16k"] < 1.0
    assert dark_noise["lsd_above_16k"] > dark_dec["lsd_above_16k"] + 1.0
    # A variant that only adds the noise never counts as a restoration.
    assert quality.verdict(bright_noise, bright_dec, bright_noise) == "no better (noise control does as well)"
    assert quality.verdict(dark_noise, dark_dec, dark_noise) == ("worse on lsd_above_16k, lsd_full, too bright above "
                                                                  "the cutoff, dark top")


def test_verdict_names_what_a_variant_loses(harness_run):
    source = quality.read_audio(DATA / "bright_cymbals.flac")
    decode = decode_of(harness_run, "bright_cymbals")
    dec, noise = (row(harness_run, "bright_cymbals", k)["scores"] for k in ("decode", "noise"))
    louder = quality.score(Audio(decode.samples * np.float32(1.6), decode.rate), source, None, with_visqol=False)
    assert louder["loudness_diff_lu"] == pytest.approx(dec["loudness_diff_lu"] + 20 * np.log10(1.6), abs=0.05)
    assert quality.verdict(louder, dec, noise) == "worse on loudness"
    assert quality.verdict(dec, dec, noise) == "no better"


def test_outputs_markdown_and_json(harness_run):
    md = (harness_run["out"] / "RESULTS-quality.md").read_text(encoding="utf-8")
    assert "| bright_cymbals | 128 | decode (01) |" in md and "| dark_piano | 128 | noise -80 dBFS" in md
    assert md.count("\n| ") == 1 + 4  # heading + 2 clips x 2 controls
    meta = harness_run["data"]["meta"]
    assert meta["noise_dbfs"] == -80.0 and meta["visqol"] is False and meta["bitrates"] == [128]
    # Cached: the MP3s are not rewritten by a second run
    mp3 = harness_run["out"] / "mp3" / "dark_piano_128k.mp3"
    before = mp3.stat().st_mtime_ns
    quality.encode(quality.find_clips(DATA, ["dark_piano"])[0], 128, harness_run["out"] / "mp3")
    assert mp3.stat().st_mtime_ns == before


def test_loudest_window_finds_the_loud_part():
    x = np.zeros((2, 44100 * 6), np.float32)
    x[:, 44100 * 3:44100 * 5] = 0.5
    a, b = quality.loudest_window(Audio(x, 44100), 2.0)
    assert (a, b) == (44100 * 3, 44100 * 5)


def test_committed_clips_are_what_tests_data_readme_says():
    import soundfile as sf

    for name in ("dark_piano", "bright_cymbals"):
        info = sf.info(str(DATA / f"{name}.flac"))
        assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_16")
        assert 3.0 <= info.duration <= 5.0
    dark, bright = (quality.read_audio(DATA / f"{n}.flac") for n in ("dark_piano", "bright_cymbals"))
    total = spectrum.band_power(dark, 0, 22050)
    assert 10 * np.log10(spectrum.band_power(dark, 10000, 22050) / total) < -60      # almost nothing above 10 kHz
    total = spectrum.band_power(bright, 0, 22050)
    assert 10 * np.log10(spectrum.band_power(bright, 16000, 22050) / total) > -20    # real energy above 16 kHz
    for audio in (dark, bright):
        assert abs(np.corrcoef(audio.samples)[0, 1]) < 0.9                        # true stereo, not dual mono
