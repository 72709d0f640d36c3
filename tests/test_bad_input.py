"""Bad input: each bad file is one clear line in the summary and its song's log; the batch
goes on; nothing already written is lost or left half-written."""
import json
import os
import subprocess
import uuid

import numpy as np
import pytest
import soundfile as sf

from tests.support.examples import band
from restore.io.lame import encode_mp3
from restore.io.writers import TMP_MARK

from .conftest import cli_json, read_flac, run_cli, write_mp3

GOOD = band(3.0, seed=7)


def make_corpus(root):
    """name -> (expected status, a phrase the reason must hold)."""
    good = encode_mp3(GOOD, bitrate=192)
    rng = np.random.default_rng(0)
    files = {
        "good/ok.mp3": (good, "done", ""),
        "bad/empty.mp3": (b"", "failed", "empty file"),
        "bad/wav named mp3.mp3": (None, "failed", "not an MP3: this is a WAV"),
        "bad/flac named mp3.mp3": (None, "failed", "not an MP3: this is a FLAC"),
        "bad/page.mp3": (b"<!DOCTYPE html><html>404 not found</html>", "failed", "not an MP3: this is a text/HTML"),
        "bad/noise bytes.mp3": (rng.integers(0, 256, 50000, dtype=np.uint8).tobytes(), "failed", "not an MP3"),
        "bad/only a tag.mp3": (b"ID3\x04\x00\x00\x00\x00\x00\x20" + b"\x00" * 0x20, "failed", "no audio"),
        "bad/truncated.mp3": (good[: len(good) * 2 // 3 + 5], "failed", "truncated"),
        "bad/junk inside.mp3": (good[:20000] + rng.integers(0, 256, 9000, dtype=np.uint8).tobytes() + good[20000:],
                                "failed", "damaged"),
        "odd/mono.mp3": (encode_mp3(band(2.0, channels=1), bitrate=64), "done", ""),
        "odd/8 kHz.mp3": (encode_mp3(band(2.0, rate=8000), bitrate=24), "done", ""),
        "odd/22.05 kHz.mp3": (encode_mp3(band(2.0, rate=22050), bitrate=64), "done", ""),
        "odd/32 kHz.mp3": (encode_mp3(band(2.0, rate=32000), bitrate=96), "done", ""),
        "odd/48 kHz.mp3": (encode_mp3(band(2.0, rate=48000), bitrate=192), "done", ""),
        "odd/vbr.mp3": (encode_mp3(band(3.0, seed=2), vbr_quality=4), "done", ""),
        "odd/one second.mp3": (encode_mp3(band(1.0), bitrate=128), "done", ""),
        "ünïcödé/Sigur Rós – Hoppípolla 日本.mp3": (good, "done", ""),
    }
    for rel, (data, _, _) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith("bad/wav"):
            sf.write(str(p), GOOD.samples.T, 44100, format="WAV")
        elif rel.startswith("bad/flac"):
            sf.write(str(p), GOOD.samples.T, 44100, format="FLAC")
        else:
            p.write_bytes(data)
    return {rel: (status, phrase) for rel, (_, status, phrase) in files.items()}


def test_bad_input_corpus(tmp_path):
    expected = make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    code, summary = cli_json("run", str(tmp_path / "in"), "--out", str(out))
    assert code == 1  # some songs failed, the rest done
    got = {r["song"]: r for r in summary["results"]}
    assert set(got) == set(expected)
    for rel, (status, phrase) in expected.items():
        r = got[rel]
        assert r["status"] == status, (rel, r)
        assert phrase in r["reason"], (rel, r["reason"])
        assert "\n" not in r["reason"] and len(r["reason"]) < 300 and "Traceback" not in r["reason"]
        log = (out / "_logs" / rel).with_suffix(".log").read_text(encoding="utf-8")
        if status == "failed":
            assert f"failed: {r['reason']}" in log
        else:
            assert (out / "01_baseline" / rel).with_suffix(".flac").is_file()
    for rel, rate in (("odd/8 kHz.mp3", 8000), ("odd/48 kHz.mp3", 48000)):
        info = sf.info(str((out / "01_baseline" / rel).with_suffix(".flac")))
        assert info.samplerate == rate and info.subtype == "PCM_24"
    assert sf.info(str(out / "01_baseline" / "odd" / "mono.flac")).channels == 1
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]

    # --accept-damaged restores what is there, and says so.
    code, summary = cli_json("run", str(tmp_path / "in" / "bad"), "--out", str(out), "--accept-damaged")
    got = {r["song"]: r for r in summary["results"]}
    assert got["truncated.mp3"]["status"] == "done" and got["junk inside.mp3"]["status"] == "done"
    assert "warning: truncated" in (out / "_logs" / "truncated.log").read_text()


def test_an_hour_long_file(tmp_path):
    """60 minutes (a one-minute MP3 repeated: frames concatenate into a valid stream)."""
    minute = encode_mp3(band(60.0, seed=1), bitrate=128)
    song = tmp_path / "in" / "hour.mp3"
    song.parent.mkdir()
    song.write_bytes(minute * 60)
    code, summary = cli_json("run", str(song), "--out", str(tmp_path / "out"))
    assert code == 0, summary
    info = sf.info(str(tmp_path / "out" / "01_baseline" / "hour.flac"))
    assert info.frames == summary["results"][0]["facts"]["frames"] * 1152  # untagged: every frame kept
    assert 3599 < info.duration < 3602


def test_blocked_variant_folder_fails_that_song_only(tmp_path, library):
    out = tmp_path / "out"
    (out / "01_baseline").mkdir(parents=True)
    (out / "01_baseline" / "Artist").write_bytes(b"a file where a folder must go")
    extra = write_mp3(library / "Loose.mp3", band(2.0))
    code, summary = cli_json("run", str(library), "--out", str(out))
    assert code == 1
    status = {r["song"]: (r["status"], r["reason"]) for r in summary["results"]}
    assert status["Loose.mp3"][0] == "done" and extra.exists()
    for song in ("Artist/Album/01 One.mp3", "Artist/Album/02 Two.mp3"):
        assert status[song][0] == "failed" and "a file is in the way of a folder" in status[song][1]
        assert str(out / "01_baseline" / "Artist") in status[song][1]  # which file


def test_unusable_output_folder_is_a_setup_error(tmp_path, library):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = run_cli("run", str(library), "--out", str(blocker / "out"))
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write to the output folder" in lines[0]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", f"mp3restore-{uuid.uuid4().hex[:6]}", str(mount)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk(tmp_path, small_disk):
    lib = tmp_path / "in"
    write_mp3(lib / "1 short.mp3", band(2.0, seed=1))
    write_mp3(lib / "2 long.mp3", band(30.0, seed=2))    # ~4 MB of FLAC: cannot fit
    write_mp3(lib / "3 short.mp3", band(2.0, seed=3))
    out = small_disk / "out"
    code, summary = cli_json("run", str(lib), "--out", str(out))
    assert code == 1
    status = {r["song"]: (r["status"], r["reason"]) for r in summary["results"]}
    assert status["2 long.mp3"][0] == "failed" and "disk full" in status["2 long.mp3"][1]
    assert status["1 short.mp3"][0] == "done"
    first, _ = read_flac(out / "01_baseline" / "1 short.flac")
    assert first.shape[1] >= 2 * 44100                     # the song already written is whole
    assert not (out / "01_baseline" / "2 long.flac").exists()
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
    assert os.statvfs(small_disk).f_bfree > 0               # the failed song's temp space was given back


def test_a_full_disk_while_a_variant_is_written_behind(tmp_path, small_disk, monkeypatch):
    """Two staged variants that share their step: the first is written on the write-behind
    thread while the second runs. The disk fills: each fails with one line saying so, no
    temporary file or marker is left, and the next song is made whole."""
    import restore.engine.variants as variants
    import restore.stages as stages
    from tests.conftest import run_lib
    monkeypatch.setitem(stages._REGISTRY, "half_gain", "tests.test_pipeline_stages:HalfGain")
    for name in ("90_half", "91_half_too"):
        monkeypatch.setitem(variants.VARIANTS, name, variants.Variant(name, "half level (test)", steps=("half_gain",),
                                                                       keeps_loudness=False))
    lib = tmp_path / "in"
    write_mp3(lib / "1 long.mp3", band(30.0, seed=4))     # ~4 MB of FLAC per variant: cannot fit
    write_mp3(lib / "2 short.mp3", band(1.0, seed=5))
    out = small_disk / "out"
    summary = run_lib([lib], out, variants=variants.resolve_variants("90,91"))
    status = [(r.song, r.variant, r.status, r.reason) for r in summary.results]
    assert [s[:3] for s in status] == [("1 long.mp3", "90_half", "failed"), ("1 long.mp3", "91_half_too", "failed"),
                                       ("2 short.mp3", "90_half", "done"), ("2 short.mp3", "91_half_too", "done")]
    for _, variant, _, reason in status[:2]:
        assert "disk full" in reason and "\n" not in reason, (variant, reason)
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name]
    assert not (out / "_done" / "90_half" / "1 long.mp3.json").exists()
    for variant in ("90_half", "91_half_too"):
        assert read_flac(out / variant / "2 short.flac")[0].shape[1] >= 44100 - 2000


