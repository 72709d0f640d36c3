"""Atomic FLAC writing, 24-bit and exact; tags and cover art carried from ID3 and APEv2."""
import os

import numpy as np
import pytest
import soundfile as sf
from mutagen.apev2 import BINARY, APEValue, APEv2
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TALB, TCON, TIT2, TPE1

from restore.audio import Audio
from restore.engine.variants import resolve_variants
from restore.errors import OutputError
from tests.support.examples import png_cover, tag_mp3
from tests.support.tag_layouts import add_id3v1
from restore.io.writers import TMP_MARK, atomic_output, remove_stale_temps, temp_path_for, write_flac

from .conftest import read_flac, run_cli, run_lib, write_mp3


def test_flac_is_24_bit_with_exact_frames_and_samples(tmp_path, song):
    out = tmp_path / "o" / "song.flac"
    written = write_flac(song, out)
    info = sf.info(str(out))
    assert (info.format, info.subtype, info.frames, info.samplerate, info.channels) == ("FLAC", "PCM_24", song.frames, 44100, 2)
    data, _ = read_flac(out)
    assert np.max(np.abs(data - song.samples)) <= 1.0 / 2 ** 23  # 24-bit quantisation, nothing else
    assert written["size"] == out.stat().st_size and len(written["hash"]) == 32 and written["clipped"] == 0


def test_samples_beyond_full_scale_are_clipped_and_counted(tmp_path):
    x = np.zeros((2, 1000), np.float32)
    x[0, 10], x[1, 20] = 1.5, -2.0
    written = write_flac(Audio(x, 48000), tmp_path / "c.flac")
    data, _ = read_flac(tmp_path / "c.flac")
    assert written["clipped"] == 2
    assert data[0, 10] == pytest.approx(1.0, abs=2e-7) and data[1, 20] == pytest.approx(-1.0, abs=2e-7)


def test_failure_mid_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "keep.flac"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.flac"]


def test_os_error_becomes_one_line_output_error(tmp_path):
    (tmp_path / "blocker").write_bytes(b"I am a file")
    with pytest.raises(OutputError, match="a file is in the way|not a directory|Not a directory"):
        write_flac(Audio(np.zeros((1, 10), np.float32), 8000), tmp_path / "blocker" / "x.flac")


def test_temp_names_keep_the_extension_and_stale_ones_are_removed(tmp_path):
    final = tmp_path / "Song [live].flac"
    tmp = temp_path_for(final)
    assert tmp.suffix == ".flac" and tmp.parent == final.parent and TMP_MARK in tmp.name
    tmp.write_bytes(b"stale")
    other = temp_path_for(tmp_path / "Other.flac")
    other.write_bytes(b"not ours")
    legacy = tmp_path / ".Song [live].flac.1a2b3c4d.mp3restore-tmp.flac"  # an earlier version's
    legacy.write_bytes(b"stale")
    assert remove_stale_temps(final) == 2
    assert not tmp.exists() and not legacy.exists() and other.exists()


def test_temp_names_are_short_whatever_the_target(tmp_path):
    """The target's name inside the temporary's made names of 221 bytes or more fail on a
    255-byte file system ("path too long", or "the FLAC encoder failed (System error.)")."""
    lengths = {len(temp_path_for(tmp_path / ("x" * n + ".flac")).name.encode()) for n in (1, 100, 250)}
    assert lengths == {37}
    assert len(temp_path_for(tmp_path / "Song.a-very-long-suffix").name) == 36  # an odd suffix becomes .tmp
    final = tmp_path / ("é" * 123 + ".flac")  # 251 bytes in UTF-8: the file system's limit is 255
    record = write_flac(Audio(np.zeros((2, 4410), np.float32), 44100), final)
    assert record["size"] == final.stat().st_size and os.listdir(tmp_path) == [final.name]
    with atomic_output(tmp_path / ("b" * 250 + ".json")) as tmp:
        tmp.write_bytes(b"{}")
    assert remove_stale_temps(final) == 0


