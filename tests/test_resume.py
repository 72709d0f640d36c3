"""Resume: a step is skipped only when its marker matches input, config, versions and outputs."""
import json
import os

import pytest

from restore.engine.markers import marker_path
from tests.support.examples import band
from restore.engine.run import plan_run
from restore.engine.config import RunConfig
from restore.stages.decode import DecodeStage

from restore.engine.variants import resolve_variants

from .conftest import by_status, run_lib, write_mp3

SONGS = ["Artist/Album/01 One.mp3", "Artist/Album/02 Two.mp3", "Artist/Album/03 Three.mp3"]


def test_rerun_skips_exactly_what_is_done(library, tmp_path):
    out = tmp_path / "out"
    first = run_lib([library], out)
    assert sorted(by_status(first)["done"]) == SONGS
    second = run_lib([library], out)
    assert sorted(by_status(second)["skipped"]) == SONGS and "done" not in by_status(second)
    # Remove one song's marker: only that song is redone; the others stay skipped.
    marker_path(out.resolve(), "01_baseline", __import__("pathlib").PurePosixPath(SONGS[1])).unlink()
    third = run_lib([library], out)
    assert by_status(third)["done"] == [SONGS[1]]
    assert sorted(by_status(third)["skipped"]) == [SONGS[0], SONGS[2]]


def test_marker_holds_fingerprint_config_versions_and_output_hashes(library, tmp_path):
    out = tmp_path / "out"
    run_lib([library], out)
    marker = json.loads((out / "_done" / "01_baseline" / "Artist" / "Album" / "01 One.mp3.json").read_text())
    assert set(marker["input"]) == {"size", "mtime_ns", "hash"}
    assert marker["config_hash"] and marker["versions"]["decode.decode"] == DecodeStage.revision
    (output,) = marker["outputs"]
    assert output["path"] == "01_baseline/Artist/Album/01 One.flac" and len(output["hash"]) == 32
    assert marker["facts"]["cutoff_hz"] and marker["facts"]["rate"] == 44100


def reasons(library, out, **kw):
    kw.setdefault("variants", resolve_variants("01"))
    plan = plan_run(RunConfig(inputs=[str(library)], out_dir=out, **kw))
    return {j.track.rel.as_posix(): j.reason for j in plan.jobs}


def test_changed_input_is_redone_touched_input_is_not(library, tmp_path):
    out = tmp_path / "out"
    run_lib([library], out)
    one, two = library / SONGS[0], library / SONGS[1]
    os.utime(one, ns=(one.stat().st_atime_ns, one.stat().st_mtime_ns + 10**9))   # touched, same bytes
    write_mp3(two, band(3.0, seed=99), bitrate=128)                                # new content
    r = reasons(library, out)
    assert r[SONGS[0]] == "done"
    assert r[SONGS[1]].startswith("input changed")
    summary = run_lib([library], out)
    assert by_status(summary)["done"] == [SONGS[1]]


