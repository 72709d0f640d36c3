"""The compare report: files, cache, bad input and escaping without a browser; then the
pages in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
selenium through /usr/bin/chromedriver). Where those are missing the browser tests skip
and say what to install.

MP3RESTORE_SCREENSHOT=docs/report.png python -m pytest tests/test_report.py
refreshes the README's screenshot of a song page (otherwise it goes to a temporary folder).
"""
from __future__ import annotations

import csv
import json
import shutil
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import soundfile as sf
import soxr

from restore.analysis import compare
from restore.audio import Audio
from tests.support.examples import band
from restore.report.build import BASELINE, build_report, find_songs  # noqa: F401
from restore.report.html import REFERENCE_ROWS, SONG_ROWS, best_of
from restore.io.writers import write_flac

from .conftest import ROOT, run_lib, write_mp3

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000")
ODD = "02 <Two> & \"Three\" 'ü' #1?"  # URL and HTML syntax in a real file name


def bwe_like(audio: Audio) -> Audio:
    """A stand-in for a bandwidth extension model's output, at 48 kHz and 3 dB quieter: the
    8-12 kHz band copied up by 8 kHz (as spectral band replication does) above 16.5 kHz,
    everything under 16.5 kHz as it was."""
    x = soxr.resample(np.ascontiguousarray(audio.samples.T), audio.rate, 48000).T
    freqs = np.fft.rfftfreq(x.shape[1], 1 / 48000)
    spec = np.fft.rfft(x, axis=1)
    low = np.fft.irfft(np.where(freqs < 16500, spec, 0), x.shape[1], axis=1)
    source = np.fft.irfft(np.where((freqs > 8000) & (freqs < 12000), spec, 0), x.shape[1], axis=1)
    shifted = np.fft.rfft(2 * source * np.cos(2 * np.pi * 8000 * np.arange(x.shape[1]) / 48000), axis=1)
    high = np.fft.irfft(np.where(freqs >= 16500, shifted, 0), x.shape[1], axis=1)
    return Audio(((low + 0.5 * high) * 10 ** (-3 / 20)).astype(np.float32), 48000)


def read(path: Path) -> Audio:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Audio.from_frames_major(data, rate)


def add_variant(out: Path, name: str = "08_hifigan") -> None:
    for flac in sorted((out / BASELINE).rglob("*.flac")):
        write_flac(bwe_like(read(flac)), out / name / flac.relative_to(out / BASELINE))


def flac_batch(out: Path, songs: list[str], seconds: float = 2.0) -> Path:
    """Baseline FLACs written directly (no MP3 needed) and a second variant from them."""
    for i, song in enumerate(songs):
        write_flac(band(seconds, seed=i), out / BASELINE / f"{song}.flac")
    add_variant(out)
    return out


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """Two songs as a run leaves them: MP3s decoded by the pipeline into 01_baseline, a
    second variant beside them, then the report."""
    root = tmp_path_factory.mktemp("report")
    for i, name in enumerate(("01 One", ODD)):
        write_mp3(root / "in" / "Artist" / "Album" / f"{name}.mp3", band(3.0, seed=i), bitrate=128)
    summary = run_lib([root / "in"], root / "out", report=False)
    assert {r.status for r in summary.results} == {"done"}
    add_variant(root / "out")
    build_report(root / "out", log=lambda line: None)
    return root / "out"


