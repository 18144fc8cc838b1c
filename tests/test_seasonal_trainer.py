"""The `seasonal` kind's trainer: how many days of training rows it needs, and what it does
with fewer (refuses, naming the span, or leaves itself out when told it is not required); its
threshold's floor; and the univariate recipe's profile catching what the shapes excuse."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import pytest

from export.config import FitConfig
from export.errors import InputError
from export.scorers.base import TrainingData
from export.scorers.registry import options_of
from export.scorers.seasonal import SeasonalTrainer

if TYPE_CHECKING:
    from pathlib import Path


def data(days: float) -> TrainingData:
    t = np.arange(0.0, days * 86_400.0, 600.0)
    rows = np.sin(2 * np.pi * t / 86_400.0)[:, None]
    return TrainingData(["value"], rows, t, FitConfig())


def test_three_days_fit_a_daily_profile_by_default() -> None:
    (spec,) = SeasonalTrainer.fit(data(3), options_of("seasonal", ()))
    assert spec["period_s"] == 86_400.0 and len(spec["level"][0]) == 24


def test_fewer_days_than_asked_refuse_or_leave_the_kind_out() -> None:
    week = options_of("seasonal", ("seasonal.min_days=7",))
    with pytest.raises(InputError, match="spanning 7 days or more"):
        SeasonalTrainer.fit(data(3), week)
    optional = options_of("seasonal", ("seasonal.min_days=7", "seasonal.required=false"))
    assert SeasonalTrainer.fit(data(3), optional) == []
    assert len(SeasonalTrainer.fit(data(8), optional)) == 1
    with pytest.raises(InputError, match="spanning two days or more"):
        SeasonalTrainer.fit(data(1), options_of("seasonal", ()))


def test_an_optional_profile_needs_each_hour_seen_as_often_as_its_prior() -> None:
    def hourly(days: float) -> TrainingData:
        t = np.arange(0.0, days * 86_400.0, 3600.0)
        return TrainingData(["value"], np.sin(2 * np.pi * t / 86_400.0)[:, None], t,
                            FitConfig())

    optional = options_of("seasonal", ("seasonal.min_days=7", "seasonal.required=false"))
    assert SeasonalTrainer.fit(hourly(8), optional) == []  # 8 readings an hour, prior 10
    assert len(SeasonalTrainer.fit(hourly(10), optional)) == 1
    assert SeasonalTrainer.fit(hourly(8), options_of(
        "seasonal", ("seasonal.min_days=7", "seasonal.required=false", "seasonal.prior=5")))
    # asked for explicitly, it is fitted from what there is
    assert len(SeasonalTrainer.fit(hourly(8), options_of("seasonal", ()))) == 1


def test_the_threshold_is_at_least_min_z_spreads() -> None:
    heldout = np.linspace(0.0, 2.0, 500)  # 1.2 x the largest: 2.4
    floored = SeasonalTrainer.threshold("seasonal", heldout, data(8),
                                        options_of("seasonal", ("seasonal.min_z=5",)))
    assert (floored.value, floored.method) == (5.0, "min_z")
    assert floored.params["calibrated"] == pytest.approx(2.4)
    above = SeasonalTrainer.threshold("seasonal", heldout * 3, data(8),
                                      options_of("seasonal", ("seasonal.min_z=5",)))
    assert (above.value, above.method) == (pytest.approx(7.2), "quantile")


def metric_csv(path: Path, days: int, fault: slice) -> Path:
    """A 5-minute metric with a daily cycle; over `fault` its readings sink to 0.45 of
    themselves within two hours (a slope fault whose readings stay inside the levels the night
    and the rise of each day reach)."""
    rng = np.random.default_rng(5)
    t = np.arange(days * 288)
    hour = (t % 288) / 12.0
    wander = np.zeros(t.size)  # the level's own slow wander (tau 2 h, sd 8 %)
    for i in range(1, t.size):
        wander[i] = wander[i - 1] * np.exp(-1 / 24) + 0.08 * np.sqrt(1 - np.exp(-2 / 24)) * \
            rng.normal()
    value = (400 + 300 * np.exp(-0.5 * ((hour - 14) / 3) ** 2)) * np.exp(wander)
    value += 30 * rng.normal(size=t.size)
    sink = np.minimum(np.arange(fault.stop - fault.start) / 24.0, 1.0)
    value[fault] *= 1.0 - 0.55 * sink
    stamps = 1_767_225_600 + 300 * t
    lines = ["timestamp,value"] + [f"{s},{v:.3f}" for s, v in zip(stamps, value, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def alert_starts(bundle: Path, csv: Path) -> list[int]:
    from edge.replay import replay_table
    from edge.table import read_table
    from export.evaluate import alert_starts as start_rows

    return np.flatnonzero(start_rows(replay_table(bundle, read_table(csv)))).tolist()


def test_a_week_of_training_adds_the_profile_that_catches_a_sunken_afternoon(
        tmp_path: Path) -> None:
    from export.fit import fit_bundle

    afternoon = slice(12 * 288 + 12 * 12, 12 * 288 + 18 * 12)  # day 12, 12:00-18:00
    csv = metric_csv(tmp_path / "metric.csv", 13, afternoon)
    config = FitConfig(rows=f"0:{10 * 288}", epochs=1, report=False)  # 8 days fitted
    fit = fit_bundle(csv, tmp_path / "week", config)
    assert "seasonal" in fit.manifest.ensemble.members
    seasonal = next(s for s in fit.manifest.scorers if s.name == "seasonal")
    assert seasonal.threshold.value >= 5.0
    with_profile = alert_starts(tmp_path / "week", csv)
    assert any(afternoon.start <= row < afternoon.stop for row in with_profile), with_profile
    assert all(row >= afternoon.start for row in with_profile if row >= 10 * 288), with_profile
    shapes = dataclasses.replace(config, scorers=("stuck",))  # the same without the profile
    fit_bundle(csv, tmp_path / "shapes", shapes)
    without = alert_starts(tmp_path / "shapes", csv)
    first = min(row for row in with_profile if row >= afternoon.start)
    assert not any(afternoon.start <= row <= first for row in without), (with_profile, without)
