"""Every sample, whatever the file carries: the decode of each encoder and tag layout in the
README's table (tests/support/tag_layouts.py) is checked against its source, sample for
sample: the exact length and lag 0 where the file says how to trim, the delay kept and said
where it does not. Before, a tag at the end (ID3v1, APEv2, Lyrics3, an appended ID3v2)
cost the last frame and the end trim: 0 to 1152 samples short, depending on the length."""
import re

import mutagen.flac
import numpy as np
import pytest
import soundfile as sf

from restore.analysis.compare import align
from restore.audio import Audio
from restore.errors import InputError
from restore.io.mp3info import inspect
from restore.stages import StageContext
from restore.stages.decode import DecodeStage
from tests.support import tag_layouts
from tests.support.examples import band
from tests.support.tag_layouts import LAYOUTS, TOOLS, Layout

from .conftest import ROOT, pcm16, run_cli


def decode(path):
    log = []
    audio, facts = DecodeStage().read(path, StageContext(options={}, log=log.append))
    return audio, facts, log


def needs(layout: Layout):
    missing = [tool for tool in layout.needs if TOOLS[tool] is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} is not installed "
                                                    f"(apt-get install {' '.join(missing)})")


def assert_exact(audio: Audio, source: Audio):
    """The source's length, lag 0, and the end lines up too: the last 4096 samples are
    closest to the source's last 4096 unshifted (a shift by one sample adds 30% to the error
    at 8 kHz, 100% at 44.1 kHz)."""
    reference = Audio(pcm16(source), source.rate)
    assert audio.frames == source.frames, f"{audio.frames - source.frames:+d} samples"
    lag, gain = align(audio, reference)
    assert lag == 0 and gain is not None
    ref = reference.samples[:, -4096 - 4:-4]
    err = {shift: float(np.sqrt(np.mean((audio.samples[:, -4096 - 4 + shift:-4 + shift] - ref) ** 2)))
           for shift in range(-3, 4)}
    assert min(err, key=err.get) == 0 and err[0] < 0.8 * min(err[-1], err[1]), err


@pytest.fixture(scope="module")
def source():
    return band(6.0, seed=3)


@pytest.mark.parametrize("layout", [pytest.param(lay, id=lay.carries, marks=needs(lay)) for lay in LAYOUTS])
def test_each_layout_decodes_as_the_table_says(tmp_path, source, layout):
    path = layout.make(tmp_path / "song.mp3", source)
    audio, facts, log = decode(path)
    assert not facts["problems"] and facts["skipped_bytes"] == 0, facts  # no tag taken for damage
    if layout.lag is None:
        assert facts["gapless"] and facts["gapless_from"] in ("LAME tag", "iTunSMPB")
        assert_exact(audio, source)
        assert not any("no gapless data" in line for line in log)
    else:
        assert not facts["gapless"] and facts["gapless_note"]
        assert align(audio, Audio(pcm16(source), source.rate))[0] == layout.lag
        assert audio.frames == facts["frames"] * 1152
        assert any(line.startswith(f"note: no gapless data ({facts['gapless_note']})") for line in log), log


def test_the_readme_table_is_these_layouts():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- decode-table -->\n(.*?)\n<!-- /decode-table -->", readme, re.S)
    assert block, "README.md lacks the <!-- decode-table --> block"
    assert block.group(1).strip() == tag_layouts.markdown_table()


@pytest.mark.skipif(TOOLS["lame"] is None, reason="Debian's `lame` is not installed (apt-get install lame)")
@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.51, 12.0, 20.0])
def test_any_length_with_tags_at_both_ends(tmp_path, seconds):
    """12 s lost 385 samples and 20 s 673 before: the loss depended on the last frame's fill."""
    source = band(seconds, seed=7)
    path = tag_layouts.lame(tmp_path / "s.mp3", source, "-b", "192", "--tt", "Song")
    tag_layouts.add_apev2(path)
    tag_layouts.add_lyrics3v2(path)
    audio, facts, _ = decode(path)
    assert facts["tags"] == ["ID3v2.3", "APEv2", "Lyrics3v2", "ID3v1"]
    assert_exact(audio, source)


@pytest.mark.skipif(TOOLS["lame"] is None, reason="Debian's `lame` is not installed (apt-get install lame)")
@pytest.mark.parametrize("rate, channels, args", [(22050, 2, ("-b", "64")), (8000, 1, ("-b", "24", "-m", "m")),
                                                  (48000, 1, ("-V", "4", "-m", "m"))])
def test_other_rates_and_mono_with_an_id3v1(tmp_path, rate, channels, args):
    """MPEG-2 and 2.5 frames hold 576 samples; the decoder delay is 529 all the same."""
    source = band(3.3, rate=rate, channels=channels, seed=2)
    path = tag_layouts.lame(tmp_path / "s.mp3", source, *args, "--tt", "Song", "--id3v1-only")
    audio, facts, _ = decode(path)
    assert facts["rate"] == rate and facts["channels"] == channels and facts["gapless"]
    assert_exact(audio, source)


