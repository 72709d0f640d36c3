"""The keyboard menu builds the same command the CLI takes and runs it: a scripted session
restores, resumes, rebuilds the report and makes a ghost; the arrow-key prompts are driven
through prompt_toolkit's own pipe input (arrow keys, space, Ctrl+C, bad answers); the
numbered prompts serve where there is no console; the pasteable line is quoted per shell."""
from __future__ import annotations

import io
import shlex

import pytest
import soundfile as sf
from rich.console import Console

from restore.ui.ask import ArrowAsk, Cancelled, NumberedAsk, Pick
from restore.ui.cli import main
from restore.ui.menu import command_line, last_run, menu
from tests.support.examples import band

from .conftest import write_mp3

DOWN, UP, ENTER, SPACE, CTRL_C = "\x1b[B", "\x1b[A", "\r", " ", "\x03"


class Script:
    """Answers the menu's questions in order, and records what was asked. None: Enter
    (the default); Cancelled: Ctrl+C at that prompt."""

    def __init__(self, answers: list):
        self.answers, self.asked = list(answers), []

    def _next(self, prompt):
        self.asked.append(prompt)
        answer = self.answers.pop(0)
        if answer is Cancelled:
            raise Cancelled
        return answer

    def select(self, prompt, picks, default=None):
        answer = self._next(prompt)
        answer = default if answer is None else answer
        assert answer in [p.value for p in picks if not p.why_not], (prompt, answer)
        return answer

    def checkbox(self, prompt, picks):
        answer = self._next(prompt)
        return [p.value for p in picks if p.checked and not p.why_not] if answer is None else answer

    def path(self, prompt, default="", must_exist=False):
        answer = self._next(prompt)
        return default if answer is None else answer

    def text(self, prompt, default=""):
        answer = self._next(prompt)
        return default if answer is None else answer

    def confirm(self, prompt, default=True):
        answer = self._next(prompt)
        return default if answer is None else answer


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("MP3RESTORE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setattr("webbrowser.open", lambda url: pytest.fail("the test said no to opening the report"))


def test_a_menu_session_restores_resumes_reports_and_ghosts(tmp_path, config, monkeypatch):
    src = band(2.0, seed=7)
    write_mp3(tmp_path / "My Music" / "song.mp3", src, bitrate=128)
    sf.write(str(tmp_path / "original.flac"), src.samples.T, src.rate)
    ran = []

    def run_cli(argv):
        ran.append(argv)
        return main([*argv, "-q", "--no-report"] if argv[0] == "run" else argv)

    monkeypatch.setattr("restore.ui.menu.song_slots", lambda: [1, 2])  # as on any machine with Dask and 2 cores
    script = Script([
        "restore", f'"{tmp_path / "My Music"}" ', None, ["01_baseline"], "cpu", "2", True, True,  # plan, then start
        "resume", True,                                                                       # all done already
        "report", None, "", False,                                   # report of the last output; do not open it
        "ghost", str(tmp_path / "original.flac"), "", str(tmp_path / "ghost"), "128",         # encoded here
        "variants",                                                                           # a table, no command
        "quit"])
    out = tmp_path / "My Music restored"
    console = Console(file=io.StringIO(), width=200)
    assert menu(run_cli, console, script) == 0
    assert script.answers == []
    restore = ["run", str(tmp_path / "My Music"), "--out", str(out), "--variants", "01_baseline", "--device", "cpu",
               "--jobs", "2"]
    assert ran == [[*restore, "--dry-run"], restore, restore, ["report", str(out)],
                   ["ghost", str(tmp_path / "original.flac"), "--out", str(tmp_path / "ghost"), "--bitrate", "128"]]
    assert (out / "01_baseline" / "song.flac").is_file()
    assert (out / "_report" / "index.html").is_file()
    assert (tmp_path / "ghost" / "ghost.json").is_file()
    assert last_run() == restore
    text = console.file.getvalue()
    assert command_line(restore) in text.replace("\n", "")  # the same job as a pasteable command
    assert "11_offline_restore" in text


def test_restore_with_the_defaults_takes_the_path_and_one_enter(tmp_path, config):
    write_mp3(tmp_path / "in" / "a.mp3", band(1.0))
    ran = []
    script = Script(["quick", str(tmp_path / "in"), None, "quit"])  # the path, then Enter on "Start"
    assert menu(lambda argv: ran.append(argv) or 0, Console(file=io.StringIO()), script) == 0
    assert ran == [["run", str(tmp_path / "in"), "--out", str(tmp_path / "in restored")]]
    assert last_run() == ran[0]


def test_ctrl_c_anywhere_goes_back_and_only_started_runs_are_remembered(tmp_path, config):
    write_mp3(tmp_path / "in" / "a.mp3", band(1.0))
    ran = []
    script = Script(["restore", str(tmp_path / "in"), Cancelled,     # Ctrl+C at the output folder: back
                     "quick", str(tmp_path / "in"), None,            # a run that fails to start (usage error)
                     Cancelled])                                     # Ctrl+C at the menu: leave
    console = Console(file=io.StringIO())
    assert menu(lambda argv: ran.append(argv) or 2, console, script) == 2
    assert len(ran) == 1 and last_run() is None
    assert "cancelled: back to the menu" in console.file.getvalue()


def _arrow(keys: str, ask):
    """Run one ArrowAsk question with `keys` typed into prompt_toolkit's pipe input."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    with create_pipe_input() as inp:
        inp.send_text(keys)
        return ask(ArrowAsk(input=inp, output=DummyOutput()))


def test_arrow_keys_select_and_space_ticks():
    picks = [Pick("a", "first"), Pick("b", "second", why_not="cannot run here"), Pick("c", "third")]
    assert _arrow(ENTER, lambda a: a.select("?", picks, "a")) == "a"
    assert _arrow(DOWN + ENTER, lambda a: a.select("?", picks, "a")) == "c"      # the disabled one is skipped
    assert _arrow(DOWN + UP + ENTER, lambda a: a.select("?", picks, "a")) == "a"
    assert _arrow(DOWN + DOWN + ENTER, lambda a: a.select("?", picks, "a")) == "a"  # the list wraps round
    ticks = [Pick("01", "baseline", checked=True), Pick("02", "x", why_not="no model"), Pick("11", "offline")]
    assert _arrow(ENTER, lambda a: a.checkbox("?", ticks)) == ["01"]
    assert _arrow(DOWN + SPACE + ENTER, lambda a: a.checkbox("?", ticks)) == ["01", "11"]


def test_arrow_prompts_check_each_answer_and_turn_ctrl_c_into_cancel(tmp_path):
    (tmp_path / "there").mkdir()
    # A path that does not exist is refused in place; the person corrects it and goes on.
    typed = str(tmp_path / "nowhere") + ENTER + "\x7f" * len("nowhere") + "there" + ENTER
    assert _arrow(typed, lambda a: a.path("?", must_exist=True)) == str(tmp_path / "there")
    for ask in (lambda a: a.select("?", [Pick("a", "a")]), lambda a: a.checkbox("?", [Pick("a", "a")]),
                lambda a: a.path("?"), lambda a: a.text("?"), lambda a: a.confirm("?")):
        with pytest.raises(Cancelled):
            _arrow(CTRL_C, ask)


def test_numbered_prompts_take_numbers_names_and_ask_again():
    from restore.engine.variants import VARIANTS
    picks = [Pick(name, name) for name in VARIANTS]
    console = Console(file=io.StringIO())
    stdin = io.StringIO("1,9,11\n7\n98\n09_denoised\nzz\n2\n")
    ask = NumberedAsk(console)
    import sys
    old, sys.stdin = sys.stdin, stdin
    try:
        assert ask.checkbox("variants", picks) == ["01_baseline", "09_denoised", "11_offline_restore"]
        chosen = ask.select("one", picks)        # "7" is the 7th listed, whatever its number
        assert chosen == list(VARIANTS)[6]
        assert ask.select("one", picks) == "09_denoised"  # 98 refused, then a name
        assert ask.select("one", [Pick("x", "x"), Pick("y", "y")]) == "y"  # zz refused, then 2
        with pytest.raises(Cancelled):  # end of input
            ask.text("more?")
    finally:
        sys.stdin = old
    assert "choose one of the numbers shown" in console.file.getvalue()


@pytest.mark.parametrize("arg", [r"C:\Users\me\My Music", "100% done", "$HOME and `tick`", "it's", r"ends\\", "plain.mp3"])
def test_the_pasteable_line_is_quoted_for_each_shell(arg):
    assert shlex.split(command_line(["run", arg], "posix")) == ["mp3restore", "run", arg]
    ps = command_line(["run", arg], "powershell")
    cmd = command_line(["run", arg], "cmd")
    if arg == "plain.mp3":
        assert ps.endswith(" plain.mp3") and cmd.endswith(" plain.mp3")
        return
    # PowerShell: one single-quoted word, ' doubled, nothing expanded inside
    assert ps == "mp3restore run '" + arg.replace("'", "''") + "'"
    # CMD: double quotes, % outside them as ^%, a trailing backslash doubled before the quote
    assert cmd.startswith('mp3restore run "') and '"^%"' in cmd if "%" in arg else "^%" not in cmd
    if arg.endswith("\\"):
        assert cmd.endswith('\\\\\\\\"')


def test_no_arguments_without_a_terminal_is_a_usage_error(monkeypatch):
    """A script or a pipe calling `mp3restore` with nothing gets usage, not a menu waiting for keys."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main([]) == 2


def test_without_a_console_the_menu_says_so_and_numbers_it(monkeypatch):
    from restore.ui.ask import ask_for
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    console = Console(file=io.StringIO())
    assert isinstance(ask_for(console), NumberedAsk)
    assert "cannot take arrow keys" in console.file.getvalue()



def test_the_menu_serves_the_report_and_keeps_the_best(tmp_path, config):
    write_mp3(tmp_path / "in" / "song.mp3", band(2.0, seed=1), bitrate=128)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "in"), "--out", str(out), "--variants", "01", "-q", "--no-report"]) == 0
    ran = []

    def run_cli(argv):
        ran.append(argv)
        return 0 if "--serve" in argv else main(argv)  # serving would wait for Ctrl+C

    script = Script(["choose", str(out), "keep", str(out), str(tmp_path / "lib"), "skip", True, True, "quit"])
    assert menu(run_cli, Console(file=io.StringIO(), width=200), script) == 0
    keep = ["keep", str(out), "--to", str(tmp_path / "lib"), "--default", "skip"]
    assert ran == [["report", str(out), "--serve"], [*keep, "--dry-run"], keep]
    assert not (tmp_path / "lib").exists() or not list((tmp_path / "lib").rglob("*.flac"))  # nothing chosen: skipped
    script = Script(["keep", str(out), str(tmp_path / "lib"), None, False, "quit"])
    ran.clear()
    assert menu(run_cli, Console(file=io.StringIO(), width=200), script) == 0
    assert ran == [["keep", str(out), "--to", str(tmp_path / "lib"), "--default", "01_baseline"]]
    assert (tmp_path / "lib" / "song.flac").is_file()
