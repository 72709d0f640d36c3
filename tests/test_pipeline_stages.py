"""The engine's path for variants with stages: one decode feeds the streamed baseline and an
in-memory copy for the staged variant; each gets its own output and marker."""
import numpy as np
import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TIT2, TXXX

import restore.stages as stages
from restore.stages import Option, Stage
import restore.engine.variants as variants
from restore.audio import Audio
from restore.engine.config import RunConfig
from tests.support.examples import band
from restore.engine.run import run

from .conftest import read_flac, write_mp3


class HalfGain(Stage):
    """A stage for this test: -6.02 dB, so loudness changes and ReplayGain must go."""
    name = "half_gain"

    def config(self):
        return {"gain": 0.5}

    def process(self, audio, ctx):
        return Audio(audio.samples * np.float32(0.5), audio.rate)


@pytest.fixture
def staged_variant(monkeypatch):
    monkeypatch.setitem(stages._REGISTRY, "half_gain", f"{__name__}:HalfGain")
    v = variants.Variant("90_half", "half level (test)", steps=("half_gain",), keeps_loudness=False)
    monkeypatch.setitem(variants.VARIANTS, v.name, v)
    return v


def test_decode_once_feeds_streamed_and_staged_variants(tmp_path, song, staged_variant, monkeypatch):
    from restore.stages.decode import DecodeStage
    decodes = []
    real_stream = DecodeStage.stream
    monkeypatch.setattr(DecodeStage, "stream", lambda self, path, ctx: decodes.append(path.name) or real_stream(self, path, ctx))
    mp3 = write_mp3(tmp_path / "in" / "s.mp3", song)
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text="-7.1 dB"))
    tags.save(str(mp3))
    cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                    variants=variants.resolve_variants("01_baseline,90_half"))
    summary = run(cfg)
    assert summary.counts()["done"] == 2, summary.results
    assert decodes == ["s.mp3"]  # one decode fed both variants
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
    import restore.engine.markers as markers
    from restore.engine.run import plan_run
    mp3 = write_mp3(tmp_path / "in" / "s.mp3", song)
    cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                    variants=variants.resolve_variants("01_baseline,90_half"), verify="full")
    assert run(cfg).counts()["done"] == 2
    hashed = []
    real = markers.hash_file
    monkeypatch.setattr(markers, "hash_file", lambda p: hashed.append(p.name) or real(p))
    plan = plan_run(cfg)
    assert [j.reason for j in plan.jobs] == ["done", "done"]
    assert sorted(hashed) == sorted([mp3.name, "s.flac", "s.flac"])  # the MP3 once, each output once


class To48k(Stage):
    """A stage for this test: resamples to 48 kHz, returning exactly frames_at_rate frames."""
    name = "to48k"

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


class CountingGain(HalfGain):
    """half_gain that counts its calls, reads a `gain` option and records a fact."""
    name = "counting_gain"
    options = (Option("gain", "float", 0.5, "gain factor", 0.01, 4.0),)
    calls = 0

    def config(self):
        return {"gain": self.opts["gain"]}

    def process(self, audio, ctx):
        type(self).calls += 1
        ctx.facts["counting_gain_db"] = round(20 * np.log10(self.opts["gain"]), 2)
        return Audio(audio.samples * np.float32(self.opts["gain"]), audio.rate)


class SplitBands(Stage):
    """A stems stage for this test: the song as two 'stems' that sum back to it."""
    name = "split"
    names = ("first", "second")

    def config(self):
        return {"names": list(self.names)}

    def process(self, audio, ctx):
        return {n: Audio(audio.samples * np.float32(0.5), audio.rate) for n in self.names}


