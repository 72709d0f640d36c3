import numpy as np
import pytest

from restore.audio import Audio
from tests.support.examples import band
from restore.analysis.spectrum import average_spectrum_db, cutoff_from_spectrum, effective_cutoff_hz, SpectrumAccumulator
from restore.io.mp3info import inspect
from restore.stages import StageContext
from restore.stages.decode import DecodeStage

from .conftest import needs_lame, write_tagged_mp3


@pytest.mark.parametrize("block", [1, 777, 4095, 4096, 65536, 10 ** 7])
def test_spectrum_fed_in_blocks_equals_whole(song, block):
    whole = average_spectrum_db(song)
    acc = SpectrumAccumulator(song.frames, song.channels)
    for start in range(0, song.frames, block):
        acc.feed(song.samples[:, start:start + block])
    np.testing.assert_allclose(acc.spectrum_db(), whole, rtol=0, atol=1e-4)  # dB; float32 sums in another order


def test_full_band_has_no_cutoff_and_silence_has_no_spectrum(song):
    assert effective_cutoff_hz(song) is None
    assert effective_cutoff_hz(Audio(np.zeros((2, 44100), np.float32), 44100)) is None
    assert cutoff_from_spectrum(None, 44100) is None


def test_a_brickwall_is_found_where_it_is(song):
    spec = np.fft.rfft(song.samples, axis=1)
    freqs = np.fft.rfftfreq(song.frames, 1 / song.rate)
    spec[:, freqs > 15000] = 0
    cut = Audio(np.fft.irfft(spec, song.frames, axis=1).astype(np.float32), song.rate)
    assert 14800 < effective_cutoff_hz(cut) <= 15050


def test_natural_rolloff_is_not_a_cutoff(song):
    """Dark material rolls off gradually: no 30 dB cliff, no cutoff claimed."""
    spec = np.fft.rfft(song.samples, axis=1)
    freqs = np.fft.rfftfreq(song.frames, 1 / song.rate)
    spec *= np.exp(-np.maximum(freqs - 6000, 0) / 1500)
    dark = Audio(np.fft.irfft(spec, song.frames, axis=1).astype(np.float32), song.rate)
    assert effective_cutoff_hz(dark) is None


@needs_lame
@pytest.mark.parametrize("bitrate", ["96", "128", "192", "256", "320"])
def test_measured_cutoff_matches_lames_own_lowpass(tmp_path, bitrate):
    mp3 = write_tagged_mp3(tmp_path / "s.mp3", band(8.0, seed=4), "-b", bitrate)
    _, facts = DecodeStage().read(mp3, StageContext())
    nominal = inspect(mp3).encoder_lowpass_hz
    assert abs(facts["cutoff_hz"] - nominal) <= 400, (facts["cutoff_hz"], nominal)  # seen: -388..+134 Hz


# ---- Measures added for the report and the evaluation harness ---------------------------

import json
import tracemalloc

from restore.analysis import blocks, compare, levels, loudness, spectrum
from restore.io.lame import encode_mp3


def _sine(freq: float, dbfs: float, seconds: float, rate: int, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)


def _stereo(x: np.ndarray, rate: int, right: np.ndarray | None = None) -> Audio:
    return Audio(np.stack([x, x if right is None else right]).astype(np.float32), rate)


def _lowpass(audio: Audio, hz: float) -> Audio:
    spec = np.fft.rfft(audio.samples, axis=1)
    spec[:, np.fft.rfftfreq(audio.frames, 1 / audio.rate) > hz] = 0
    return Audio(np.fft.irfft(spec, audio.frames, axis=1).astype(np.float32), audio.rate)


def _delayed(audio: Audio, lag: int, gain: float) -> Audio:
    pad = np.zeros((audio.channels, lag), np.float32)
    return Audio(np.concatenate([pad, audio.samples * np.float32(gain)], axis=1), audio.rate)


