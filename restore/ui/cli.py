"""Command line: `mp3restore run INPUT... --out DIR`. Builds a RunConfig, calls the library,
renders with rich. Exit codes (restore/status_codes.py): 0 all done, 1 some songs failed or left undone, 2 usage error, 3 the
output folder is unusable, 4 the compare report failed, 130 interrupted (Ctrl+C)."""
from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import sys

from rich.console import Console

from restore import __version__
from restore.engine.config import VERIFY_LEVELS, RunConfig
from restore.ui.console import print_device, print_summary, reporter_for, safe
from restore.errors import RestoreError, UsageError
from restore.models.store import ENV_MODELS, default_models_dir
from restore.ui.commands import jobs_count
from restore.ui.commands.ghost import add_ghost_parser, ghost_command
from restore.ui.commands.keep import add_keep_parser, keep_command, serve_command
from restore.ui.commands.models import models_command
from restore.ui.ctrlc import CtrlC
from restore.ui.keepawake import keep_awake
from restore.engine.pathmap import PathMap
from restore.engine.run import RunInterrupted, run
from restore.engine.scan import clean_user_path
from restore.status_codes import EXIT_INTERRUPTED, EXIT_SETUP, EXIT_USAGE
from restore.engine.summary import RunSummary
from restore.engine.variants import VARIANTS, resolve_variants


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mp3restore", description="Restore MP3s into side-by-side FLAC variants to A/B.")
    p.add_argument("--version", action="version", version=f"mp3restore {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="restore MP3 files or folders (resumable)")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="MP3 files or folders (searched recursively)")
    r.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder: one subfolder per variant")
    r.add_argument("--variants", "-v", metavar="LIST", help="comma-separated variants, numbers or 'all' (default: the default set; see `mp3restore variants`)")
    r.add_argument("--dry-run", action="store_true", help="show what would run and what is already done; write nothing")
    r.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    r.add_argument("--verify", choices=VERIFY_LEVELS, default="quick",
                   help="resume check: 'quick' hashes files only when size or mtime changed; 'full' re-hashes all")
    r.add_argument("--redo", action="store_true", help="redo every step even if its marker says done")
    r.add_argument("--accept-damaged", action="store_true", help="restore truncated or damaged MP3s as far as they go (with a warning)")
    r.add_argument("--strict", action="store_true",
                   help="an asked-for variant that cannot run here (a missing model) fails the run (exit 1), for overnight scripts")
    r.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto",
                   help="where model stages run (auto: CUDA, then Apple MPS, then the CPU)")
    r.add_argument("--models-dir", metavar="DIR", help=f"the models folder (default: ${ENV_MODELS} or {default_models_dir()})")
    r.add_argument("--order", choices=("song", "stage"), default="song",
                   help="song: all variants of a song, then the next (earliest results, default); "
                        "stage: one variant across all songs, then the next (fewest model loads)")
    r.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE", dest="settings",
                   help="a stage option, e.g. --set bwe_audiosr.ddim_steps=25 --set denoise.atten_db=9 "
                        "(repeatable; the README lists each stage's options)")
    r.add_argument("--trust-model-file", action="append", default=[], metavar="PATH", dest="trusted",
                   help="load this model file even if it is not the published one, unpickling it in full if it "
                        "needs that, which runs whatever the file names (repeatable; the log says so)")
    r.add_argument("--stems-from", metavar="DIR",
                   help="stems made elsewhere (UVR, audio-separator, an earlier 04_stems), used instead of Demucs "
                        "for 04-07: DIR/<song path without .mp3>/<stem>.flac or <Song>_(<Stem>).flac")
    r.add_argument("--cluster", metavar="tcp://HOST:8786",
                   help="run the songs on the workers of this Dask scheduler (one task per song; needs the "
                        "cluster extra); every worker must see the inputs and the output folder")
    r.add_argument("--jobs", "-j", type=jobs_count, default=1, metavar="N",
                   help="songs at once on this machine, each in its own process (one core each; songs with a "
                        "model stage still one at a time; needs the cluster extra); default 1")
    r.add_argument("--path-map", action="append", default=[], metavar="CLIENT=WORKER", dest="path_map",
                   help=r"with --cluster: a folder the workers mount elsewhere, e.g. 'Z:\music=/mnt/nas/music' (repeatable)")
    r.add_argument("--no-report", action="store_true", help="do not write the compare report (_report/) at the end")
    r.add_argument("--reference", metavar="PATH", help="lossless originals (file or folder, matched by name) for the report")
    r.add_argument("--tag-codepage", type=_codepage, metavar="CP",
                   help="the code page old taggers wrote tag text in where it is neither ASCII nor UTF-8, e.g. cp1251 "
                        "(Cyrillic), cp1250 (Central European), shift_jis; default: Latin-1, as the tags say")
    r.add_argument("--allow-sleep", action="store_true",
                   help="let the computer sleep during the run (by default it is kept awake until the run ends)")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress display, only the summary")
    r.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")

    sub.add_parser("menu", help="the keyboard menu (also: no arguments at all, in a terminal)")
    vp = sub.add_parser("variants", help="list the variants and whether each can run here")
    vp.add_argument("--models-dir", metavar="DIR", help="the models folder")
    vp.add_argument("--options", action="store_true", help="list every stage's options (--set STAGE.KEY=VALUE) instead")
    vp.add_argument("--markdown", action="store_true", help="with --options: as the README's markdown tables")

    rp = sub.add_parser("report", help="(re)write the compare report of an output folder")
    rp.add_argument("out", metavar="OUTDIR", help="the folder a run wrote (with 01_baseline/ etc.)")
    rp.add_argument("--reference", metavar="PATH", help="lossless originals (file or folder, matched by name)")
    rp.add_argument("--jobs", "-j", type=jobs_count, default=1, metavar="N",
                    help="songs measured at once, each in its own process (one core each); default 1")
    rp.add_argument("--serve", action="store_true",
                    help="then serve it on 127.0.0.1 so its pages save your choices to _report/choices.json (Ctrl+C stops)")
    rp.add_argument("--port", type=int, default=8765, metavar="N", help="with --serve: the port (0: any free one; default 8765)")

    add_keep_parser(sub)

    add_ghost_parser(sub)

    m = sub.add_parser("models", help="list, fetch or verify the model files")
    m.add_argument("action", nargs="?", choices=("list", "fetch", "verify"), default="list")
    m.add_argument("name", nargs="?", help="model name (fetch: required; verify: default all)")
    m.add_argument("--models-dir", metavar="DIR", help="the models folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (restore/status_codes.py). A Ctrl+C that
    arrives before a run has set up its own handling (while starting up, in a prompt) ends
    with one line and exit code 130, never a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]Interrupted.[/]")
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    console = Console(stderr=True, highlight=False)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv == ["menu"]:  # no arguments: the keyboard menu, where a person can answer it
        if argv or sys.stdin.isatty():
            from restore.ui.menu import menu
            return menu(run_cli=main)  # the menu runs what it builds through this CLI
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, bad usage is 2
        return int(exc.code or 0)
    if args.command == "variants":
        return options_command(console, args.markdown) if args.options else variants_command(console, args.models_dir)
    if args.command == "models":
        return models_command(console, args.action, args.name, args.models_dir)
    if args.command == "ghost":
        return ghost_command(args, console)
    if args.command == "report":
        code = report_command(console, args.out, args.reference, args.jobs)
        return serve_command(console, args.out, args.port) if code == 0 and args.serve else code
    if args.command == "keep":
        return keep_command(args, console)
    try:
        config = RunConfig(
            inputs=args.inputs, out_dir=clean_user_path(args.out), variants=resolve_variants(args.variants),
            verify=args.verify, redo=args.redo, accept_damaged=args.accept_damaged, strict=args.strict,
            dry_run=args.dry_run, debug=args.debug, device=args.device,
            models_dir=clean_user_path(args.models_dir) if args.models_dir else None, order=args.order,
            report=not args.no_report, reference=clean_user_path(args.reference) if args.reference else None,
            stage_options=parse_settings(args.settings), stems_from=_stems_folder(args.stems_from),
            trusted_model_files=tuple(clean_user_path(t) for t in args.trusted),
            cluster=args.cluster, path_map=tuple(args.path_map), jobs=args.jobs, tag_codepage=args.tag_codepage,
        )
        if args.cluster and args.jobs > 1:
            raise UsageError("--jobs is for this machine; with --cluster start as many workers as songs should run at once")
        if args.path_map and not args.cluster:
            raise UsageError("--path-map is for --cluster runs: give the scheduler's address with --cluster")
        PathMap.parse(config.path_map)  # a malformed map is a usage error before anything runs
        return _run(config, console, args.json, args.quiet, args.allow_sleep)
    except RestoreError as exc:  # usage errors and an unusable output folder: one line, no traceback
        console.print(f"[bold red]error:[/] {safe(exc.one_line())}", soft_wrap=True)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_SETUP


