"""One stage contract: options are declared once per stage, parsed by one function with one
wording, listed by `mp3restore variants --options`, and the README's tables are those
declarations."""
import math
import os
import re
import subprocess
import sys

import pytest

from restore.errors import UsageError
from restore.stages import Stage, StageEnv, get_stage, stage_names
from restore.stages.options import Option, markdown_table, parse_options

from .conftest import ROOT


@pytest.mark.parametrize("name", stage_names())
def test_every_stage_is_a_stage_and_refuses_unknown_options(name):
    stage = get_stage(name)
    assert isinstance(stage, Stage)
    assert stage.config() is not None and stage.versions()
    with pytest.raises(UsageError, match=rf"{name} has no option no_such_thing"):
        get_stage(name, StageEnv(options={name: {"no_such_thing": "1"}}))


@pytest.mark.parametrize("name", stage_names())
def test_every_declared_default_parses_as_given(name):
    """Passing each default back as a string gives the same typed value (and config)."""
    stage = get_stage(name)
    given = {o.name: o.shown_default() for o in stage.options}
    again = get_stage(name, StageEnv(options={name: given}))
    assert again.opts == stage.opts
    assert again.config() == stage.config()


def test_numbers_switches_and_choices_follow_one_rule():
    declared = (Option("n", "int", 2, "count", 0, 10), Option("x", "float", 0.5, "share", 0.0, 1.0, auto=True),
                Option("on", "bool", True, "switch"), Option("pick", "choice", "a", "one", choices=("a", "B")))
    assert parse_options("s", declared, {}) == {"n": 2, "x": 0.5, "on": True, "pick": "a"}
    assert parse_options("s", declared, {"n": "3", "x": "auto", "on": "off", "pick": "b"}) == \
        {"n": 3, "x": None, "on": False, "pick": "B"}
    assert parse_options("s", declared, {"n": "4.0"})["n"] == 4
    for given, words in (({"n": "2.5"}, r"s\.n='2\.5' is not a number \(n: a whole number from 0 to 10\)"),
                         ({"n": "11"}, r"s\.n='11' is out of range"),
                         ({"x": "nan"}, r"s\.x='nan' is out of range"),
                         ({"x": math.inf}, "is out of range"),
                         ({"on": "maybe"}, "is not on or off"),
                         ({"pick": "c"}, "is not one of a, B"),
                         ({"n": "auto"}, "is not a number"),
                         ({"m": "1"}, "s has no option m")):
        with pytest.raises(UsageError, match=words):
            parse_options("s", declared, given)


def test_a_check_refines_or_refuses_with_its_reason():
    def even(v):
        if v % 2:
            raise ValueError("must be even")
        return v
    declared = (Option("n", "int", 2, "count", 0, 10, check=even),)
    assert parse_options("s", declared, {"n": "4"}) == {"n": 4}
    with pytest.raises(UsageError, match=r"s\.n='3': must be even"):
        parse_options("s", declared, {"n": "3"})


def test_variants_options_lists_every_declared_option():
    proc = subprocess.run([sys.executable, str(ROOT / "mp3restore.py"), "variants", "--options"], capture_output=True,
                          text=True, encoding="utf-8", env={**os.environ, "COLUMNS": "250"})
    out = proc.stdout + proc.stderr  # the console is stderr, as for every command
    declared = [f"{n}.{o.name}" for n in stage_names() for o in get_stage(n).options]
    assert len(declared) >= 12
    for key in declared:
        assert key in out, key


def test_the_readme_option_tables_are_the_declarations():
    """Each stage with options has its table in the README, exactly as `mp3restore variants
    --options --markdown` prints it from the declarations."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = dict(re.findall(r"<!-- options:(\w+) -->\n(.*?)\n<!-- /options -->", readme, re.S))
    for name in stage_names():
        options = get_stage(name).options
        if options:
            assert found.get(name) == markdown_table(name, options), \
                f"README table for {name} is stale: paste `mp3restore variants --options --markdown`"
    assert set(found) <= set(stage_names())