@pytest.fixture(scope="module")
def mp3_decode(song, tmp_path_factory):
    """The song through LAME at 128 kbps (lameenc: no gapless tag, so 1105 samples late)."""
    path = tmp_path_factory.mktemp("mp3") / "s.mp3"
    path.write_bytes(encode_mp3(song, bitrate=128))
    return DecodeStage().read(path, StageContext())[0]


def test_k_weighting_at_48k_is_the_standards_table():
    b1, a1, b2, a2 = loudness.k_weighting(48000)
    np.testing.assert_allclose(b1, [1.53512485958697, -2.69169618940638, 1.19839281085285], atol=1e-12)
    np.testing.assert_allclose(a1, [1.0, -1.69065929318241, 0.73248077421585], atol=1e-12)
    np.testing.assert_allclose(b2, [1.0, -2.0, 1.0])
    np.testing.assert_allclose(a2, [1.0, -1.99004745483398, 0.99007225036621], atol=1e-12)


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
def test_integrated_loudness_agrees_with_pyloudnorm(rate, channels):
    pyln = pytest.importorskip("pyloudnorm")
    music = band(8.0, rate=rate, channels=channels, seed=1)
    ours = loudness.integrated_lufs(music)
    data = music.samples.T.astype(np.float64)
    # pyloudnorm's "DeMan" filter is the same derivation of the K-weighting: only the
    # implementation differs. Its default filter approximates the shelf (0.04 LU off here).
    assert ours == pytest.approx(pyln.Meter(rate, filter_class="DeMan").integrated_loudness(data), abs=1e-3)
    assert ours == pytest.approx(pyln.Meter(rate).integrated_loudness(data), abs=0.1)


@pytest.mark.parametrize("rate", [44100, 48000])
@pytest.mark.parametrize("dbfs", [-23.0, -20.0])
def test_ebu_stereo_sine_reads_its_level(rate, dbfs):
    """EBU Tech 3341 case 1: a 1 kHz stereo sine at -23 dBFS reads -23.0 +-0.1 LUFS
    (K-weighting is +0.69 dB at 1 kHz, cancelling BS.1770's -0.691)."""
    tone = _stereo(_sine(1000, dbfs, 20.0, rate), rate)
    assert loudness.integrated_lufs(tone) == pytest.approx(dbfs, abs=0.1)


def test_silence_and_short_audio_have_no_loudness():
    silence = Audio(np.zeros((2, 44100 * 4), np.float32), 44100)
    assert loudness.integrated_lufs(silence) is None and loudness.loudness_range_lu(silence) is None
    blip = Audio(np.full((1, 4000), 0.5, np.float32), 44100)  # shorter than one 400 ms block
    assert loudness.integrated_lufs(blip) is None
    assert loudness.loudness_range_lu(band(2.0, seed=1)) is None      # shorter than one 3 s window


@pytest.mark.parametrize("first, second, expected", [(-20, -30, 10), (-20, -15, 5), (-40, -20, 20)])
def test_loudness_range_of_a_signal_stepping_between_two_levels(first, second, expected):
    """EBU Tech 3342 cases 1-3: 20 s at one level, 20 s at another; LRA = the step +-1 LU."""
    rate = 16000
    x = np.concatenate([_sine(1000, first, 20, rate), _sine(1000, second, 20, rate)])
    assert loudness.loudness_range_lu(_stereo(x, rate)) == pytest.approx(expected, abs=0.5)


def test_true_peak_finds_the_peak_between_samples():
    """A sine at fs/4 with a 45 degree phase never has a sample at its crest: every sample
    is at 1/sqrt(2) of it (-3 dB); 4x oversampling lands on the crest."""
    rate, n = 44100, 44100
    x = _sine(rate / 4, -6.0, n / rate, rate, phase=np.pi / 4)
    x *= np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / 4410)  # fades: no onset overshoot
    tone = _stereo(x, rate)
    sample_peak = 20 * np.log10(np.abs(tone.samples).max())
    assert sample_peak == pytest.approx(-9.0, abs=0.05)
    assert loudness.true_peak_dbtp(tone) == pytest.approx(-6.0, abs=0.2)
    assert loudness.true_peak_dbtp(Audio(np.zeros((1, 1000), np.float32), rate)) is None


