"""The keyboard menu: `mp3restore` with no arguments (or `mp3restore menu`).

The menu is the CLI's twin at the edge. It asks its questions through an `Ask` (arrow keys
and checkboxes where the console allows, numbered prompts elsewhere, scripted answers in
the tests: restore/ui/ask.py), builds the very argument list the command line takes, shows
it quoted for the shell it will be pasted into (so the same job can go into an overnight
script) and hands it to the CLI, which passed itself in. Nothing here restores audio;
everything the menu can do, a flag can do. Ctrl+C or end of input at any prompt goes back
to the menu (at the menu itself, it leaves), never with a traceback.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
import webbrowser
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from restore.engine import localcluster
from restore.engine.scan import clean_user_path
from restore.status_codes import EXIT_USAGE
from restore.ui.ask import Ask, Cancelled, Pick, ask_for, default_output
from restore.ui.console import safe

ENV_CONFIG = "MP3RESTORE_CONFIG_DIR"


def config_dir() -> Path:
    """Where the menu remembers the last restore: $MP3RESTORE_CONFIG_DIR, else %APPDATA%\\mp3restore
    on Windows, else $XDG_CONFIG_HOME or ~/.config, then mp3restore."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "mp3restore"
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mp3restore"


def _last_path() -> Path:
    return config_dir() / "last_run.json"


def remember(argv: list[str]) -> None:
    """Keep the last restore's arguments (best effort: a menu that cannot remember still works)."""
    from restore.io.writers import write_bytes_atomic
    try:
        write_bytes_atomic(_last_path(), json.dumps({"argv": argv}, indent=1).encode("utf-8"), "remembering the last run")
    except Exception:
        pass


def last_run() -> list[str] | None:
    try:
        argv = json.loads(_last_path().read_text(encoding="utf-8"))["argv"]
        return [str(a) for a in argv] if isinstance(argv, list) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


_PLAIN = re.compile(r"^[\w@+=:,./-]+$")   # needs no quotes in any of the three shells


def command_line(argv: list[str], shell: str | None = None) -> str:
    """The argument list as one line a person can paste into `shell`: "posix" (sh, bash,
    zsh), "powershell" or "cmd"; by default the platform's own (CMD on Windows)."""
    shell = shell or ("cmd" if sys.platform == "win32" else "posix")
    if shell == "posix":
        return "mp3restore " + shlex.join(argv)
    if shell == "powershell":  # single quotes take $, % and ` literally; a ' inside is doubled
        return "mp3restore " + " ".join(a if _PLAIN.match(a) else "'" + a.replace("'", "''") + "'" for a in argv)
    return "mp3restore " + " ".join(_cmd_quote(a) for a in argv)


def _cmd_quote(arg: str) -> str:
    """One argument for CMD: in double quotes by the C runtime's rules (backslashes before a
    quote doubled, the closing one included), each % made literal outside the quotes ("^%"),
    because inside quotes CMD still expands %NAME%."""
    if _PLAIN.match(arg):
        return arg
    body = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', arg)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return f'"{body}"'.replace("%", '"^%"')


def command_lines(argv: list[str]) -> list[tuple[str, str]]:
    """(shell, line) for the shells a person on this platform may paste into."""
    if sys.platform == "win32":
        return [("CMD", command_line(argv, "cmd")), ("PowerShell", command_line(argv, "powershell"))]
    return [("shell", command_line(argv, "posix"))]


MENU = [
    ("quick", "Restore with the defaults", "a file or folder, then Enter: every variant that can run here"),
    ("restore", "Restore, choosing variants and options", "variants, output folder, device, order"),
    ("resume", "Resume the last restore", "finish what an interrupted or crashed run left"),
    ("report", "Compare report", "rebuild the A/B pages of an output folder"),
    ("ghost", "Ghost", "hear what an MP3 threw away, from a lossless original"),
    ("variants", "Variants and models", "what can run here, and what is missing"),
    ("fetch", "Fetch a model", "download a model file into the models folder"),
    ("choose", "Choose in the report", "open the report through a local server that saves your choices"),
    ("keep", "Keep the best", "build your library from the choices (each song's chosen variant, tagged)"),
    ("quit", "Quit", ""),
]


