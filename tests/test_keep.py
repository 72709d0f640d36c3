"""`mp3restore keep OUT --to LIBRARY`: the library built from the choices. Real MP3s run
through the pipeline (tags and cover art from ID3), a second variant and stems beside the
baseline, choices as the report's server writes them; ReplayGain checked against
pyloudnorm, an independent BS.1770-4 implementation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC

from restore.audio import Audio
from restore.errors import UsageError
from restore.io.tags import TagSet
from restore.io.writers import write_flac
from restore.report.choices import load_choices, save_choice
from restore.report.keep import keep
from tests.support.examples import band

from .conftest import read_flac, run_cli, run_lib

pyln = pytest.importorskip("pyloudnorm", reason="pyloudnorm is the independent BS.1770 meter (pip install pyloudnorm)")

SONGS = ("01 One", "02 Two", "03 Three")
QUIET = "07_quieter"   # a stand-in variant: the baseline 6 dB down, tags and cover art kept
STEMS = "04_stems"


def _tags_of(path: Path) -> TagSet:
    flac = FLAC(str(path))
    return TagSet({k.upper(): list(v) for k, v in flac.items()}, list(flac.pictures))


@pytest.fixture
def out(tmp_path, library) -> Path:
    """The `library` fixture's three tagged MP3s run into 01_baseline (with markers), a
    quieter variant of every song and stems of the third."""
    out = tmp_path / "out"
    summary = run_lib([library], out)
    assert {r.status for r in summary.results} == {"done"}
    for name in SONGS:
        base = out / "01_baseline" / "Artist" / "Album" / f"{name}.flac"
        samples, rate = read_flac(base)
        write_flac(Audio(samples * 0.5, rate), out / QUIET / "Artist" / "Album" / f"{name}.flac", tags=_tags_of(base))
    for stem in ("drums", "vocals"):
        write_flac(band(3.0, seed=9), out / STEMS / "Artist" / "Album" / SONGS[2] / f"{stem}.flac")
    return out


def choose(out: Path, song: str, variant: str | None) -> None:
    known = {f"Artist/Album/{s}": {"01_baseline", QUIET, STEMS} for s in SONGS}
    save_choice(out, f"Artist/Album/{song}", {"keep": variant, "at": "2026-11-30T16:00:00Z",
                                             "abx": [{"a": "01_baseline", "b": variant or QUIET, "correct": 9,
                                                      "trials": 10, "p": 0.011}]}, known)


def kept(library: Path, song: str) -> Path:
    return library / "Artist" / "Album" / f"{song}.flac"


def lufs_of(path: Path) -> float:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return pyln.Meter(rate).integrated_loudness(data)


def gain_of(value: str) -> float:
    number, unit = value.split()
    assert unit == "dB"
    return float(number)


def test_keep_builds_the_library_from_choices_and_the_default(out, tmp_path):
    choose(out, "01 One", QUIET)
    choose(out, "03 Three", STEMS)      # "02 Two" is undecided: it gets the default
    lib = tmp_path / "lib"
    lines: list[str] = []
    summary = keep(out, lib, default="01_baseline", log=lines.append)
    assert sorted(summary.written) == [f"Artist/Album/{s}" for s in SONGS] and not summary.failed, lines

    one, two = FLAC(str(kept(lib, "01 One"))), FLAC(str(kept(lib, "02 Two")))
    assert one["MP3RESTORE_VARIANT"] == [QUIET] and one["MP3RESTORE_KEPT"] == ["chosen in the report"]
    assert two["MP3RESTORE_VARIANT"] == ["01_baseline"] and two["MP3RESTORE_KEPT"] == ["default: no choice made"]
    assert two["MP3RESTORE_MADE"][0].startswith("decode")       # from the baseline's `_done` marker
    assert one["MP3RESTORE_ABX"] == [f"9/10 01_baseline vs {QUIET} (p = 0.011)"]
    for flac, title, track in ((one, "One", "1"), (two, "Two", "2")):  # every tag of the MP3 made it
        assert flac["TITLE"] == [title] and flac["ARTIST"] == ["Artist"] and flac["ALBUM"] == ["Album"]
        assert flac["TRACKNUMBER"] == [track] and flac["DATE"] == ["1999"] and flac["GENRE"] == ["Rock"]
    assert len(one.pictures) == 1 and one.pictures[0].mime == "image/png" and one.pictures[0].data.startswith(b"\x89PNG")
    # the audio is the variant's, bit for bit
    assert np.array_equal(read_flac(kept(lib, "01 One"))[0], read_flac(out / QUIET / "Artist" / "Album" / "01 One.flac")[0])

    # ReplayGain 2.0 against pyloudnorm: track gain, and the album measured as one programme
    for path in (kept(lib, "01 One"), kept(lib, "02 Two")):
        flac = FLAC(str(path))
        assert gain_of(flac["REPLAYGAIN_TRACK_GAIN"][0]) == pytest.approx(-18.0 - lufs_of(path), abs=0.1)
        data, _ = sf.read(str(path), dtype="float64")
        assert float(flac["REPLAYGAIN_TRACK_PEAK"][0]) >= np.abs(data).max() - 1e-4   # true peak >= sample peak
    assert gain_of(one["REPLAYGAIN_TRACK_GAIN"][0]) - gain_of(two["REPLAYGAIN_TRACK_GAIN"][0]) > 4  # 6 dB quieter
    assert one["REPLAYGAIN_ALBUM_GAIN"] == two["REPLAYGAIN_ALBUM_GAIN"]  # (checked against pyloudnorm below)
    assert gain_of(two["REPLAYGAIN_TRACK_GAIN"][0]) < gain_of(one["REPLAYGAIN_ALBUM_GAIN"][0]) < gain_of(one["REPLAYGAIN_TRACK_GAIN"][0])

    # the stems variant is kept as its folder, tagged, without ReplayGain
    stems = sorted((lib / "Artist" / "Album" / "03 Three").glob("*.flac"))
    assert [p.name for p in stems] == ["drums.flac", "vocals.flac"]
    assert not kept(lib, "03 Three").exists()
    tags = FLAC(str(stems[1]))
    assert tags["MP3RESTORE_VARIANT"] == [STEMS] and tags["MP3RESTORE_STEM"] == ["vocals"]
    assert "REPLAYGAIN_TRACK_GAIN" not in tags


def test_album_gain_is_the_album_measured_as_one_programme(tmp_path):
    """Album gain against pyloudnorm on the album's songs played one after the other. Songs
    of 20 s: the few 400 ms blocks that straddle a junction in the joined audio (which a
    per-song measurement, like libebur128's, does not have) then move it by under 0.02 dB."""
    out = tmp_path / "out"
    for i, gain in enumerate((0.5, 1.0)):
        write_flac(Audio(band(20.0, seed=i).samples * gain, 44100), out / "01_baseline" / "A" / f"{i}.flac")
    keep(out, tmp_path / "lib")
    kept_files = [tmp_path / "lib" / "A" / f"{i}.flac" for i in range(2)]
    both = np.concatenate([sf.read(str(p), dtype="float64")[0] for p in kept_files])
    album = -18.0 - pyln.Meter(44100).integrated_loudness(both)
    for path in kept_files:
        flac = FLAC(str(path))
        assert gain_of(flac["REPLAYGAIN_ALBUM_GAIN"][0]) == pytest.approx(album, abs=0.1)
        assert gain_of(flac["REPLAYGAIN_TRACK_GAIN"][0]) == pytest.approx(-18.0 - lufs_of(path), abs=0.1)
    peaks = [float(FLAC(str(p))["REPLAYGAIN_TRACK_PEAK"][0]) for p in kept_files]
    assert float(FLAC(str(kept_files[0]))["REPLAYGAIN_ALBUM_PEAK"][0]) == max(peaks)


def test_a_rerun_after_a_changed_choice_rewrites_only_that_song(out, tmp_path):
    choose(out, "03 Three", STEMS)
    lib = tmp_path / "lib"
    keep(out, lib)
    files = sorted(p for p in lib.rglob("*.flac"))
    before = {p: p.stat().st_mtime_ns for p in files}

    again = keep(out, lib)   # nothing changed: nothing written
    assert len(again.unchanged) == 3 and not again.written and not again.retagged
    assert {p: p.stat().st_mtime_ns for p in files} == before

    edited = FLAC(str(kept(lib, "01 One")))   # the person tags a kept file in their player
    edited["COMMENT"] = ["mine"]
    edited.save()
    before[kept(lib, "01 One")] = kept(lib, "01 One").stat().st_mtime_ns
    lines: list[str] = []
    assert len(keep(out, lib, log=lines.append).unchanged) == 3
    assert "keep: Artist/Album/01 One: changed in the library since it was kept: left as it is" in lines
    assert {p: p.stat().st_mtime_ns for p in files} == before

    choose(out, "02 Two", QUIET)
    audio_before = read_flac(kept(lib, "01 One"))[0]
    lines = []
    third = keep(out, lib, log=lines.append)
    assert third.written == ["Artist/Album/02 Two"], lines
    assert FLAC(str(kept(lib, "02 Two")))["MP3RESTORE_VARIANT"] == [QUIET]
    # its album's loudness moved: the album's other song gets new album gain tags, same audio;
    # the stems (no album gain) are not touched
    assert third.retagged == ["Artist/Album/01 One"]
    assert np.array_equal(read_flac(kept(lib, "01 One"))[0], audio_before)
    changed = {p for p in files if p.stat().st_mtime_ns != before[p]}
    assert changed == {kept(lib, "01 One"), kept(lib, "02 Two")}
    one = FLAC(str(kept(lib, "01 One")))
    assert gain_of(one["REPLAYGAIN_ALBUM_GAIN"][0]) > gain_of(one["REPLAYGAIN_TRACK_GAIN"][0]) + 1  # now the quieter album
    assert one["COMMENT"] == ["mine"]         # retagged in place: the person's edit stays

    # a song that moves from a file to stems loses the old file
    choose(out, "02 Two", None)
    choose(out, "03 Three", "01_baseline")
    keep(out, lib)
    assert kept(lib, "03 Three").is_file() and not list((lib / "Artist" / "Album" / "03 Three").glob("*.flac"))


def test_skip_dry_run_and_bad_input(out, tmp_path):
    choose(out, "01 One", QUIET)
    lib = tmp_path / "lib"
    dry = keep(out, lib, default="skip", dry_run=True)
    assert dry.written == ["Artist/Album/01 One"] and len(dry.skipped) == 2
    assert not lib.exists()                                   # a dry run writes nothing
    summary = keep(out, lib, default="skip")
    assert summary.written == ["Artist/Album/01 One"] and len(summary.skipped) == 2
    assert sorted(p.name for p in lib.rglob("*.flac")) == ["01 One.flac"]

    with pytest.raises(UsageError, match="--default 'nope'"):
        keep(out, lib, default="nope")
    with pytest.raises(UsageError, match="inside a variant folder"):
        keep(out, out / "01_baseline" / "lib")
    (out / "_report" / "choices.json").write_text("{broken")
    with pytest.raises(UsageError, match="cannot read the choices"):
        keep(out, lib)
    assert load_choices(out) == {}                            # the report still builds without them

    # a FLAC that cannot be read is one song's failure; the rest is kept
    (out / "_report" / "choices.json").unlink()
    (out / QUIET / "Artist" / "Album" / "01 One.flac").write_bytes(b"fLaC" + bytes(100))
    choose(out, "01 One", QUIET)
    lines: list[str] = []
    summary = keep(out, tmp_path / "lib2", log=lines.append)
    assert summary.failed == ["Artist/Album/01 One"] and len(summary.written) == 2
    assert any("01 One: cannot read 07_quieter" in line for line in lines)


def test_keep_on_the_command_line(out, tmp_path):
    choose(out, "01 One", QUIET)
    lib = tmp_path / "lib"
    proc = run_cli("keep", str(out), "--to", str(lib), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "would write 07_quieter (chosen)" in proc.stderr and not lib.exists()
    proc = run_cli("keep", str(out), "--to", str(lib))
    assert proc.returncode == 0, proc.stderr
    assert "3 written, 0 retagged, 0 unchanged, 0 skipped, 0 failed" in proc.stderr
    state = json.loads((lib / ".mp3restore-keep" / "Artist" / "Album" / "01 One.json").read_text("utf-8"))
    assert state["identity"]["variant"] == QUIET
    proc = run_cli("keep", str(out), "--to", str(lib), "--default", "nope")
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_songs_measured_side_by_side_keep_what_one_at_a_time_keeps(out, tmp_path):
    """--jobs 2: the songs' loudness is measured in two processes; the library, its state and
    the log are what one song at a time gives."""
    choose(out, SONGS[0], QUIET)
    logs = {}
    for jobs in (1, 2):
        lines: list[str] = []
        summary = keep(out, tmp_path / f"lib{jobs}", log=lines.append, jobs=jobs)
        assert summary.exit_code == 0
        logs[jobs] = lines
    def contents(path: Path):
        if path.suffix != ".json":
            return path.read_bytes()
        state = json.loads(path.read_text(encoding="utf-8"))
        state.pop("targets")  # the kept files' size and mtime: two libraries' own
        return state
    files = {jobs: {p.relative_to(tmp_path / f"lib{jobs}").as_posix(): contents(p)
                    for p in sorted((tmp_path / f"lib{jobs}").rglob("*")) if p.is_file()} for jobs in (1, 2)}
    assert files[1] == files[2] and len(files[1]) >= 4
    assert logs[1] == logs[2]
    proc = run_cli("keep", str(out), "--to", str(tmp_path / "lib-cli"), "--jobs", "2")
    assert proc.returncode == 0, proc.stderr
