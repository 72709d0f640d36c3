"""The floor plan holds: packages import only downward (ui -> engine -> stages ->
models/analysis/io -> the shared values), the library never prints, importing it pulls no
torch, and no test fixture lives in the product."""
import ast
import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, write_mp3
from tests.support.examples import band

RESTORE = ROOT / "restore"
SHARED = {"restore", "restore.audio", "restore.errors", "restore.events", "restore.faults", "restore.status_codes"}
# What each package may import besides itself and the shared values.
ALLOWED = {
    "shared": set(),
    "io": set(),
    "analysis": set(),
    "models": {"io"},
    "stages": {"io", "analysis", "models"},
    "engine": {"io", "analysis", "models", "stages"},
    "report": {"io", "analysis", "engine"},
    "ui": {"io", "analysis", "models", "stages", "engine", "report"},
    "__main__": {"ui"},  # `python -m restore`: the edge, like the launcher
}
# The one upward import, made late on purpose: the run writes the compare report at its end.
EXCEPTIONS = {("restore/engine/run.py", "restore.report.build")}


def _package(module: str) -> str:
    parts = module.split(".")
    if module in SHARED or len(parts) < 2:
        return "shared"
    return parts[1]


def _imports(path: Path):
    """(line, module) for every import of a restore module in the file, nested ones too."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("restore"):
            yield node.lineno, node.module
            for alias in node.names:  # `from restore.report import plots` imports a module
                if node.module.count(".") == 1 and (RESTORE / node.module.split(".")[1] / f"{alias.name}.py").exists():
                    yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("restore"):
                    yield node.lineno, alias.name


def test_packages_import_only_downward():
    wrong = []
    for path in sorted(RESTORE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        own = _package("restore." + ".".join(path.relative_to(RESTORE).with_suffix("").parts))
        for line, module in _imports(path):
            target = _package(module)
            if target in ("shared", own) or target in ALLOWED[own] or (rel, module) in EXCEPTIONS:
                continue
            wrong.append(f"{rel}:{line} ({own}) imports {module} ({target})")
    assert not wrong, "\n".join(wrong)


def test_every_package_says_what_it_holds_and_may_import():
    for init in sorted(RESTORE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 40, f"{init.relative_to(ROOT)} has no docstring saying what it holds"


def test_the_library_never_prints():
    """Only the UI writes to the console; the library speaks through events and logs."""
    found = []
    for path in sorted(RESTORE.rglob("*.py")):
        if path.relative_to(RESTORE).parts[0] == "ui":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and node.id == "print":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_importing_the_library_and_planning_pulls_no_torch(tmp_path):
    code = ("import sys, restore, restore.ui.cli, restore.engine.run\n"
            "from restore.engine.plan import variant_status\n"
            "from restore.engine.variants import VARIANTS\n"
            "variant_status(VARIANTS.values())\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_no_test_fixture_lives_in_the_product():
    names = {p.stem for p in RESTORE.rglob("*.py")}
    assert not {n for n in names if n.startswith(("reference_", "random_", "test_")) or n in ("examples", "fixtures")}
    assert not (RESTORE / "testing").exists()
    for path in RESTORE.rglob("*.py"):
        for _, module in _imports(path):
            assert not module.startswith("tests"), f"{path} imports {module}"
        assert "from tests" not in path.read_text(encoding="utf-8"), path


def test_json_stays_clean_json_with_debug(tmp_path):
    """--json --debug: a failing song's traceback goes to stderr as a message; stdout holds
    only the summary."""
    write_mp3(tmp_path / "in" / "ok.mp3", band(1.0))
    (tmp_path / "in" / "bad.mp3").write_bytes(b"ID3" + bytes(200))  # an ID3 header and nothing after
    proc = subprocess.run([sys.executable, str(ROOT / "mp3restore.py"), "run", str(tmp_path / "in"), "--out",
                           str(tmp_path / "out"), "--variants", "01", "--json", "--debug", "--no-report"],
                          capture_output=True, text=True, encoding="utf-8")
    summary = json.loads(proc.stdout)
    assert proc.returncode == 1 and summary["counts"]["done"] == 1 and summary["counts"]["failed"] == 1


def test_the_architecture_document_names_what_is_there():
    """docs/ARCHITECTURE.md stays true: every package is in its layout, and every
    restore/... path or module file it names exists."""
    import re
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    layout = doc[doc.index("## Layout"):doc.index("## Stage contract")]
    for init in RESTORE.rglob("__init__.py"):
        package = init.parent.relative_to(RESTORE).as_posix()
        if package != ".":
            assert f"{package.split('/')[-1]}/" in layout, f"restore/{package} is missing from the layout"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for text, where in ((doc, "ARCHITECTURE.md"), (readme, "README.md")):
        for path in re.findall(r"`((?:restore/)?(?:io|engine|models|stages|analysis|report|ui)/[\w/]+\.py)`", text):
            assert (RESTORE / path.removeprefix("restore/")).is_file(), f"{where} names {path}, which is not there"
        for path in re.findall(r"`(restore/\w+\.py)`", text):
            assert (ROOT / path).is_file(), f"{where} names {path}, which is not there"
    modules = set(re.findall(r"\b(\w+\.py)\b", layout))
    present = {p.name for p in RESTORE.rglob("*.py")} | {"mp3restore.py"} | \
              {p.name for p in (ROOT / "tests" / "support").glob("*.py")} | {p.name for p in (ROOT / "scripts").glob("*.py")}
    assert modules <= present, f"named in the layout but not there: {sorted(modules - present)}"
    listed = {p.name for p in RESTORE.rglob("*.py") if p.name != "__init__.py"}
    unnamed = listed - modules - {"__main__.py"}
    assert not unnamed, f"modules the layout does not name: {sorted(unnamed)}"


def test_stage_warnings_reach_the_reporter_as_messages(tmp_path):
    """A warning a stage (or the writer) says is a Message event too, not only a log line."""
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.engine.variants import resolve_variants
    from restore.events import Message, RecordingReporter
    mp3 = write_mp3(tmp_path / "in" / "cut.mp3", band(2.0))
    mp3.write_bytes(mp3.read_bytes()[:-7000])  # truncated mid-frame: the decode warns under --accept-damaged
    reporter = RecordingReporter()
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", variants=resolve_variants("01"),
                            report=False, accept_damaged=True), reporter)
    assert summary.counts()["done"] == 1
    warnings = [e.text for e in reporter.events if isinstance(e, Message) and e.level == "warning"]
    assert warnings and all(w.startswith("cut.mp3: warning:") for w in warnings), warnings
