/* mp3restore compare report: loudness-matched players, the keep choice, a blind ABX test,
 * and on the index the choices' summary and filters.
 *
 * Reads everything from the page (no libraries, works from file://):
 *   <body data-root="../../">            the way from this page to the report folder
 *   <audio class="variant-player" data-variant="NAME" data-lufs="-14.2" src="...">
 *   #match-loudness, #keep-position      the two switches above the players
 *   #loop, #loop-start, #loop-end        a loop region (seconds) for whichever player plays
 *   #keep-choice (radios name="keep")    which variant to keep (song pages)
 *   #choice-data                         the choices.json entries when the report was built
 *   #abx ...                             the blind test (see startAbx)
 *   tr[data-song], #summary, #filter-*   the index's rows, summary and filters
 * Choices are saved to choices.json through the report's own server (`mp3restore report
 * --serve`, same origin, POST <root>choices); a page opened from a file keeps them in this
 * browser's localStorage and offers choices.json as a download.
 * Names reach the page only through textContent, never innerHTML.
 */
(function () {
  "use strict";

  const players = Array.from(document.querySelectorAll("audio.variant-player"));
  const matchBox = document.getElementById("match-loudness");
  const keepBox = document.getElementById("keep-position");

  // ---- loudness matching: louder always sounds better, so by default every player
  // plays at the quietest variant's loudness: volume = 10^((quietest - own) / 20) <= 1.
  function lufsOf(el) {
    const v = parseFloat(el.dataset.lufs);
    return Number.isFinite(v) ? v : null;
  }
  const known = players.map(lufsOf).filter(function (v) { return v !== null; });
  const quietest = known.length ? Math.min.apply(null, known) : null;

  function matchedVolume(el) {
    const own = lufsOf(el);
    if (own === null || quietest === null) return 1;
    return Math.min(1, Math.max(0, Math.pow(10, (quietest - own) / 20)));
  }

  function applyMatching() {
    const on = !matchBox || matchBox.checked;
    players.forEach(function (el) {
      el.volume = on ? matchedVolume(el) : 1;
      const row = el.closest("tr");
      const cell = row ? row.querySelector(".gain") : null;
      if (cell) {
        if (lufsOf(el) === null) cell.textContent = "not matched (loudness unknown)";
        else if (!on) cell.textContent = "0.0 dB (matching off)";
        else cell.textContent = (20 * Math.log10(Math.max(el.volume, 1e-6))).toFixed(1) + " dB";
      }
    });
  }
  if (matchBox) matchBox.addEventListener("change", applyMatching);
  applyMatching();

  // ---- one player at a time; the next one starts where the last one was.
  let current = null;
  function position(el) {
    return el && Number.isFinite(el.currentTime) ? el.currentTime : 0;
  }
  function seek(el, t) {
    try {
      el.currentTime = Number.isFinite(el.duration) ? Math.min(t, el.duration) : t;
    } catch (e) { /* not seekable yet: it starts from where it is */ }
  }
  players.forEach(function (el) {
    el.addEventListener("play", function () {
      players.forEach(function (other) { if (other !== el && !other.paused) other.pause(); });
      if (keepBox && keepBox.checked && current && current !== el) seek(el, position(current));
      current = el;
    });
  });

  // ---- a loop region: whichever player plays goes back to the start at the end ------------
  const loopBox = document.getElementById("loop");
  const loopStart = document.getElementById("loop-start"), loopEnd = document.getElementById("loop-end");
  function loopBounds() {
    const a = parseFloat(loopStart.value), b = parseFloat(loopEnd.value);
    return Number.isFinite(a) && Number.isFinite(b) && b > a + 0.05 ? [a, b] : null;
  }
  function loopTick() {
    const playing = players.find(function (p) { return !p.paused; });
    const bounds = loopBounds();
    if (playing && bounds && loopBox.checked) {
      if (playing.currentTime >= bounds[1] || playing.currentTime < bounds[0] - 0.25) seek(playing, bounds[0]);
      window.requestAnimationFrame(loopTick);  // every frame while it plays: a tight loop
    }
  }
  if (loopBox) {
    const here = function (input) {
      return function () {
        input.value = position(players.find(function (p) { return !p.paused; }) || current).toFixed(2);
        if (!loopBox.checked && loopBounds()) loopBox.checked = true;
        loopTick();
      };
    };
    document.getElementById("loop-set-start").addEventListener("click", here(loopStart));
    document.getElementById("loop-set-end").addEventListener("click", here(loopEnd));
    loopBox.addEventListener("change", loopTick);
    players.forEach(function (el) { el.addEventListener("play", loopTick); });
  }

  // ---- keys 1-9: switch to that variant at the same position ---------------------------
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || abxRunning()) return;
    const tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    const n = parseInt(ev.key, 10);
    if (!(n >= 1 && n <= 9) || !players[n - 1]) return;
    const next = players[n - 1];
    const from = players.find(function (p) { return !p.paused; }) || current;
    const at = position(from);
    if (from && from !== next) from.pause();
    seek(next, at);
    current = next;
    const started = next.play();
    if (started && started.catch) started.catch(function () { /* the browser wants a click first */ });
    ev.preventDefault();
  });

  // ---- choices: which variant to keep, and the blind tests run ---------------------------
  const root = new URL(document.body.dataset.root || "./", location.href);
  const served = location.protocol.indexOf("http") === 0;
  const storeKey = "mp3restore-choices:" + root.pathname;
  const statusEl = document.getElementById("keep-status");
  const keepChoice = document.getElementById("keep-choice");
  const thisSong = keepChoice ? keepChoice.dataset.song : null;
  let choices = {};

  function parsed(text) {
    try { const v = JSON.parse(text || "{}"); return v && typeof v === "object" ? v : {}; } catch (e) { return {}; }
  }
  function embedded() {
    const el = document.getElementById("choice-data");
    return el ? parsed(el.textContent) : {};
  }
  function stored() {
    try { return parsed(window.localStorage.getItem(storeKey)); } catch (e) { return {}; }
  }
  function newer(a, b) {
    if (!a) return b;
    if (!b) return a;
    return (b.at || "") > (a.at || "") ? b : a;
  }
  function merged(base, extra) {
    const out = Object.assign({}, base);
    Object.keys(extra).forEach(function (k) { out[k] = newer(out[k], extra[k]); });
    return out;
  }
  function say(text) { if (statusEl) statusEl.textContent = text; }
  function keepLocally(song, entry) {
    try {
      const all = stored();
      all[song] = entry;
      window.localStorage.setItem(storeKey, JSON.stringify(all));
      return true;
    } catch (e) { return false; }
  }

  function load() {
    const local = merged(embedded(), stored());
    if (!served) return Promise.resolve(local);
    return fetch(new URL("choices.json", root), { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : { songs: {} }; })
      .then(function (d) { return merged(embedded(), (d && d.songs) || {}); })
      .catch(function () { return local; });
  }

  function save(song, entry) {
    entry.at = new Date().toISOString();
    choices[song] = entry;
    show();
    if (!served) {
      say(keepLocally(song, entry)
        ? "Saved in this browser (the page is opened from a file). To keep it for `mp3restore keep`, use " +
          "Download choices.json and put the file in the report folder, or open the report through " +
          "`mp3restore report OUT --serve`."
        : "This browser cannot store it: open the report through `mp3restore report OUT --serve`.");
      return Promise.resolve(false);
    }
    return fetch(new URL("choices", root), {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ song: song, entry: entry }),
    }).then(function (r) {
      if (!r.ok) throw new Error(r.status + " " + r.statusText);
      say("Saved to choices.json.");
      return true;
    }).catch(function (err) {
      keepLocally(song, entry);
      say("The report server did not save it (" + err.message + "): kept in this browser only.");
      return false;
    });
  }

  function download() {
    const blob = new Blob([JSON.stringify({ version: 1, songs: choices }, null, 1)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "choices.json";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  Array.from(document.querySelectorAll("button.download-choices")).forEach(function (b) {
    b.hidden = served;
    b.addEventListener("click", download);
  });

  function abxText(entry) {
    const tests = (entry && entry.abx) || [];
    if (!tests.length) return "";
    const t = tests[tests.length - 1];
    return t.correct + "/" + t.trials + " " + t.a + " vs " + t.b +
      (typeof t.p === "number" ? " (p = " + t.p.toFixed(3) + ")" : "");
  }

  // Everything on the page that shows the choices, from `choices`.
  function show() {
    if (keepChoice) {
      const want = (choices[thisSong] && choices[thisSong].keep) || "";
      Array.from(keepChoice.querySelectorAll("input[name=keep]")).forEach(function (r) { r.checked = r.value === want; });
    }
    const rows = Array.from(document.querySelectorAll("tr[data-song]"));
    if (!rows.length) return;
    const counts = {}, undecided = [];
    const seen = {};
    rows.forEach(function (tr) {
      const song = tr.dataset.song, entry = choices[song];
      const kept = tr.querySelector("td.kept"), abxCell = tr.querySelector("td.abx");
      if (kept) kept.textContent = (entry && entry.keep) || "undecided";
      if (abxCell) abxCell.textContent = abxText(entry);
      tr.dataset.status = entry && entry.keep ? "decided" : "undecided";
      if (seen[song]) return;
      seen[song] = true;
      if (entry && entry.keep) counts[entry.keep] = (counts[entry.keep] || 0) + 1;
      else undecided.push(tr);
    });
    const summary = document.getElementById("summary");
    if (summary) {
      summary.textContent = "";
      const total = Object.keys(seen).length;
      const line = document.createElement("p");
      line.textContent = (total - undecided.length) + " of " + total + " song(s) decided" +
        (Object.keys(counts).length ? ": " + Object.keys(counts).sort().map(function (v) {
          return v + " \u00d7 " + counts[v];
        }).join(", ") : "") + ".";
      summary.appendChild(line);
      if (undecided.length) {
        const p = document.createElement("p");
        p.className = "undecided";
        p.appendChild(document.createTextNode("Still to decide: "));
        undecided.forEach(function (tr, i) {
          const a = tr.querySelector("td.song a").cloneNode(true);
          if (i) p.appendChild(document.createTextNode(", "));
          p.appendChild(a);
        });
        summary.appendChild(p);
      }
    }
    filter();
  }

  function filter() {
    const get = function (id) { const el = document.getElementById(id); return el ? el.value : ""; };
    const text = get("filter-text").toLowerCase(), artist = get("filter-artist"), album = get("filter-album");
    const status = get("filter-status");
    Array.from(document.querySelectorAll("tr[data-song]")).forEach(function (tr) {
      const d = tr.dataset;
      tr.hidden = !((!text || d.song.toLowerCase().indexOf(text) >= 0) && (!artist || d.artist === artist) &&
                    (!album || d.album === album) && (!status || d.status === status));
    });
  }
  ["filter-text", "filter-artist", "filter-album", "filter-status"].forEach(function (id) {
    const el = document.getElementById(id);
    if (el) el.addEventListener(el.tagName === "INPUT" ? "input" : "change", filter);
  });

  if (keepChoice) {
    Array.from(keepChoice.querySelectorAll("input[name=keep]")).forEach(function (r) {
      r.addEventListener("change", function () {
        if (!r.checked) return;
        const entry = Object.assign({ abx: [] }, choices[thisSong] || {});
        entry.keep = r.value || null;
        save(thisSong, entry);
      });
    });
  }
  function recordAbx(test) {
    if (!thisSong) return;
    const entry = Object.assign({ keep: null }, choices[thisSong] || {});
    test.at = new Date().toISOString();
    entry.abx = (entry.abx || []).concat([test]);
    save(thisSong, entry);
  }
  choices = merged(embedded(), served ? {} : stored());
  show();
  window.mp3restoreReady = load().then(function (all) { choices = all; show(); return true; });

  // ---- blind ABX ----------------------------------------------------------------------
  const abx = document.getElementById("abx");
  function abxRunning() { return Boolean(abx && state); }
  let state = null;
  if (!abx) return;
  const $ = function (id) { return document.getElementById(id); };
  const setup = $("abx-setup"), run = $("abx-run"), result = $("abx-result");
  const message = $("abx-message"), progress = $("abx-progress");
  const RESTART_S = 1.0;   // a sound played with less than this left starts from the beginning

  function randomBit() {
    const a = new Uint32Array(1);
    window.crypto.getRandomValues(a);
    return a[0] & 1;
  }
  function playerOf(name) {
    return players.find(function (p) { return p.dataset.variant === name; });
  }
  // Chance of scoring `correct` of `n` or better by guessing (binomial tail, p = 1/2).
  function chance(correct, n) {
    let sum = 0, c = 1;
    for (let k = 0; k <= n; k++) {
      if (k >= correct) sum += c;
      c = c * (n - k) / (k + 1);
    }
    return sum / Math.pow(2, n);
  }

  function stopAll() {
    if (!state) return;
    ["A", "B", "X"].forEach(function (label) {
      const el = state.audio[label];
      if (!el.paused) { state.position = position(el); el.pause(); }
    });
  }

  function play(label) {
    if (!state) return;
    stopAll();
    players.forEach(function (p) { if (!p.paused) p.pause(); });
    const el = state.audio[label];
    // with under a second left the next sound starts from the beginning: a blip of the end
    // compares nothing, a new X is not loaded yet, and one sent to its very end would end at
    // once and never play
    const length = [state.audio.A, state.audio.B].map(function (a) { return a.duration; }).filter(Number.isFinite);
    if (length.length && state.position >= Math.min.apply(null, length) - RESTART_S) state.position = 0;
    seek(el, state.position);
    const started = el.play();
    if (started && started.catch) {
      // AbortError: a pause or a new trial's source came before the media could start (a
      // quick click on the next button): not a failure to report
      started.catch(function (err) {
        if (err.name !== "AbortError") message.textContent = "This browser cannot play it: " + err.name;
      });
    }
  }

  // #abx's data-playing names the label whose sound is really playing (set on the media's
  // "playing" event, cleared on "pause"), and data-started counts the starts with the label
  // of the last ("7X": the seventh, X's), which stays when a short sound has already ended by
  // the time anyone looks: what a test waits for, instead of a fixed time
  function reportPlaying(label, el) {
    el.addEventListener("playing", function () {
      abx.dataset.playing = label;
      abx.dataset.started = (parseInt(abx.dataset.started || "0", 10) + 1) + label;
    });
    el.addEventListener("pause", function () {
      if (abx.dataset.playing === label) delete abx.dataset.playing;
    });
  }

  function newAudio(name) {
    const el = new Audio(playerOf(name).currentSrc || playerOf(name).src);
    el.preload = "auto";
    el.volume = matchedVolume(playerOf(name));  // blind trials are always loudness-matched
    return el;
  }

  function showTrial() {
    const i = state.answers.length;
    progress.textContent = "Trial " + (i + 1) + " of " + state.n;
    const xName = state.xs[i] === "A" ? state.A : state.B;
    const x = state.audio.X;
    x.src = playerOf(xName).currentSrc || playerOf(xName).src;
    x.volume = matchedVolume(playerOf(xName));
  }

  function startAbx() {
    const first = $("abx-first").value, second = $("abx-second").value;
    message.textContent = "";
    if (!first || !second || first === second) {
      message.textContent = "Pick two different variants.";
      return;
    }
    const swap = randomBit();
    const n = parseInt($("abx-trials").value, 10) || 10;
    state = {
      A: swap ? second : first,
      B: swap ? first : second,
      n: n,
      xs: Array.from({ length: n }, function () { return randomBit() ? "A" : "B"; }),
      answers: [],
      position: 0,
    };
    state.audio = { A: newAudio(state.A), B: newAudio(state.B), X: new Audio() };
    state.audio.X.preload = "auto";
    ["A", "B", "X"].forEach(function (label) { reportPlaying(label, state.audio[label]); });
    setup.hidden = true;
    result.hidden = true;
    run.hidden = false;
    showTrial();
  }

  function answer(label) {
    if (!state) return;
    stopAll();
    state.answers.push(label);
    if (state.answers.length < state.n) showTrial();
    else reveal();
  }

  function line(parent, tag, text, cls) {
    const el = document.createElement(tag);
    el.textContent = text;
    if (cls) el.className = cls;
    parent.appendChild(el);
    return el;
  }

  function reveal() {
    const s = state;
    const correct = s.answers.filter(function (a, i) { return a === s.xs[i]; }).length;
    const p = chance(correct, s.n);
    result.textContent = "";
    line(result, "p", "A was " + s.A + ", B was " + s.B + ".", "names");
    line(result, "p", "Score: " + correct + " of " + s.n + " (X identified correctly).", "score");
    line(result, "p", "Guessing alone scores " + correct + "/" + s.n + " or better with probability " +
      (100 * p).toFixed(1) + "% (p = " + p.toFixed(3) + ").");
    const low = correct < s.n ? 1 - chance(correct + 1, s.n) : 1;  // this few right, or fewer
    line(result, "p", p < 0.05
      ? "That is unlikely by chance: you probably hear a difference between them. Which one you " +
        "prefer is a separate question: listen to both again, openly."
      : low < 0.05
        ? "So few right is unlikely by chance too: you probably hear a difference but took A for B."
        : "That is within what guessing gives: this test does not show that you hear a difference. " +
          "If you cannot, the simpler variant loses nothing.");
    const list = line(result, "ol", "");
    s.xs.forEach(function (x, i) {
      line(list, "li", "X was " + x + " (" + (x === "A" ? s.A : s.B) + "), you said " + s.answers[i] +
        (s.answers[i] === x ? ": right" : ": wrong"));
    });
    recordAbx({ a: s.A, b: s.B, correct: correct, trials: s.n, p: p });
    const again = line(result, "button", "Start again");
    again.type = "button";
    again.id = "abx-again";
    again.addEventListener("click", function () { result.hidden = true; setup.hidden = false; });
    state = null;
    run.hidden = true;
    result.hidden = false;
  }

  $("abx-start").addEventListener("click", startAbx);
  $("abx-stop").addEventListener("click", stopAll);
  $("abx-answer-a").addEventListener("click", function () { answer("A"); });
  $("abx-answer-b").addEventListener("click", function () { answer("B"); });
  Array.from(abx.querySelectorAll("button[data-abx-play]")).forEach(function (b) {
    b.addEventListener("click", function () { play(b.dataset.abxPlay); });
  });
  // keys during a blind test: A, B, X play; S stops; 1 answers "X is A", 2 "X is B"
  document.addEventListener("keydown", function (ev) {
    if (!state || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    const key = ev.key.toLowerCase();
    if (key === "a" || key === "b" || key === "x") play(key.toUpperCase());
    else if (key === "s") stopAll();
    else if (key === "1") answer("A");
    else if (key === "2") answer("B");
    else return;
    ev.preventDefault();
  });
})();
