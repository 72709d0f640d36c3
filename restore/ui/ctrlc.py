"""Ctrl+C during a run: the first asks the run to stop at its next decoded block, model
chunk or step, and says so; the second stops at once (KeyboardInterrupt).

The signal handler only sets the run's stop event and, where stderr is a pipe or a file,
writes the notice with one bare write. It must do no more: a handler can run in the middle
of an import (torch's, a model library's), and printing through rich or importing from
there can break importlib's lock bookkeeping (a KeyError on the thread's id, which the stage
at work then reports as its own "internal error"). In a terminal the notice goes through the
run's reporter instead, on the main thread, at its next event: rich's live display has to
draw it, or its next refresh would overwrite a bare write.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from rich.console import Console

NOTICE = "stopping after this step (press Ctrl+C again to stop now)"


class CtrlC:
    """`with CtrlC(console) as ctrl_c:` installs the handler (and restores the previous one
    after); `ctrl_c.stop` is the run's stop event; `ctrl_c.reporting(reporter)` wraps the
    run's reporter so that it shows the notice in a terminal."""

    def __init__(self, console: Console):
        self.console = console
        self.stop = threading.Event()
        self.said = False
        self.err_fd: int | None = None
        if not console.is_terminal:
            try:
                self.err_fd = sys.__stderr__.fileno()
            except (AttributeError, OSError, ValueError):  # no real stderr (a GUI launcher, a test's capture)
                self.err_fd = None

    def __enter__(self) -> "CtrlC":
        self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handler(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt   # the second: stop now
        self.stop.set()
        if self.err_fd is not None:
            self.said = True
            try:
                os.write(self.err_fd, NOTICE.encode("ascii") + b"\n")
            except OSError:
                pass

    def reporting(self, reporter) -> "_Noticing":
        return _Noticing(self, reporter)


class _Noticing:
    """The run's reporter, which first shows the stop notice once a stop was asked for."""

    def __init__(self, ctrl_c: CtrlC, inner):
        self.ctrl_c, self.inner = ctrl_c, inner

    def handle(self, event: object) -> None:
        if self.ctrl_c.stop.is_set() and not self.ctrl_c.said:
            self.ctrl_c.said = True
            self.ctrl_c.console.print(f"[yellow]{NOTICE}[/]", highlight=False)
        self.inner.handle(event)
