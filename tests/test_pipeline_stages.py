"""The engine's path for variants with stages: one decode feeds the streamed baseline and an
in-memory copy for the staged variant; each gets its own output and marker."""
import numpy as np
import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TXXX

import restore.stages as stages
import restore.variants as variants
from restore.audio import Audio
from restore.config import RunConfig
from restore.examples import band
from restore.pipeline import run

from .conftest import read_flac, write_mp3


class HalfGain:
    """A stage for this test: -6.02 dB, so loudness changes and ReplayGain must go."""
    name = "half_gain"

    def __init__(self, env=None):
        pass

    def unavailable(self):
        return None

    def versions(self):
        return {"half_gain": 1}

    def config(self):
        return {"gain": 0.5}

    def load(self, device=None):
        pass

    def process(self, audio, ctx):
        return Audio(audio.samples * np.float32(0.5), audio.rate)


@pytest.fixture
def staged_variant(monkeypatch):
    monkeypatch.setitem(stages._REGISTRY, "half_gain", f"{__name__}:HalfGain")
    v = variants.Variant("90_half", "half level (test)", steps=("half_gain",), keeps_loudness=False)
    monkeypatch.setitem(variants.VARIANTS, v.name, v)
    return v


def test_decode_once_feeds_streamed_and_staged_variants(tmp_path, song, staged_variant):
    mp3 = write_mp3(tmp_path / "in" / "s.mp3", song)
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text="-7.1 dB"))
    tags.save(str(mp3))
    cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                    variants=variants.resolve_variants("01_baseline,90_half"))
    summary = run(cfg)
    assert summary.counts()["done"] == 2, summary.results
    base, _ = read_flac(tmp_path / "out" / "01_baseline" / "s.flac")
    half, _ = read_flac(tmp_path / "out" / "90_half" / "s.flac")
    assert base.shape == half.shape
    assert np.max(np.abs(half - base * 0.5)) <= 2 / 2 ** 23
    assert FLAC(str(tmp_path / "out" / "01_baseline" / "s.flac"))["REPLAYGAIN_TRACK_GAIN"] == ["-7.1 dB"]
    assert "REPLAYGAIN_TRACK_GAIN" not in FLAC(str(tmp_path / "out" / "90_half" / "s.flac"))
    assert (tmp_path / "out" / "_done" / "90_half" / "s.mp3.json").is_file()
    # Rerun: both skipped. A new stage version redoes only the staged variant.
    assert run(cfg).counts()["skipped"] == 2
    HalfGain.versions = lambda self: {"half_gain": 2}
    try:
        again = run(cfg)
    finally:
        HalfGain.versions = lambda self: {"half_gain": 1}
    assert {(r.variant, r.status) for r in again.results} == {("01_baseline", "skipped"), ("90_half", "done")}


def test_full_verify_hashes_each_input_once_for_all_variants(tmp_path, song, staged_variant, monkeypatch):
    import restore.markers as markers
    from restore.pipeline import plan_run
    mp3 = write_mp3(tmp_path / "in" / "s.mp3", song)
    cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                    variants=variants.resolve_variants("01_baseline,90_half"), verify="full")
    assert run(cfg).counts()["done"] == 2
    hashed = []
    real = markers.file_hash
    monkeypatch.setattr(markers, "file_hash", lambda p: hashed.append(p.name) or real(p))
    plan = plan_run(cfg)
    assert [j.reason for j in plan.jobs] == ["done", "done"]
    assert sorted(hashed) == sorted([mp3.name, "s.flac", "s.flac"])  # the MP3 once, each output once


class To48k:
    """A stage for this test: resamples to 48 kHz, returning exactly frames_at_rate frames."""
    name = "to48k"

    def __init__(self, env=None):
        pass

    def unavailable(self):
        return None

    def versions(self):
        return {"to48k": 1}

    def config(self):
        return {}

    def load(self, device=None):
        pass

    def process(self, audio, ctx):
        from restore.audio import frames_at_rate
        n = frames_at_rate(audio.frames, audio.rate, 48000)
        t_out = np.arange(n) * audio.rate / 48000
        y = np.stack([np.interp(t_out, np.arange(audio.frames), ch) for ch in audio.samples]).astype(np.float32)
        return Audio(y, 48000)


def test_a_rate_changing_stage_of_exact_length_is_accepted(tmp_path, monkeypatch):
    """51840 frames (45 MP3 frames) at 44.1 kHz are 1.17551 s; at 48 kHz, 56424 frames are
    1.1755 s: the lengths agree to the frame, though rounded to the millisecond they do not."""
    monkeypatch.setitem(stages._REGISTRY, "to48k", f"{__name__}:To48k")
    v = variants.Variant("91_48k", "48 kHz (test)", steps=("to48k",))
    monkeypatch.setitem(variants.VARIANTS, v.name, v)
    write_mp3(tmp_path / "in" / "s.mp3", band(50000 / 44100, seed=1), bitrate=128)
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                            variants=variants.resolve_variants("91_48k"), report=False))
    assert summary.counts()["done"] == 1, summary.results
    y, rate = read_flac(tmp_path / "out" / "91_48k" / "s.flac")
    assert (rate, y.shape[1]) == (48000, 56424)