@pytest.fixture
def chain_variants(monkeypatch):
    monkeypatch.setitem(stages._REGISTRY, "counting_gain", f"{__name__}:CountingGain")
    monkeypatch.setitem(stages._REGISTRY, "to48k", f"{__name__}:To48k")
    monkeypatch.setitem(stages._REGISTRY, "split", f"{__name__}:SplitBands")
    made = [variants.Variant("92_gain", "gain (test)", steps=("counting_gain",)),
            variants.Variant("93_gain_48k", "gain then 48 kHz (test)", steps=("counting_gain", "to48k")),
            variants.Variant("94_split", "two stems (test)", steps=("split",), stems=True)]
    for v in made:
        monkeypatch.setitem(variants.VARIANTS, v.name, v)
    CountingGain.calls = 0
    return made


def _marker(out, variant, song="s.mp3"):
    import json
    return json.loads((out / "_done" / variant / f"{song}.json").read_text())


def test_variants_that_start_alike_share_the_step_and_its_facts(tmp_path, chain_variants):
    write_mp3(tmp_path / "in" / "s.mp3", band(3.0, seed=2), bitrate=128)
    cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                    variants=variants.resolve_variants("92,93"), report=False)
    assert run(cfg).counts()["done"] == 2
    assert CountingGain.calls == 1  # the second variant reused the first one's gain step
    a, rate_a = read_flac(tmp_path / "out" / "92_gain" / "s.flac")
    b, rate_b = read_flac(tmp_path / "out" / "93_gain_48k" / "s.flac")
    assert (rate_a, rate_b) == (44100, 48000)
    assert np.max(np.abs(a[:, 1000:-1000])) > 0.05 and np.max(np.abs(b)) > 0.05
    for v in ("92_gain", "93_gain_48k"):
        assert _marker(tmp_path / "out", v)["stage_facts"] == {"counting_gain_db": -6.02}


def test_stage_options_come_from_the_command_line_and_change_the_config(tmp_path, chain_variants, capsys):
    from restore.ui.cli import main
    write_mp3(tmp_path / "in" / "s.mp3", band(2.0, seed=3), bitrate=128)
    args = [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--variants", "92", "--no-report", "-q"]
    assert main(["run", *args]) == 0
    first, _ = read_flac(tmp_path / "out" / "92_gain" / "s.flac")
    assert main(["run", *args, "--set", "counting_gain.gain=0.25"]) == 0  # a new option redoes the step
    second, _ = read_flac(tmp_path / "out" / "92_gain" / "s.flac")
    assert np.max(np.abs(second - first * 0.5)) <= 2 / 2 ** 23
    assert _marker(tmp_path / "out", "92_gain")["config"]["steps"][1]["config"] == {"gain": 0.25}
    assert main(["run", *args, "--set", "gain=0.25"]) == 2
    assert main(["run", *args, "--set", "nosuchstage.gain=1"]) == 2
    assert "no stage named 'nosuchstage'" in capsys.readouterr().err


def test_a_stems_variant_writes_a_folder_of_stems_that_resumes_and_replaces_old_stems(tmp_path, chain_variants):
    mp3 = write_mp3(tmp_path / "in" / "Art" / "My Song.mp3", band(2.0, seed=4), bitrate=128)
    tags = ID3()
    tags.add(TIT2(encoding=3, text="My Song"))
    tags.save(str(mp3))
    out = tmp_path / "out"
    cfg = RunConfig(inputs=[str(tmp_path / "in")], out_dir=out, variants=variants.resolve_variants("01,94"), report=False)
    assert run(cfg).counts()["done"] == 2
    folder = out / "94_split" / "Art" / "My Song"
    assert sorted(p.name for p in folder.iterdir()) == ["first.flac", "second.flac"]
    base, _ = read_flac(out / "01_baseline" / "Art" / "My Song.flac")
    first, _ = read_flac(folder / "first.flac")
    assert np.max(np.abs(first - base * 0.5)) <= 2 / 2 ** 23
    assert FLAC(str(folder / "first.flac"))["TITLE"] == ["My Song (first)"]
    marker = _marker(out, "94_split", "Art/My Song.mp3")
    assert [o["path"] for o in marker["outputs"]] == ["94_split/Art/My Song/first.flac", "94_split/Art/My Song/second.flac"]
    assert run(cfg).counts()["skipped"] == 2
    # A stem removed by hand is redone; a temporary file of an interrupted run is swept.
    (folder / "second.flac").unlink()
    (folder / ".second.flac.0badf00d.mp3restore-tmp.flac").write_bytes(b"half")
    assert [(r.variant, r.status) for r in run(cfg).results if r.status != "skipped"] == [("94_split", "done")]
    assert sorted(p.name for p in folder.iterdir()) == ["first.flac", "second.flac"]
    # Another separation (other stem names) replaces the old set instead of mixing with it.
    SplitBands.names = ("vocals", "rest")
    try:
        assert run(cfg).counts()["done"] == 1
    finally:
        SplitBands.names = ("first", "second")
    assert sorted(p.name for p in folder.iterdir()) == ["rest.flac", "vocals.flac"]


def test_the_report_shows_how_each_variant_was_made(tmp_path, chain_variants):
    """Steps, their options and what they measured come from the markers to the song page."""
    from restore.report.build import build_report
    write_mp3(tmp_path / "in" / "s.mp3", band(2.0, seed=5), bitrate=128)
    out = tmp_path / "out"
    assert run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=out, variants=variants.resolve_variants("01,92,94"),
                         report=False, stage_options={"counting_gain": {"gain": "0.25"}})).counts()["done"] == 3
    build_report(out, log=lambda line: None)
    page = (out / "_report" / "songs" / "s.html").read_text()
    made = page[page.index('id="how-made"'):]
    assert "counting_gain" in made and "gain=0.25" in made and "counting_gain_db: -12.04" in made
    assert "split" in made and "names=first, second" in made  # a stems variant is listed too
    assert "decode only" in made  # the baseline


