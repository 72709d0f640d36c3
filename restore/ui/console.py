"""Terminal rendering with rich: live progress (overall and per song, with ETA), the plan
and the summary table. Works in Windows CMD/PowerShell (rich handles the colours). Paths
are escaped so that a name with "[" or terminal codes cannot restyle the screen."""
from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from restore.errors import printable
from restore.events import Message, RunStarted, SongFinished, SongProgress, SongStarted
from restore.engine.summary import RunSummary

_STATUS_STYLE = {"done": "green", "skipped": "cyan", "failed": "bold red", "busy": "yellow", "planned": "magenta",
                 "unavailable": "yellow"}


def safe(text: object) -> str:
    return escape(printable(text))


class RichReporter:
    """Live progress bars in a terminal; use as a context manager around the run."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[progress.percentage]{task.percentage:>3.0f}%"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
        )
        self.overall = None
        self.songs: dict[str, tuple[object, str]] = {}  # song -> (its bar, its name): several at once on a cluster

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def handle(self, event: object) -> None:
        p = self.progress
        if isinstance(event, RunStarted):
            self.overall = p.add_task("[bold]all songs", total=max(event.songs, 1))
            if event.skipped:
                self.console.print(f"[cyan]{event.skipped} step(s) already done: skipped")
        elif isinstance(event, SongStarted):
            self._drop(event.song)
            name = safe(event.song)[-50:]
            self.songs[event.song] = (p.add_task(name, total=1000), name)
        elif isinstance(event, SongProgress) and event.song in self.songs:
            bar, name = self.songs[event.song]
            p.update(bar, completed=int(event.fraction * 1000), description=f"{name} [dim]- {safe(event.doing)}[/]")
        elif isinstance(event, SongFinished):
            self._drop(event.song)
            if self.overall is not None:
                p.advance(self.overall)
            if event.status != "done":
                style = _STATUS_STYLE.get(event.status, "")
                p.console.print(f"[{style}]{event.status}[/] {safe(event.song)}: {safe(event.reason)}")
        elif isinstance(event, Message):
            for line in event.text.rstrip("\n").split("\n"):  # a traceback (--debug) keeps its lines
                p.console.print(safe(line), style="dim" if event.level == "debug" else None)

    def _drop(self, song: str) -> None:
        if song in self.songs:
            self.progress.remove_task(self.songs.pop(song)[0])


class PlainReporter:
    """One line per finished song: for logs, pipes and CI, where bars would be noise."""

    def __init__(self, console: Console):
        self.console = console
        self.total = 0
        self.finished = 0  # songs finished: on a cluster they finish in any order
        self.t0 = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def handle(self, event: object) -> None:
        if isinstance(event, RunStarted):
            self.total = event.songs
            self.console.print(f"{event.songs} song(s) to do, {event.skipped} step(s) already done", highlight=False)
        elif isinstance(event, SongFinished):
            self.finished += 1
            line = (f"{time.strftime('%H:%M:%S')} [{self.finished}/{self.total}] {event.status} {printable(event.song)} "
                    f"({event.seconds:.1f} s)")
            if event.reason:
                line += f": {printable(event.reason)}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        elif isinstance(event, Message):
            for line in event.text.rstrip("\n").split("\n"):  # a traceback (--debug) keeps its lines
                self.console.print(printable(line), markup=False, highlight=False)


class QuietReporter(PlainReporter):
    """-q: no progress and no warnings (they are in the logs and the summary); only a
    --debug traceback reaches the console."""

    def handle(self, event: object) -> None:
        if isinstance(event, Message) and event.level == "debug":
            super().handle(event)


def reporter_for(console: Console, quiet: bool = False, plain: bool = False):
    """-q: QuietReporter; `plain` (a dry run) or no terminal: one line per event; else bars."""
    if quiet:
        return QuietReporter(console)
    return RichReporter(console) if console.is_terminal and not plain else PlainReporter(console)


def print_summary(console: Console, summary: RunSummary, quiet: bool = False) -> None:
    """The table a person reads at the end: one row per song and variant that did not
    simply get skipped (with `quiet`, -q: only those that failed or are busy elsewhere),
    then the counts."""
    hidden = ("skipped", "unavailable", "done", "planned") if quiet else ("skipped", "unavailable")
    rows = [r for r in summary.results if r.status not in hidden]
    if rows:
        title = "Plan (dry run: nothing written)" if summary.dry_run else "Summary"
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("song", overflow="fold")
        table.add_column("variant")
        table.add_column("status")
        table.add_column("why / seconds", overflow="fold")
        workers = any(r.worker for r in rows)  # a cluster run: which worker did each
        if workers:
            table.add_column("worker")
        for r in rows:
            style = _STATUS_STYLE.get(r.status, "")
            detail = r.reason if r.reason else f"{r.seconds:.1f} s"
            cells = [safe(r.song), r.variant or "-", f"[{style}]{r.status}[/]", safe(detail)]
            table.add_row(*cells, *([safe(r.worker or "-")] if workers else []))
        console.print(table)
    c = summary.counts()
    parts = [f"[green]{c['done']} done[/]", f"[cyan]{c['skipped']} skipped (already done)[/]",
             f"[bold red]{c['failed']} failed[/]" if c["failed"] else "0 failed"]
    if c["busy"]:
        parts.append(f"[yellow]{c['busy']} left to another run[/]")
    if c["planned"]:
        parts.append(f"[magenta]{c['planned']} to do[/]")
    if c["unavailable"]:
        parts.append(f"[yellow]{c['unavailable']} unavailable[/]")
    console.print(", ".join(parts) + f" in {summary.seconds:.1f} s. Output: {safe(summary.out_dir)}")
    for reason in sorted({r.reason for r in summary.results if r.status == "unavailable"}):
        variants = sorted({r.variant for r in summary.results if r.status == "unavailable" and r.reason == reason})
        console.print(f"[yellow]unavailable[/] {', '.join(variants)}: {safe(reason)}", soft_wrap=True)
    for line in summary.warnings:
        console.print(f"[yellow]warning:[/] {safe(line)}", soft_wrap=True)
    if not summary.results:
        console.print("[bold red]No MP3 files found[/] in what you gave: nothing to do.")
    if summary.report_error:
        console.print(f"[bold red]the compare report failed:[/] {safe(summary.report_error)}", soft_wrap=True)
    if summary.interrupted:
        console.print("[yellow]Interrupted: run the same command again to resume.")


def print_device(console: Console) -> None:
    """The device model stages would use, and how to fix a CPU-only torch beside a GPU."""
    from restore.models.devices import device_line
    line, warning = device_line()
    console.print(f"[bold]model stages run on[/] {safe(line)}", soft_wrap=True)
    if warning:
        console.print(f"[bold yellow]warning:[/] {safe(warning)}", soft_wrap=True)
