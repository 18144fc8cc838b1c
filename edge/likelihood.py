"""Anomaly likelihood (HTM style): how unusual a scorer's recent raw scores are against this
device's own history of them. Stateful, one `Likelihood` per device and scorer.

For each scored window, in order (`LikelihoodSpec` holds the numbers):

    x   = ln(max(raw, floor))                 kept for the last `history` windows
    mu  = mean of x over that history          (the current window included)
    sd  = sqrt(max(variance of x, min_variance))
    z   = (mean of the last `short` x - mu) / sd,  0 while fewer than `min_history` windows

The scorer's threshold applies to z: Numenta's likelihood is 1 - Q(z), so a threshold of 1.75
is a likelihood of 0.96. The history starts with the first window the device scores and is
not reset by gaps (the score distribution of a device outlives a pause in its stream).

Batch-invariant to the bit: x is rounded to 1/65536 and held as int64, so the running sums
are exact integers, and a replay batch of 4096 windows yields the very z of 4096 live
batches of one (floating-point running sums would differ with the batch split).

Examples:
    >>> from edge.bundle import LikelihoodSpec
    >>> step = Likelihood(LikelihoodSpec(short=2, history=50, min_history=10))
    >>> quiet = step.update(np.full(30, 1.0) + np.linspace(0, 0.1, 30))
    >>> bool(quiet[:9].any()), bool(abs(quiet[-1]) < 3)
    (False, True)
    >>> bool(step.update(np.array([50.0, 50.0]))[-1] > 3)
    True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.scorers.spec import LikelihoodSpec

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
QUANTUM = 65536.0  # x is held in units of 1/QUANTUM
X_LIMIT = 64.0  # |x| bound (raw scores between e^-64 and e^64): keeps every sum within int64
CHUNK = 4096  # windows per vectorised step (bounds the int64 partial sums)


class Likelihood:
    """The likelihood state of one scorer on one device."""

    def __init__(self, spec: LikelihoodSpec) -> None:
        self.spec = spec
        self._ring: IntArray = np.zeros(spec.history, dtype=np.int64)  # x of window g at g % H
        self.count = 0  # windows seen
        self._sum = np.int64(0)  # sum of x over the history (exact)
        self._sum2 = np.int64(0)  # sum of x^2

    def snapshot(self) -> dict[str, npt.NDArray[np.int64]]:
        """The state as arrays (for `edge.state_store`); `restore` takes them back."""
        return {"count": np.array(self.count), "ring": self._ring.copy(),
                "sums": np.array([self._sum, self._sum2], dtype=np.int64)}

    def restore(self, saved: dict[str, npt.NDArray[np.int64]]) -> None:
        ring = np.asarray(saved["ring"], dtype=np.int64)
        if ring.shape != self._ring.shape:
            raise ValueError(f"likelihood history of {ring.size}, expected {self._ring.size}")
        self._ring = ring.copy()
        self.count = int(saved["count"])
        self._sum, self._sum2 = (np.int64(v) for v in saved["sums"])

    def update(self, raw: FloatArray) -> FloatArray:
        """z for each raw score of a batch, in order; the state moves past the batch."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1)
        if raw.size <= CHUNK:
            return self._update(raw)
        return np.concatenate(
            [self._update(raw[i : i + CHUNK]) for i in range(0, raw.size, CHUNK)])

    def _values(self, g: IntArray, q: IntArray) -> IntArray:
        """x of global window indices `g` (from the ring before this batch, else from `q`)."""
        new = g >= self.count
        from_batch = q[np.where(new, g - self.count, 0)]
        from_ring = self._ring[np.where(new, 0, g) % self.spec.history]
        return np.asarray(np.where(new, from_batch, from_ring))

    def _update(self, raw: FloatArray) -> FloatArray:
        spec, m, n = self.spec, raw.size, self.count
        if m == 0:
            return np.zeros(0)
        safe = np.where(np.isfinite(raw), raw, np.inf)
        x = np.log(np.maximum(safe, spec.floor))
        q = np.rint(np.clip(x, -X_LIMIT, X_LIMIT) * QUANTUM).astype(np.int64)
        g = n + np.arange(m, dtype=np.int64)  # global index of each new window
        seen = g + 1
        # long window: the last `history` values; drop the value leaving it
        leaving = g - spec.history
        dropped = np.where(leaving >= 0, self._values(np.maximum(leaving, 0), q), 0)
        total = self._sum + np.cumsum(q) - np.cumsum(dropped)
        total2 = self._sum2 + np.cumsum(q * q) - np.cumsum(dropped * dropped)
        held = np.minimum(seen, spec.history)
        # short window: the last `short` values, from a prefix sum over them and the batch
        lead = min(n, spec.short - 1)
        recent = np.concatenate([self._values(np.arange(n - lead, n, dtype=np.int64), q), q])
        prefix = np.concatenate([[0], np.cumsum(recent)])
        end = lead + np.arange(1, m + 1)
        width = np.minimum(seen, spec.short)
        short_sum = prefix[end] - prefix[end - width]
        mean = total / held
        variance = np.maximum(total2 / held - mean * mean, spec.min_variance * QUANTUM**2)
        z = (short_sum / width - mean) / np.sqrt(variance)
        z[held < spec.min_history] = 0.0
        keep = slice(max(0, m - spec.history), m)
        self._ring[g[keep] % spec.history] = q[keep]
        self.count = n + m
        self._sum, self._sum2 = total[-1], total2[-1]
        return np.asarray(z, dtype=np.float64)
