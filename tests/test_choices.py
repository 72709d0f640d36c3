"""Choosing in the report: the keep choice and blind tests saved to _report/choices.json by
`mp3restore report --serve` (127.0.0.1 only, the report and variant folders only), or kept
in the browser when a page is opened from a file; the index's summary and filters. The
pages run in the real headless Chromium of tests/test_report.py.

MP3RESTORE_CHOOSING_SCREENSHOT=docs/choosing.png python -m pytest tests/test_choices.py
refreshes the README's picture of choosing (otherwise it goes to a temporary folder)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest

from restore.report.build import build_report
from restore.report.choices import load_choices
from restore.report.serve import ReportServer

from .conftest import ROOT
from .test_report import browser, flac_batch, js_errors, play_and_wait, small_png, wait_for  # noqa: F401  (the browser fixture)

SONGS = ["Artist/Album/one", "Artist/Other/two"]


@pytest.fixture
def out(tmp_path) -> Path:
    out = flac_batch(tmp_path / "out", SONGS, seconds=1.0)
    build_report(out, log=lambda line: None)
    return out


@pytest.fixture
def server(out):
    srv = ReportServer(out, 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def request(srv: ReportServer, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """A raw request: http.client sends the path as given (no `..` folded away)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body is not None else {})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply.status, data


def post(srv: ReportServer, song: str, entry: dict) -> tuple[int, bytes]:
    return request(srv, "POST", "/_report/choices", json.dumps({"song": song, "entry": entry}).encode())


# ---- the server, without a browser ---------------------------------------------------------------

def test_the_server_serves_only_the_report_and_the_variants_on_localhost(out, server, tmp_path):
    assert server.server_address[0] == "127.0.0.1"
    assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/_report/index.html")
    assert request(server, "GET", "/_report/index.html")[0] == 200
    status, data = request(server, "GET", "/01_baseline/Artist/Album/one.flac")
    assert status == 200 and data[:4] == b"fLaC"
    (out / "_done").mkdir(exist_ok=True)
    (out / "_done" / "secret.json").write_text("{}")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", out / "_report" / "link.txt")
    for path in ("/_done/secret.json", "/_report/../_done/secret.json", "/_report/%2e%2e/_done/secret.json",
                 "/_report/..%2f_done/secret.json", "/_report/../../outside.txt", "/../outside.txt",
                 "/_report/link.txt", "/", "/01_baseline/", "/01_baseline/Artist/"):
        status, data = request(server, "GET", path)
        assert status == 404 and b"outside" not in data and b"fLaC" not in data, path
    assert request(server, "GET", "/_report/") == request(server, "GET", "/_report/index.html")  # no listing: the index


def test_the_server_saves_choices_checked_and_atomically(out, server):
    status, data = post(server, "Artist/Album/one", {"keep": "08_hifigan", "at": "2026-11-30T10:00:00Z", "extra": 1})
    assert status == 200 and json.loads(data)["songs"]["Artist/Album/one"]["keep"] == "08_hifigan"
    assert load_choices(out) == {"Artist/Album/one": {"keep": "08_hifigan", "at": "2026-11-30T10:00:00Z", "abx": []}}
    before = (out / "_report" / "choices.json").read_bytes()
    for song, entry in (("Artist/Album/nope", {"keep": "08_hifigan"}),   # no such song
                        ("Artist/Album/one", {"keep": "09_nope"}),       # no such variant
                        ("../../etc/passwd", {"keep": None})):
        assert post(server, song, entry)[0] == 400, song
    assert request(server, "POST", "/_report/choices", b"{not json")[0] == 400
    assert request(server, "POST", "/_report/other", b"{}")[0] == 404
    assert (out / "_report" / "choices.json").read_bytes() == before
    assert not [p for p in (out / "_report").iterdir() if "tmp" in p.name]


