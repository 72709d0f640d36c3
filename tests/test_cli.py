"""The command line as a person and a script use it: entry points, exit codes, --json,
--dry-run, progress and summary."""
import io
import json
import re
import subprocess
import sys

from rich.console import Console

from restore.ui.console import RichReporter, print_summary
from restore.events import RecordingReporter, RunStarted, SongFinished, SongProgress, SongStarted

from .conftest import ROOT, cli_json, run_cli, run_lib, write_mp3


def test_exit_codes_and_json(tmp_path, library):
    out = tmp_path / "out"
    code, summary = cli_json("run", str(library), "--out", str(out))
    assert code == 0 and summary["counts"]["done"] == 3 and summary["exit_code"] == 0
    (library / "broken.mp3").write_bytes(b"")
    code, summary = cli_json("run", str(library), "--out", str(out))
    assert code == 1 and summary["counts"] == {"done": 0, "skipped": 3, "failed": 1, "busy": 0, "planned": 0, "unavailable": 0}
    assert run_cli("run", str(tmp_path / "missing"), "--out", str(out)).returncode == 2
    assert run_cli("run", str(library)).returncode == 2                      # --out is required
    assert run_cli("run", str(library), "--out", str(out), "--variants", "99_nope").returncode == 2


def test_dry_run_writes_nothing_and_shows_the_plan(tmp_path, library):
    out = tmp_path / "out"
    code, plan = cli_json("run", str(library), "--out", str(out), "--dry-run")
    assert code == 0 and not out.exists()
    assert plan["dry_run"] and plan["counts"]["planned"] == 3
    assert {r["reason"] for r in plan["results"]} == {"new"}
    run_lib([library], out)
    code, plan = cli_json("run", str(library), "--out", str(out), "--dry-run")
    assert plan["counts"]["skipped"] == 3 and plan["counts"]["planned"] == 0
    before = sorted(p.name for p in out.rglob("*"))
    proc = run_cli("run", str(library), "--out", str(out), "--dry-run")
    assert "3 skipped" in proc.stderr and sorted(p.name for p in out.rglob("*")) == before


def test_all_three_entry_points(tmp_path, song):
    write_mp3(tmp_path / "in" / "s.mp3", song)
    for i, cmd in enumerate(([sys.executable, str(ROOT / "mp3restore.py")], [sys.executable, "-m", "restore"])):
        proc = subprocess.run([*cmd, "run", str(tmp_path / "in"), "--out", str(tmp_path / f"o{i}"), "-q", "--variants", "01"],
                              cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / f"o{i}" / "01_baseline" / "s.flac").is_file()


def test_colour_coded_and_quoted_paths(tmp_path, song):
    write_mp3(tmp_path / "My Music" / "s.mp3", song)
    code, summary = cli_json("run", f"\x1b[90m\"{tmp_path / 'My Music'}\" \x1b[0m", "--out", f"'{tmp_path / 'out'}' ")
    assert code == 0 and summary["counts"]["done"] == 1
    assert (tmp_path / "out" / "01_baseline" / "s.flac").is_file()