def menu(run_cli: Callable[[list[str]], int], console: Console | None = None, ask: Ask | None = None) -> int:
    """The menu loop; returns the exit code of the last command it ran (0 if none)."""
    console = console or Console(highlight=False)
    ask = ask or ask_for(console)
    actions = {"quick": _quick, "restore": _restore, "resume": _resume, "report": _report, "ghost": _ghost,
               "variants": _variants, "fetch": _fetch, "choose": _choose, "keep": _keep}
    code = 0
    while True:
        console.print(Panel.fit("[bold magenta]mp3restore[/]  [dim]bring MP3 archives back to life, honestly[/]",
                                border_style="magenta"))
        picks = [Pick(key, f"{title}  - {what}" if what else title) for key, title, what in MENU]
        try:
            key = ask.select("What would you like to do?", picks, "quick")
        except Cancelled:
            return code
        if key == "quit":
            return code
        try:
            argv = actions[key](console, ask)
            if key in ("restore", "keep") and argv and ask.confirm("Show what it would do first?", True):
                _run([*argv, "--dry-run"], console, ask, run_cli)
                argv = argv if ask.confirm("Start?", True) else None
        except Cancelled:
            console.print("[dim]cancelled: back to the menu[/]")
            continue
        if argv:
            code = _run(argv, console, ask, run_cli)


def _run(argv: list[str], console: Console, ask: Ask, run_cli: Callable[[list[str]], int]) -> int:
    """Show the command, run it, remember a restore that started, offer its report."""
    for shell, line in command_lines(argv):
        console.print(f"[dim]same as ({shell}):[/] [green]{safe(line)}[/]", soft_wrap=True)
    code = run_cli(argv)
    console.print(f"[dim]finished with exit code {code}[/]")
    if argv[0] == "run" and "--dry-run" not in argv and code != EXIT_USAGE:
        remember(argv)
    index = _report_index(argv)
    if index is not None and index.is_file():
        try:
            if ask.confirm("Open the compare report in the browser?", True):
                webbrowser.open(index.resolve().as_uri())
        except Cancelled:
            pass
    return code


def _report_index(argv: list[str]) -> Path | None:
    if argv[0] == "run" and "--out" in argv and not {"--dry-run", "--no-report"} & set(argv):
        return clean_user_path(argv[argv.index("--out") + 1]) / "_report" / "index.html"
    if argv[0] == "report" and len(argv) > 1:
        return clean_user_path(argv[1]) / "_report" / "index.html"
    return None


def _arg(argv: list[str], flag: str | int) -> str:
    """The value after `flag` in a remembered argument list (or at index `flag`), or ""."""
    i = flag if isinstance(flag, int) else (argv.index(flag) + 1 if flag in argv else -1)
    return argv[i] if 0 <= i < len(argv) else ""


def _variant_picks(ticked: set[str] | None) -> list[Pick]:
    """Every variant, ticked as last time (or the default set), with why it cannot run here."""
    from restore.engine.plan import variant_status
    from restore.engine.variants import VARIANTS
    status = variant_status(VARIANTS.values())
    return [Pick(v.name, f"{v.name}  {_short(v.title)}", checked=(v.name in ticked) if ticked else v.default,
                 why_not=_short(status[v.name]) if status[v.name] else None) for v in VARIANTS.values()]


def _short(text: str, most: int = 36) -> str:
    """The first clause of a title or a reason, so each variant stays on one line."""
    first = re.split(r"[:;(]", text, maxsplit=1)[0].strip()
    return first if len(first) <= most else first[:most - 1].rstrip() + "…"


def _quick(console: Console, ask: Ask) -> list[str] | None:
    """The path and one Enter: every variant that can run here, into '<path> restored'."""
    source = ask.path("MP3 file or folder (type, or drag it here)", _arg(last_run() or [], 1), must_exist=True)
    out = default_output(source)
    how = ask.select(f"Restore into {out}?", [Pick("go", "Start with the defaults"),
                                              Pick("change", "Choose another output folder")], "go")
    if how == "change":
        out = ask.path("Output folder", out)
    return ["run", str(clean_user_path(source)), "--out", str(clean_user_path(out))]