def test_report_serve_prints_its_url_and_stops_on_ctrl_c(out):
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # a shell's background job: the child inherits the ignored SIGINT, so no Ctrl+C can reach it
        pytest.skip("SIGINT is ignored in this process (started as a background job), so Ctrl+C cannot be sent")
    proc = subprocess.Popen([sys.executable, str(ROOT / "mp3restore.py"), "report", str(out), "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "300"})
    try:
        lines = []
        for line in proc.stdout:  # wait for what it reports: its URL
            lines.append(line)
            if "serving the report at" in line:
                break
        url = next((w for w in lines[-1].split() if w.startswith("http://")), None)
        assert url and urlparse(url).hostname == "127.0.0.1", lines
        conn = http.client.HTTPConnection("127.0.0.1", urlparse(url).port, timeout=10)
        conn.request("GET", urlparse(url).path)
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)   # a server that ignores Ctrl+C fails here, it does not hang
        assert proc.returncode == 0
        assert "report server stopped" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()


# ---- in the browser -----------------------------------------------------------------------------

def song_url(base: str, key: str) -> str:
    return base + "songs/" + quote(key) + ".html"


def choose_in_page(browser, variant: str) -> None:  # noqa: F811
    wait_for(browser, "return window.mp3restoreReady !== undefined")
    browser.execute_async_script("window.mp3restoreReady.then(arguments[0])")
    browser.find_element("css selector", f'#keep-choice input[value="{variant}"]').click()


def checked(browser) -> str:  # noqa: F811
    return browser.execute_script("const r = document.querySelector('#keep-choice input:checked'); return r && r.value")


def test_choices_are_saved_by_the_server_and_survive_a_reload_and_a_rebuild(out, server, browser, tmp_path):  # noqa: F811
    base = server.url[:-len("index.html")]
    browser.get(song_url(base, SONGS[0]))
    assert checked(browser) == ""                                  # undecided
    choose_in_page(browser, "08_hifigan")
    wait_for(browser, "return document.getElementById('keep-status').textContent === 'Saved to choices.json.'")
    assert load_choices(out)[SONGS[0]]["keep"] == "08_hifigan"

    browser.refresh()
    wait_for(browser, "return document.querySelector('#keep-choice input:checked').value === '08_hifigan'")
    build_report(out, log=lambda line: None)                       # a rebuilt report keeps it
    assert load_choices(out)[SONGS[0]]["keep"] == "08_hifigan"
    browser.refresh()
    assert checked(browser) == "08_hifigan"                        # in the page itself, before any fetch

    # a blind test's result is saved beside the choice
    browser.execute_script("document.getElementById('abx-trials').value = '5'")
    browser.find_element("id", "abx-start").click()
    body = browser.find_element("tag name", "body")
    for trial in range(5):                                         # by keyboard: play X, answer
        assert browser.find_element("id", "abx-progress").text == f"Trial {trial + 1} of 5"
        play_and_wait(browser, lambda: body.send_keys("x"), "X")    # the media really plays
        body.send_keys("s")
        wait_for(browser, "return document.getElementById('abx').dataset.playing === undefined")
        body.send_keys("1")
    assert browser.find_element("id", "abx-result").is_displayed()
    wait_for(browser, "return document.getElementById('keep-status').textContent === 'Saved to choices.json.'")
    entry = load_choices(out)[SONGS[0]]
    assert entry["keep"] == "08_hifigan" and len(entry["abx"]) == 1
    assert entry["abx"][0]["trials"] == 5 and {entry["abx"][0]["a"], entry["abx"][0]["b"]} == {"01_baseline", "08_hifigan"}

    # the README's picture of choosing: the players, the choice and the blind test's result
    shot = Path(os.environ.get("MP3RESTORE_CHOOSING_SCREENSHOT") or tmp_path / "choosing.png")
    shot = shot if shot.is_absolute() else ROOT / shot
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shot))
    small_png(shot, 150_000, height=browser.execute_script(
        "return Math.ceil(document.getElementById('abx').getBoundingClientRect().bottom + window.scrollY) + 10"))
    assert 0 < shot.stat().st_size < 150_000

    # the index: per song the choice and blind test, a summary, filters
    browser.get(base + "index.html")
    browser.execute_async_script("window.mp3restoreReady.then(arguments[0])")
    kept = browser.execute_script(
        "return Array.from(document.querySelectorAll('td.kept')).map(td => [td.closest('tr').dataset.song, td.textContent])")
    assert kept == [[SONGS[0], "08_hifigan"], [SONGS[1], "undecided"]]
    abx = browser.find_element("css selector", f'tr[data-song="{SONGS[0]}"] td.abx').text
    assert abx.startswith(f"{entry['abx'][0]['correct']}/5 ")
    summary = browser.find_element("id", "summary").text
    assert "1 of 2 song(s) decided: 08_hifigan \u00d7 1." in summary and f"Still to decide: {SONGS[1]}" in summary

    def visible() -> list[str]:
        return browser.execute_script("return Array.from(new Set(Array.from(document.querySelectorAll('tr[data-song]'))"
                                      ".filter(tr => !tr.hidden).map(tr => tr.dataset.song)))")
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element("id", "filter-status")).select_by_value("undecided")
    assert visible() == [SONGS[1]]
    Select(browser.find_element("id", "filter-status")).select_by_value("")
    Select(browser.find_element("id", "filter-album")).select_by_value("Album")
    assert visible() == [SONGS[0]]
    Select(browser.find_element("id", "filter-album")).select_by_value("")
    browser.find_element("id", "filter-text").send_keys("two")
    assert visible() == [SONGS[1]]
    assert not browser.find_element("css selector", "button.download-choices").is_displayed()  # the server saves
    assert js_errors(browser) == []


