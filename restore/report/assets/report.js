/* mp3restore compare report: loudness-matched players and a blind ABX test.
 *
 * Reads everything from the page (no network, no libraries, works from file://):
 *   <audio class="variant-player" data-variant="NAME" data-lufs="-14.2" src="...">
 *   #match-loudness, #keep-position      the two switches above the players
 *   #abx ...                             the blind test (see startAbx)
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

  // ---- blind ABX ----------------------------------------------------------------------
  const abx = document.getElementById("abx");
  if (!abx) return;
  const $ = function (id) { return document.getElementById(id); };
  const setup = $("abx-setup"), run = $("abx-run"), result = $("abx-result");
  const message = $("abx-message"), progress = $("abx-progress");
  let state = null;

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
    seek(el, state.position);
    const started = el.play();
    if (started && started.catch) {
      started.catch(function (err) { message.textContent = "This browser cannot play it: " + err.name; });
    }
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
})();