def _codepage(raw: str) -> str:
    """--tag-codepage CP: a code page Python knows, by its canonical name."""
    try:
        return codecs.lookup(raw).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a code page Python knows (cp1251, cp1250, shift_jis, ...)")


def _stems_folder(raw: str | None):
    """--stems-from DIR, cleaned; a usage error if it is not a folder."""
    if raw is None:
        return None
    folder = clean_user_path(raw)
    if not folder.is_dir():
        raise UsageError("--stems-from: no such folder", folder)
    return folder


def parse_settings(settings: list[str]) -> dict[str, dict[str, str]]:
    """["denoise.atten_db=9", ...] -> {"denoise": {"atten_db": "9"}}. The stage must exist;
    its own code checks the key and the value when the run is planned."""
    from restore.stages import _REGISTRY
    options: dict[str, dict[str, str]] = {}
    for item in settings:
        name, eq, value = item.partition("=")
        stage, dot, key = name.strip().partition(".")
        if not eq or not dot or not stage or not key:
            raise UsageError(f"--set {item!r} is not STAGE.KEY=VALUE", hint="e.g. --set denoise.atten_db=9")
        if stage not in _REGISTRY:
            raise UsageError(f"--set {item!r}: no stage named {stage!r}", hint="stages: " + ", ".join(sorted(_REGISTRY)))
        options.setdefault(stage, {})[key.strip()] = value.strip()
    return options


