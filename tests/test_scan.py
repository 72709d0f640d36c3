from pathlib import Path

import pytest

from restore.errors import UsageError
from restore.engine.scan import clean_user_path, scan


@pytest.mark.parametrize("raw, expected", [
    ("\x1b[90m/music/a.mp3\x1b[0m", "/music/a.mp3"),          # the seed's batch file passed colour codes
    ('"/music/a b.mp3"', "/music/a b.mp3"),
    ("'/music/a b.mp3'  ", "/music/a b.mp3"),
    ("  /music/x   ", "/music/x"),
    ("& '/music/dragged in.mp3'", "/music/dragged in.mp3"),   # PowerShell drag and drop
    ("\u201c/music/curly.mp3\u201d", "/music/curly.mp3"),
    ("\x1b]0;title\x07/music/osc", "/music/osc"),
    ("[90m/music/lost-esc[0m", "/music/lost-esc"),            # escape codes whose ESC was lost
])
def test_clean_user_path(raw, expected):
    assert clean_user_path(raw) == Path(expected)


def test_bracket_names_that_exist_are_kept(tmp_path):
    real = tmp_path / "[90m] live"
    real.mkdir()
    assert clean_user_path(str(real)) == real


def test_empty_path_is_a_usage_error():
    with pytest.raises(UsageError):
        clean_user_path('  ""  ')


def test_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        scan([str(tmp_path / "nope")])


def test_scan_finds_mp3_recursively_any_case(tmp_path):
    for rel in ("A/x.mp3", "A/B/y.MP3", "A/B/z.Mp3", "A/notes.txt", "A/._x.mp3", "c.mp3"):
        p = tmp_path / "in" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    result = scan([str(tmp_path / "in")])
    assert [t.rel.as_posix() for t in result.tracks] == ["A/B/y.MP3", "A/B/z.Mp3", "A/x.mp3", "c.mp3"]
    assert all(t.path.is_absolute() for t in result.tracks)


def test_scan_single_file_and_colour_coded_folder(tmp_path):
    f = tmp_path / "Song name é.mp3"
    f.write_bytes(b"x")
    result = scan([f"\x1b[90m{f}\x1b[0m "])
    assert [t.rel.as_posix() for t in result.tracks] == ["Song name é.mp3"]


def test_colliding_outputs_are_reported_not_overwritten(tmp_path):
    for folder in ("one", "two"):
        p = tmp_path / folder / "Song.mp3"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
    result = scan([str(tmp_path / "one"), str(tmp_path / "two")])
    assert len(result.tracks) == 1
    assert len(result.problems) == 1 and "would overwrite" in result.problems[0][1]


def test_natural_order(tmp_path):
    for name in ("10 b.mp3", "2 a.mp3", "1 c.mp3"):
        (tmp_path / name).write_bytes(b"x")
    assert [t.rel.name for t in scan([str(tmp_path)]).tracks] == ["1 c.mp3", "2 a.mp3", "10 b.mp3"]


def test_folders_reached_through_a_symlink_are_followed_once(tmp_path):
    """A linked folder is scanned (it was skipped without a word); a link back up (a loop)
    or to a folder already scanned is skipped, and said."""
    elsewhere = tmp_path / "elsewhere" / "Album"
    elsewhere.mkdir(parents=True)
    (elsewhere / "x.mp3").write_bytes(b"x")
    library = tmp_path / "in"
    (library / "Real").mkdir(parents=True)
    (library / "Real" / "y.mp3").write_bytes(b"x")
    (library / "Linked").symlink_to(elsewhere, target_is_directory=True)
    (library / "Real" / "loop").symlink_to(library, target_is_directory=True)
    (library / "song.mp3").symlink_to(elsewhere / "x.mp3")
    result = scan([str(library)])
    assert [t.rel.as_posix() for t in result.tracks] == ["Linked/x.mp3", "Real/y.mp3", "song.mp3"]
    assert result.problems == []
    assert [(p.name, why) for p, why in result.warnings] == [
        ("loop", f"skipped: it leads to {library}, a folder already scanned")]


def test_other_audio_beside_the_mp3s_is_one_warning_per_input_folder(tmp_path):
    """A mixed library's M4As and FLACs are not restored, and the run says so once, with
    the count by kind, rather than once per file or not at all."""
    music = tmp_path / "music"
    for rel in ("A/1.mp3", "A/2.M4A", "A/3.m4a", "B/4.flac", "B/5.wma", "B/cover.jpg", "B/._6.m4a"):
        (music / rel).parent.mkdir(parents=True, exist_ok=True)
        (music / rel).write_bytes(b"x")
    result = scan([str(music)])
    assert [t.rel.as_posix() for t in result.tracks] == ["A/1.mp3"]
    assert result.warnings == [(music.resolve(), "also holds 4 audio file(s) that are not MP3 (2 .m4a, 1 .flac, "
                                                 "1 .wma): not restored (mp3restore restores MP3s)")]


def test_a_folder_without_mp3s_is_a_warning(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "cover.jpg").write_bytes(b"x")
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "a.mp3").write_bytes(b"x")
    result = scan([str(tmp_path / "empty"), str(tmp_path / "music")])
    assert [t.rel.as_posix() for t in result.tracks] == ["a.mp3"]
    assert result.warnings == [(tmp_path / "empty", "no MP3 files in this folder")]


def test_nothing_found_at_all_is_exit_1(tmp_path):
    from .conftest import cli_json
    (tmp_path / "empty").mkdir()
    code, summary = cli_json("run", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert code == 1 and summary["exit_code"] == 1 and summary["results"] == []
    assert summary["warnings"] == [f"{tmp_path / 'empty'}: no MP3 files in this folder"]


def test_an_empty_folder_beside_songs_is_said_but_not_a_failure(tmp_path, song):
    from .conftest import run_cli, write_mp3
    (tmp_path / "empty").mkdir()
    write_mp3(tmp_path / "music" / "a.mp3", song)
    proc = run_cli("run", str(tmp_path / "empty"), str(tmp_path / "music"), "--out", str(tmp_path / "out"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "no MP3 files in this folder" in proc.stderr
