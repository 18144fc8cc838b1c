"""Fit the `twin_reading` scorer (`edge.scorers.twin_reading`) on the training windows, in
each sensor's own units: per member of a twin group, its offset and gain on its twins' mean
(least squares over the training rows both were read in), the noise law `noise_abs +
noise_rel * |expected|` (least squares of each reading's departure from its window's mean
departure on the expected level), and the centre and spread of the largest standardised
departure per window. No twins, no scorer."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.scorers.twin import twin_matrix
from edge.scorers.twin_reading import largest_departure, reading_departures, twins_mean_matrix
from edge.units import Units
from export.scorers.base import FloatArray, TrainingData
from export.scorers.twin import TwinGroupTrainer, robust_center_spread
from export.twins import twin_groups

MAX_WINDOWS = 4000  # training windows the noise law and the statistic's spread are fitted on
NOISE_FLOOR = 0.05  # noise_abs is at least this share of the median departure


def line_fit(x: FloatArray, y: FloatArray, flat_slope: float) -> tuple[float, float]:
    """Least-squares intercept and slope of y on x over the rows where both are known; where
    x does not vary, the slope is `flat_slope` and the intercept the mean of y - slope * x."""
    known = np.isfinite(x) & np.isfinite(y)
    x, y = x[known], y[known]
    if x.size < 2 or np.ptp(x) == 0:
        return (float(np.mean(y - flat_slope * x)) if x.size else 0.0), flat_slope
    slope = float(np.cov(x, y, bias=True)[0, 1] / np.var(x))
    return float(y.mean() - slope * x.mean()), slope


class TwinReadingTrainer(TwinGroupTrainer):
    kind = "twin_reading"

    @classmethod
    def fit(cls, data: TrainingData, options: dict[str, Any]) -> list[dict[str, Any]]:
        groups = twin_groups(data.channels, data.rows)
        readings = data.readings()
        if not groups or readings is None:
            return []
        units = (Units(data.scaling)(readings) if data.scaling is not None
                 else np.asarray(readings, dtype=np.float64))
        members = np.array([i for g in groups for i in g], dtype=np.intp)
        twins = twins_mean_matrix(twin_matrix(groups, len(data.channels)))
        newest = units[:, -1, :]  # each training row once
        twins_now = newest @ twins
        lines = [line_fit(twins_now[:, k], newest[:, i], 1.0) for k, i in enumerate(members)]
        offset = np.array([a for a, _ in lines])
        gain = np.array([b for _, b in lines])

        picked = units[:: max(1, len(units) // MAX_WINDOWS)]
        departure, expected = reading_departures(picked, members, twins, offset, gain)
        known = np.isfinite(departure)
        with np.errstate(invalid="ignore", divide="ignore"):  # a window with nothing read: NaN
            mean = np.where(known, departure, 0.0).sum(axis=1) / known.sum(axis=1)
        spread = np.abs(departure - mean[:, None, :])
        noise_abs, noise_rel = [], []
        for k in range(len(members)):
            level, size = np.abs(expected[:, :, k]).ravel(), spread[:, :, k].ravel()
            a, r = line_fit(level, size, 0.0)
            seen = size[np.isfinite(size)]
            if r < 0:  # noise that falls with the level: a level-free noise instead
                a, r = (float(seen.mean()) if seen.size else 0.0), 0.0
            typical = float(np.median(seen)) if seen.size else 1.0
            noise_abs.append(max(a, NOISE_FLOOR * typical, 1e-9))
            noise_rel.append(r)
        values = largest_departure(departure, expected, np.array(noise_abs), np.array(noise_rel))
        center, spread_of = robust_center_spread(values)
        names = [[data.channels[i] for i in g] for g in groups]
        return [{"name": cls.kind, "kind": cls.kind, "groups": names, "center": center,
                 "spread": spread_of, "offset": offset.tolist(), "gain": gain.tolist(),
                 "noise_abs": noise_abs, "noise_rel": noise_rel}]