def variants_command(console: Console, models: str | None) -> int:
    """Every variant, and whether it can run here (and if not, why: a missing model or package)."""
    from restore.engine.plan import variant_status
    from restore.stages import StageEnv
    env = StageEnv(models_dir=clean_user_path(models) if models else None)
    status = variant_status(VARIANTS.values(), env)
    print_device(console)
    for v in VARIANTS.values():
        why = status[v.name]
        state = f"[yellow]unavailable:[/] {safe(why)}" if why else "[green]ready[/]"
        console.print(f"[bold]{v.name}[/]  {safe(v.title)}\n    {state}", soft_wrap=True)
        for line in _needs(v, env):
            console.print(f"    [dim]{safe(line)}[/]", soft_wrap=True)
    return 0


def _needs(variant, env) -> list[str]:
    """What a variant needs besides its models, in words: its stems' source and routes, and
    whether it is in the default set."""
    from restore.stages import get_stage
    lines = []
    if "separate" in variant.steps:
        lines.append("stems: Demucs (--set separate.model=...), or your own from UVR or audio-separator: --stems-from DIR")
    if "route" in variant.steps:
        route = get_stage("route", env)
        lines.append("routes: " + "; ".join(f"{stem}: {', '.join(route.route_of(stem)) or 'none'}"
                                             for stem in route.opts) + " (--set route.STEM=...)")
    if "remix" in variant.steps:
        lines.append("remix: the stems + what the separation left out; per-stem gains --set remix.STEM_db=...")
    if not variant.default:
        lines.append("not in the default set: run it by name (--variants " + variant.name[:2] + ")")
    return lines


def options_command(console: Console, markdown: bool = False) -> int:
    """Every stage's options (`--set STAGE.KEY=VALUE`), from the stages' declarations; with
    markdown, the README's tables (one per stage, between `<!-- options:STAGE -->` marks)."""
    from rich.table import Table

    from restore.stages import get_stage, stage_names
    from restore.stages.options import markdown_table, option_rows
    if markdown:
        for name in stage_names():
            if get_stage(name).options:
                sys.stdout.write(f"<!-- options:{name} -->\n{markdown_table(name, get_stage(name).options)}\n<!-- /options -->\n\n")
        return 0
    table = Table(title="Stage options: --set STAGE.KEY=VALUE", title_style="bold")
    for column in ("option", "default", "values", "what it does"):
        table.add_column(column, overflow="fold")
    for name in stage_names():
        for row in option_rows(name, get_stage(name).options):
            table.add_row(*(safe(cell) for cell in row))
    console.print(table)
    return 0


def report_command(console: Console, out: str, reference: str | None, jobs: int = 1) -> int:
    from restore.report.build import build_report
    try:
        folder = clean_user_path(out)
        if not folder.is_dir():
            raise UsageError("no such output folder", folder)
        index = build_report(folder, clean_user_path(reference) if reference else None,
                             log=lambda line: console.print(safe(line), soft_wrap=True), jobs=jobs)
    except RestoreError as exc:  # a missing folder (usage), or the report cannot be written
        console.print(f"[bold red]error:[/] {safe(exc.one_line())}", soft_wrap=True)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_SETUP
    console.print(f"report: {safe(index)}", soft_wrap=True)
    return 0


def _run(config: RunConfig, console: Console, as_json: bool, quiet: bool, allow_sleep: bool = False) -> int:
    summary: RunSummary | None = None
    reporter = reporter_for(console, quiet, plain=config.dry_run)
    try:
        with CtrlC(console) as ctrl_c, contextlib.ExitStack() as awake:
            if not (config.dry_run or allow_sleep):
                how = awake.enter_context(keep_awake())
                if how and not quiet:
                    console.print(f"[dim]keeping the computer from sleeping until the run ends ({how}; "
                                  "--allow-sleep lets it sleep)[/]", soft_wrap=True)
            with reporter:
                summary = run(config, ctrl_c.reporting(reporter), ctrl_c.stop)
    except KeyboardInterrupt as exc:
        console.print("[yellow]Interrupted. Finished songs are kept; run the same command again to resume.")
        if as_json and isinstance(exc, RunInterrupted):  # what was done until then, as last_run.json has it
            sys.stdout.write(json.dumps(exc.summary.to_dict(), indent=1, default=str) + "\n")
        return EXIT_INTERRUPTED
    print_summary(console, summary, quiet)
    if config.report and not config.dry_run:
        index = summary.out_dir / "_report" / "index.html"
        if index.exists():
            console.print(f"compare report: {safe(index)}", soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(summary.to_dict(), indent=1, default=str) + "\n")
    return summary.exit_code