def small_png(path: Path, limit: int, height: int) -> None:
    """Cut a screenshot to the page's `height` and shrink it below `limit` bytes: 256
    colours, then smaller if need be."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    image = image.crop((0, 0, image.width, min(height, image.height)))
    while True:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size < limit:
            return
        image = image.resize((image.width * 4 // 5, image.height * 4 // 5), Image.Resampling.LANCZOS)


def rows_of(out: Path) -> list[dict]:
    return json.loads((out / "_report" / "metrics.json").read_text("utf-8"))["rows"]


# ---- files, cache, bad input, escaping ------------------------------------------------------

def test_csv_and_json_have_a_row_per_song_and_variant(batch):
    rows = rows_of(batch)
    assert [(r["song"], r["variant"]) for r in rows] == [
        (f"Artist/Album/{s}", v) for s in ("01 One", ODD) for v in ("01_baseline", "08_hifigan")]
    assert all(r["error"] is None and r["metrics"] for r in rows)
    assert {r["rate"] for r in rows} == {44100, 48000}
    with open(batch / "_report" / "metrics.csv", encoding="utf-8-sig", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [(t["song"], t["variant"]) for t in table] == [(r["song"], r["variant"]) for r in rows]
    for key in rows[0]["metrics"]:  # every metric has its column
        assert key in table[0], key
    lufs = {r["variant"]: r["metrics"]["integrated_lufs"] for r in rows if r["song"].endswith("One")}
    assert 1.5 < lufs["01_baseline"] - lufs["08_hifigan"] < 4.0  # the stand-in is 3 dB quieter


def test_best_is_marked_only_where_it_means_something(batch):
    rows = {r.key: r for r in SONG_ROWS + REFERENCE_ROWS}
    assert best_of(rows["cutoff_hz"], {"01_baseline": 16000.0, "08_hifigan": 24000.0}, "01_baseline") == {"08_hifigan"}
    assert best_of(rows["cutoff_hz"], {"01_baseline": 16000.0, "08_hifigan": 16100.0}, "01_baseline") == set()  # resolution
    assert best_of(rows["clipped_samples"], {"a": 0, "b": 0, "c": 5}, "a") == {"a", "b"}
    assert best_of(rows["si_sdr"], {"a": 10.0, "b": None}, "a") == set()  # nothing to compare with
    assert best_of(rows["integrated_lufs"], {"a": -14.0, "b": -20.0}, "a") == set()  # loudness is no quality
    assert best_of(rows["duration_s"], {"base": 3.0, "a": 3.0, "b": 3.1}, "base") == {"a"}  # the baseline is the target
    # on the page: the stand-in's band reaches higher, so its cutoff is the marked one
    page = song_page(batch, "01 One").read_text("utf-8")
    cutoff_row = next(line for line in page.splitlines() if line.startswith('<tr><th class="row">Cutoff'))
    assert cutoff_row.count('class="num best"') == 1 and cutoff_row.index("best") > cutoff_row.index("</td>")


def test_pages_fetch_nothing_from_the_network(batch):
    written = [p for p in (batch / "_report").rglob("*") if p.suffix in (".html", ".css", ".js")]
    assert len(written) == 2 + 1 + 2  # two songs, the index, the assets
    for page in written:
        text = page.read_text("utf-8")
        assert "http:" not in text and "https:" not in text and 'src="//' not in text, page


def test_an_unchanged_batch_is_not_measured_again(tmp_path, monkeypatch):
    out = flac_batch(tmp_path / "out", ["A/one", "A/two"])
    calls = []
    real = compare.song_metrics
    monkeypatch.setattr(compare, "song_metrics", lambda audio, baseline=None, **kw: calls.append(audio.rate) or real(audio, baseline, **kw))
    log: list[str] = []
    build_report(out, log=log.append)
    assert len(calls) == 4
    pictures = {p: p.stat().st_mtime_ns for p in (out / "_report" / "songs").rglob("*.png")}
    assert len(pictures) == 2 * 3  # per song: two spectrograms, one difference

    calls.clear()
    build_report(out, log=log.append)
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in pictures} == pictures
    assert "2 song(s), 0 measured, 2 unchanged" in log[-1]

    (out / "_report" / "cache" / "A" / "one.json").write_text("{not json")  # a damaged cache is no cache
    build_report(out, log=log.append)
    assert calls == [44100, 48000]
    calls.clear()
    pictures = {p: p.stat().st_mtime_ns for p in pictures}

    # a changed variant is measured and drawn again, alone
    write_flac(read(out / "08_hifigan" / "A" / "two.flac"), out / "08_hifigan" / "A" / "two.flac", bits=16)
    build_report(out, log=log.append)
    assert calls == [48000]
    redrawn = {p for p in pictures if p.stat().st_mtime_ns != pictures[p]}
    assert {p.name for p in redrawn} == {"08_hifigan.png", "08_hifigan.diff.png"}
    assert all(p.parent.name == "two.files" for p in redrawn)


def report_files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "_report").rglob("*")) if p.is_file()}


def test_songs_measured_side_by_side_give_what_one_at_a_time_gave(tmp_path):
    """--jobs 2: the songs are measured in two processes; every file of the report and
    every line of its log are what measuring them one after another gives."""
    out = flac_batch(tmp_path / "out", ["A/one", "A/two", "B/three"])
    serial_log, side_log = [], []
    build_report(out, log=serial_log.append)
    serial = report_files(out)
    shutil.rmtree(out / "_report")
    build_report(out, log=side_log.append, jobs=2)
    assert report_files(out) == serial
    assert side_log == serial_log


def test_a_measuring_process_that_dies_costs_nothing(tmp_path, monkeypatch):
    """Each measuring process kills itself at its first song (as out of memory would): the
    songs are measured in the report's own process, and the log says so."""
    out = flac_batch(tmp_path / "out", ["A/one", "A/two", "B/three"])
    build_report(out, log=lambda line: None)
    expected = rows_of(out)
    shutil.rmtree(out / "_report")
    monkeypatch.setenv("MP3RESTORE_CRASH_AT", "measuring-process")
    log: list[str] = []
    build_report(out, log=log.append, jobs=2)
    assert rows_of(out) == expected
    assert sum("in its own process failed" in line and "measured here instead" in line for line in log) == 3


