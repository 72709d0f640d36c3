"""The ghost (what an MP3 discarded): perfect-reconstruction STFT, alignment and level
matching before subtracting, where the ghost's energy lies, and the `ghost` command's files."""
from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console

from restore.audio import Audio
from tests.support.examples import band
from restore.io.lame import encode_mp3
from restore.report.ghost import METHODS, GhostError, istft, make_ghost, stft
from restore.ui.commands.ghost import add_ghost_parser, ghost_command
from restore.analysis.compare import band_energies
from restore.stages import StageContext
from restore.stages.decode import DecodeStage

from .conftest import run_cli


@pytest.fixture(scope="module")
def mp3_decode(song, tmp_path_factory) -> Audio:
    """The song through LAME at 128 kbps, decoded (no gapless tag: 1105 samples late)."""
    path = tmp_path_factory.mktemp("mp3") / "s.mp3"
    path.write_bytes(encode_mp3(song, bitrate=128))
    return DecodeStage().read(path, StageContext())[0]


@pytest.fixture(scope="module")
def mp3_ghost(song, mp3_decode):
    return make_ghost(song, mp3_decode)


@pytest.mark.parametrize("length", [1, 511, 2047, 2048, 2049, 44100])
def test_stft_reconstructs_perfectly_and_keeps_the_length(length):
    x = np.random.default_rng(length).standard_normal((2, length))
    y = istft(stft(x), length)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)


def test_identical_inputs_leave_a_silent_ghost(song):
    result = make_ghost(song, song)
    assert (result.lag, result.gain) == (0, 1.0)
    for method in METHODS:
        ghost = result.ghosts[method]
        assert ghost.samples.shape == song.samples.shape and ghost.rate == song.rate
        assert result.energy_db[method] < -100, (method, result.energy_db)


@pytest.mark.parametrize("lag, gain", [(1105, 0.8), (-300, 1.25)])
def test_a_known_offset_and_gain_are_found_and_removed(song, lag, gain):
    if lag >= 0:  # late, as an MP3 decode without a gapless tag
        moved = np.concatenate([np.zeros((2, lag), np.float32), song.samples * np.float32(gain)], axis=1)
    else:         # early, and short: the first frames have nothing under them
        moved = song.samples[:, -lag:] * np.float32(gain)
    result = make_ghost(song, Audio(moved, song.rate))
    assert result.lag == lag and result.gain == pytest.approx(gain, rel=1e-5)
    if lag >= 0:
        assert result.uncovered_frames == 0
        for method in METHODS:
            assert result.energy_db[method] < -100, (method, result.energy_db)
    else:
        assert result.uncovered_frames == -lag
        tail = result.ghosts["difference"].samples[:, -lag:]
        assert np.abs(tail).max() < 1e-5                     # cancelled wherever the copy is


def test_without_alignment_the_subtraction_cancels_nothing(song):
    """The forum's result: subtracting a copy 1105 samples late leaves a ghost as loud as
    the song. Aligned, it vanishes (the test above)."""
    late = np.concatenate([np.zeros((2, 1105), np.float32), song.samples], axis=1)[:, :song.frames]
    naive = song.samples.astype(np.float64) - late
    assert 10 * np.log10(np.sum(naive ** 2) / np.sum(song.samples.astype(np.float64) ** 2)) > -3


def test_an_mp3_ghost_holds_what_the_encoder_dropped(song, mp3_ghost):
    assert mp3_ghost.lag == 1105 and 0.9 < mp3_ghost.gain < 1.1
    edges = (0, 4000, 16000, 20000)
    original = band_energies(song, edges)
    for method in METHODS:
        ghost = band_energies(mp3_ghost.ghosts[method], edges)
        top = 10 * np.log10(ghost["16000-20000"] / original["16000-20000"])
        low = 10 * np.log10(ghost["0-4000"] / original["0-4000"])
        assert top > -3.0, (method, top)      # most of 16-20 kHz is gone from the MP3 (LAME's lowpass: 17 kHz)
        assert low < -15.0, (method, low)     # below 4 kHz the MP3 kept nearly all of it
        assert mp3_ghost.bands_db[method]["20000-24000"] == pytest.approx(0.0, abs=0.5)


def test_complex_subtraction_equals_the_difference_and_polar_and_mask_are_quieter(mp3_ghost):
    np.testing.assert_allclose(mp3_ghost.ghosts["complex"].samples, mp3_ghost.ghosts["difference"].samples, atol=2e-6)
    below = ("0-250", "250-1000", "1000-4000")
    for band_name in below:
        diff = mp3_ghost.bands_db["difference"][band_name]
        assert mp3_ghost.bands_db["polar"][band_name] < diff
        assert mp3_ghost.bands_db["mask"][band_name] < diff