def test_tags_are_found_in_file_order_and_the_audio_bytes_between_them(tmp_path, source):
    path = tag_layouts.lameenc(tmp_path / "s.mp3", source)
    audio_bytes = path.stat().st_size
    tag_layouts.add_id3v2(path, 4)
    head = path.stat().st_size - audio_bytes
    for add in (tag_layouts.add_id3v23_appended, tag_layouts.add_id3v24_footer, tag_layouts.add_id3v1,
                tag_layouts.add_apev2, tag_layouts.add_lyrics3v1):
        add(path)
    info = inspect(path)
    assert info.tags == ["ID3v2.4", "ID3v2.3", "ID3v2.4", "APEv2", "Lyrics3v1", "ID3v1"], info.tags
    assert (info.audio_start, info.audio_end) == (head, head + audio_bytes)
    assert info.skipped_bytes == 0 and not info.problems


def test_a_damaged_tag_at_the_end_is_not_taken_for_a_tag(tmp_path, source):
    """Markers without their other end (a Lyrics3 size that points at audio, an APE footer
    with an impossible size) are left to the frame walk, which calls them junk."""
    path = tag_layouts.lameenc(tmp_path / "s.mp3", source)
    with open(path, "ab") as fh:
        fh.write(b"000099LYRICS200")
    info = inspect(path)
    assert "Lyrics3v2" not in info.tags and info.skipped_bytes == 15
    path.write_bytes(path.read_bytes()[:-15] + b"APETAGEX" + (2000).to_bytes(4, "little") + (10 ** 9).to_bytes(4, "little")
                     + bytes(16))
    assert "APEv2" not in inspect(path).tags


def test_itunsmpb_in_a_txxx_frame_is_read_too(tmp_path, source):
    from mutagen.id3 import ID3, TXXX
    path = tag_layouts.add_itunsmpb(tag_layouts.lameenc(tmp_path / "s.mp3", source), length=source.frames)
    tags = ID3(path)
    value = tags.getall("COMM")[0].text[0]
    tags.delall("COMM")
    tags.add(TXXX(encoding=3, desc="iTunSMPB", text=value))
    tags.save(path)
    audio, facts, _ = decode(path)
    assert facts["gapless_from"] == "iTunSMPB" and (facts["encoder_delay"], facts["encoder_padding"]) == \
        (576, facts["frames"] * 1152 - 576 - source.frames)
    assert_exact(audio, source)


@pytest.mark.skipif(TOOLS["lame"] is None, reason="Debian's `lame` is not installed (apt-get install lame)")
def test_the_lame_tag_comes_before_an_itunsmpb(tmp_path, source):
    """The LAME tag is in the stream; a comment can be copied from another file by a tagger."""
    path = tag_layouts.lame(tmp_path / "s.mp3", source)
    tag_layouts.add_itunsmpb(path, delay=1000, length=source.frames)
    audio, facts, _ = decode(path)
    assert facts["gapless_from"] == "LAME tag" and facts["encoder_delay"] == 576
    assert_exact(audio, source)


@pytest.mark.parametrize("layout", [pytest.param(lay, id=lay.carries, marks=needs(lay)) for lay in LAYOUTS
                                    if "RIFF" in lay.carries])
def test_an_mp3_in_a_wav_container_is_restored_with_its_tags(tmp_path, source, layout):
    """Named .mp3 (as old rippers and Windows' ACM codec left them), an MP3 stream in a WAV
    container is restored, not refused as "a WAV": the run says it unwrapped it, and the
    title and artist from its LIST INFO or id3 chunk reach the FLAC."""
    layout.make(tmp_path / "in" / "song.mp3", source)
    result = run_cli("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--variants", "01", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    tags = mutagen.flac.FLAC(str(tmp_path / "out" / "01_baseline" / "song.flac"))
    assert tags["title"] == ["Song"] and tags["artist"] == ["Artist"]
    log = (tmp_path / "out" / "_logs" / "song.log").read_text(encoding="utf-8")
    assert "wrapped in a WAV (RIFF) container" in log


def test_a_wav_of_pcm_named_mp3_is_still_refused(tmp_path, source):
    """Only MPEG audio in a WAV is unwrapped: PCM named .mp3 is no MP3."""
    path = tmp_path / "pcm.mp3"
    sf.write(str(path), source.samples.T, source.rate, format="WAV", subtype="PCM_16")
    with pytest.raises(InputError, match="not an MP3: this is a WAV"):
        inspect(path)


def test_a_wav_container_with_an_empty_chunk_and_a_streamed_data_size_is_walked(tmp_path, source):
    """An empty chunk before the data is stepped over; a data chunk whose size says 0 (a
    writer that streamed and never went back) runs to the end of the file."""
    import struct
    mp3 = tag_layouts.lameenc(tmp_path / "plain.mp3", source).read_bytes()
    fmt = struct.pack("<HHIIHH", 0x55, 2, 44100, 24000, 1, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"JUNK" + struct.pack("<I", 0) \
        + b"data" + struct.pack("<I", 0) + mp3
    path = tmp_path / "streamed.mp3"
    path.write_bytes(b"RIFF" + struct.pack("<I", 0) + body)
    info = inspect(path)
    assert info.container == "WAV (RIFF)" and info.frames == inspect(tmp_path / "plain.mp3").frames
    assert not info.problems