def test_measuring_one_file_at_a_time_gives_what_measuring_them_together_gave(tmp_path):
    """The report reads each file block by block, keeps only the baseline's metrics and
    spectrogram, and reads a variant at another rate again, resampled as it is read: the
    metrics and the pictures are those of the whole songs in memory together (as before)."""
    from restore.analysis.blocks import resample
    from restore.report.plots import SpectrogramScale, spectrogram_png
    out = flac_batch(tmp_path / "out", ["A/one"], seconds=2.5)
    build_report(out, log=lambda line: None)
    record = json.loads((out / "_report" / "cache" / "A" / "one.json").read_text())
    base, other = read(out / BASELINE / "A" / "one.flac"), read(out / "08_hifigan" / "A" / "one.flac")
    from restore.report.measure import _flat
    expected = {BASELINE: _flat(compare.song_metrics(base)), "08_hifigan": _flat(compare.song_metrics(other, base))}
    for variant, metrics in expected.items():
        got = record["variants"][variant]["metrics"]
        assert got.keys() == metrics.keys()
        for key, value in metrics.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (variant, key)
    # the difference picture as the whole-song code drew it: byte for byte
    scale = SpectrogramScale(max_hz=24000.0)
    whole = spectrogram_png(resample(other, base.rate), tmp_path / "whole.png", "08_hifigan minus 01_baseline", scale,
                            diff_against=base)
    assert whole.read_bytes() == (out / "_report" / "songs" / "A" / "one.files" / "08_hifigan.diff.png").read_bytes()


@pytest.mark.parametrize("seconds", [0.001, 1.4861, 3.2])
def test_files_read_block_by_block_are_the_whole_file(tmp_path, seconds):
    from restore.analysis.blocks import resample
    from restore.io.read import read_audio, read_resampled
    path = write_flac(band(seconds, seed=2), tmp_path / "x.flac")["path"]
    whole = read(path)
    assert np.array_equal(read_audio(path).samples, whole.samples) and read_audio(path).rate == whole.rate
    for rate in (48000, 22050, 96000):
        expected, got = resample(whole, rate), read_resampled(path, rate)
        assert got.frames == expected.frames and np.abs(got.samples - expected.samples).max() <= 1e-6