def test_windows_path_limit_fails_only_that_song_with_its_name(tmp_path, monkeypatch):
    """Simulated (Windows' 260-character limit cannot exist on Linux): a song whose output
    would pass the limit fails with one line naming it; the other songs are restored."""
    from restore.engine import plan as plan_module
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.engine.variants import resolve_variants
    from tests.support.examples import band
    monkeypatch.setattr(plan_module, "long_paths_allowed", lambda: False)
    write_mp3(tmp_path / "in" / "short.mp3", band(1.0))
    long_name = "a very long song title " * 8 + ".mp3"
    write_mp3(tmp_path / "in" / long_name, band(1.0))
    summary = run(RunConfig(inputs=[str(tmp_path / "in")], out_dir=tmp_path / "out", variants=resolve_variants("01"),
                            report=False))
    failed = [r for r in summary.results if r.status == "failed"]
    assert summary.counts()["done"] == 1 and len(failed) == 1
    assert "Windows' 260-character limit" in failed[0].reason and "a very long song title" in failed[0].song


def test_a_file_held_open_by_a_player_is_said_so(tmp_path):
    """Simulated: Windows' sharing violation (winerror 32) is its own message, not
    'permission denied, choose an output folder you can write to'."""
    from restore.errors import describe_failure
    exc = PermissionError(13, "The process cannot access the file because it is being used by another process")
    exc.winerror = 32
    line = describe_failure(exc, "writing 01_baseline")
    assert "open in another program" in line and "close it" in line and "output folder" not in line