def test_a_page_from_a_file_keeps_choices_in_the_browser(out, browser):  # noqa: F811
    page = out / "_report" / "songs" / "Artist" / "Other" / "two.html"
    browser.get(page.as_uri())
    choose_in_page(browser, "01_baseline")
    status = browser.find_element("id", "keep-status").text
    assert status.startswith("Saved in this browser") and "Download choices.json" in status
    assert browser.find_element("css selector", "button.download-choices").is_displayed()
    assert not (out / "_report" / "choices.json").exists()
    browser.refresh()
    wait_for(browser, "return document.querySelector('#keep-choice input:checked').value === '01_baseline'")
    browser.get((out / "_report" / "index.html").as_uri())
    browser.execute_async_script("window.mp3restoreReady.then(arguments[0])")
    assert browser.find_element("css selector", f'tr[data-song="{SONGS[1]}"] td.kept').text == "01_baseline"
    assert js_errors(browser) == []


def test_keys_switch_variants_at_the_same_position(out, browser):  # noqa: F811
    browser.get((out / "_report" / "songs" / "Artist" / "Album" / "one.html").as_uri())
    players = "document.querySelectorAll('audio.variant-player')"
    wait_for(browser, f"return Array.from({players}).every(a => a.readyState >= 1)")
    browser.execute_script(f"{players}[0].play()")
    wait_for(browser, f"return {players}[0].currentTime > 0.3")
    browser.find_element("tag name", "body").send_keys("2")
    wait_for(browser, f"return {players}[0].paused && !{players}[1].paused")
    first, second = browser.execute_script(f"return [{players}[0].currentTime, {players}[1].currentTime]")
    assert second >= first - 0.05
    browser.execute_script(f"{players}[1].pause()")
    assert js_errors(browser) == []


def test_a_loop_region_sends_the_playing_variant_back_to_its_start(out, browser):  # noqa: F811
    browser.get((out / "_report" / "songs" / "Artist" / "Album" / "one.html").as_uri())
    players = "document.querySelectorAll('audio.variant-player')"
    wait_for(browser, f"return Array.from({players}).every(a => a.readyState >= 1)")
    browser.execute_script("document.getElementById('loop-start').value = '0.2';"
                           "document.getElementById('loop-end').value = '0.6';")
    browser.find_element("id", "loop").click()
    browser.execute_script(f"window.seen = []; {players}[1].addEventListener('timeupdate', "
                           f"e => window.seen.push(e.target.currentTime)); {players}[1].play()")
    # it went back (twice) and never reached the 1 s end
    wait_for(browser, "const s = window.seen; return s.filter((t, i) => i && t < s[i - 1] - 0.1).length >= 2")
    assert browser.execute_script(f"return !{players}[1].ended && Math.max(...window.seen) < 0.9")
    browser.execute_script(f"{players}[1].pause()")
    assert js_errors(browser) == []
