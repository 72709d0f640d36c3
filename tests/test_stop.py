"""Ctrl+C in a run: the first asks the run to stop at the next block, chunk or step (and
says so), the second stops at once; either way no partial file, the finished work kept,
exit code 130, and the same command resumes. Waits for what the run reports, never for a
fixed time."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from restore.io.writers import TMP_MARK

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT as a terminal would (POSIX)")


@pytest.fixture(scope="module")
def long_song(tmp_path_factory):
    """One 4-minute song: its denoise takes many seconds of work, its decode a second."""
    from restore.io.lame import encode_mp3
    from tests.support.examples import band
    folder = tmp_path_factory.mktemp("stop") / "in"
    folder.mkdir()
    (folder / "long.mp3").write_bytes(encode_mp3(band(30.0, seed=31), bitrate=128) * 8)
    return folder


def _start(library, out, variants):
    return subprocess.Popen([sys.executable, str(ROOT / "mp3restore.py"), "run", str(library), "--out", str(out),
                             "--no-report", "--variants", variants],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            env={**os.environ, "COLUMNS": "200"})


def _wait_for_log(path, words, proc, limit_s=300.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if path.exists() and words in path.read_text(encoding="utf-8"):
            return
        assert proc.poll() is None, f"the run ended before its log said {words!r}"
        time.sleep(0.01)
    raise AssertionError(f"the log never said {words!r}")


def test_first_ctrl_c_stops_inside_a_model_stage_not_after_it(tmp_path, long_song):
    """Mid-denoise (minutes of work on a long song, threads per channel): the run stops at
    its next progress report, long before the stage would have finished."""
    out = tmp_path / "out"
    proc = _start(long_song, out, "09")
    _wait_for_log(out / "_logs" / "long.log", "decoded", proc)   # the denoise starts right after
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    stopped_s = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert "stopping after this step" in err and "run the same command again" in err
    assert "leaked" not in err and "Traceback" not in err
    log = (out / "_logs" / "long.log").read_text(encoding="utf-8")
    assert "done 09_denoised" not in log                   # it stopped inside the stage
    assert not (out / "09_denoised" / "long.flac").exists()
    assert [p for p in out.rglob("*") if TMP_MARK in p.name] == []
    print(f"stopped {stopped_s:.2f} s after Ctrl+C")
    again = run_cli("run", str(long_song), "--out", str(out), "-q", "--variants", "09")
    assert again.returncode == 0, again.stderr
    assert (out / "09_denoised" / "long.flac").is_file()


def test_second_ctrl_c_stops_at_once_mid_decode(tmp_path, long_song):
    out, log = tmp_path / "out", tmp_path / "checkpoints.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "mp3restore.py"), "run", str(long_song), "--out", str(out),
                             "--no-report", "--variants", "01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, encoding="utf-8", env={**os.environ, "MP3RESTORE_CHECKPOINT_LOG": str(log)})
    t0 = time.monotonic()
    while not (log.exists() and "mid-audio 1" in log.read_text()):   # the baseline's FLAC is being written
        assert proc.poll() is None and time.monotonic() - t0 < 300, "the run never started writing"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not (out / "01_baseline" / "long.flac").exists()
    assert [p for p in out.rglob("*") if TMP_MARK in p.name] == []


def test_the_summary_after_ctrl_c_says_what_the_markers_say(tmp_path, long_song):
    """Ctrl+C inside the denoise, after the song's baseline was finished: --json still prints
    the summary, and it and _report/last_run.json list the baseline as done (its marker is
    written), with the exit code the process returns."""
    out, log = tmp_path / "out", tmp_path / "checkpoints.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "mp3restore.py"), "run", str(long_song), "--out", str(out),
                             "--no-report", "--variants", "01,09", "--json", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            env={**os.environ, "MP3RESTORE_CHECKPOINT_LOG": str(log)})
    t0 = time.monotonic()
    while not (log.exists() and "before-replace 2" in log.read_text()):   # the baseline's marker goes in place
        assert proc.poll() is None and time.monotonic() - t0 < 300, "the run never wrote the baseline's marker"
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=300)
    song_log = out / "_logs" / "long.log"
    assert proc.returncode == 130, err + (song_log.read_text(encoding="utf-8") if song_log.exists() else "")
    printed = json.loads(stdout)
    assert printed == json.loads((out / "_report" / "last_run.json").read_text())
    assert printed["exit_code"] == 130 and printed["interrupted"] is True
    markers = {(m.parent.name, m.name.removesuffix(".json")) for m in (out / "_done").rglob("*.json")}
    done = {(r["variant"], r["song"]) for r in printed["results"] if r["status"] in ("done", "skipped")}
    assert markers == done == {("01_baseline", "long.mp3")}


def test_ctrl_c_in_a_terminal_is_noticed_through_the_reporter_and_a_second_stops_at_once(capfd):
    """In a terminal the handler only sets the stop (no rich, no write: it may run inside an
    import); the notice is drawn by the reporter at its next event, once. A second Ctrl+C
    raises KeyboardInterrupt. In a pipe the handler writes the notice itself, bare."""
    import io
    from rich.console import Console
    from restore.events import Message, RecordingReporter
    from restore.ui.ctrlc import NOTICE, CtrlC
    screen = io.StringIO()
    ctrl_c = CtrlC(Console(file=screen, force_terminal=True))
    inner = RecordingReporter()
    reporter = ctrl_c.reporting(inner)
    reporter.handle(Message("info", "before"))
    ctrl_c._handler(signal.SIGINT, None)
    assert ctrl_c.stop.is_set() and screen.getvalue() == "" and capfd.readouterr().err == ""
    reporter.handle(Message("info", "after"))
    reporter.handle(Message("info", "again"))
    assert screen.getvalue().count(NOTICE) == 1 and len(inner.events) == 3
    with pytest.raises(KeyboardInterrupt):
        ctrl_c._handler(signal.SIGINT, None)

    piped = CtrlC(Console(file=io.StringIO()))
    piped._handler(signal.SIGINT, None)
    assert capfd.readouterr().err == NOTICE + "\n"
    piped.reporting(RecordingReporter()).handle(Message("info", "after"))
    assert capfd.readouterr().err == ""  # said once