def test_crest_factor_of_a_sine_is_3_db():
    assert levels.crest_factor_db(_stereo(_sine(1000, -6, 1.0, 48000), 48000)) == pytest.approx(3.01, abs=0.01)
    assert levels.crest_factor_db(Audio(np.zeros((2, 100), np.float32), 48000)) is None


def test_stereo_correlation_and_width():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 96000)) * 0.1
    assert levels.stereo_correlation(_stereo(a, 48000)) == pytest.approx(1.0, abs=1e-6)
    assert levels.stereo_correlation(_stereo(a, 48000, -a)) == pytest.approx(-1.0, abs=1e-6)
    assert abs(levels.stereo_correlation(_stereo(a, 48000, b))) < 0.02
    assert levels.stereo_width(_stereo(a, 48000)) == blocks.FLOOR_DB           # no side at all
    assert levels.stereo_width(_stereo(a, 48000, b)) == pytest.approx(0.0, abs=0.2)
    mid, side = a, b * 10 ** (-10 / 20)                                  # side 10 dB under mid
    assert levels.stereo_width(_stereo(mid + side, 48000, mid - side)) == pytest.approx(-10.0, abs=0.2)
    assert levels.stereo_width(_stereo(a, 48000, -a)) is None                 # no mid: ratio undefined
    mono = Audio(a[None].astype(np.float32), 48000)
    assert levels.stereo_correlation(mono) is None and levels.stereo_width(mono) is None


def test_an_mp3_has_far_less_energy_above_16k_than_its_source(song, mp3_decode):
    source, decoded = spectrum.energy_above_db(song), spectrum.energy_above_db(mp3_decode)
    assert decoded < source - 6.0                       # LAME at 128 kbps keeps 16-17 kHz only
    assert spectrum.energy_above_db(mp3_decode, 17500) < spectrum.energy_above_db(song, 17500) - 40.0
    assert spectrum.energy_above_db(Audio(song.samples, 32000)) is None   # 16 kHz is Nyquist there


def test_top_band_flatness_tells_hiss_from_tones(song, mp3_decode):
    rng = np.random.default_rng(2)
    hiss = Audio((rng.standard_normal((2, 3 * 44100)) * 0.1).astype(np.float32), 44100)
    assert spectrum.top_band_flatness(hiss) > 0.9
    assert spectrum.top_band_flatness(_stereo(_sine(18000, -6, 3.0, 44100), 44100)) < 0.01
    assert spectrum.top_band_flatness(mp3_decode) < spectrum.top_band_flatness(song) - 0.2   # a lowpass edge, not hiss
    assert spectrum.top_band_flatness(Audio(song.samples, 32000)) is None
    assert spectrum.top_band_flatness(_lowpass(song, 12000)) is None                 # nothing up there


def test_clipped_samples_count_runs_not_lone_peaks():
    rate = 44100
    x = np.clip(2.0 * _sine(100, 0, 1.0, rate), -1.0, 1.0)
    expected = int(np.count_nonzero(np.abs(x.astype(np.float32)) >= 0.999))
    assert expected > 10000
    assert levels.clipped_samples(_stereo(x, rate)) == 2 * expected
    y = np.zeros(200000, np.float32)
    y[1000] = 1.0                          # a lone peak
    y[65535:65537] = -1.0                  # a run of two across the 65536-frame block edge
    y[-2:] = 1.0                           # a run at the very end
    assert levels.clipped_samples(Audio(y[None], rate)) == 4


