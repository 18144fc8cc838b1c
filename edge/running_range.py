"""The running range of a device's readings: how far a reading lies beyond every reading
before it. Stateful, one `RunningRange` per device (in its `ScoreState`).

Per channel, the range starts as the training rows' [low, high] (`RangeSpec`, scaled units)
and takes in every row the device scores afterwards, alert or not: a new level is an event
once, then part of the range. A row's excess is its distance beyond the range of the rows
before it, in units of that range's width, the largest over channels; a scorer threshold of
0.1 then means "10% of the range beyond anything seen so far". Record highs and lows are what
a lag-shape model misses: a larger copy of a familiar burst has a familiar shape.

Batch-invariant to the bit: the range is a running max/min, exact whatever the batch split.

Examples:
    >>> from edge.bundle import RangeSpec
    >>> seen = RunningRange(RangeSpec(low=[0.0], high=[10.0]))
    >>> seen.excess(np.array([[5.0], [12.0], [11.0], [-6.0]])).ravel().tolist()
    [0.0, 0.2, 0.0, 0.5]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.scorers.spec import RangeSpec

FloatArray = npt.NDArray[np.float64]
MIN_WIDTH = 1e-9  # a channel constant in training (scaled units) still gets a finite excess


class RunningRange:
    """The range of every row one device has seen, per channel."""

    def __init__(self, spec: RangeSpec) -> None:
        self.low = np.asarray(spec.low, dtype=np.float64)
        self.high = np.asarray(spec.high, dtype=np.float64)

    def snapshot(self) -> dict[str, FloatArray]:
        """The state as arrays (for `edge.state_store`); `restore` takes them back."""
        return {"low": self.low.copy(), "high": self.high.copy()}

    def restore(self, saved: dict[str, FloatArray]) -> None:
        low, high = (np.asarray(saved[k], dtype=np.float64) for k in ("low", "high"))
        if low.shape != self.low.shape or high.shape != self.high.shape:
            raise ValueError(f"range of {low.size} channels, expected {self.low.size}")
        self.low, self.high = low.copy(), high.copy()

    def excess(self, rows: FloatArray) -> FloatArray:
        """(B, C) rows in stream order -> (B,) largest excess over channels, in range widths;
        the range then includes the rows (NaN cells are skipped)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.high.size)
        high = np.fmax.accumulate(np.vstack([self.high, rows]), axis=0)
        low = np.fmin.accumulate(np.vstack([self.low, rows]), axis=0)
        before_high, before_low = high[:-1], low[:-1]
        width = np.maximum(before_high - before_low, MIN_WIDTH)
        beyond = np.maximum(rows - before_high, before_low - rows) / width
        self.high, self.low = high[-1], low[-1]
        return np.asarray(np.nan_to_num(np.maximum(beyond, 0.0), nan=0.0).max(axis=1))
