"""The `max` ensemble: the largest member decides; over the threshold, the other members'
evidence orders windows whose largest member is the same."""

from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import Ensemble
from edge.engine import TIE_BREAK, combine

RULE = Ensemble(rule="max", members=["flat", "shape", "features"])


def test_under_the_threshold_the_ensemble_is_the_largest_member() -> None:
    scores = {"flat": np.array([0.0, 0.9, 0.2]), "shape": np.array([0.5, 0.1, 0.999]),
              "features": np.array([0.3, 0.4, -0.5])}
    assert np.array_equal(combine(RULE, scores), [0.5, 0.9, 0.999])


def test_equal_maxima_over_the_threshold_are_ordered_by_the_other_members() -> None:
    # the same departure (flat 2.0) in three windows: alone, backed a little, backed fully
    scores = {"flat": np.array([2.0, 2.0, 2.0, 1.0]), "shape": np.array([0.0, 0.5, 3.0, 0.0]),
              "features": np.array([0.0, 0.0, 0.8, 0.0])}
    ensemble = combine(RULE, scores)
    assert ensemble[0] < ensemble[1] < ensemble[2] < 3.0 + TIE_BREAK
    assert ensemble[2] > 3.0  # the largest member is still the level
    assert ensemble[1] == pytest.approx(2.0 + TIE_BREAK * (1.0 + 0.5 + 0.0) / 3, abs=1e-12)
    assert ensemble[3] >= 1.0  # exactly on the threshold stays over it


def test_the_windows_over_the_threshold_are_those_of_the_largest_member() -> None:
    rng = np.random.default_rng(0)
    scores = {m: rng.gamma(2.0, 0.4, 500) for m in RULE.members}
    largest = np.vstack(list(scores.values())).max(axis=0)
    ensemble = combine(RULE, scores)
    assert np.array_equal(ensemble >= 1.0, largest >= 1.0)
    assert np.all(ensemble - largest <= TIE_BREAK) and np.all(ensemble >= largest)


def test_a_member_not_scored_yet_leaves_the_window_unscored() -> None:
    scores = {"flat": np.array([np.nan, 2.0]), "shape": np.array([3.0, 0.0]),
              "features": np.array([0.0, 0.0])}
    ensemble = combine(RULE, scores)
    assert np.isnan(ensemble[0]) and ensemble[1] > 2.0


MAX_OR_MEAN = Ensemble(rule="max_or_mean", members=["lag", "range", "shape"])


def test_max_or_mean_ranks_the_windows_under_the_threshold_by_all_members() -> None:
    # window 0: one member near its threshold, the others quiet; window 1: all half-way
    scores = {"lag": np.array([0.9, 0.5, 2.0]), "range": np.array([0.0, 0.5, 0.0]),
              "shape": np.array([-0.4, 0.5, 0.3])}
    ensemble = combine(MAX_OR_MEAN, scores)
    assert ensemble[0] == pytest.approx(0.3) and ensemble[1] == pytest.approx(0.5)
    assert ensemble[2] == pytest.approx(2.0 + TIE_BREAK * (1.0 + 0.0 + 0.3) / 3)


def test_max_or_mean_is_over_the_threshold_exactly_where_max_is() -> None:
    rng = np.random.default_rng(1)
    scores = {m: rng.gamma(2.0, 0.4, 500) - 0.2 for m in MAX_OR_MEAN.members}
    largest = combine(Ensemble(rule="max", members=MAX_OR_MEAN.members), scores)
    ensemble = combine(MAX_OR_MEAN, scores)
    assert np.array_equal(ensemble >= 1.0, largest >= 1.0)
    assert np.all(ensemble[largest < 1.0] <= largest[largest < 1.0])
