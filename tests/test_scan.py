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
