"""Small stochastic building blocks shared by the device models.

All are numpy-only, vectorised, and stateful so a model can be simulated in
consecutive blocks (a long publish stream) with no seams between blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DAY = 86400.0
HOUR = 3600.0


def ar1_filter(e: np.ndarray, a: float, x0: float) -> np.ndarray:
    """x[t] = a * x[t-1] + e[t] with x[-1] = x0, exact and vectorised.

    Uses x[k] = a^k (a x0 + sum_{j<=k} a^-j e[j]) on blocks short enough that
    a^-j stays within float range; the error stays relative to the local size.
    """
    n = e.shape[0]
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    if a <= 0.0:
        out[:] = e
        return out
    block = n if a >= 1.0 else max(1, min(n, int(25.0 / -math.log(a))))
    powers = a ** np.arange(block, dtype=np.float64)
    prev = x0
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        p = powers[: hi - lo]
        acc = np.cumsum(e[lo:hi] / p)
        out[lo:hi] = p * (a * prev + acc)
        prev = out[hi - 1]
    return out


class AR1:
    """Stationary Ornstein-Uhlenbeck noise with time constant `tau_s` and std `sigma`."""

    def __init__(self, rng: np.random.Generator, tau_s: float, sigma: float) -> None:
        self.rng, self.tau_s, self.sigma = rng, tau_s, sigma
        self.state = float(rng.normal(0.0, sigma))

    def sample(self, n: int, dt: float) -> np.ndarray:
        a = math.exp(-dt / self.tau_s)
        e = self.rng.normal(0.0, self.sigma * math.sqrt(1.0 - a * a), n)
        x = ar1_filter(e, a, self.state)
        if n:
            self.state = float(x[-1])
        return x


class Lag:
    """First-order lag (thermal mass, smoothing): y' = (u - y) / tau."""

    def __init__(self, tau_s: float, y0: float) -> None:
        self.tau_s, self.state = tau_s, y0

    def apply(self, u: np.ndarray, dt: float) -> np.ndarray:
        a = math.exp(-dt / self.tau_s)
        y = ar1_filter((1.0 - a) * u, a, self.state)
        if y.size:
            self.state = float(y[-1])
        return y


@dataclass(frozen=True)
class Episode:
    start: float
    end: float
    amplitude: float


class Episodes:
    """Poisson-arriving weather episodes rendered as smooth envelopes.

    `shape="build"`: the effect builds up over the episode (an inversion trapping
    pollution day after day) and clears quickly after it ends (a front or wind).
    `shape="bump"`: a smooth sin^2 rise and fall (a wind event, a humid spell).
    `rate_per_day` may depend on time (seasonality); it is applied by thinning.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        rate_per_day: Callable[[float], float],
        max_rate_per_day: float,
        duration_s: tuple[float, float],
        amplitude: tuple[float, float],
        shape: str,
        t0: float,
        clear_tau_s: float = 1.5 * HOUR,
    ) -> None:
        self.rng, self.rate, self.max_rate = rng, rate_per_day, max_rate_per_day
        self.duration_s, self.amplitude, self.shape = duration_s, amplitude, shape
        self.clear_tau_s = clear_tau_s
        self.episodes: list[Episode] = []
        self.until = t0 - duration_s[1]  # let an episode be under way at the start

    def _arrivals(self, t_end: float) -> None:
        mean_gap = DAY / self.max_rate
        while self.until < t_end:
            self.until += float(self.rng.exponential(mean_gap))
            keep = self.rng.random() < self.rate(self.until) / self.max_rate
            dur = float(self.rng.uniform(*self.duration_s))
            amp = float(self.rng.uniform(*self.amplitude))
            if keep:
                self.episodes.append(Episode(self.until, self.until + dur, amp))

    def render(self, t: np.ndarray) -> np.ndarray:
        out = np.zeros(t.shape, dtype=np.float64)
        if t.size == 0:
            return out
        self._arrivals(float(t[-1]))
        tail = 8.0 * self.clear_tau_s if self.shape == "build" else 0.0
        lo, hi = float(t[0]), float(t[-1])
        for ep in self.episodes:
            if ep.end + tail < lo or ep.start > hi:
                continue
            i0, i1 = np.searchsorted(t, [ep.start, ep.end + tail])
            tt = t[i0:i1]
            u = (tt - ep.start) / (ep.end - ep.start)
            if self.shape == "build":
                env = np.where(
                    u <= 1.0,
                    np.clip(u, 0.0, 1.0) ** 1.5,
                    np.exp(-(tt - ep.end) / self.clear_tau_s),
                )
            else:
                env = np.sin(np.pi * np.clip(u, 0.0, 1.0)) ** 2
            out[i0:i1] += ep.amplitude * env
        self.episodes = [ep for ep in self.episodes if ep.end + tail >= hi]
        return out


def circ_gauss(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A Gaussian bump on the 24-hour circle, 1 at `centre`, std `width` hours."""
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def local_hour(t: np.ndarray, tz_hours: float) -> np.ndarray:
    """Local clock hour (0-24, fractional) at epoch seconds `t` for a fixed UTC offset."""
    return ((t / HOUR + tz_hours) % 24.0 + 24.0) % 24.0


def day_of_week(t: np.ndarray, tz_hours: float) -> np.ndarray:
    """0 = Monday ... 6 = Sunday (1970-01-01 was a Thursday)."""
    return ((np.floor((t + tz_hours * HOUR) / DAY) + 3) % 7).astype(np.int64)


def day_of_year(t: np.ndarray) -> np.ndarray:
    """Approximate day of year (0-365) for seasonal cycles."""
    return (t / DAY) % 365.2425
