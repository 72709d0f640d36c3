"""A run keeps the computer from sleeping until it ends, however it ends. The operating
systems' sleep services cannot exist here (no Windows API; no logind in a container), so
Windows' is a recording stand-in and logind's a stand-in `systemd-inhibit` on PATH that
records how it was called and then runs its command, as the real one does."""
import os
import signal
import subprocess
import sys
import time

import pytest

from restore.ui import keepawake
from tests.support.examples import band

from .conftest import ROOT, run_cli, write_mp3

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="the stand-in systemd-inhibit is a POSIX shell script")


class FakeKernel32:
    def __init__(self, ok: bool = True):
        self.calls, self.ok = [], ok

    def SetThreadExecutionState(self, flags):  # noqa: N802 (the Windows API's name)
        self.calls.append(flags)
        return 0x80000000 if self.ok else 0


def test_windows_holds_off_sleep_inside_the_block_and_clears_it_after_an_error():
    api = FakeKernel32()
    with pytest.raises(RuntimeError):
        with keepawake._windows(api) as how:
            assert how == "SetThreadExecutionState"
            assert api.calls == [keepawake.ES_CONTINUOUS | keepawake.ES_SYSTEM_REQUIRED]
            raise RuntimeError("a run that fails")
    assert api.calls[-1] == keepawake.ES_CONTINUOUS  # the system may sleep again


def test_windows_refusing_is_no_error():
    api = FakeKernel32(ok=False)
    with keepawake._windows(api) as how:
        assert how is None
    assert len(api.calls) == 1


@pytest.fixture
def inhibitor(tmp_path):
    """A stand-in systemd-inhibit first on PATH; returns (env, the file its calls go to)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "inhibit.log"
    bin_dir.mkdir()
    script = bin_dir / "systemd-inhibit"
    script.write_text('#!/bin/sh\n'
                      'if [ "$1" = "--list" ]; then exit 0; fi\n'
                      'echo "$$ $*" >> "$INHIBIT_LOG"\n'
                      'while [ "$#" -gt 0 ]; do case "$1" in --*) shift;; *) break;; esac; done\n'
                      'exec "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "INHIBIT_LOG": str(calls)}, calls


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie has ended
        return fh.read().split(")")[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"the inhibitor {pid} outlived its run"
        time.sleep(0.01)


@posix_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="logind is Linux's")
def test_a_run_holds_a_sleep_inhibitor_until_it_ends(tmp_path, inhibitor):
    env, calls = inhibitor
    write_mp3(tmp_path / "in" / "song.mp3", band(1.0))
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "keeping the computer from sleeping until the run ends (systemd-inhibit" in proc.stderr
    pid, args = calls.read_text().split(" ", 1)
    assert "--what=sleep:idle" in args and "--mode=block" in args and "--who=mp3restore" in args
    wait_gone(int(pid))
    # Not for a dry run, and not when the person allows sleep.
    calls.unlink()
    for extra in ("--dry-run", "--allow-sleep"):
        proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "out2"), extra, env=env)
        assert proc.returncode == 0 and "keeping the computer" not in proc.stderr
    assert not calls.exists()


@posix_only
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="logind is Linux's")
def test_the_inhibitor_ends_with_a_killed_run(tmp_path, inhibitor):
    env, calls = inhibitor
    code = ("import os, signal; from restore.ui.keepawake import keep_awake\n"
            "with keep_awake() as how:\n"
            "    print(how, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.strip() == "systemd-inhibit"
    wait_gone(int(calls.read_text().split()[0]))


def test_without_a_sleep_service_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no systemd-inhibit, no caffeinate
    if sys.platform == "win32":
        pytest.skip("Windows always has the API")
    with keepawake.keep_awake() as how:
        assert how is None