def test_errors_show_escape_codes_instead_of_obeying_them(tmp_path):
    proc = run_cli("run", str(tmp_path / "no\x1b[31mpe"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "\x1b[31m" not in proc.stderr and "no such file or folder" in proc.stderr


def test_progress_events_in_order(tmp_path, library):
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.engine.variants import resolve_variants
    rec = RecordingReporter()
    run(RunConfig(inputs=[str(library)], out_dir=tmp_path / "out", variants=resolve_variants("01")), rec)
    kinds = [type(e) for e in rec.events]
    assert kinds[0] is RunStarted and rec.events[0].songs == 3
    assert kinds.count(SongStarted) == kinds.count(SongFinished) == 3
    fractions = [e.fraction for e in rec.events if isinstance(e, SongProgress) and e.song == rec.events[1].song]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_rich_progress_and_summary_render(tmp_path, library):
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.engine.variants import resolve_variants
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, color_system="truecolor")
    (library / "[bold]weird.mp3").write_bytes(b"junk")
    with RichReporter(console) as reporter:
        summary = run(RunConfig(inputs=[str(library)], out_dir=tmp_path / "out", report=False,
                                variants=resolve_variants("01")), reporter)
    print_summary(console, summary)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    assert "all songs" in text and "eta" in text
    assert "[bold]weird.mp3" in text                 # shown literally, not as markup
    assert "3 done" in text and "1 failed" in text


def test_json_is_the_only_stdout(tmp_path, library):
    proc = run_cli("run", str(library), "--out", str(tmp_path / "o"), "--json")
    assert json.loads(proc.stdout)["counts"]["done"] == 3


def test_strict_makes_an_asked_for_variant_that_cannot_run_an_error(tmp_path):
    """Without a model, 08_hifigan is unavailable: listed, exit 0; with --strict, exit 1.
    The default set (no --variants) asks for nothing in particular: never an error."""
    from tests.support.examples import band
    write_mp3(tmp_path / "in" / "a.mp3", band(1.0))
    common = ("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "no models"))
    code, summary = cli_json(*common, "--variants", "01,08")
    assert code == 0 and summary["counts"]["unavailable"] == 1
    code, summary = cli_json(*common, "--variants", "01,08", "--strict")
    assert code == 1 and summary["exit_code"] == 1 and summary["counts"]["unavailable"] == 1
    code, _ = cli_json(*common, "--strict", default_variants=True)
    assert code == 0


def test_models_list_names_every_model_and_stays_readable_when_narrow(tmp_path):
    """Every model a variant can use, the bundled DeepFilterNet3 too; a 70-column terminal
    gets short blocks, not a wrapped table."""
    import os
    import subprocess
    import sys
    from restore.models.store import CATALOGUE
    for columns in ("70", "200"):
        proc = subprocess.run([sys.executable, str(ROOT / "mp3restore.py"), "models", "list", "--models-dir",
                               str(tmp_path)], capture_output=True, text=True, encoding="utf-8",
                              env={**os.environ, "COLUMNS": columns})
        text = proc.stdout + proc.stderr
        assert proc.returncode == 0, text
        for name in ["deepfilternet3", *CATALOGUE]:
            assert name in text, (columns, name)
        assert "model stages run on" in text
        if columns == "70":
            assert "┃" not in text  # blocks, not a table folded into many lines


def test_quiet_prints_only_counts_and_failures(tmp_path):
    from tests.support.examples import band
    write_mp3(tmp_path / "in" / "good.mp3", band(1.0))
    (tmp_path / "in" / "bad.mp3").write_bytes(b"not an mp3 at all")
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "-q")
    assert proc.returncode == 1
    assert "bad.mp3" in proc.stderr and "good.mp3" not in proc.stderr   # the failure, not the song that worked
    assert "1 done" in proc.stderr and "1 failed" in proc.stderr


def test_a_long_cpu_batch_on_a_machine_with_cores_gets_the_jobs_tip(tmp_path, monkeypatch):
    """Eight songs or more without a model stage, 4 cores or more, one song at a time: the
    run says once that --jobs would use the idle cores; a short batch, --jobs itself and a
    machine of fewer cores do not hear it."""
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.engine.variants import resolve_variants
    from restore.io.lame import encode_mp3
    from tests.support.examples import band
    mp3 = encode_mp3(band(0.5, seed=3), bitrate=128)
    for i in range(8):
        (tmp_path / "in" / f"{i}.mp3").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / f"{i}.mp3").write_bytes(mp3)

    def tips(cores: int, songs: int = 8, jobs: int = 1) -> list[str]:
        monkeypatch.setattr("restore.engine.run.os.cpu_count", lambda: cores)
        rec = RecordingReporter()
        inputs = [str(tmp_path / "in" / f"{i}.mp3") for i in range(songs)]
        run(RunConfig(inputs=inputs, out_dir=tmp_path / f"out{cores}-{songs}", variants=resolve_variants("01"),
                      dry_run=True, jobs=jobs), rec)
        return [e.text for e in rec.events if getattr(e, "text", "").startswith("tip:")]

    assert tips(8) == ["tip: this machine has 8 cores and a run uses about one; --jobs 7 restores up to 7 songs at once"
                       + ("" if __import__("importlib").util.find_spec("distributed")
                          else ' (after pip install "mp3restore[cluster]")')]
    assert tips(8, songs=7) == [] and tips(2) == [] and tips(8, jobs=2) == []