def test_a_song_with_a_name_near_the_limit_is_restored(tmp_path, song):
    """A 250-byte MP3 name: its FLAC is 251 bytes and its marker 255, both within the limit."""
    name = "s" * 246 + ".mp3"
    summary = run_lib([write_mp3(tmp_path / "in" / name, song)], tmp_path / "out")
    assert summary.exit_code == 0, [r.reason for r in summary.results]
    assert (tmp_path / "out" / "01_baseline" / ("s" * 246 + ".flac")).is_file()
    # A name that fits keeps the marker name earlier versions wrote, so their markers still count.
    assert (tmp_path / "out" / "_done" / "01_baseline" / (name + ".json")).is_file()


@pytest.mark.parametrize("name", ["s" * 247 + ".mp3", "s" * 251 + ".mp3", "é" * 125 + "x.mp3"],
                         ids=["251 bytes", "255 bytes", "255 bytes of é"])
def test_a_song_name_of_up_to_255_bytes_is_restored_reported_and_resumed(tmp_path, song, name):
    """251 to 255 bytes: the marker (name + .json) and the FLAC (the name less .mp3, plus
    .flac) would pass the file system's 255-byte limit; they get a cut name with a hash."""
    assert 251 <= len(name.encode()) <= 255
    mp3 = write_mp3(tmp_path / "in" / "Album" / name, song)
    out = tmp_path / "out"
    summary = run_lib([tmp_path / "in"], out, report=True)
    assert summary.exit_code == 0, [r.reason for r in summary.results] + [summary.report_error]
    (flac,) = (out / "01_baseline" / "Album").glob("*.flac")
    (marker,) = (out / "_done" / "01_baseline" / "Album").glob("*.json")
    assert flac.name.startswith(name[:100]) and marker.name.startswith(name[:100])
    assert read_flac(flac)[0].shape[1] >= song.frames  # the whole song (no gapless tag: the delay is kept)
    assert [p for p in (out / "_report").rglob("*") if p.name.endswith(".html") and name[:100] in p.name]
    again = run_lib([tmp_path / "in"], out)
    assert [r.status for r in again.results] == ["skipped"] and again.exit_code == 0
    assert mp3.is_file()


def test_tags_and_cover_art_survive(tmp_path, song):
    mp3 = write_mp3(tmp_path / "in" / "Tagged Song.mp3", song)
    cover = png_cover(seed=5)
    tag_mp3(mp3, "Tagged Song", "Bänd", "Älbum", "4/12", year="1987", genre="Jazz", cover=cover)
    summary = run_lib([tmp_path / "in"], tmp_path / "out")
    assert summary.exit_code == 0
    flac = FLAC(str(tmp_path / "out" / "01_baseline" / "Tagged Song.flac"))
    assert flac["TITLE"] == ["Tagged Song"] and flac["ARTIST"] == ["Bänd"] and flac["ALBUM"] == ["Älbum"]
    assert flac["TRACKNUMBER"] == ["4"] and flac["TRACKTOTAL"] == ["12"]
    assert flac["DATE"] == ["1987"] and flac["GENRE"] == ["Jazz"]
    assert flac["MP3RESTORE_VARIANT"] == ["01_baseline"] and flac["MP3RESTORE_SOURCE"] == ["Tagged Song.mp3"]
    assert len(flac.pictures) == 1 and flac.pictures[0].data == cover and flac.pictures[0].type == 3
    assert flac.pictures[0].mime == "image/png"


def _add_ape(mp3, fields: dict, cover: bytes | None = None):
    """An APEv2 tag before the file's ID3v1, as foobar2000 and mp3gain write it."""
    data = mp3.read_bytes()
    id3v1 = data[-128:] if data[-128:-125] == b"TAG" else b""
    mp3.write_bytes(data[:len(data) - len(id3v1)])
    ape = APEv2()
    for key, value in fields.items():
        ape[key] = value
    if cover:
        ape["Cover Art (Front)"] = APEValue(b"front.png\0" + cover, BINARY)
    ape.save(str(mp3))
    with open(mp3, "ab") as fh:
        fh.write(id3v1)


