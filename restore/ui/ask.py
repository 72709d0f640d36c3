"""How the menu asks its questions: with arrow keys, checkboxes and path completion
(questionary on prompt_toolkit, which drives Windows CMD, PowerShell and Windows Terminal
as well as POSIX terminals), or, where there is no console prompt_toolkit can drive (a
pipe, some Git Bash terminals), with numbered prompts answered by a line of text.

Every answer is checked when it is given and asked again until it is good (a path that
does not exist, an unknown choice). Ctrl+C or end of input at any prompt raises
`Cancelled`: the menu goes back a level, never shows a traceback.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Callable, Protocol

from rich.console import Console
from rich.prompt import Confirm, Prompt

from restore.engine.scan import clean_user_path
from restore.ui.console import safe


class Cancelled(Exception):
    """The person pressed Ctrl+C or ended the input at a prompt."""


@dataclass(frozen=True)
class Pick:
    value: str                 # what the answer is
    title: str                 # what the person reads
    checked: bool = False      # checkboxes: ticked at first
    why_not: str | None = None  # shown and not selectable when set (a variant that cannot run here)


def existing_path(text: str) -> str | None:
    """None if `text` names an existing file or folder (after cleaning quotes and colour
    codes), else why not."""
    if not text.strip():
        return "type or drag a file or folder"
    return None if clean_user_path(text).exists() else f"no such file or folder: {safe(clean_user_path(text))}"


class Ask(Protocol):
    def select(self, prompt: str, picks: list[Pick], default: str | None = None) -> str: ...
    def checkbox(self, prompt: str, picks: list[Pick]) -> list[str]: ...
    def path(self, prompt: str, default: str = "", must_exist: bool = False) -> str: ...
    def text(self, prompt: str, default: str = "") -> str: ...
    def confirm(self, prompt: str, default: bool = True) -> bool: ...


class ArrowAsk:
    """questionary prompts. `input`/`output` are prompt_toolkit's (a pipe input in tests)."""

    def __init__(self, input=None, output=None):
        self.io = {"input": input, "output": output} if input is not None else {}

    def _ask(self, question):
        try:
            answer = question.unsafe_ask()
        except (KeyboardInterrupt, EOFError):
            raise Cancelled from None
        if answer is None:
            raise Cancelled
        return answer

    def select(self, prompt: str, picks: list[Pick], default: str | None = None) -> str:
        import questionary
        choices = [questionary.Choice(p.title, p.value, disabled=p.why_not) for p in picks]
        start = next((c for c in choices if c.value == default), None)
        return self._ask(questionary.select(prompt, choices=choices, default=start, use_shortcuts=len(choices) <= 36,
                                            **self.io))

    def checkbox(self, prompt: str, picks: list[Pick]) -> list[str]:
        import questionary
        choices = [questionary.Choice(p.title, p.value, checked=p.checked and not p.why_not, disabled=p.why_not)
                   for p in picks]
        return list(self._ask(questionary.checkbox(prompt, choices=choices,
                                                   validate=lambda ticked: bool(ticked) or "tick at least one (space)",
                                                   **self.io)))

    def path(self, prompt: str, default: str = "", must_exist: bool = False) -> str:
        import questionary
        check: Callable = (lambda t: existing_path(t) or True) if must_exist else (lambda t: True)
        return self._ask(questionary.path(prompt, default=default, validate=check, **self.io))

    def text(self, prompt: str, default: str = "") -> str:
        import questionary
        return self._ask(questionary.text(prompt, default=default, **self.io))

    def confirm(self, prompt: str, default: bool = True) -> bool:
        import questionary
        return bool(self._ask(questionary.confirm(prompt, default=default, **self.io)))


class NumberedAsk:
    """Numbered prompts through rich: a choice is its number or its name; several choices
    are numbers or names separated by commas (`1,9,11`)."""

    def __init__(self, console: Console):
        self.console = console

    def _line(self, prompt: str, default: str | None = None) -> str:
        try:
            return Prompt.ask(prompt, default=default, console=self.console) or ""
        except (KeyboardInterrupt, EOFError):
            raise Cancelled from None

    def _show(self, picks: list[Pick]) -> None:
        for i, p in enumerate(picks, 1):
            why = f"  [yellow]{safe(p.why_not)}[/]" if p.why_not else ""
            self.console.print(f"  [bold cyan]{i:>2}[/]  {safe(p.title)}{why}", soft_wrap=True)

    def _find(self, word: str, picks: list[Pick]) -> Pick | None:
        word = word.strip().lower()
        for i, p in enumerate(picks, 1):
            if word in (str(i), p.value.lower()) or (word.isdigit() and p.value[:2].isdigit() and int(word) == int(p.value[:2])):
                return p
        return None

    def select(self, prompt: str, picks: list[Pick], default: str | None = None) -> str:
        self._show(picks)
        shown = str(next((i for i, p in enumerate(picks, 1) if p.value == default), 1))
        while True:
            pick = self._find(self._line(prompt, shown), picks)
            if pick is not None and not pick.why_not:
                return pick.value
            self.console.print("[yellow]choose one of the numbers shown[/]")

    def checkbox(self, prompt: str, picks: list[Pick]) -> list[str]:
        self._show(picks)
        default = ",".join(str(i) for i, p in enumerate(picks, 1) if p.checked and not p.why_not)
        while True:
            words = [w for w in self._line(f"{prompt} (numbers or names, comma-separated)", default).split(",") if w.strip()]
            found = [self._find(w, picks) for w in words]
            bad = [w.strip() for w, p in zip(words, found) if p is None or p.why_not]
            if words and not bad:
                return [p.value for p in picks if p in found]
            self.console.print(f"[yellow]not one to choose here: {safe(', '.join(bad)) or 'nothing chosen'}[/]")

    def path(self, prompt: str, default: str = "", must_exist: bool = False) -> str:
        while True:
            answer = self._line(prompt, default or None)
            why = existing_path(answer) if must_exist else None
            if why is None:
                return answer
            self.console.print(f"[yellow]{why}[/]")

    def text(self, prompt: str, default: str = "") -> str:
        return self._line(prompt, default or None)

    def confirm(self, prompt: str, default: bool = True) -> bool:
        try:
            return Confirm.ask(prompt, default=default, console=self.console)
        except (KeyboardInterrupt, EOFError):
            raise Cancelled from None


def ask_for(console: Console) -> Ask:
    """Arrow keys where prompt_toolkit can drive this console, numbered prompts elsewhere
    (and the console says so)."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        try:
            from prompt_toolkit.output.defaults import create_output
            create_output()  # raises where there is no console it can drive (e.g. mintty)
            if importlib.util.find_spec("questionary") is not None:
                return ArrowAsk()
        except Exception:
            pass
    console.print("[dim]This terminal cannot take arrow keys here: answer with numbers or names and Enter.[/]")
    return NumberedAsk(console)


def default_output(source: str) -> str:
    """Where a restore of `source` goes unless the person says otherwise: beside it."""
    src = clean_user_path(source)
    return str(src.parent / f"{src.stem if src.suffix else src.name} restored")