def test_a_file_in_the_way_is_named(tmp_path, library):
    """The file where the tool wanted a folder, not the output folder above it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "_logs").write_text("a file where the logs folder must go")
    proc = run_cli("run", str(library), "--out", str(out))
    assert proc.returncode == 3
    assert f"a file is in the way: {out / '_logs'}" in proc.stderr


@pytest.fixture
def unreadable():
    """Make a file unreadable: by its permissions where they bind; as root (for whom they do
    not) by making open() of that one file fail as the OS would, with EACCES."""
    import builtins
    import errno
    patched = []

    def make(path):
        if os.geteuid() != 0:
            os.chmod(path, 0)
            patched.append(lambda: os.chmod(path, 0o644))
            return
        real_open = builtins.open

        def fake_open(file, *args, **kw):
            if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == os.path.abspath(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kw)
        builtins.open = fake_open
        patched.append(lambda: setattr(builtins, "open", real_open))
    yield make
    for undo in patched:
        undo()


def test_an_unreadable_input_is_named_as_the_input(tmp_path, library, unreadable):
    """Not "permission denied (choose an output folder you can write to)"."""
    from .conftest import run_lib
    song = library / "Artist" / "Album" / "02 Two.mp3"
    unreadable(song)
    summary = run_lib([library], tmp_path / "out")
    got = {r.song: r for r in summary.results}
    reason = got["Artist/Album/02 Two.mp3"].reason
    assert got["Artist/Album/02 Two.mp3"].status == "failed"
    assert reason.startswith("cannot read the file, permission denied") and "output folder" not in reason, reason
    assert got["Artist/Album/01 One.mp3"].status == "done"


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder on a read-only file system (a tmpfs mounted read-only)."""
    folder = tmp_path / "out" / "01_baseline" / "Art"
    folder.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", f"mp3restore-{uuid.uuid4().hex[:6]}", str(folder)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({proc.stderr.decode().strip()})")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_variant_folder_that_cannot_be_written_says_why(tmp_path, read_only_folder):
    """libsndfile says "System error." for any failing system call; the reason is the OS's."""
    write_mp3(tmp_path / "in" / "Art" / "s.mp3", band(1.0))
    write_mp3(tmp_path / "in" / "Other" / "t.mp3", band(1.0))
    code, summary = cli_json("run", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    got = {r["song"]: r for r in summary["results"]}
    assert code == 1 and got["Other/t.mp3"]["status"] == "done"
    assert got["Art/s.mp3"]["reason"].startswith("writing FLAC failed, read-only file system"), got["Art/s.mp3"]


def _without_root_powers() -> list[str]:
    """A command prefix under which folder permissions bind: nothing for a user; for root,
    setpriv dropping the capabilities that let root write anywhere (skip without it)."""
    if os.geteuid() != 0:
        return []
    import shutil
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permissions do not bind")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _run_01_without_root_powers(tmp_path) -> tuple[subprocess.CompletedProcess, dict]:
    """`run IN --out OUT --variants 01` in a child whose permissions bind (see above):
    (the process, its --json results by song)."""
    import sys
    from .conftest import ROOT
    proc = subprocess.run([*_without_root_powers(), sys.executable, str(ROOT / "mp3restore.py"), "run",
                           str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json", "-q", "--no-report",
                           "--variants", "01"], capture_output=True, text=True, timeout=300)
    return proc, {r["song"]: r for r in json.loads(proc.stdout)["results"]}


def test_a_variant_folder_without_write_permission_is_named(tmp_path):
    """Not libsndfile's "System error.", nor only 'choose an output folder you can write to'
    (the output folder is writable): permission denied, and the folder it was denied in."""
    write_mp3(tmp_path / "in" / "Art" / "s.mp3", band(1.0))
    write_mp3(tmp_path / "in" / "Other" / "t.mp3", band(1.0))
    folder = tmp_path / "out" / "01_baseline" / "Art"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        proc, got = _run_01_without_root_powers(tmp_path)
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 1 and got["Other/t.mp3"]["status"] == "done", proc.stderr
    reason = got["Art/s.mp3"]["reason"]
    assert reason.startswith("writing FLAC failed, permission denied") and "System error" not in reason, reason
    assert f": {folder} (" in reason, reason


def test_an_input_without_read_permission_is_named_as_the_input(tmp_path):
    """With real permissions (the test above fakes the OS's answer for root): the input's
    own reason and hint, never the output folder's."""
    song = write_mp3(tmp_path / "in" / "s.mp3", band(1.0))
    write_mp3(tmp_path / "in" / "t.mp3", band(1.0))
    song.chmod(0)
    try:
        proc, got = _run_01_without_root_powers(tmp_path)
    finally:
        song.chmod(0o644)
    assert proc.returncode == 1 and got["t.mp3"]["status"] == "done", proc.stderr
    reason = got["s.mp3"]["reason"]
    assert reason.startswith("cannot read the file, permission denied (give yourself read access") and "output" not in reason
