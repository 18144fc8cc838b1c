"""Fit the `seasonal` scorer (`edge.scorers.seasonal`): per channel and hour of the day (or of
the week, when the training rows span two weeks or more), the usual level and spread.

Each bin's median and robust spread (IQR / 1.349) are shrunk toward its parent's with the
weight of `prior` pseudo-rows (an hour of the week toward that hour of every day, an hour of
the day toward the whole channel), so a bin seen a few times leans on the wider pattern and a
well-seen bin speaks for itself; no floor to tune. Training rows spanning less
than two days cannot show a daily pattern: the fit is refused with that reason. Where the kind
is not required (the univariate recipe adds it on its own), it also leaves itself out when an
hour of the day holds fewer rows than `prior`: a week of hourly readings gives each hour 7,
so its profile would be mostly the pooled level and the noise of 7 readings.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge.scorers.seasonal import DAY_S, WEEK_S
from edge.scorers.spec import Threshold
from export import calibrate
from export.errors import InputError
from export.scorers.base import FloatArray, Option, TrainerScorer, TrainingData, flag

ROBUST = 1.349  # IQR of a standard normal


def _spread(values: FloatArray) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float((q3 - q1) / ROBUST)


def _shrunk(values: FloatArray, parent: tuple[float, float], prior: float
            ) -> tuple[float, float]:
    """A bin's (level, spread): its median and robust spread, weighted by its rows, and its
    parent's with the weight of `prior` rows."""
    n = float(values.size)
    med = float(np.median(values)) if n else parent[0]
    s = _spread(values) if n >= 2 else parent[1]
    level = (n * med + prior * parent[0]) / (n + prior)
    return level, float(np.sqrt((n * s**2 + prior * parent[1] ** 2) / (n + prior)))


class SeasonalTrainer(TrainerScorer):
    kind = "seasonal"
    options: ClassVar[dict[str, Option]] = {
        "offset_s": Option(float, 0.0, "the site's UTC offset in seconds (bins are local time)"),
        "prior": Option(float, 10.0, "pseudo-rows of the pooled level and spread in each bin"),
        "min_days": Option(float, 2.0, "days the training rows must span"),
        "required": Option(flag, True, "refuse the fit when they span less (else: no scorer, "
                           "nor when an hour of the day holds fewer rows than `prior`)"),
        "min_z": Option(float, 0.0, "the threshold is at least this many spreads"),
    }

    @classmethod
    def fit(cls, data: TrainingData, options: dict[str, Any]) -> list[dict[str, Any]]:
        ts, rows = data.timestamps, data.rows
        known = np.isfinite(ts)
        ts, rows = ts[known], rows[known]
        span = float(ts.max() - ts.min()) if ts.size else 0.0
        min_days = max(float(options.get("min_days", 2.0)), 2.0)
        if span < min_days * DAY_S:
            if not options.get("required", True):
                return []
            days = "two days" if min_days == 2.0 else f"{min_days:g} days"
            raise InputError(f"--scorers seasonal needs training rows spanning {days} or more "
                             f"(these span {span / 3600:.1f} h)")
        period = WEEK_S if span >= 2 * WEEK_S else DAY_S
        offset, prior = float(options["offset_s"]), float(options["prior"])
        local = ts + offset
        hour_of_day = (np.mod(local, DAY_S) // 3600).astype(int)
        seen = int(np.bincount(hour_of_day, minlength=24).min())
        if seen < prior and not options.get("required", True):
            return []  # its hours would lean mostly on the pooled level: no daily profile
        hour_of_week = (np.mod(local, WEEK_S) // 3600).astype(int)
        level, spread = [], []
        for c in range(rows.shape[1]):
            x = rows[:, c]
            pooled = (float(np.median(x)), max(_spread(x), 1e-6))
            daily = [_shrunk(x[hour_of_day == h], pooled, prior) for h in range(24)]
            if period == DAY_S:
                bins = daily
            else:  # an hour of the week leans on the same hour of every day
                bins = [_shrunk(x[hour_of_week == h], daily[h % 24], prior) for h in range(168)]
            level.append([b[0] for b in bins])
            spread.append([b[1] for b in bins])
        return [{"name": "seasonal", "kind": "seasonal", "period_s": period,
                 "offset_s": offset, "level": level, "spread": spread}]

    @classmethod
    def threshold(cls, name: str, heldout: FloatArray, data: TrainingData,
                  options: dict[str, Any]) -> Threshold:
        """The calibrated threshold, at least `min_z` spreads: the held-out rows follow the
        training weeks, and a season's level that wanders over months (an office's heating)
        lies beyond them without any fault."""
        calibrated = calibrate.calibrate(heldout, data.config)
        floor = float(options.get("min_z", 0.0))
        if calibrated.value >= floor:
            return calibrated
        return Threshold(value=floor, method="min_z",
                         params={**calibrated.params, "calibrated": calibrated.value})
