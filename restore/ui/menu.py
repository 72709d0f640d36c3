"""The keyboard menu: `mp3restore` with no arguments (or `mp3restore menu`).

The menu is the CLI's twin at the edge. It asks its questions through an `Ask` (rich
prompts in a terminal; scripted answers in the tests), builds the very argument list the
command line takes, shows it (so the same job can be pasted into an overnight script) and
hands it to `restore.ui.cli.main`. Nothing here restores audio; everything the menu can do,
a flag can do. Works in Windows CMD and PowerShell: numbered choices answered with a key
and Enter, paths typed or dragged in (quotes and colour codes are cleaned by the CLI).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Callable, Protocol

from rich.console import Console
from rich.panel import Panel
from rich.prompt import Confirm, Prompt
from rich.table import Table

from restore.ui.console import safe
from restore.engine.scan import clean_user_path

ENV_CONFIG = "MP3RESTORE_CONFIG_DIR"


class Ask(Protocol):
    """The questions the menu asks; each returns the answer (defaults on Enter)."""
    def choice(self, prompt: str, choices: list[str], default: str) -> str: ...
    def text(self, prompt: str, default: str = "") -> str: ...
    def confirm(self, prompt: str, default: bool = True) -> bool: ...


class RichAsk:
    """Questions in the terminal through rich's prompts."""

    def __init__(self, console: Console):
        self.console = console

    def choice(self, prompt: str, choices: list[str], default: str) -> str:
        return Prompt.ask(prompt, choices=choices, default=default, console=self.console, case_sensitive=False)

    def text(self, prompt: str, default: str = "") -> str:
        return Prompt.ask(prompt, default=default or None, console=self.console) or ""

    def confirm(self, prompt: str, default: bool = True) -> bool:
        return Confirm.ask(prompt, default=default, console=self.console)


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


def command_line(argv: list[str]) -> str:
    """The argument list as one line a person can paste (Windows quoting on Windows)."""
    if sys.platform == "win32":
        return "mp3restore " + subprocess.list2cmdline(argv)
    return "mp3restore " + shlex.join(argv)


MENU = [
    ("1", "Restore MP3s", "choose the songs, the variants and where they go"),
    ("2", "Resume the last restore", "finish what an interrupted or crashed run left (finished songs are kept)"),
    ("3", "Compare report", "rebuild the A/B pages of an output folder"),
    ("4", "Ghost", "hear what an MP3 threw away, from a lossless original"),
    ("5", "Variants and models", "what can run here, and what is missing"),
    ("6", "Fetch a model", "download a model file into the models folder"),
    ("7", "Choose in the report", "open the report through a local server that saves your choices"),
    ("8", "Keep the best", "build your library from the choices (each song's chosen variant, tagged)"),
    ("q", "Quit", ""),
]


def menu(run_cli: Callable[[list[str]], int], console: Console | None = None, ask: Ask | None = None) -> int:
    """The menu loop; returns the exit code of the last command it ran (0 if none)."""
    console = console or Console(highlight=False)
    ask = ask or RichAsk(console)
    code = 0
    while True:
        console.print(Panel.fit("[bold magenta]mp3restore[/]  [dim]bring MP3 archives back to life, honestly[/]",
                                border_style="magenta"))
        for key, title, what in MENU:
            console.print(f"  [bold cyan]{key}[/]  [bold]{title}[/]" + (f"  [dim]{what}[/]" if what else ""))
        key = ask.choice("Choose", [k for k, _, _ in MENU], "1")
        if key == "q":
            return code
        argv = {"1": _restore, "2": _resume, "3": _report, "4": _ghost, "5": _variants, "6": _fetch, "7": _choose,
                "8": _keep}[key](console, ask, run_cli)
        if argv:
            console.print(f"[dim]same as:[/] [green]{safe(command_line(argv))}[/]", soft_wrap=True)
            code = run_cli(argv)
            if argv[0] == "run" and "--dry-run" not in argv:
                remember(argv)
            console.print(f"[dim]finished with exit code {code}[/]")