def test_same_size_different_bytes_is_caught_by_full_verify(library, tmp_path):
    out = tmp_path / "out"
    run_lib([library], out)
    song = library / SONGS[2]
    st = song.stat()
    data = bytearray(song.read_bytes())
    data[-200] ^= 0xFF
    song.write_bytes(bytes(data))
    os.utime(song, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only a hash can tell
    assert reasons(library, out)[SONGS[2]] == "done"
    assert reasons(library, out, verify="full")[SONGS[2]] == "input changed (content)"


def test_changed_or_missing_output_is_redone(library, tmp_path):
    out = tmp_path / "out"
    run_lib([library], out)
    (out / "01_baseline" / "Artist" / "Album" / "01 One.flac").unlink()
    flac = out / "01_baseline" / "Artist" / "Album" / "02 Two.flac"
    flac.write_bytes(flac.read_bytes()[:-10])
    r = reasons(library, out)
    assert r[SONGS[0]].startswith("output missing")
    assert r[SONGS[1]].startswith("output changed")
    assert r[SONGS[2]] == "done"


def test_changed_config_or_versions_redo_the_step(library, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_lib([library], out)
    monkeypatch.setattr(DecodeStage, "revision", DecodeStage.revision + 1)
    assert set(reasons(library, out).values()) == {"versions changed (decode.decode)"}
    monkeypatch.undo()
    monkeypatch.setattr(DecodeStage, "config", lambda self: {"gapless": "lame-tag", "untagged": "trim-1105"})
    assert set(reasons(library, out).values()) == {"config changed"}


def test_a_library_upgrade_alone_redoes_nothing_and_older_markers_still_count(library, tmp_path, monkeypatch):
    """Library versions are recorded, not compared: an upgrade that left the output alone
    keeps the work (the golden tests make a change in the output bump the revision). A
    marker from before (libraries inside `versions`) is not redone either."""
    import json
    out = tmp_path / "out"
    run_lib([library], out)
    marker = json.loads(next((out / "_done").rglob("*.json")).read_text())
    assert marker["libraries"]["decode.miniaudio"] and "decode.miniaudio" not in marker["versions"]
    monkeypatch.setattr(DecodeStage, "library_versions", lambda self: {"miniaudio": "99.0", "miniaudio_lib": "9"})
    assert set(reasons(library, out).values()) == {"done"}
    for path in (out / "_done").rglob("*.json"):       # as markers were written before
        old = json.loads(path.read_text())
        old["versions"].update({"decode.miniaudio": "1.0", "decode.miniaudio_lib": "0.1"})
        del old["libraries"]
        path.write_text(json.dumps(old))
    assert set(reasons(library, out).values()) == {"done"}
    monkeypatch.setattr(DecodeStage, "revision", DecodeStage.revision + 1)   # what does redo it
    assert set(reasons(library, out).values()) == {"versions changed (decode.decode)"}


def test_unreadable_marker_is_redone_not_trusted(library, tmp_path):
    out = tmp_path / "out"
    run_lib([library], out)
    (out / "_done" / "01_baseline" / "Artist" / "Album" / "01 One.mp3.json").write_text("{ half a mark")
    assert reasons(library, out)[SONGS[0]] == "marker unreadable"


def test_redo_flag_redoes_everything(library, tmp_path):
    out = tmp_path / "out"
    run_lib([library], out)
    assert sorted(by_status(run_lib([library], out, redo=True))["done"]) == SONGS


# Valid JSON of the wrong shape once crashed the plan with a traceback before any song ran.
BAD_MARKERS = {
    "a list": ("[]", "marker damaged (not an object but list)"),
    "null": ("null", "marker damaged (not an object but NoneType)"),
    "no input": ({"input": None}, "marker damaged (input is not an object)"),
    "outputs a string": ({"outputs": "x"}, "marker damaged (outputs is not a list)"),
    "an output not an object": ({"outputs": ["x"]}, "marker damaged (output 1 is not an object)"),
    "a size as text": ({"input": {"size": "12", "mtime_ns": 1, "hash": "x"}}, "marker damaged (input's size is not a whole number)"),
    "a size as true": ({"input": {"size": True, "mtime_ns": 1, "hash": "x"}}, "marker damaged (input's size is not a whole number)"),
    "versions a list": ({"versions": []}, "marker damaged (versions is not an object)"),
    "an output outside": ({"outputs": [{"path": "../../elsewhere.flac", "size": 1, "mtime_ns": 1, "hash": "x"}]},
                          "marker damaged (output 1's path is not a path inside the output folder)"),
    "an absolute output": ({"outputs": [{"path": "C:\\\\x.flac", "size": 1, "mtime_ns": 1, "hash": "x"}]},
                           "marker damaged (output 1's path is not a path inside the output folder)"),
    "no outputs": ({"outputs": []}, "marker damaged (it lists no outputs)"),
    "steps a string": ({"config": {"steps": "x"}}, "marker damaged (config's steps are not a list of objects)"),
    "another schema": ({"schema": 99}, "marker from another version"),
    "deeply nested": ("[" * 100000 + "]" * 100000, "marker unreadable"),
}


@pytest.mark.parametrize("case", BAD_MARKERS, ids=list(BAD_MARKERS))
def test_a_marker_of_the_wrong_shape_means_redo_with_the_reason(library, tmp_path, case):
    out = tmp_path / "out"
    run_lib([library], out)
    path = out / "_done" / "01_baseline" / "Artist" / "Album" / "01 One.mp3.json"
    content, reason = BAD_MARKERS[case]
    if isinstance(content, dict):
        content = json.dumps({**json.loads(path.read_text()), **content})
    path.write_text(content)
    assert reasons(library, out) == {SONGS[0]: reason, SONGS[1]: "done", SONGS[2]: "done"}
    summary = run_lib([library], out)
    assert by_status(summary) == {"done": [SONGS[0]], "skipped": [SONGS[1], SONGS[2]]}
    log = next((out / "_logs").rglob("01 One*.log")).read_text(encoding="utf-8")
    assert f"(reason: {reason})" in log
    assert reasons(library, out)[SONGS[0]] == "done"  # the redo wrote a good marker


def test_the_report_reads_no_marker_of_the_wrong_shape(library, tmp_path):
    from restore.report.discover import find_songs
    from restore.report.measure import how_made
    out = tmp_path / "out"
    run_lib([library], out)
    path = out / "_done" / "01_baseline" / "Artist" / "Album" / "01 One.mp3.json"
    good = json.loads(path.read_text())

    def made():
        song = next(s for s in find_songs(out) if s.key == "Artist/Album/01 One")  # found by its FLAC all the same
        return how_made(song.markers.get("01_baseline"))
    assert made() == {"steps": [], "facts": {}}
    for bad in ({"config": {"steps": "x"}}, {"config": []}, {"stage_facts": "x"}, {"config": {"steps": [1]}}):
        path.write_text(json.dumps({**good, **bad}))
        assert made() is None, bad
