#!/usr/bin/env python3
"""Fit the offline restore's level model (highs.level_gain_db, issue 14) on the level-training
set, check it on the dev set's tuned part, and print the constants for
restore/stages/offline_restore/highs.py.

    python scripts/make_trainset.py                 # build/trainset: random mixes (about 2 minutes)
    python bench/fit_offline_level.py [--bitrates 128,192] [--features near,slope5,...]
    python bench/fit_offline_level.py --check held-out     # the final check only; never fit on it

For every clip and bitrate whose decode lost its top (energy above the cutoff more than 15 dB
under the source's), the stage runs with the model off and the harness's measure
(quality.band_scores) gives how many dB the added band ends under the source's: y, what the
model should add. x: highs.level_features of the decode's long-term spectrum, the stage's own.
The fit is ridge regression, its strength and the feature set chosen by leave-one-clip-out
error on the training set (a clip's bitrates left out together); reported beside a constant's
error, then applied to the dev set's tuned part, which was not fitted on. The rows (features,
y) are cached in build/quality/level_rows_<set>.json by the clips' and the code's hashes.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import quality  # noqa: E402
from restore.analysis import compare  # noqa: E402
from restore.stages import StageContext  # noqa: E402
from restore.stages.decode import DecodeStage  # noqa: E402
from restore.stages.offline_restore import highs  # noqa: E402
from restore.stages.offline_restore.stage import OfflineRestoreStage  # noqa: E402

# Every pair the harness judges as bright (its source's top over quality.DARK_TOP_DB, -100 dB):
# a quiet top too (a string quartet's) must not be brightened, so the model learns those as well.
BRIGHT_TOP_DB = -100.0
LOST_DB = -15.0     # the decode's energy above the cutoff this far under the source's: the top was lost
FEATURES = ("near", "slope5", "tilt_4k", "tilt_lo", "flatness", "cut_khz", "level_db", "flat_f", "side")
# The rows depend on the stage's code, not on the model's constants (measured with the model
# off), so the constants' block of highs.py is left out of the cache key.
def _code_text(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8")
    return re.sub(r"# -- the level model's constants.*# -- end of the level model's constants --", "", text, flags=re.S)


CODE = hashlib.sha256("".join(_code_text(p) for p in (
    highs.__file__, sys.modules[OfflineRestoreStage.__module__].__file__, quality.__file__)).encode()).hexdigest()[:12]


def clip_paths(folder: Path, part: str | None) -> list[Path]:
    """The FLACs of a training folder, or of the dev set's `part` (its MANIFEST)."""
    if part is None:
        return sorted(folder.glob("*.flac"))
    manifest = json.loads((folder / "MANIFEST.json").read_text(encoding="utf-8"))
    return [folder / m["file"] for n, m in manifest.items() if m.get("part", "tuned") == part]


