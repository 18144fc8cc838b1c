"""Fit the `twin_reading` scorer (`edge.scorers.twin_reading`) on the training windows, in
each sensor's own units: per member of a twin group, its offset and gain on its twins' mean
(least squares over the training rows both were read in), the noise law `noise_abs +
noise_rel * |expected|` (least squares of each reading's departure from its window's mean
departure on the expected level), and the centre and spread of the largest standardised
departure per window. No twins, no scorer."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.scorers.twin_reading import largest_departure, reading_departures, twins_mean_matrix
from edge.units import Units
from export.scorers.base import FloatArray, TrainingData
from export.scorers.twin import TwinGroupTrainer

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
    def judged(cls, readings: FloatArray, data: TrainingData) -> FloatArray:
        """In each sensor's own units (the scaled values when the scaling is not known)."""
        if data.scaling is None:
            return np.asarray(readings, dtype=np.float64)
        return Units(data.scaling)(readings)

    @classmethod
    def member_values(cls, readings: FloatArray, matrix: FloatArray, members: list[int],
                      options: dict[str, Any]) -> tuple[FloatArray, dict[str, Any]]:
        """Each member's line on its twins and noise law, and its largest standardised
        departure over each of (at most MAX_WINDOWS of) the training windows."""
        units, index = readings, np.array(members, dtype=np.intp)
        twins = twins_mean_matrix(matrix)
        newest = units[:, -1, :]  # each training row once
        twins_now = newest @ twins
        lines = [line_fit(twins_now[:, k], newest[:, i], 1.0) for k, i in enumerate(index)]
        offset = np.array([a for a, _ in lines])
        gain = np.array([b for _, b in lines])

        picked = units[:: max(1, len(units) // MAX_WINDOWS)]
        departure, expected = reading_departures(picked, index, twins, offset, gain)
        known = np.isfinite(departure)
        with np.errstate(invalid="ignore", divide="ignore"):  # a window with nothing read: NaN
            mean = np.where(known, departure, 0.0).sum(axis=1) / known.sum(axis=1)
        spread = np.abs(departure - mean[:, None, :])
        noise_abs, noise_rel = [], []
        for k in range(len(index)):
            level, size = np.abs(expected[:, :, k]).ravel(), spread[:, :, k].ravel()
            a, r = line_fit(level, size, 0.0)
            seen = size[np.isfinite(size)]
            if r < 0:  # noise that falls with the level: a level-free noise instead
                a, r = (float(seen.mean()) if seen.size else 0.0), 0.0
            typical = float(np.median(seen)) if seen.size else 1.0
            noise_abs.append(max(a, NOISE_FLOOR * typical, 1e-9))
            noise_rel.append(r)
        values = largest_departure(departure, expected, np.array(noise_abs), np.array(noise_rel))
        return values, {"offset": offset.tolist(), "gain": gain.tolist(),
                        "noise_abs": noise_abs, "noise_rel": noise_rel}