def test_a_corrupt_flac_is_one_line_and_the_report_goes_on(tmp_path):
    out = flac_batch(tmp_path / "out", ["good", "bad"])
    (out / "08_hifigan" / "bad.flac").write_bytes(b"fLaC" + bytes(300))
    log: list[str] = []
    index = build_report(out, log=log.append)
    lines = [line for line in log if "bad" in line and "08_hifigan" in line]
    assert len(lines) == 1 and "cannot read bad.flac" in lines[0], log
    page = (out / "_report" / "songs" / "bad.html").read_text("utf-8")
    assert page.count("cannot read bad.flac") == 1
    assert page.count('class="variant-player"') == 1  # the baseline still plays
    assert "cannot read bad.flac" in index.read_text("utf-8")
    by_key = {(r["song"], r["variant"]): r for r in rows_of(out)}
    assert by_key[("bad", "08_hifigan")]["error"] and by_key[("bad", "08_hifigan")]["metrics"] is None
    assert by_key[("good", "08_hifigan")]["metrics"]


def test_names_are_escaped_everywhere(tmp_path):
    name = 'x<script>alert(1)<\\script>&"\x1b[31mred\'%'
    out = flac_batch(tmp_path / "out", [name], seconds=1.0)
    build_report(out, log=lambda line: None)
    page = (out / "_report" / "songs" / f"{name}.html").read_text("utf-8")
    index = (out / "_report" / "index.html").read_text("utf-8")
    for text in (page, index):
        assert "<script>alert" not in text and "\x1b" not in text
        assert "x&lt;script&gt;alert(1)&lt;\\script&gt;&amp;&quot;\\x1b[31mred&#x27;%" in text
    assert "x%3Cscript%3Ealert%281%29%3C%5Cscript%3E%26%22%1B%5B31mred%27%25.flac" in page  # the players' src
    with open(out / "_report" / "metrics.csv", encoding="utf-8-sig", newline="") as fh:
        assert {row["song"] for row in csv.DictReader(fh)} == {name.replace("\x1b", "\\x1b")}


def test_reference_originals_add_their_rows(tmp_path):
    out = flac_batch(tmp_path / "out", ["Album/one"], seconds=2.0)  # its baseline is the original itself
    original = tmp_path / "originals" / "elsewhere" / "one.wav"  # matched by name, found below
    original.parent.mkdir(parents=True)
    sf.write(str(original), band(2.0, seed=0).samples.T, 44100, subtype="PCM_16")
    build_report(out, reference=tmp_path / "originals", log=lambda line: None)
    rows = rows_of(out)
    assert all(r["reference_metrics"] for r in rows), rows
    assert all(r["reference"].endswith("one.wav") for r in rows)
    lsd = {r["variant"]: r["reference_metrics"]["lsd_full"] for r in rows}
    assert lsd["01_baseline"] < 0.1 < lsd["08_hifigan"]
    page = (out / "_report" / "songs" / "Album" / "one.html").read_text("utf-8")
    assert "Against the original (one.wav)" in page


def test_stems_are_listed_not_taken_for_songs(tmp_path):
    out = flac_batch(tmp_path / "out", ["A/one"], seconds=1.0)
    for stem in ("vocals", "drums"):
        write_flac(band(1.0, seed=7), out / "04_stems" / "A" / "one" / f"{stem}.flac")
    songs = find_songs(out)
    assert [s.key for s in songs] == ["A/one"]
    assert [p.name for p in songs[0].stems["04_stems"]] == ["drums.flac", "vocals.flac"]
    build_report(out, log=lambda line: None)
    page = (out / "_report" / "songs" / "A" / "one.html").read_text("utf-8")
    assert "<h2>Stems</h2>" in page and "vocals" in page and page.count('class="variant-player"') == 2


