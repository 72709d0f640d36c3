"""The offline restore's level model tooling (issue 14): the fit (bench/fit_offline_level.py)
and the training mixes (scripts/make_trainset.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from bench import fit_offline_level as fit
from restore.stages.offline_restore import highs

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_the_fit_recovers_a_line_and_is_not_steered_by_a_few_odd_mixes(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2)) * [2.0, 5.0]
    y = 1.5 + X @ np.array([0.8, -0.3]) + rng.normal(scale=0.3, size=200)
    a, w = fit.ridge(X, y, alpha=1e-6)
    assert a == pytest.approx(1.5, abs=0.1) and np.allclose(w, [0.8, -0.3], atol=0.03)
    odd = y.copy()
    odd[:12] += 25.0                                     # 6 % of the mixes 25 dB off the line
    a_h, w_h = fit.ridge(X, odd, alpha=1e-6)
    monkeypatch.setattr(fit, "HUBER_DB", 1e9)            # plain least squares
    a_ls, _ = fit.ridge(X, odd, alpha=1e-6)
    assert abs(a_h - 1.5) < 0.3 < abs(a_ls - 1.5)
    assert np.allclose(w_h, [0.8, -0.3], atol=0.1)


def test_leave_one_clip_out_leaves_both_bitrates_of_a_clip_out():
    """A clip's two bitrates are nearly the same music: predicting one from the other would
    flatter the error. With y a function of the clip alone and nothing to learn it from, the
    left-out error is the clip's distance from the others' mean, not 0."""
    groups = np.repeat(np.arange(20), 2)
    y = np.repeat(np.linspace(-5, 5, 20), 2)
    X = np.zeros((40, 1))
    res = fit.loco(X, y, groups, alpha=0.01)
    assert np.min(np.abs(res)) > 0.2


def test_the_fit_counts_only_pairs_whose_top_was_lost_and_is_not_dark():
    """The pairs the level is fitted and judged on (the fit and the tuning script share it)."""
    assert fit.fit_pair(-30.0, -1.0, -60.0)
    assert not fit.fit_pair(fit.LOST_DB + 1, -1.0, -60.0)          # the decode kept the top
    assert not fit.fit_pair(-30.0, -1.0, fit.BRIGHT_TOP_DB - 1)      # a dark source: nothing to match
    assert not fit.fit_pair(-30.0, -1.0, None) and not fit.fit_pair(None, -1.0, -60.0)
    assert not fit.fit_pair(-30.0, None, -60.0)                      # nothing measured above the cutoff


def test_the_cached_rows_do_not_depend_on_the_models_constants():
    text = fit._code_text(highs.__file__)
    assert "def level_gain_db" in text and "LEVEL_WEIGHTS: dict" not in text and "LEVEL_FIT_DB =" not in text


def _sources_missing() -> bool:
    sys.path.insert(0, str(SCRIPTS))
    import make_devset
    return bool(make_devset.missing_requirements())


@pytest.mark.skipif(_sources_missing(), reason="the Debian sound packages are not installed")
def test_training_mixes_are_seeded_and_never_use_the_held_out_kits():
    import make_trainset
    assert not {k.name for k in make_trainset.kits()} & set(make_trainset.HELD_OUT_KITS)
    assert "bach/bwv1.6" not in make_trainset.CHORALES and "bach/bwv10.7" not in make_trainset.CHORALES
    x1, info1 = make_trainset.make_clip(5, 2.0)
    x2, info2 = make_trainset.make_clip(5, 2.0)
    assert info1 == info2 and np.array_equal(x1, x2)
    assert x1.shape == (2, 2 * 44100) and np.isfinite(x1).all() and 0 < np.abs(x1).max() <= 1.0


@pytest.mark.skipif(_sources_missing(), reason="the Debian sound packages are not installed")
def test_some_orchestra_mixes_are_bowed_strings_alone():
    """The string-only mixes the level fit needs (a string quartet's top falls away above
    16 kHz): clip 0 is one, seeded; its programs are GM's bowed strings and string ensembles."""
    import make_trainset
    x, info = make_trainset.make_clip(0, 2.0)
    assert info["kind"] == "orchestra" and info.get("chamber") is True, info
    assert set(info["programs"]) <= {40, 41, 42, 43, 44, 45, 48, 49} and 2 <= len(info["programs"]) <= 4
    assert np.isfinite(x).all() and np.abs(x).max() > 0
