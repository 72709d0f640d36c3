"""`mp3restore keep OUT --to LIBRARY`: the restored library from the report's choices
(restore.report.keep), and `mp3restore report OUT --serve`: the report on 127.0.0.1 so its
pages save the choices (restore.report.serve). Exit codes: 0 done, 1 some songs failed,
2 a usage problem, 3 the library or report cannot be written."""
from __future__ import annotations

import argparse

from rich.console import Console

from restore.engine.scan import clean_user_path
from restore.errors import RestoreError, UsageError
from restore.status_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP, EXIT_USAGE
from restore.ui.commands import jobs_count
from restore.ui.console import safe


def add_keep_parser(subparsers) -> argparse.ArgumentParser:
    k = subparsers.add_parser(
        "keep", help="build the restored library from the choices made in the report",
        description="Copy each song's chosen variant (chosen in the report, saved in OUT/_report/choices.json), "
                    "or --default for songs with no choice, into LIBRARY, mirroring the input's folders: FLAC "
                    "with its tags and cover art, ReplayGain 2.0 track and album gain, and tags saying which "
                    "variant it is and how it was made. Resumable: a rerun writes only what changed.")
    k.add_argument("out", metavar="OUTDIR", help="the folder a run wrote (with 01_baseline/ etc. and _report/)")
    k.add_argument("--to", required=True, metavar="LIBRARY", help="the library folder to create or update")
    k.add_argument("--default", default="01_baseline", metavar="VARIANT",
                   help="what songs with no choice get: a variant folder name, or 'skip' (default: 01_baseline)")
    k.add_argument("--dry-run", action="store_true", help="show what would be written; write nothing")
    k.add_argument("--jobs", "-j", type=jobs_count, default=1, metavar="N",
                   help="songs measured at once (ReplayGain), each in its own process (one core each); default 1")
    return k


def keep_command(args: argparse.Namespace, console: Console) -> int:
    from restore.report.keep import keep
    say = lambda line: console.print(safe(line), soft_wrap=True)  # noqa: E731
    try:
        summary = keep(clean_user_path(args.out), clean_user_path(args.to), args.default, args.dry_run, log=say,
                       jobs=args.jobs)
    except RestoreError as exc:
        console.print(f"[bold red]error:[/] {safe(exc.one_line())}", soft_wrap=True)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_SETUP
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted. Songs already kept are complete; run the same command again to go on.")
        return EXIT_INTERRUPTED
    say(("dry run: " if args.dry_run else "") + summary.line())
    return summary.exit_code


def serve_command(console: Console, out: str, port: int) -> int:
    """Serve the (just built) report until Ctrl+C."""
    from restore.report.serve import serve
    say = lambda line: console.print(safe(line), soft_wrap=True)  # noqa: E731

    def ready(server) -> None:
        say(f"serving the report at {server.url} (choices are saved to _report/choices.json); Ctrl+C stops")
    try:
        serve(clean_user_path(out), port, log=say, ready=ready)
    except OSError as exc:
        console.print(f"[bold red]error:[/] cannot listen on 127.0.0.1:{port}: {safe(exc.strerror or exc)}", soft_wrap=True)
        return EXIT_SETUP
    say("report server stopped")
    return EXIT_OK