# ---- in a real browser ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: Selenium Manager never looks for (or downloads) one
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def js_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver, script: str, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def play_and_wait(driver, press, label: str) -> None:
    """press() starts `label` (A, B or X) in the blind test; wait until its sound really
    started: #abx's data-started counts the starts, so a sound that started and already
    ended (at the end of a short song) is not missed between two looks."""
    before = driver.execute_script("return parseInt(document.getElementById('abx').dataset.started || '0', 10)")
    press()
    wait_for(driver, "const s = document.getElementById('abx').dataset.started || '';"
                     f"return parseInt(s, 10) > {before} && s.endsWith('{label}')")


def song_page(batch: Path, name: str) -> Path:
    return batch / "_report" / "songs" / "Artist" / "Album" / f"{name}.html"


def test_index_links_every_song(batch, browser):
    browser.get((batch / "_report" / "index.html").as_uri())
    links = browser.execute_script("return Array.from(document.querySelectorAll('td.song a')).map(a => [a.textContent, a.href])")
    assert [text for text, _ in links] == ["Artist/Album/01 One", f"Artist/Album/{ODD}"]
    for _, href in links:
        assert Path(unquote(urlparse(href).path)).is_file(), href
    browser.find_element("link text", f"Artist/Album/{ODD}").click()
    assert browser.find_element("tag name", "h1").text == f"Artist/Album/{ODD}"
    assert js_errors(browser) == []


@pytest.mark.parametrize("name", ["01 One", ODD])
def test_players_play_every_variant_loudness_matched(batch, browser, name):
    browser.get(song_page(batch, name).as_uri())
    players = browser.execute_script(
        "return Array.from(document.querySelectorAll('audio.variant-player')).map(a => [a.dataset.variant, a.src])")
    assert [v for v, _ in players] == ["01_baseline", "08_hifigan"]
    for variant, src in players:
        assert Path(unquote(urlparse(src).path)) == batch / variant / "Artist" / "Album" / f"{name}.flac"
    # Chromium decodes each FLAC: its length is the song's
    wait_for(browser, "return Array.from(document.querySelectorAll('audio.variant-player')).every(a => a.readyState >= 1 || a.error)")
    durations = browser.execute_script("return Array.from(document.querySelectorAll('audio.variant-player')).map(a => [a.error && a.error.code, a.duration])")
    assert all(err is None and abs(d - 3.0) < 0.1 for err, d in durations), durations

    lufs = {r["variant"]: r["metrics"]["integrated_lufs"] for r in rows_of(batch) if r["song"].endswith(name)}
    expected = [10 ** ((min(lufs.values()) - lufs[v]) / 20) for v, _ in players]
    volumes = lambda: browser.execute_script("return Array.from(document.querySelectorAll('audio.variant-player')).map(a => a.volume)")
    assert volumes() == pytest.approx(expected, abs=1e-3)
    assert min(volumes()) < 0.85 and max(volumes()) == 1.0  # the stand-in is quieter: the baseline is turned down
    browser.find_element("id", "match-loudness").click()
    assert volumes() == [1.0, 1.0]
    browser.find_element("id", "match-loudness").click()
    assert volumes() == pytest.approx(expected, abs=1e-3)

    # one plays at a time, and the next starts where the last one was
    players_js = "document.querySelectorAll('audio.variant-player')"
    browser.execute_script(f"{players_js}[0].play()")
    wait_for(browser, f"return {players_js}[0].currentTime > 0.4")
    browser.execute_script(f"{players_js}[1].play()")
    wait_for(browser, f"return {players_js}[0].paused && {players_js}[1].currentTime > 0.4")
    (paused, left_at), (_, now) = browser.execute_script(
        f"{players_js}[1].pause(); return Array.from({players_js}).map(a => [a.paused, a.currentTime])")
    assert paused and now >= left_at
    assert js_errors(browser) == []