def _restore(console: Console, ask: Ask, run_cli=None) -> list[str] | None:
    source = ask.text("MP3 file or folder (you can drag it here)")
    if not source.strip():
        return None
    src = clean_user_path(source)
    default_out = src.parent / f"{src.stem if src.suffix else src.name} restored"
    out = ask.text("Output folder", str(default_out))
    _variants(console, ask)
    variants = ask.text("Variants (numbers or names, comma-separated; Enter: every one that can run here)", "default")
    device = ask.choice("Where model stages run", ["auto", "cuda", "mps", "cpu"], "auto")
    order = ask.choice("Order: all variants of a song, or one variant across all songs (fewer model loads)",
                       ["song", "stage"], "song")
    argv = ["run", str(src), "--out", str(clean_user_path(out))]
    if variants.strip().lower() not in ("", "default"):
        argv += ["--variants", variants.strip()]
    if device != "auto":
        argv += ["--device", device]
    if order != "song":
        argv += ["--order", order]
    if ask.confirm("Show the plan first (what would run, what is already done)?", True):
        run_cli([*argv, "--dry-run"])
    return argv if ask.confirm("Start?", True) else None


def _resume(console: Console, ask: Ask, run_cli=None) -> list[str] | None:
    argv = last_run()
    if not argv:
        console.print("[yellow]No restore to resume yet: choose 1 first.[/]")
        return None
    console.print(f"last restore: [green]{safe(command_line(argv))}[/]", soft_wrap=True)
    return argv if ask.confirm("Run it again (songs already done are skipped)?", True) else None


def _report(console: Console, ask: Ask, run_cli=None) -> list[str] | None:
    last = last_run()
    default = last[last.index("--out") + 1] if last and "--out" in last else ""
    out = ask.text("Output folder of a restore", default)
    if not out.strip():
        return None
    reference = ask.text("Folder or file of lossless originals for reference metrics (Enter: none)", "")
    return ["report", out] + (["--reference", reference] if reference.strip() else [])


def _last_out() -> str:
    last = last_run()
    return last[last.index("--out") + 1] if last and "--out" in last else ""


def _choose(console: Console, ask: Ask, run_cli=None) -> list[str] | None:
    out = ask.text("Output folder of a restore", _last_out())
    if not out.strip():
        return None
    console.print("Open the address it prints in your browser; Ctrl+C here stops it.")
    return ["report", out, "--serve"]


def _keep(console: Console, ask: Ask, run_cli=None) -> list[str] | None:
    out = ask.text("Output folder of a restore", _last_out())
    if not out.strip():
        return None
    src = clean_user_path(out)
    library = ask.text("Library folder to create or update", str(src.parent / f"{src.name} library"))
    default = ask.text("Songs with no choice get (a variant's name, or skip)", "01_baseline")
    argv = ["keep", str(src), "--to", str(clean_user_path(library)), "--default", default.strip() or "01_baseline"]
    if ask.confirm("Show what it would do first?", True):
        run_cli([*argv, "--dry-run"])
    return argv if ask.confirm("Start?", True) else None


def _ghost(console: Console, ask: Ask, run_cli=None) -> list[str] | None:
    original = ask.text("Lossless original (WAV, FLAC or AIFF)")
    if not original.strip():
        return None
    encoded = ask.text("Its MP3 (Enter: encode it here with LAME)", "")
    out = ask.text("Where the ghosts go", str(clean_user_path(original).with_suffix("")) + " ghost")
    argv = ["ghost", original] + ([encoded] if encoded.strip() else []) + ["--out", out]
    if not encoded.strip():
        argv += ["--bitrate", ask.choice("Bitrate to encode at (kbps)", ["96", "128", "160", "192", "256", "320"], "128")]
    return argv


def _variants(console: Console, ask: Ask, run_cli=None) -> None:
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


def _fetch(console: Console, ask: Ask, run_cli=None) -> list[str] | None:
    from restore.models.store import CATALOGUE
    names = list(CATALOGUE)
    for i, name in enumerate(names, 1):
        console.print(f"  [bold cyan]{i}[/]  {name}  [dim]{safe(CATALOGUE[name].purpose)}[/]")
    pick = ask.choice("Which model (Enter: back)", [str(i) for i in range(len(names) + 1)], "0")
    return None if pick == "0" else ["models", "fetch", names[int(pick) - 1]]