def measure(paths: list[Path], bitrates, mp3_dir: Path, cache_path: Path) -> list[dict]:
    """One row per clip and bitrate: the level features, E>cut of the decode and of the stage
    without the model, whether it extended."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache = quality.ScoreCache(cache_path)          # the harness's own: a JSON file, written atomically
    rows = []
    for path in paths:
        clip = quality.Clip(path.stem, path, quality.file_sha(path))
        src = None
        for kbps in bitrates:
            key = f"{CODE}:{clip.sha[:16]}:{kbps}"
            row = cache.get(key)
            if row is None:
                src = src or quality.read_audio(path)
                mp3 = quality.encode(clip, kbps, mp3_dir)
                dec, dfacts = DecodeStage().read(mp3, StageContext())
                cutoff = dfacts["cutoff_hz"]
                stage = OfflineRestoreStage()
                # the model's features are computed (fitted_level on) but it adds nothing (no weights)
                stage.settings = dataclasses.replace(stage.settings, fitted_level=True)
                ctx = StageContext(options={"cutoff_hz": cutoff, "bitrate_kbps": kbps})
                weights, highs.LEVEL_WEIGHTS = highs.LEVEL_WEIGHTS, {}
                try:
                    out = stage.process(dec, ctx)
                finally:
                    highs.LEVEL_WEIGHTS = weights
                facts = ctx.facts["offline_restore"]
                lag, gain = compare.align(dec, src)
                edge = cutoff or quality.LAME_LOWPASS_HZ.get(kbps, 16000.0)
                scores = {label: quality.band_scores(compare.apply_alignment(a, lag, gain or 1.0, src.frames), src, edge)
                          for label, a in (("dec", dec), ("out", out))}
                row = {
                    "clip": clip.name, "kbps": kbps, "cutoff": cutoff,
                    "extended": bool(facts.get("extended")) and not facts.get("own_band_limit"),
                    "features": facts.get("level_features"),
                    "e_dec": scores["dec"]["energy_above_cutoff_db"], "e_out": scores["out"]["energy_above_cutoff_db"],
                    "lsd16_dec": scores["dec"]["lsd_above_16k"], "lsd16_out": scores["out"]["lsd_above_16k"],
                    "source_top_db": quality.top_level_db(src)}
                cache.put(key, row)
            rows.append(row)
    return [r for r in rows if r["extended"] and r["features"] and fit_pair(r["e_dec"], r["e_out"], r["source_top_db"])]


def fit_pair(e_dec: float | None, e_out: float | None, source_top_db: float | None) -> bool:
    """Whether a clip x bitrate is one the level is fitted and judged on: the decode lost the
    top (E>cut under LOST_DB), the output's E>cut was measured, the source's top is not dark."""
    return (e_dec is not None and e_dec < LOST_DB and e_out is not None
            and (source_top_db if source_top_db is not None else -999) > BRIGHT_TOP_DB)


def design(rows, names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.array([[r["features"][k] for k in names] for r in rows], float)
    y = np.array([-r["e_out"] for r in rows])
    groups = np.array([r["clip"] for r in rows])
    return X, y, groups


HUBER_DB = 2.0      # residuals beyond this count linearly, not squared: a few odd mixes do not steer the line


def ridge(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """(intercept, weights) in the features' own units: ridge regression (alpha on
    standardised features) with a Huber loss (iteratively reweighted least squares)."""
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-9
    Z = np.column_stack([np.ones(len(y)), (X - mu) / sd])
    reg = alpha * len(y) * np.eye(Z.shape[1])
    reg[0, 0] = 0.0
    v = np.ones(len(y))
    for _ in range(20):
        w = np.linalg.solve(Z.T @ (Z * v[:, None]) + reg, Z.T @ (v * y))
        r = np.abs(Z @ w - y)
        v = np.where(r <= HUBER_DB, 1.0, HUBER_DB / np.maximum(r, 1e-9))
    weights = w[1:] / sd
    return float(w[0] - mu @ weights), weights


def predict(a: float, w: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.clip(a + X @ w, highs.LEVEL_MIN_DB, highs.LEVEL_MAX_DB)


def loco(X, y, groups, alpha) -> np.ndarray:
    """Leave-one-clip-out residuals (prediction - y) of the ridge fit."""
    res = np.zeros(len(y))
    for g in np.unique(groups):
        m = groups == g
        a, w = ridge(X[~m], y[~m], alpha)
        res[m] = predict(a, w, X[m]) - y[m]
    return res


def rms(v) -> float:
    return float(np.sqrt(np.mean(np.square(v))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainset", type=Path, default=ROOT / "build" / "trainset")
    ap.add_argument("--devset", type=Path, default=ROOT / "build" / "devset")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "quality")
    ap.add_argument("--bitrates", default="128,192")
    ap.add_argument("--features", default=",".join(FEATURES))
    ap.add_argument("--check", choices=["tuned", "held-out"], default="tuned",
                    help="the dev set part the fitted model is applied to (never fitted on)")
    args = ap.parse_args(argv)
    t0 = time.time()
    bitrates = [int(b) for b in args.bitrates.split(",")]
    train = measure(clip_paths(args.trainset, None), bitrates, args.out / "mp3-train", args.out / "level_rows_train.json")
    check = measure(clip_paths(args.devset, args.check), bitrates, args.out / "mp3", args.out / f"level_rows_{args.check}.json")
    names = [n for n in args.features.split(",") if n]
    X, y, groups = design(train, names)
    print(f"training set: {len(y)} clip x bitrate pairs whose top was lost ({len(np.unique(groups))} clips); "
          f"y (dB to add) mean {y.mean():+.2f}, sd {y.std():.2f}, range {y.min():+.1f}..{y.max():+.1f}")
    const = np.zeros(len(y))
    for g in np.unique(groups):
        m = groups == g
        const[m] = y[~m].mean() - y[m]
    print(f"  a constant, leave one clip out: rms {rms(const):.2f} dB, within 2 dB {np.mean(np.abs(const) <= 2):.0%}")
    best = None
    for k in range(1, len(names) + 1):
        for subset in itertools.combinations(range(len(names)), k):
            for alpha in (0.001, 0.01, 0.1):
                res = loco(X[:, subset], y, groups, alpha)
                if best is None or rms(res) < best[0]:
                    best = (rms(res), subset, alpha, res)
    err, subset, alpha, res = best
    chosen = [names[i] for i in subset]
    a, w = ridge(X[:, subset], y, alpha)
    print(f"  best feature set {chosen}, ridge alpha {alpha}: leave one clip out rms {err:.2f} dB, "
          f"within 2 dB {np.mean(np.abs(res) <= 2):.0%}, range {res.min():+.1f}..{res.max():+.1f}")
    full = loco(X, y, groups, 0.01)
    print(f"  all features (alpha 0.01): rms {rms(full):.2f} dB")
    # The margin towards dark: the smallest that keeps the model over 2 dB too bright on no more
    # of the training pairs than the plain rule (no model: residual -y).
    plain_bright = np.mean(-y > 2)
    print(f"  the plain rule (no model): within 2 dB {np.mean(np.abs(y) <= 2):.0%}, over 2 dB too bright {plain_bright:.0%}, "
          f"over 2 dB too dark {np.mean(-y < -2):.0%}")
    margin = None
    for m in np.arange(0.0, 4.01, 0.5):
        r = res - m
        print(f"  the model less {m:.1f} dB: rms {rms(r):.2f}, within 2 dB {np.mean(np.abs(r) <= 2):.0%}, "
              f"too bright {np.mean(r > 2):.0%}, too dark {np.mean(r < -2):.0%}")
        if margin is None and np.mean(r > 2) <= plain_bright + 0.01:
            margin = float(m)
    margin = 0.0 if margin is None else margin
    print("constants for highs.py:")
    print(f"LEVEL_FIT_DB = {a:.3f}")
    print(f"DARK_MARGIN_DB = {margin:.1f}")
    print("LEVEL_WEIGHTS = {" + ", ".join(f'"{n}": {v:.4f}' for n, v in zip(chosen, w)) + "}")
    print("LEVEL_RANGES = {" + ", ".join(f'"{n}": ({X[:, i].min():.2f}, {X[:, i].max():.2f})'
                                         for n, i in zip(chosen, subset)) + "}")
    Xc, yc, gc = design(check, chosen)
    pc = predict(a - margin, w, Xc)
    print(f"\ndev set, {args.check} part (not fitted on): {len(yc)} pairs")
    print(f"  {'clip':16s} kbps   E>cut without -> with the model (predicted gain)")
    for r, p in zip(check, pc):
        print(f"  {r['clip']:16s} {r['kbps']:4d}  {r['e_out']:+6.1f} -> {r['e_out'] + p:+6.1f}  ({p:+.1f})")
    print(f"  rms E>cut: without {rms(yc):.2f} dB, with the model (less the margin) {rms(pc - yc):.2f} dB, "
          f"within 2 dB {np.mean(np.abs(pc - yc) <= 2):.0%} (without {np.mean(np.abs(yc) <= 2):.0%}); a constant "
          f"({y.mean():+.2f}) {rms(y.mean() - yc):.2f} dB")
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
