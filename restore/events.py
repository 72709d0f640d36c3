"""Progress as events: the pipeline emits them, a reporter shows them (rich in a terminal,
plain lines in a log, nothing in tests). Stages never import the UI."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RunStarted:
    songs: int        # songs with work to do
    jobs: int         # (song, variant) steps to run
    skipped: int      # steps already done


@dataclass(frozen=True)
class SongStarted:
    index: int        # 1-based among the songs with work
    song: str         # relative path, e.g. Artist/Album/Song.mp3
    seconds: float | None = None  # the song's duration, once known


@dataclass(frozen=True)
class SongProgress:
    song: str
    fraction: float   # 0..1 of this song's work
    doing: str        # e.g. "decode", "01_baseline"


@dataclass(frozen=True)
class SongFinished:
    song: str
    status: str       # "done", "failed", "busy" (another run holds it)
    reason: str       # one line; "" when done
    seconds: float


@dataclass(frozen=True)
class Message:
    level: str        # "info", "warning", or "debug" (a traceback, shown only under --debug)
    text: str         # may hold several lines (a traceback); reporters keep them


class Reporter(Protocol):
    def handle(self, event: object) -> None: ...


class NullReporter:
    def handle(self, event: object) -> None:
        pass


class RecordingReporter:
    """Keeps every event: for tests and for callers that render afterwards."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def handle(self, event: object) -> None:
        self.events.append(event)
