"""What a run did, song by song: the summary table, `--json` and `_report/last_run.json`."""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from restore.io.writers import write_bytes_atomic
from restore.status_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_REPORT_FAILED, EXIT_SONGS_FAILED



@dataclass
class JobResult:
    song: str                  # relative path (or the input path, for a file that never got a job)
    variant: str | None
    status: str                # "done", "skipped" (already done), "failed", "busy" (another run has it),
                               # "planned" (dry run), "unavailable" (a model or library it needs is missing)
    reason: str = ""           # one line; why it failed, or why it runs ("new", "input changed")
    seconds: float = 0.0
    output: str | None = None
    facts: dict | None = None
    worker: str | None = None  # the cluster worker that did it (host/name); None in a local run


@dataclass
class RunSummary:
    out_dir: Path
    results: list[JobResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    dry_run: bool = False
    interrupted: bool = False
    model_loads: dict[str, int] = field(default_factory=dict)  # stage -> times its model was loaded
    strict: bool = False       # --strict: unavailable variants make the exit code 1
    report_error: str | None = None  # why the compare report could not be written
    warnings: list[str] = field(default_factory=list)  # inputs skipped: a folder without MP3s, a link loop

    def counts(self) -> dict[str, int]:
        c = Counter(r.status for r in self.results)
        return {k: c.get(k, 0) for k in ("done", "skipped", "failed", "busy", "planned", "unavailable")}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        counts = self.counts()
        undone = counts["failed"] or counts["busy"] or (self.strict and counts["unavailable"]) or not self.results
        if undone:
            return EXIT_SONGS_FAILED
        return EXIT_REPORT_FAILED if self.report_error else EXIT_OK

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "exit_code": self.exit_code,
            "model_loads": self.model_loads,
            "report_error": self.report_error,
            "warnings": self.warnings,
            "results": [asdict(r) for r in self.results],
        }

    def write(self, path: Path) -> None:
        write_bytes_atomic(path, json.dumps(self.to_dict(), indent=1, default=str).encode("utf-8"), "writing the run summary")
