"""The decode (01_baseline's audio): gapless, exact length, true channel count, any MPEG rate."""
import numpy as np
import pytest

from restore.errors import InputError
from tests.support.examples import band
from restore.stages import StageContext
from restore.stages.decode import DecodeStage

from .conftest import lag_of, needs_lame, pcm16, write_mp3, write_tagged_mp3


def decode(path, **options):
    return DecodeStage().read(path, StageContext(options=options))


@needs_lame
@pytest.mark.parametrize("lame_args", [("-b", "128"), ("-b", "320"), ("-V", "2")])
def test_tagged_mp3_lines_up_with_its_source(tmp_path, song, lame_args):
    path = write_tagged_mp3(tmp_path / "s.mp3", song, *lame_args)
    audio, facts = decode(path)
    assert facts["gapless"] and facts["encoder"] == "LAME3.100" and facts["encoder_delay"] == 576
    assert audio.frames == song.frames                       # padding removed: exact length
    assert audio.rate == song.rate and audio.channels == 2
    source = pcm16(song)
    for ch in range(2):
        assert lag_of(audio.samples[ch], source[ch]) == 0   # no 1105-sample shift
    # Lined up, the MP3 is close to its source (a shift by one sample would not be).
    err = np.sqrt(np.mean((audio.samples - source) ** 2)) / np.sqrt(np.mean(source ** 2))
    assert err < 0.25


def test_untagged_mp3_keeps_the_encoder_delay(tmp_path, song):
    """lameenc writes no LAME tag: the documented behaviour is to keep LAME's 1105 samples."""
    path = write_mp3(tmp_path / "s.mp3", song)
    audio, facts = decode(path)
    assert not facts["gapless"] and facts["encoder_delay"] is None
    assert lag_of(audio.samples[0], pcm16(song)[0]) == 1105
    assert audio.frames == facts["frames"] * 1152 >= song.frames + 1105


def test_vbr_without_xing_header_decodes_to_the_end(tmp_path):
    """Regression: libsndfile stopped at a CBR-based length estimate (9.2 s of 20 s)."""
    audio_in = band(20.0, seed=2)
    path = write_mp3(tmp_path / "v.mp3", audio_in, vbr_quality=2)
    audio, facts = decode(path)
    assert facts["vbr"] and facts["tag_frames"] is None
    assert audio.frames == facts["frames"] * 1152 >= audio_in.frames


@pytest.mark.parametrize("rate, bitrate", [(8000, 24), (22050, 64), (32000, 96), (48000, 192)])
def test_odd_sample_rates_are_kept(tmp_path, rate, bitrate):
    audio_in = band(2.0, rate=rate, seed=1)
    audio, facts = decode(write_mp3(tmp_path / f"{rate}.mp3", audio_in, bitrate=bitrate))
    assert audio.rate == facts["rate"] == rate
    assert audio.channels == 2
    assert audio.frames >= audio_in.frames
    assert abs(lag_of(audio.samples[0], pcm16(audio_in)[0], 3000)) < 3000


def test_mono_stays_mono(tmp_path):
    audio_in = band(2.0, channels=1)
    audio, facts = decode(write_mp3(tmp_path / "m.mp3", audio_in, bitrate=96))
    assert audio.channels == 1 and facts["channels"] == 1 and facts["mode"] == "mono"
    assert audio.samples.dtype == np.float32


def test_facts_include_the_measured_cutoff(tmp_path, song):
    _, facts = decode(write_mp3(tmp_path / "c.mp3", song, bitrate=128))
    # LAME 3.100 lowpasses 128 kbps CBR at 17 kHz; the spectrum must show it.
    assert 16000 < facts["cutoff_hz"] < 17500
    assert facts["bitrate_kbps"] == 128 and not facts["vbr"]
    for key in ("rate", "channels", "duration", "encoder", "peak_dbfs", "decoder"):
        assert key in facts


def test_one_second_file(tmp_path):
    audio, facts = decode(write_mp3(tmp_path / "short.mp3", band(1.0), bitrate=128))
    assert 1.0 <= facts["duration"] < 1.1 and audio.frames == facts["decoded_frames"]


def test_layer_check_and_damage_flags(tmp_path, song):
    data = (tmp_path / "x.mp3")
    good = write_mp3(tmp_path / "good.mp3", song).read_bytes()
    data.write_bytes(good[: len(good) // 2 + 7])                  # cut mid-frame
    with pytest.raises(InputError, match="truncated"):
        decode(data)
    audio, facts = decode(data, accept_damaged=True)
    assert facts["truncated"] and 0.4 * song.frames < audio.frames < 0.6 * song.frames + 2000


def _failing_read(monkeypatch, exc, at_call=3):
    """Make the decoder's n-th read of the file raise `exc`, inside miniaudio's C callback:
    where a Ctrl+C lands when it arrives during a decoder call."""
    from restore.stages import decode as decode_module
    real, calls = decode_module._AudioBytes.read, []

    def read(self, num_bytes):
        calls.append(num_bytes)
        if len(calls) == at_call:
            raise exc
        return real(self, num_bytes)
    monkeypatch.setattr(decode_module._AudioBytes, "read", read)
    return calls


def test_ctrl_c_inside_the_decoder_stops_the_decode_never_shortens_it(tmp_path, song, monkeypatch):
    """cffi cannot pass an exception through C: it went to sys.unraisablehook and the decoder
    took the failed read for the end of the file: a short decode, written as finished."""
    path = write_mp3(tmp_path / "s.mp3", song)
    calls = _failing_read(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        decode(path)
    assert len(calls) >= 3


def test_a_read_error_mid_song_fails_the_song_as_an_input_error(tmp_path, song, monkeypatch):
    import errno
    path = write_mp3(tmp_path / "s.mp3", song)
    _failing_read(monkeypatch, OSError(errno.EIO, "Input/output error"))
    with pytest.raises(InputError, match="cannot read the file, the disk reports a read error"):
        decode(path)
