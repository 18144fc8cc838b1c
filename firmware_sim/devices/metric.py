"""`metric`: a univariate business metric (web traffic: requests per 5 minutes).

Channels: ``value`` and, with ``forecast=True`` (CLI ``--forecast``),
``predicted``: the output of a black-box forecaster that knows the daily and
weekly seasonality and tracks the level with one step of lag, but not the
faults (faults are injected into ``value`` only), as in NAB-style streams
where anomalies show as a residual against a forecast.

Model: value = base x daily shape (night trough ~35 % of the evening peak, UTC)
x weekly shape (Sat 0.75, Sun 0.70) x slow trend (~2 %/week) x a level that
wanders (log-AR(1), tau 2 h, sd 8 %) + over-dispersed count noise
(1.5 sqrt(mu) + 1 % of mu). Five-minute period by default, as in NAB.
"""

from __future__ import annotations

import math

import numpy as np

from firmware_sim.devices.base import DeviceModel
from firmware_sim.signals import AR1, HOUR, circ_gauss, day_of_week, local_hour

WEEKLY = np.array([1.0, 1.0, 1.0, 1.0, 0.95, 0.75, 0.70])


class Metric(DeviceModel):
    name = "metric"
    default_period_s = 300.0
    mix_duration_scale = 0.4  # 5-minute rows: keep faults to hours, not days

    def __init__(
        self, rng: np.random.Generator, period_s: float, t0: float, forecast: bool = False
    ) -> None:
        super().__init__(rng, period_s, t0)
        self.forecast = forecast
        self.channels = ("value", "predicted") if forecast else ("value",)
        self.fault_channels = ("value",)
        self.bounds = {ch: (0.0, math.inf) for ch in self.channels}
        self.base = 1000.0 * math.exp(rng.normal(0.0, 0.3))
        self.trend_per_week = float(rng.normal(0.02, 0.01))
        self.level = AR1(rng, 2.0 * HOUR, 0.08)

    def simulate(self, t: np.ndarray) -> np.ndarray:
        rng, n = self.rng, t.size
        hour, dow = local_hour(t, 0.0), day_of_week(t, 0.0)
        daily = 0.35 + 0.65 * np.clip(
            0.65 * circ_gauss(hour, 14.0, 4.0) + 0.55 * circ_gauss(hour, 20.0, 2.5), 0.0, 1.0
        )
        trend = 1.0 + self.trend_per_week * (t - self.t0) / (7.0 * 86400.0)
        expected = self.base * daily * WEEKLY[dow] * trend
        prev = self.level.state
        level = self.level.sample(n, self.period_s)
        mu = expected * np.exp(level)
        value = mu + rng.normal(0.0, 1.0, n) * (1.5 * np.sqrt(mu) + 0.01 * mu)
        if not self.forecast:
            return self.clip(value[:, None])
        lagged = np.concatenate([[prev], level[:-1]]) if n else level
        predicted = expected * np.exp(0.8 * lagged + rng.normal(0.0, 0.03, n))
        return self.clip(np.column_stack([value, predicted]))