@pytest.mark.parametrize("lag, gain", [(1105, 0.7), (-300, 1.3)])
def test_align_finds_a_known_lag_and_gain(song, lag, gain):
    test = _delayed(song, lag, gain) if lag >= 0 else Audio(song.samples[:, -lag:] * np.float32(gain), song.rate)
    found_lag, found_gain = compare.align(test, song)
    assert found_lag == lag
    assert found_gain == pytest.approx(gain, rel=1e-5)
    back = compare.apply_alignment(test, found_lag, found_gain, song.frames)
    covered = slice(-lag, None) if lag < 0 else slice(None)   # an early test has nothing for the first frames
    np.testing.assert_allclose(back.samples[:, covered], song.samples[:, covered], atol=1e-5)


def test_align_works_across_sample_rates(song):
    test = blocks.resample(_delayed(song, 1105, 0.7), 48000)
    lag, gain = compare.align(test, song)
    assert abs(lag - 1105) <= 1 and gain == pytest.approx(0.7, abs=0.01)


def test_align_of_silence_finds_nothing(song):
    assert compare.align(Audio(np.zeros_like(song.samples), song.rate), song) == (0, None)


def test_lsd_is_zero_for_identical_signals_and_grows_with_a_lowpass(song):
    assert compare.lsd_db(song, song) == 0.0
    at_16k, at_8k = compare.lsd_db(_lowpass(song, 16000), song), compare.lsd_db(_lowpass(song, 8000), song)
    assert 0 < at_16k < at_8k
    cut = _lowpass(song, 8000)
    assert compare.lsd_db(cut, song, hi_hz=7000) < 0.5          # the band that was kept
    assert compare.lsd_db(cut, song, lo_hz=9000) > 15.0         # the band that was removed
    assert compare.lsd_db(song, song, lo_hz=30000) is None      # above Nyquist


def test_si_sdr_of_a_scaled_copy_is_very_high_and_of_noise_low(song):
    rng = np.random.default_rng(3)
    noise = Audio((rng.standard_normal(song.samples.shape) * 0.1).astype(np.float32), song.rate)
    assert compare.si_sdr_db(Audio(song.samples * np.float32(0.5), song.rate), song) > 100
    assert compare.si_sdr_db(noise, song) < -20
    # equal energies of signal and distortion: 0 dB
    scaled = noise.samples * np.float32(np.sqrt(blocks.energy(song) / blocks.energy(noise)))
    assert compare.si_sdr_db(Audio(song.samples + scaled, song.rate), song) == pytest.approx(0.0, abs=0.2)
    assert compare.si_sdr_db(song, Audio(np.zeros_like(song.samples), song.rate)) is None


def test_band_errors_of_a_lowpass_are_large_only_above_the_cutoff(song):
    errors = compare.band_energy_error_db(_lowpass(song, 8000), song)
    assert list(errors) == ["0-250", "250-1000", "1000-4000", "4000-8000", "8000-12000",
                            "12000-16000", "16000-20000", "20000-24000"]
    for band_name in ("0-250", "250-1000", "1000-4000"):
        assert abs(errors[band_name]) < 0.05, (band_name, errors)
    assert abs(errors["4000-8000"]) < 0.5
    assert errors["8000-12000"] < -20      # the Hann window's leakage from just under 8 kHz limits it
    for band_name in ("12000-16000", "16000-20000", "20000-24000"):
        assert errors[band_name] < -40, (band_name, errors)
    at_32k = compare.band_energy_error_db(Audio(song.samples, 32000), Audio(song.samples, 32000))
    assert list(at_32k)[-1] == "12000-16000" and set(at_32k.values()) == {0.0}


def test_reference_metrics_of_an_mp3(song, mp3_decode):
    ref = compare.reference_metrics(mp3_decode, song, with_visqol=False)
    json.dumps(ref, allow_nan=False)
    assert ref["lag_samples"] == 1105
    assert 0.9 < ref["gain"] < 1.1
    assert ref["lsd_above_16k"] > 3 * ref["lsd_below_16k"] > 0
    assert ref["band_error_db"]["16000-20000"] < -6.0
    assert abs(ref["band_error_db"]["250-1000"]) < 0.5
    assert 5 < ref["si_sdr"] < 40
    assert ref["loudness_diff_lu"] < 0                     # the highs it dropped were loud
    assert ref["visqol"] is None                           # not asked for
    same = compare.reference_metrics(song, song, with_visqol=False)
    assert same["lag_samples"] == 0 and same["gain"] == 1.0 and same["lsd_full"] == 0.0


