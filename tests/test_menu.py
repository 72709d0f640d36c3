"""The keyboard menu builds the same command the CLI takes and runs it: a scripted session
restores, resumes, rebuilds the report and makes a ghost."""
from __future__ import annotations

import io

import soundfile as sf
from rich.console import Console

from restore.ui.cli import main
from tests.support.examples import band
from restore.ui.menu import command_line, last_run, menu

from .conftest import write_mp3


class Script:
    """Answers the menu's questions in order, and records what was asked."""

    def __init__(self, answers: list):
        self.answers, self.asked = list(answers), []

    def _next(self, prompt):
        self.asked.append(prompt)
        return self.answers.pop(0)

    def choice(self, prompt, choices, default):
        answer = self._next(prompt)
        assert answer in choices, (prompt, answer, choices)
        return answer

    def text(self, prompt, default=""):
        answer = self._next(prompt)
        return default if answer is None else answer  # None: the person pressed Enter

    def confirm(self, prompt, default=True):
        return self._next(prompt)


def test_a_menu_session_restores_resumes_reports_and_ghosts(tmp_path, monkeypatch):
    monkeypatch.setenv("MP3RESTORE_CONFIG_DIR", str(tmp_path / "config"))
    src = band(2.0, seed=7)
    write_mp3(tmp_path / "My Music" / "song.mp3", src, bitrate=128)
    sf.write(str(tmp_path / "original.flac"), src.samples.T, src.rate)
    ran = []

    def run_cli(argv):
        ran.append(argv)
        return main([*argv, "-q", "--no-report"] if argv[0] == "run" else argv)

    script = Script([
        "1", f'"{tmp_path / "My Music"}" ', None, "01", "cpu", "song", True, True,  # restore, plan shown first
        "2", True,                                                                # resume: all done already
        "3", None, "",                                                            # report of the last output
        "4", str(tmp_path / "original.flac"), "", str(tmp_path / "ghost"), "128",  # ghost, encoded here
        "5",                                                                      # variants: a table, no command
        "q"])
    out = tmp_path / "My Music restored"
    console = Console(file=io.StringIO(), width=200)
    assert menu(run_cli, console, script) == 0
    assert script.answers == []
    restore = ["run", str(tmp_path / "My Music"), "--out", str(out), "--variants", "01", "--device", "cpu"]
    assert ran == [[*restore, "--dry-run"], restore, restore, ["report", str(out)],
                   ["ghost", str(tmp_path / "original.flac"), "--out", str(tmp_path / "ghost"), "--bitrate", "128"]]
    assert (out / "01_baseline" / "song.flac").is_file()
    assert (out / "_report" / "index.html").is_file()
    assert (tmp_path / "ghost" / "ghost.json").is_file()
    assert last_run() == restore
    text = console.file.getvalue()
    assert command_line(restore) in text.replace("\n", "")  # the same job as a pasteable command
    assert "11_offline_restore" in text


def test_no_arguments_without_a_terminal_is_a_usage_error(monkeypatch):
    """A script or a pipe calling `mp3restore` with nothing gets usage, not a menu waiting for keys."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main([]) == 2


def test_the_menu_serves_the_report_and_keeps_the_best(tmp_path, monkeypatch):
    monkeypatch.setenv("MP3RESTORE_CONFIG_DIR", str(tmp_path / "config"))
    write_mp3(tmp_path / "in" / "song.mp3", band(2.0, seed=1), bitrate=128)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "in"), "--out", str(out), "--variants", "01", "-q", "--no-report"]) == 0
    ran = []

    def run_cli(argv):
        ran.append(argv)
        return 0 if "--serve" in argv else main(argv)  # serving would wait for Ctrl+C

    script = Script(["7", str(out), "8", str(out), str(tmp_path / "lib"), "skip", True, True, "q"])
    assert menu(run_cli, Console(file=io.StringIO(), width=200), script) == 0
    keep = ["keep", str(out), "--to", str(tmp_path / "lib"), "--default", "skip"]
    assert ran == [["report", str(out), "--serve"], [*keep, "--dry-run"], keep]
    assert not (tmp_path / "lib").exists() or not list((tmp_path / "lib").rglob("*.flac"))  # nothing chosen: skipped
    script = Script(["8", str(out), str(tmp_path / "lib"), None, False, True, "q"])
    ran.clear()
    assert menu(run_cli, Console(file=io.StringIO(), width=200), script) == 0
    assert ran == [["keep", str(out), "--to", str(tmp_path / "lib"), "--default", "01_baseline"]]
    assert (tmp_path / "lib" / "song.flac").is_file()