def test_a_stricter_mask_keeps_less(song, mp3_decode, mp3_ghost):
    strict = make_ghost(song, mp3_decode, mask_db=20.0)
    assert strict.energy_db["mask"] < mp3_ghost.energy_db["mask"]
    assert strict.to_dict()["mask_db"] == 20.0


def test_different_channel_counts_are_refused(song):
    with pytest.raises(GhostError, match="channel"):
        make_ghost(song, Audio(song.samples[:1], song.rate))


# ---- The command ------------------------------------------------------------------------

def _ghost(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="mp3restore")
    add_ghost_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = ghost_command(parser.parse_args(["ghost", *argv]), Console(file=out, width=100))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def original_flac(tmp_path_factory):
    path = tmp_path_factory.mktemp("orig") / "Take 1.flac"
    music = band(3.0, seed=7)
    sf.write(str(path), music.samples.T, music.rate, subtype="PCM_24")
    return path


FILES = {"ghost.json", "spectrogram_original.png", "spectrogram_mp3.png",
         *(f"ghost_{m}.flac" for m in METHODS), *(f"spectrogram_ghost_{m}.png" for m in METHODS)}


def test_the_command_encodes_the_original_and_writes_every_file(tmp_path, original_flac):
    code, printed = _ghost(str(original_flac), "--out", str(tmp_path / "g"), "--bitrate", "96")
    assert code == 0, printed
    assert {p.name for p in (tmp_path / "g").iterdir()} == FILES | {"Take 1.96k.mp3"}
    doc = json.loads((tmp_path / "g" / "ghost.json").read_text())
    # at 96 kbps LAME encodes at 32 kHz: the decode is resampled back, and its 1105-sample
    # delay at 32 kHz is found as 1523 samples at 44.1 kHz
    assert doc["lag_samples"] == 1523 and doc["encoded_here_with"].endswith("96 kbps CBR")
    assert set(doc["methods"]) == set(METHODS)
    info = sf.info(str(tmp_path / "g" / "ghost_mask.flac"))
    assert (info.subtype, info.frames, info.samplerate, info.channels) == ("PCM_24", 3 * 44100, 44100, 2)
    assert (tmp_path / "g" / "spectrogram_mp3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1523 samples late" in printed and "difference" in printed


def test_the_command_takes_a_given_mp3(tmp_path, original_flac):
    music, _ = sf.read(str(original_flac), dtype="float32", always_2d=True)
    mp3 = tmp_path / "take.mp3"
    mp3.write_bytes(encode_mp3(Audio.from_frames_major(music, 44100), bitrate=192))
    code, printed = _ghost(str(original_flac), str(mp3), "--out", str(tmp_path / "g"), "--mask-db", "10")
    assert code == 0, printed
    assert {p.name for p in (tmp_path / "g").iterdir()} == FILES
    doc = json.loads((tmp_path / "g" / "ghost.json").read_text())
    assert doc["encoded"] == str(mp3) and doc["encoded_here_with"] is None and doc["mask_db"] == 10.0


def test_bad_input_is_one_line_and_exit_2(tmp_path, original_flac):
    mp3 = tmp_path / "a.mp3"
    mp3.write_bytes(encode_mp3(band(1.0, seed=1), bitrate=128))
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    mono = tmp_path / "mono.wav"
    sf.write(str(mono), np.zeros(44100, np.float32), 44100)
    out = str(tmp_path / "g")
    cases = [((str(tmp_path / "missing.flac"), "--out", out), "does not exist"),
             ((str(mp3), "--out", out), "ORIGINAL is an MP3"),
             ((str(text), "--out", out), "not an audio file"),
             ((str(original_flac), str(text), "--out", out), "notes.wav"),
             ((str(mono), str(mp3), "--out", out), "channel"),
             ((str(original_flac), "--bitrate", "100", "--out", out), "not an MP3 bitrate")]
    for argv, says in cases:
        code, printed = _ghost(*argv)
        assert code == 2, (argv, printed)
        assert says in printed and printed.count("\n") == 1 and "Traceback" not in printed, (argv, printed)
    assert not (tmp_path / "g").exists()


def test_an_unwritable_output_is_exit_3(tmp_path, original_flac):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    code, printed = _ghost(str(original_flac), "--out", str(blocker))
    assert code == 3 and "in the way" in printed


def test_mp3restore_ghost_from_the_command_line(tmp_path, original_flac):
    if run_cli("ghost", "--help").returncode != 0:
        pytest.skip("`ghost` is not wired into restore/ui/cli.py yet")
    proc = run_cli("ghost", str(original_flac), "--out", str(tmp_path / "g"))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "g").iterdir()} == FILES | {"Take 1.128k.mp3"}