def test_spectrograms_load(batch, browser):
    browser.get(song_page(batch, ODD).as_uri())
    browser.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    wait_for(browser, "return Array.from(document.images).every(i => i.complete)")
    images = browser.execute_script("return Array.from(document.images).map(i => [i.alt, i.naturalWidth])")
    assert [alt for alt, _ in images] == ["01_baseline", "08_hifigan", "08_hifigan minus 01_baseline (red: louder than the baseline, blue: quieter)"]
    assert all(width > 0 for _, width in images), images
    assert js_errors(browser) == []


def test_blind_abx_reveals_names_and_score_only_at_the_end(batch, browser, tmp_path):
    browser.get(song_page(batch, "01 One").as_uri())
    find = lambda i: browser.find_element("id", i)
    browser.execute_script("document.getElementById('abx').scrollIntoView()")
    find("abx-start").click()
    assert find("abx-run").is_displayed() and not find("abx-result").is_displayed()
    for trial in range(10):
        assert find("abx-progress").text == f"Trial {trial + 1} of 10"
        run_text = find("abx-run").text
        assert "01_baseline" not in run_text and "08_hifigan" not in run_text
        for label in "ABX":  # each plays for real (the page says so) before the next: no fixed sleeps
            button = browser.find_element("css selector", f'button[data-abx-play="{label}"]')
            play_and_wait(browser, button.click, label)
        find("abx-stop").click()
        wait_for(browser, "return document.getElementById('abx').dataset.playing === undefined")
        find("abx-answer-a" if trial % 3 else "abx-answer-b").click()
    assert browser.execute_script("return document.getElementById('abx-message').textContent") == ""  # all played
    result = find("abx-result")
    assert result.is_displayed() and not find("abx-run").is_displayed()
    names = result.find_element("class name", "names").text
    assert names in ("A was 01_baseline, B was 08_hifigan.", "A was 08_hifigan, B was 01_baseline.")
    score = result.find_element("class name", "score").text
    assert score.startswith("Score: ") and score.endswith(" of 10 (X identified correctly).")
    assert "with probability" in result.text and len(result.find_elements("tag name", "li")) == 10
    assert js_errors(browser) == []

    # the README's picture of a song page, whole
    shot = Path(os.environ.get("MP3RESTORE_SCREENSHOT") or tmp_path / "report.png")
    if not shot.is_absolute():
        shot = ROOT / shot
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.get(song_page(batch, "01 One").as_uri())
    browser.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    wait_for(browser, "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, height + 400)  # the window's height is more than the page's view
    browser.save_screenshot(str(shot))
    small_png(shot, 300_000, height=browser.execute_script("return Math.ceil(document.body.getBoundingClientRect().bottom)"))
    assert 0 < shot.stat().st_size < 300_000


def test_temporary_files_of_a_killed_report_are_swept(tmp_path, song):
    from restore.io.writers import TMP_MARK
    out = tmp_path / "out"
    run_lib([write_mp3(tmp_path / "in" / "s.mp3", song)], out)
    left = out / "_report" / "songs" / f".s.html.1a2b3c4d{TMP_MARK}.html"
    left.parent.mkdir(parents=True)
    left.write_text("half a page")
    os.utime(left, (time.time() - 7200,) * 2)  # stale: a fresh one may be another run's, being written
    lines = []
    build_report(out, log=lines.append)
    assert not left.exists() and any("removed 1 temporary" in line for line in lines)
    assert (out / "_report" / "songs" / "s.html").is_file()


WRITE_AND_WAIT = """
import sys
from pathlib import Path
from restore.io.writers import atomic_output
with atomic_output(Path(sys.argv[1]), "writing the report") as tmp:
    tmp.write_bytes(b"the other run's page")
    print("writing", flush=True)
    sys.stdin.readline()
"""


def test_a_report_leaves_another_runs_temporaries_alone(tmp_path, song):
    """Two runs on one output folder: the one that starts its report removes only its own
    and stale temporaries, so the other's page still goes in place (it removed every
    temporary under _report, and the other run's report failed)."""
    import subprocess
    import sys
    out = tmp_path / "out"
    run_lib([write_mp3(tmp_path / "in" / "s.mp3", song)], out)
    other = subprocess.Popen([sys.executable, "-c", WRITE_AND_WAIT, str(out / "_report" / "songs" / "t.html")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert other.stdout.readline().strip() == "writing"
        stale = out / "_report" / ".mp3restore-0123456789abcd012345.csv"   # a killed run's, two hours old
        stale.write_text("half a table")
        os.utime(stale, (time.time() - 7200,) * 2)
        build_report(out)
        _, err = other.communicate("go on\n", timeout=120)
    finally:
        other.kill()
    assert other.returncode == 0, err
    assert (out / "_report" / "songs" / "t.html").read_text() == "the other run's page"
    assert not stale.exists() and (out / "_report" / "index.html").is_file()


def test_a_report_that_cannot_be_written_fails_the_run(tmp_path, song):
    """Visible in the summary (console, --json, last_run.json) and the exit code, not only
    in the run's log."""
    from restore.status_codes import EXIT_REPORT_FAILED
    from .conftest import run_cli
    write_mp3(tmp_path / "in" / "s.mp3", song)
    out = tmp_path / "out"
    (out / "_report" / "index.html").mkdir(parents=True)   # a folder in the way of the index page
    proc = run_cli("run", str(tmp_path / "in"), "--out", str(out), "--json", report=True)
    summary = json.loads(proc.stdout)
    assert proc.returncode == summary["exit_code"] == EXIT_REPORT_FAILED == 4, proc.stderr
    assert summary["counts"]["done"] == 1 and "index.html" in summary["report_error"]
    assert "compare report failed" in proc.stderr
    assert json.loads((out / "_report" / "last_run.json").read_text())["report_error"] == summary["report_error"]


def test_a_star_that_loudness_moves_goes_only_to_variants_as_loud_as_the_baseline(tmp_path):
    """A denoiser that removed 5 dB of sound keeps its peaks: its crest factor rises. That is
    not "more dynamic", so crest factor (and clipping, which a quieter variant has less of)
    is starred only among variants within 1 LU of the baseline's loudness."""
    from restore.report.html import starred_values
    crest = next(r for r in SONG_ROWS if r.key == "crest_factor_db")
    values = {"01_baseline": 12.0, "09_denoised": 17.0, "08_hifigan": 12.1}
    lufs = {"01_baseline": -14.0, "09_denoised": -19.0, "08_hifigan": -14.3}
    assert best_of(crest, values, "01_baseline") == {"09_denoised"}               # what it once did
    assert best_of(crest, starred_values(crest, values, lufs, "01_baseline"), "01_baseline") == set()
    assert starred_values(crest, values, {}, None) == {}                          # no baseline: no star
    cutoff = next(r for r in SONG_ROWS if r.key == "cutoff_hz")
    assert starred_values(cutoff, values, lufs, "01_baseline") == values          # loudness does not move it

    out = tmp_path / "out"   # on the page: a variant 5 dB quieter whose peaks stayed
    song = band(2.0, seed=0)
    write_flac(song, out / BASELINE / "s.flac")
    quiet = song.samples * 10 ** (-5 / 20)
    peaks = np.abs(song.samples) > 0.5 * np.abs(song.samples).max()
    write_flac(Audio(np.where(peaks, song.samples, quiet).astype(np.float32), song.rate), out / "09_denoised" / "s.flac")
    build_report(out, log=lambda line: None)
    page = (out / "_report" / "songs" / "s.html").read_text("utf-8")
    row = next(line for line in page.splitlines() if line.startswith('<tr><th class="row">Crest factor'))
    metrics = {r["variant"]: r["metrics"] for r in rows_of(out)}
    assert metrics["09_denoised"]["crest_factor_db"] > metrics[BASELINE]["crest_factor_db"] + 2
    assert "best" not in row