def test_the_report_finds_songs_and_stems_from_the_markers(tmp_path, chain_variants):
    """A stems variant whose name says nothing of stems, at a song with no other variant at
    that path: only its marker can say the folder holds stems. A folder of FLACs without a
    marker is taken by the folder rule alone (no guess from the variant's name)."""
    from restore.report.discover import find_songs
    write_mp3(tmp_path / "in" / "s.mp3", band(1.0, seed=6), bitrate=128)
    out = tmp_path / "out"
    assert run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=out, variants=variants.resolve_variants("94"),
                         report=False)).counts()["done"] == 1
    songs = find_songs(out)
    assert [s.key for s in songs] == ["s"]
    assert sorted(p.name for p in songs[0].stems["94_split"]) == ["first.flac", "second.flac"]
    assert songs[0].markers["94_split"]["variant"] == "94_split"
    # Without the marker the same folder reads as two songs, s/first and s/second.
    (out / "_done" / "94_split" / "s.mp3.json").unlink()
    assert sorted(s.key for s in find_songs(out)) == ["s/first", "s/second"]


def test_progress_names_the_variant_and_the_step_at_work(tmp_path):
    from restore.events import RecordingReporter, SongProgress
    write_mp3(tmp_path / "in" / "s.mp3", band(3.0, seed=8), bitrate=128)
    reporter = RecordingReporter()
    run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", variants=variants.resolve_variants("11"),
                  report=False), reporter)
    doing = [e.doing for e in reporter.events if isinstance(e, SongProgress)]
    assert "decode" in doing
    assert any(d.startswith("11_offline_restore: offline_restore ") and d.endswith("%") for d in doing), doing
    fractions = [e.fraction for e in reporter.events if isinstance(e, SongProgress)]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0


