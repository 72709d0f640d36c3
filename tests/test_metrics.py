import numpy as np
import pytest

from restore.audio import Audio
from restore.examples import band
from restore.metrics import SpectrumAccumulator, average_spectrum_db, cutoff_from_spectrum, effective_cutoff_hz
from restore.mp3info import inspect
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
    assert abs(facts["cutoff_hz"] - nominal) <= 400, (facts["cutoff_hz"], nominal)  # seen: -345..+220 Hz