def test_visqol_prefers_the_original_to_a_lowpassed_copy():
    pytest.importorskip("visqol")
    music = band(3.0, rate=48000, seed=5)
    assert compare.visqol(music, music) > compare.visqol(_lowpass(music, 4000), music) + 0.5


def test_song_metrics_gathers_every_measure_and_deltas(song, mp3_decode):
    m = compare.song_metrics(song)
    json.dumps(m, allow_nan=False)
    assert m["rate"] == 44100 and m["channels"] == 2 and m["duration_s"] == 6.0
    assert m["integrated_lufs"] == pytest.approx(loudness.integrated_lufs(song), abs=1e-4)
    assert m["true_peak_dbtp"] >= m["peak_dbfs"] == pytest.approx(-1.0, abs=0.01)
    assert m["top_band_flatness"] == pytest.approx(spectrum.top_band_flatness(song), abs=1e-4)
    assert m["cutoff_hz"] is None and m["clipped_samples"] == 0
    d = compare.song_metrics(mp3_decode, baseline=song)
    assert d["length_matches_baseline"] is False           # the decode keeps LAME's delay and padding
    assert d["delta_energy_above_16k_db"] < -6 and d["delta_clipped_samples"] == 0
    assert d["cutoff_hz"] is not None and d["delta_cutoff_hz"] is None   # no cutoff in the baseline
    assert "delta_rate" not in d
    same = compare.song_metrics(song, baseline_metrics=m)
    assert same["length_matches_baseline"] is True
    assert all(same[k] in (0, None) for k in same if k.startswith("delta_"))


def test_song_metrics_memory_does_not_grow_with_the_song(song):
    """Blocks, not copies: the peak of extra memory is the same for 30 s and for 2 minutes
    (a float64 copy of the 2-minute song alone would be 85 MB)."""
    compare.song_metrics(song)  # warm caches (filter, FFT plans)
    peaks = []
    for repeat in (5, 20):
        music = Audio(np.tile(song.samples, repeat), song.rate)
        tracemalloc.start()
        try:
            compare.song_metrics(music)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] + (1 << 20), peaks
    assert peaks[1] < 32 << 20, peaks


def test_a_cliff_into_a_quiet_top_band_is_found():
    """A 49 dB cliff at 16 kHz into a floor at -67 dB (drums at 128 kbps look so). Smoothing
    once padded the top bins with 0 dB, a false band coming back up, and missed it."""
    rate, n = 44100, 2049
    freqs = np.linspace(0, rate / 2, n)
    s_db = np.where(freqs < 16000, -18.0, -67.0)
    assert 15800 < cutoff_from_spectrum(s_db, rate) <= 16050


def test_a_floor_that_ends_higher_up_is_not_band():
    """A denoised MP3 as DeepFilterNet leaves it (48 kHz and back): the band stops at 16.7 kHz,
    a floor 67 dB down goes on to 21.2 kHz, where the resampler cuts it to -115 dB. The
    floor's own end once read as the cutoff (21.2 kHz, "+4.5 kHz vs the baseline") while the
    spectrogram showed the baseline's cliff."""
    rate, n = 44100, 2049
    freqs = np.linspace(0, rate / 2, n)
    s_db = np.select([freqs < 16700, freqs < 21200], [0.0, -68.0], -115.0)
    assert 16500 < cutoff_from_spectrum(s_db, rate) <= 16750
    # a band that reaches on (an extension 20 dB down, not a floor) is still band
    s_db = np.select([freqs < 16700, freqs < 21200], [0.0, -20.0], -115.0)
    assert 21000 < cutoff_from_spectrum(s_db, rate) <= 21250