def test_the_run_estimates_its_time_from_finished_steps_and_shows_the_reports_progress(tmp_path):
    from restore.events import Message, RecordingReporter
    for i in range(2):
        write_mp3(tmp_path / "in" / f"{i}.mp3", band(2.0, seed=i), bitrate=128)
    cfg = dict(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", variants=variants.resolve_variants("01"))
    first = RecordingReporter()
    run(RunConfig(**cfg, report=True), first)
    said = [e.text for e in first.events if isinstance(e, Message)]
    assert not any("estimated time" in t for t in said)              # nothing finished here to learn from
    assert "report: building the compare report" in said and any(t.startswith("report: 2 song(s)") for t in said)
    write_mp3(tmp_path / "in" / "new.mp3", band(4.0, seed=9), bitrate=128)
    again = RecordingReporter()
    run(RunConfig(**cfg, dry_run=True), again)
    said = [e.text for e in again.events if isinstance(e, Message)]
    assert any(t.startswith("estimated time: about ") and "1 step(s), from what 2 finished step(s) here took" in t
               for t in said), said
    # Songs side by side take less than the estimate, which says it counts one at a time.
    write_mp3(tmp_path / "in" / "new2.mp3", band(4.0, seed=8), bitrate=128)
    side = RecordingReporter()
    run(RunConfig(**cfg, dry_run=True, jobs=2), side)
    said = [e.text for e in side.events if isinstance(e, Message)]
    assert any("2 step(s) one song at a time (side by side: less), from what 2 finished" in t for t in said), said


class Flagging(HalfGain):
    """half_gain that says when it starts (`started`, a threading.Event the test sets up)."""
    name = "flagging"
    started = None

    def process(self, audio, ctx):
        type(self).started.set()
        return super().process(audio, ctx)


@pytest.fixture
def two_staged(monkeypatch, staged_variant):
    import threading
    monkeypatch.setitem(stages._REGISTRY, "flagging", f"{__name__}:Flagging")
    v = variants.Variant("95_flag", "half level, flagged (test)", steps=("flagging",), keeps_loudness=False)
    monkeypatch.setitem(variants.VARIANTS, v.name, v)
    Flagging.started = threading.Event()
    return staged_variant, v


def test_a_variant_is_written_while_the_next_one_computes(tmp_path, two_staged, monkeypatch):
    """The first variant's FLAC is written on the write-behind thread: its write waits for
    the second variant's stage to start, which it never would if the write were in line
    (the wait then runs out and the test fails). Both end whole, with markers, in job order."""
    import restore.engine.song as song_mod
    first, second = two_staged
    real_write, seen = song_mod.write_flac, {}

    def write_flac(audio, final, *a, **kw):
        if first.name in final.parts:
            seen["overlapped"] = Flagging.started.wait(timeout=60)
        return real_write(audio, final, *a, **kw)

    monkeypatch.setattr(song_mod, "write_flac", write_flac)
    write_mp3(tmp_path / "in" / "s.mp3", band(3.0, seed=4), bitrate=128)
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                            variants=variants.resolve_variants("90,95"), report=False))
    assert seen == {"overlapped": True}
    assert [(r.variant, r.status) for r in summary.results] == [("90_half", "done"), ("95_flag", "done")]
    a, _ = read_flac(tmp_path / "out" / "90_half" / "s.flac")
    b, _ = read_flac(tmp_path / "out" / "95_flag" / "s.flac")
    assert np.array_equal(a, b) and np.max(np.abs(a)) > 0.05
    for v in ("90_half", "95_flag"):
        assert _marker(tmp_path / "out", v)["variant"] == v
    log = (tmp_path / "out" / "_logs" / "s.log").read_text(encoding="utf-8")
    assert log.index("done 90_half") < log.index("done 95_flag")