def _restore(console: Console, ask: Ask) -> list[str] | None:
    last = last_run() or []
    source = ask.path("MP3 file or folder (type, or drag it here)", _arg(last, 1), must_exist=True)
    out = ask.path("Output folder", default_output(source))
    ticked = {n for n in _arg(last, "--variants").split(",") if n}
    chosen = ask.checkbox("Variants (space ticks, Enter confirms)", _variant_picks(ticked))
    device = ask.select("Where model stages run", [Pick("auto", "auto: the GPU if there is one, else the CPU"),
                                                   Pick("cuda", "cuda: an NVIDIA GPU"),
                                                   Pick("mps", "mps: Apple silicon"), Pick("cpu", "cpu")], "auto")
    slots = song_slots()
    jobs = "1" if len(slots) < 2 else ask.select(
        "Songs at once", [Pick(str(n), f"{n}: " + ("one song at a time" if n == 1 else
                                                   f"{n} songs side by side, one core each (songs with a model "
                                                   "stage still one at a time)")) for n in slots], "1")
    order = "song" if jobs != "1" else ask.select(
        "Order", [Pick("song", "song: all variants of a song, then the next (earliest results)"),
                  Pick("stage", "stage: one variant across all songs (fewest model loads)")], "song")
    argv = ["run", str(clean_user_path(source)), "--out", str(clean_user_path(out)), "--variants", ",".join(chosen)]
    if device != "auto":
        argv += ["--device", device]
    if jobs != "1":
        argv += ["--jobs", jobs]
    if order != "song":
        argv += ["--order", order]
    return argv


def song_slots() -> list[int]:
    """The `--jobs` counts to offer: 1, and where Dask distributed is installed and the
    machine has the cores, 2, half the cores and all but one."""
    cores = os.cpu_count() or 1
    if cores < 2 or not localcluster.available():
        return [1]
    return sorted({1, 2, cores // 2, cores - 1} & set(range(1, cores + 1)))


def _resume(console: Console, ask: Ask) -> list[str] | None:
    argv = last_run()
    if not argv:
        console.print("[yellow]No restore to resume yet: restore something first.[/]")
        return None
    console.print(f"last restore: [green]{safe(command_line(argv))}[/]", soft_wrap=True)
    return argv if ask.confirm("Run it again (songs already done are skipped)?", True) else None


def _report(console: Console, ask: Ask) -> list[str] | None:
    last = last_run()
    default = last[last.index("--out") + 1] if last and "--out" in last else ""
    out = ask.path("Output folder of a restore", default, must_exist=True)
    reference = ask.text("Folder or file of lossless originals for reference metrics (Enter: none)", "")
    return ["report", out] + (["--reference", reference] if reference.strip() else [])


def _last_out() -> str:
    return _arg(last_run() or [], "--out")


def _choose(console: Console, ask: Ask) -> list[str] | None:
    out = ask.path("Output folder of a restore", _last_out(), must_exist=True)
    console.print("Open the address it prints in your browser; Ctrl+C here stops it.")
    return ["report", out, "--serve"]


def _keep(console: Console, ask: Ask) -> list[str] | None:
    out = ask.path("Output folder of a restore", _last_out(), must_exist=True)
    src = clean_user_path(out)
    library = ask.path("Library folder to create or update", str(src.parent / f"{src.name} library"))
    default = ask.select("Songs with no choice get", [Pick("01_baseline", "01_baseline: the clean decode"),
                                                      Pick("skip", "nothing: they are skipped")], "01_baseline")
    return ["keep", str(src), "--to", str(clean_user_path(library)), "--default", default]


def _ghost(console: Console, ask: Ask) -> list[str] | None:
    original = ask.path("Lossless original (WAV, FLAC or AIFF)", must_exist=True)
    encoded = ask.text("Its MP3 (Enter: encode it here with LAME)", "")
    out = ask.text("Where the ghosts go", str(clean_user_path(original).with_suffix("")) + " ghost")
    argv = ["ghost", original] + ([encoded] if encoded.strip() else []) + ["--out", out]
    if not encoded.strip():
        argv += ["--bitrate", ask.select("Bitrate to encode at (kbps)",
                                         [Pick(b, f"{b} kbps") for b in ("96", "128", "160", "192", "256", "320")], "128")]
    return argv


def _variants(console: Console, ask: Ask) -> None:
    from restore.engine.plan import variant_status
    from restore.engine.variants import VARIANTS
    status = variant_status(VARIANTS.values())
    table = Table(title="Variants", title_style="bold", show_lines=False)
    table.add_column("variant", style="bold cyan")
    table.add_column("what")
    table.add_column("here")
    for v in VARIANTS.values():
        why = status[v.name]
        table.add_row(v.name, safe(v.title), f"[yellow]{safe(why)}[/]" if why else "[green]ready[/]")
    console.print(table)
    return None


def _fetch(console: Console, ask: Ask) -> list[str] | None:
    from restore.models.store import CATALOGUE
    picks = [Pick(name, f"{name}  {spec.purpose}") for name, spec in CATALOGUE.items()] + [Pick("back", "Back")]
    pick = ask.select("Which model", picks, "back")
    return None if pick == "back" else ["models", "fetch", pick]
