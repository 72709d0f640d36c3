"""Stage options, declared once and parsed by one function with one error wording.

A stage lists its options as `Option`s; `--set STAGE.KEY=VALUE` (strings) or typed values
from the library go through `parse_options`, which returns typed, validated values or raises
a UsageError that names the stage, the key, the value and the rule. `mp3restore variants
--options` and the README's option tables are printed from the same declarations
(`option_rows`, `markdown_table`).

Kinds:
- "int", "float": numbers within [lo, hi] (NaN and infinities refused); `auto=True` also
  takes "auto" (or "", "none"), which parses to None: the stage decides.
- "bool": on/off, 1/0, true/false, yes/no.
- "choice": one of `choices` (case-insensitive, returned as declared).
- "text": any string; `check` decides.
`check(value) -> value` may refine or refuse a parsed value: it raises ValueError with the
rule that was broken, which becomes the usage error's reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from restore.errors import UsageError

_TRUE = ("1", "on", "true", "yes")
_FALSE = ("0", "off", "false", "no")
_AUTO = ("auto", "", "none")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str                       # "int", "float", "bool", "choice" or "text"
    default: Any
    help: str                       # one line: what it does, with its unit
    lo: float | None = None         # numbers: the smallest value allowed
    hi: float | None = None         # numbers: the largest value allowed
    choices: tuple[str, ...] = ()   # "choice": the values allowed
    auto: bool = False              # numbers: "auto" is allowed and parses to None
    note: str = ""                  # why the range is what it is (shown with a refusal)
    values: str = ""                # "text": the allowed values in words (its check enforces them)
    check: Callable[[Any], Any] | None = None

    def rule(self) -> str:
        """What a value must be, in words: 'a number from 0 to 4', 'on or off'."""
        if self.kind in ("int", "float"):
            what = "a whole number" if self.kind == "int" else "a number"
            text = f"{what} from {_number(self.lo)} to {_number(self.hi)}"
            if self.auto:
                text += ", or auto"
        elif self.kind == "bool":
            text = "on or off"
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        else:
            text = self.values or "text"
        return text + (f"; {self.note}" if self.note else "")

    def shown_default(self) -> str:
        if self.default is None:
            return "auto"
        if self.kind == "bool":
            return "on" if self.default else "off"
        return _number(self.default) if isinstance(self.default, (int, float)) else str(self.default)

    def parse(self, stage: str, raw: Any) -> Any:
        def refuse(why: str) -> UsageError:
            return UsageError(f"{stage}.{self.name}={raw!r} {why} ({self.name}: {self.rule()})")

        value: Any
        if self.kind in ("int", "float"):
            if raw is None or (isinstance(raw, str) and raw.strip().lower() in _AUTO):
                if self.auto:
                    return None
                raise refuse("is not a number")
            try:
                value = float(raw) if self.kind == "float" else _whole(raw)
            except (TypeError, ValueError):
                raise refuse("is not a number") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise refuse("is out of range")
            if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
                raise refuse("is out of range")
        elif self.kind == "bool":
            if isinstance(raw, bool):
                value = raw
            elif str(raw).strip().lower() in _TRUE:
                value = True
            elif str(raw).strip().lower() in _FALSE:
                value = False
            else:
                raise refuse("is not on or off")
        elif self.kind == "choice":
            match = [c for c in self.choices if c.lower() == str(raw).strip().lower()]
            if not match:
                raise refuse("is not one of " + ", ".join(self.choices))
            value = match[0]
        else:
            value = str(raw).strip()
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as exc:
                raise UsageError(f"{stage}.{self.name}={raw!r}: {exc}") from None
        return value


def _number(x: float) -> str:
    """3, 0.25, 2147483647: whole numbers in full, others as short as they go."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _whole(raw: Any) -> int:
    """An int from 3, "3" or 3.0; refuses 2.5 (a whole number was asked for)."""
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, int):
        return raw
    number = float(raw)
    if not number.is_integer():
        raise ValueError(raw)
    return int(number)


def parse_options(stage: str, declared: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """{name: typed value} for every declared option (its default where not given).
    Raises UsageError for an unknown name or a value that breaks its rule."""
    names = [o.name for o in declared]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(f"{stage} has no option {', '.join(unknown)}",
                         hint=f"its options: {', '.join(names)}" if names else f"{stage} takes no options")
    return {o.name: o.parse(stage, given[o.name]) if o.name in given else o.default for o in declared}


def option_rows(stage: str, declared: Sequence[Option]) -> list[tuple[str, str, str, str]]:
    """(`--set` key, default, allowed values, what it does) per option, for tables."""
    return [(f"{stage}.{o.name}", o.shown_default(), o.rule(), o.help) for o in declared]


def markdown_table(stage: str, declared: Sequence[Option]) -> str:
    """The README's option table of a stage, generated from its declarations."""
    lines = ["| option | default | values | what it does |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {default} | {rule} | {what} |" for key, default, rule, what in option_rows(stage, declared)]
    return "\n".join(lines)


def half_precision(word: str):
    """The `half` option of the model stages: "auto" (float16 where the device is CUDA), or
    on/off as True/False (1/0, true/false, yes/no too)."""
    word = word.lower()
    if word == "auto":
        return "auto"
    if word in _TRUE + _FALSE:
        return word in _TRUE
    raise ValueError("must be auto, on or off")