def test_a_ctrl_c_while_a_variant_is_written_keeps_it_whole_and_counted(tmp_path, two_staged, monkeypatch):
    """Stop is asked while the first variant's file is being written: that file and its
    marker are finished before the run ends (its claim held till then), the run says it was
    done, the second variant is not made, and no temporary file is left."""
    import threading
    import restore.engine.song as song_mod
    from restore.engine.run import RunInterrupted
    from restore.io.writers import TMP_MARK
    first, _ = two_staged
    real_write, stop = song_mod.write_flac, threading.Event()

    def write_flac(audio, final, *a, **kw):
        if first.name in final.parts:
            stop.set()
        return real_write(audio, final, *a, **kw)

    monkeypatch.setattr(song_mod, "write_flac", write_flac)
    write_mp3(tmp_path / "in" / "s.mp3", band(3.0, seed=5), bitrate=128)
    out = tmp_path / "out"
    with pytest.raises(RunInterrupted) as stopped:
        run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=out, variants=variants.resolve_variants("90,95"),
                      report=False), stop=stop)
    done = [(r.variant, r.status) for r in stopped.value.summary.results]
    assert ("90_half", "done") in done and ("95_flag", "done") not in done, done
    assert read_flac(out / "90_half" / "s.flac")[0].shape[0] == 2
    assert _marker(out, "90_half")["variant"] == "90_half"
    assert not (out / "95_flag" / "s.flac").exists()
    assert [p for p in out.rglob("*") if TMP_MARK in p.name] == []


class Loud(HalfGain):
    """x4: a song at -6 dBFS peaks goes over full scale, and the writer clips it."""
    name = "loud"

    def process(self, audio, ctx):
        return Audio(audio.samples * np.float32(4.0), audio.rate)


def test_what_a_write_says_reaches_the_reporter_from_the_run_s_own_thread(tmp_path, staged_variant, monkeypatch):
    """The clipping warning is found while the file is written on the write-behind thread;
    the reporter (a terminal's progress bars, a cluster's event log) still gets it, and
    every event, from the thread that runs the song."""
    import threading
    from restore.events import Message, RecordingReporter
    monkeypatch.setitem(stages._REGISTRY, "loud", f"{__name__}:Loud")
    v = variants.Variant("96_loud", "x4 (test)", steps=("loud",), keeps_loudness=False)
    monkeypatch.setitem(variants.VARIANTS, v.name, v)

    class ThreadRecorder(RecordingReporter):
        def handle(self, event):
            self.threads = getattr(self, "threads", set()) | {threading.current_thread()}
            super().handle(event)

    write_mp3(tmp_path / "in" / "s.mp3", band(3.0, seed=6), bitrate=128)
    reporter = ThreadRecorder()
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                            variants=variants.resolve_variants("96,90"), report=False), reporter)
    assert summary.counts()["done"] == 2
    warned = [e.text for e in reporter.events if isinstance(e, Message) and e.level == "warning"]
    assert any("samples above full scale were clipped in 96_loud" in t for t in warned), warned
    assert reporter.threads == {threading.current_thread()}


def test_a_long_song_s_output_is_written_in_line_unless_a_later_variant_keeps_it(tmp_path, two_staged, chain_variants,
                                                                                  monkeypatch):
    """Over WRITE_BEHIND_BYTES (here: every output) a variant is written before the next one
    starts (no extra copy of the song in memory); one that a later variant starts from is
    kept anyway, and still written behind."""
    import threading
    import restore.engine.song as song_mod
    monkeypatch.setattr(song_mod, "WRITE_BEHIND_BYTES", 0)
    real_write, seen = song_mod.write_flac, {}

    def write_flac(audio, final, *a, **kw):
        seen[final.parts[-2]] = (threading.current_thread() is threading.main_thread(), Flagging.started.is_set())
        return real_write(audio, final, *a, **kw)

    monkeypatch.setattr(song_mod, "write_flac", write_flac)
    write_mp3(tmp_path / "in" / "s.mp3", band(2.0, seed=7), bitrate=128)
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out",
                            variants=variants.resolve_variants("90,95,92,93"), report=False))
    assert summary.counts()["done"] == 4, summary.results
    assert seen["90_half"] == (True, False)          # in line, before 95's stage started
    assert seen["92_gain"][0] is False               # 93 starts from it: written behind
    assert seen["93_gain_48k"][0] is True            # the last: nothing to overlap
