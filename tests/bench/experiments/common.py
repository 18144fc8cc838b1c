"""Shared helpers for the benchmark experiments (numpy/sklearn prototypes of device-side steps).

Everything here is causal: a row's feature/score uses only that row and earlier ones.
"""

from __future__ import annotations

import math

import numpy as np


def roll_mean(Z: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over the last w rows (fewer at the start)."""
    c = np.cumsum(np.concatenate([np.zeros((1, *Z.shape[1:])), Z]), axis=0)
    i = np.arange(1, len(Z) + 1)
    lo = np.maximum(0, i - w)
    n = (i - lo).reshape((-1,) + (1,) * (Z.ndim - 1))
    return (c[i] - c[lo]) / n


def roll_std(Z: np.ndarray, w: int) -> np.ndarray:
    m = roll_mean(Z, w)
    m2 = roll_mean(Z * Z, w)
    return np.sqrt(np.maximum(m2 - m * m, 0.0))


def ema(x: np.ndarray, alpha: float, init=None) -> np.ndarray:
    out = np.empty_like(x, dtype=float)
    s = x[0] if init is None else init
    for i in range(len(x)):
        s = s + alpha * (x[i] - s)
        out[i] = s
    return out


class Decision:
    """edge/decide.py semantics on one score stream (threshold 1.0 on the normalised score)."""

    def __init__(self, smoothing=1, trigger=1, release=1, release_level=1.0, cooldown=0, warmup=0):
        self.smoothing, self.trigger, self.release = smoothing, trigger, release
        self.release_level, self.cooldown, self.warmup = release_level, cooldown, warmup

    def run(self, s: np.ndarray):
        """Returns (active mask per row, alert-start mask per row, smoothed score)."""
        sm = roll_mean(s, self.smoothing) if self.smoothing > 1 else s.astype(float)
        active = np.zeros(len(s), bool)
        starts = np.zeros(len(s), bool)
        on, over, under, cool_until = False, 0, 0, -1
        for i, v in enumerate(sm):
            if i < self.warmup:
                continue
            if not on:
                over = over + 1 if v >= 1.0 else 0
                if over >= self.trigger and i >= cool_until:
                    on, under = True, 0
                    starts[i] = True
            else:
                under = under + 1 if v < self.release_level else 0
                if under >= self.release:
                    on, over = False, 0
                    cool_until = i + self.cooldown
            active[i] = on
        return active, starts, sm


def gauss_tail(z):
    """Q(z) = P(N(0,1) > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def anomaly_likelihood(
    s: np.ndarray, short: int = 10, long: int = 8640, min_hist: int = 100, log: bool = False
) -> np.ndarray:
    """HTM-style likelihood: 1 - Q((mean_short - mean_long) / std_long), causal.

    The long-term distribution is the mean/std of all raw scores in the last `long` rows
    (excluding the current short window); the device keeps running sums (O(1) per row).
    """
    x = np.log(np.maximum(s, 1e-12)) if log else np.asarray(s, float)
    n = len(x)
    out = np.zeros(n)
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    for i in range(n):
        a = max(0, i - short + 1)
        ms = (c1[i + 1] - c1[a]) / (i + 1 - a)
        lo = max(0, i + 1 - long)
        m = i + 1 - lo
        if m < min_hist:
            continue
        mu = (c1[i + 1] - c1[lo]) / m
        var = (c2[i + 1] - c2[lo]) / m - mu * mu
        sd = math.sqrt(max(var, 1e-12))
        out[i] = 1.0 - gauss_tail((ms - mu) / sd)
    return out
