"""The `seasonal` kind's trainer: how many days of training rows it needs, and what it does
with fewer (refuses, naming the span, or leaves itself out when told it is not required)."""

from __future__ import annotations

import numpy as np
import pytest

from export.config import FitConfig
from export.errors import InputError
from export.scorers.base import TrainingData
from export.scorers.registry import options_of
from export.scorers.seasonal import SeasonalTrainer


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