def test_apev2_tags_come_before_id3v1(tmp_path, song):
    """foobar2000's default for MP3s: APEv2 + ID3v1. ID3v1 cuts the title at 30 characters
    and has no album artist or cover: the APEv2 tag's are copied, ID3v1 adds what it lacks."""
    mp3 = write_mp3(tmp_path / "in" / "foobar.mp3", song)
    add_id3v1(mp3)  # title "Song", artist "Artist", album "Album", 1999, genre 17 (Rock)
    cover = png_cover(seed=3)
    long_title = "A Title Far Longer Than Thirty Characters, Ünïcödé"
    _add_ape(mp3, {"Title": long_title, "Artist": "Ape Artist", "Album Artist": "Various Artists",
                   "Track": "7/11", "Year": "2003", "REPLAYGAIN_TRACK_GAIN": "-6.20 dB",
                   "REPLAYGAIN_TRACK_PEAK": "0.988", "MP3GAIN_MINMAX": "087,210"}, cover)
    variants = resolve_variants("01_baseline,11_offline_restore")
    assert run_lib([tmp_path / "in"], tmp_path / "out", variants=variants).exit_code == 0
    flac = FLAC(str(tmp_path / "out" / "01_baseline" / "foobar.flac"))
    assert flac["TITLE"] == [long_title] and flac["ARTIST"] == ["Ape Artist"]
    assert flac["ALBUMARTIST"] == ["Various Artists"] and flac["DATE"] == ["2003"]
    assert flac["TRACKNUMBER"] == ["7"] and flac["TRACKTOTAL"] == ["11"]
    assert flac["ALBUM"] == ["Album"] and flac["GENRE"] == ["Rock"]  # from the ID3v1: the APEv2 lacks them
    assert flac["REPLAYGAIN_TRACK_GAIN"] == ["-6.20 dB"] and "MP3GAIN_MINMAX" not in flac
    assert len(flac.pictures) == 1 and flac.pictures[0].data == cover and flac.pictures[0].mime == "image/png"
    restored = FLAC(str(tmp_path / "out" / "11_offline_restore" / "foobar.flac"))
    assert restored["TITLE"] == [long_title] and "REPLAYGAIN_TRACK_GAIN" not in restored  # loudness not kept


def test_id3v2_comes_before_apev2_and_mp3gain_applied_gain_is_not_copied(tmp_path, song):
    """Where ID3v2 and APEv2 disagree, ID3v2 wins; APEv2 adds what it lacks. mp3gain's
    MP3GAIN_UNDO means it changed the audio itself: its ReplayGain no longer fits the decode."""
    mp3 = write_mp3(tmp_path / "in" / "both.mp3", song)
    tag_mp3(mp3, "Id3 Title", "Id3 Artist", "Id3 Album", "1/2")
    _add_ape(mp3, {"Title": "Ape Title", "Composer": "Ape Composer", "REPLAYGAIN_TRACK_GAIN": "-2.00 dB",
                   "MP3GAIN_UNDO": "-003,-003,N"})
    assert run_lib([tmp_path / "in"], tmp_path / "out").exit_code == 0
    flac = FLAC(str(tmp_path / "out" / "01_baseline" / "both.flac"))
    assert flac["TITLE"] == ["Id3 Title"] and flac["COMPOSER"] == ["Ape Composer"]
    assert "REPLAYGAIN_TRACK_GAIN" not in flac and "MP3GAIN_UNDO" not in flac


def test_genre_numbers_become_names_and_the_id3v1_comment_is_kept(tmp_path, song):
    """ID3v2.3 taggers wrote ID3v1 genre numbers ("(17)", "(17)(18)"); ID3v1's comment is
    a comment like any other."""
    mp3 = write_mp3(tmp_path / "in" / "old.mp3", song)
    tags = ID3()
    tags.add(TIT2(encoding=0, text="Old"))
    tags.add(TCON(encoding=0, text="(17)(18)"))
    tags.save(str(mp3), v2_version=3)
    v1 = write_mp3(tmp_path / "in" / "v1.mp3", song)
    add_id3v1(v1)  # comment "comment", genre 17
    assert run_lib([tmp_path / "in"], tmp_path / "out").exit_code == 0
    assert FLAC(str(tmp_path / "out" / "01_baseline" / "old.flac"))["GENRE"] == ["Rock", "Techno"]
    flac = FLAC(str(tmp_path / "out" / "01_baseline" / "v1.flac"))
    assert flac["GENRE"] == ["Rock"] and flac["COMMENT"] == ["comment"]


def test_utf8_written_into_latin1_frames_is_read_as_utf8(tmp_path, song):
    """Taggers that wrote UTF-8 bytes into frames marked Latin-1 left "BjÃ¶rk" for Björk in
    every player; text that is Latin-1 ("Café") stays as it is."""
    mp3 = write_mp3(tmp_path / "in" / "mojibake.mp3", song)
    tags = ID3()
    tags.add(TIT2(encoding=0, text="Björk – Jóga".encode("utf-8").decode("latin-1")))
    tags.add(TPE1(encoding=0, text="Café Tacvba"))
    tags.save(str(mp3), v2_version=3)
    assert run_lib([tmp_path / "in"], tmp_path / "out").exit_code == 0
    flac = FLAC(str(tmp_path / "out" / "01_baseline" / "mojibake.flac"))
    assert flac["TITLE"] == ["Björk – Jóga"] and flac["ARTIST"] == ["Café Tacvba"]


def test_tag_codepage_reads_what_old_taggers_wrote_in_their_system_code_page(tmp_path, song):
    """Russian taggers wrote cp1251 into frames marked Latin-1 ("Ïåñíÿ" in every player):
    --tag-codepage cp1251 reads it as meant; UTF-8 and ASCII text are left as they are."""
    mp3 = write_mp3(tmp_path / "in" / "old ru.mp3", song)
    tags = ID3()
    tags.add(TIT2(encoding=0, text="Песня о тревожной молодости".encode("cp1251").decode("latin-1")))
    tags.add(TPE1(encoding=0, text="Björk".encode("utf-8").decode("latin-1")))
    tags.add(TALB(encoding=0, text="Album 1"))
    tags.save(str(mp3), v2_version=3)
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "as-marked"))
    assert proc.returncode == 0, proc.stderr
    assert FLAC(str(tmp_path / "as-marked" / "01_baseline" / "old ru.flac"))["TITLE"] == ["Ïåñíÿ î òðåâîæíîé ìîëîäîñòè"]
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--tag-codepage", "windows-1251")
    assert proc.returncode == 0, proc.stderr
    flac = FLAC(str(tmp_path / "out" / "01_baseline" / "old ru.flac"))
    assert flac["TITLE"] == ["Песня о тревожной молодости"]
    assert flac["ARTIST"] == ["Björk"] and flac["ALBUM"] == ["Album 1"]
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "x"), "--tag-codepage", "klingon")
    assert proc.returncode == 2 and "'klingon' is not a code page" in proc.stderr


def test_damaged_id3_tag_costs_only_the_tags(tmp_path, song):
    mp3 = write_mp3(tmp_path / "in" / "bad-tag.mp3", song)
    clean = read_flac_after_run(tmp_path / "clean", mp3)
    # An ID3v2 header whose only frame is garbage, in front of the same audio.
    mp3.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x14" + b"TIT2\xff\xff\xff\xff\x00\x00" + b"\x00" * 10 + mp3.read_bytes())
    damaged = read_flac_after_run(tmp_path / "damaged", mp3)
    assert np.array_equal(clean, damaged)


def read_flac_after_run(out, mp3):
    summary = run_lib([mp3], out)
    assert summary.counts()["done"] == 1, summary.results
    return read_flac(out / "01_baseline" / mp3.with_suffix(".flac").name)[0]
