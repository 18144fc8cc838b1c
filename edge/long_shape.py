"""Long-shape memory: how far the shape of a device's last few hundred readings lies from
every shape of that length the device saw before. Stateful, one `LongShape` per device and
scorer (in its `ScoreState`).

The lag distances compare the last 8 rows with what training and the recent stream held,
which cannot see a change slower than 8 rows: a daily rise that fails to come, activity that
stops when it usually runs, a bump spread over an hour. A long shape is the means of the last
`blocks` blocks of `block` rows each (`LongShapeSpec`), a coarse picture of the last
block x blocks rows. Its raw score is the distance to the k-th nearest long shape the device
itself saw (`edge.memory.LagMemory`, the shapes overlapping the current one left out), so a
slow pattern the device has seen about k times is known and a new one is far.

The rows are the newest row of each scored window, so with a window stride of 1 every
reading. Until the device has seen `block x blocks` rows and its memory holds k shapes, the
score is NaN: not scored (the likelihood step skips it).

Batch-invariant to the bit: each block mean is summed over the same rows in the same order
whatever the batch split, and the memory is batch-invariant itself.

Examples:
    >>> from edge.bundle import LongShapeSpec, MemorySpec
    >>> spec = LongShapeSpec(block=2, blocks=2)
    >>> shape = LongShape(spec, MemorySpec(lags=2, size=50, gap=4, k=1), channels=1)
    >>> rows = np.array([0, 0, 1, 1] * 3 + [5, 5, 5, 5], dtype=float)[:, None]
    >>> shape.scores(rows).round(2).tolist()  # NaN until 4 rows and one remembered shape
    [nan, nan, nan, nan, nan, nan, nan, 0.0, 0.0, 0.0, 0.0, 0.0, 2.06, 4.12, 5.0, 6.36]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edge.memory import LagMemory
from edge.scorers.spec import LongShapeSpec, MemorySpec

FloatArray = npt.NDArray[np.float64]


class LongShape:
    """The recent rows and the remembered long shapes of one scorer on one device."""

    def __init__(self, spec: LongShapeSpec, memory: MemorySpec, channels: int) -> None:
        self.spec = spec
        self.span = spec.block * spec.blocks
        self.memory = LagMemory(memory)
        self._rows: FloatArray = np.zeros((0, channels))  # the last span - 1 rows seen
        self.channels = channels

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """The state as arrays (for `edge.state_store`); `restore` takes them back."""
        return {"rows": self._rows.copy(),
                **{f"memory_{k}": v for k, v in self.memory.snapshot().items()}}

    def restore(self, saved: dict[str, npt.NDArray[Any]]) -> None:
        rows = np.asarray(saved["rows"], dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.channels or rows.shape[0] >= self.span:
            raise ValueError(f"long shape rows of shape {rows.shape}, expected fewer than "
                             f"{self.span} rows of {self.channels} channels")
        memory = LagMemory(self.memory.spec)
        memory.restore({k.removeprefix("memory_"): v for k, v in saved.items()
                        if k.startswith("memory_")})
        self._rows, self.memory = rows.copy(), memory

    def shapes(self, rows: FloatArray) -> FloatArray:
        """(B, C) rows in stream order -> (B, blocks * C) long shapes ending at each row (NaN
        rows where fewer than `span` rows were seen); the rows are then held."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.channels)
        seen = np.vstack([self._rows, rows])
        block, blocks = self.spec.block, self.spec.blocks
        out = np.full((len(rows), blocks * self.channels), np.nan)
        ready = np.arange(len(rows)) + len(self._rows) + 1 >= self.span  # rows seen at each
        first = len(seen) - len(rows)  # index in `seen` of the batch's first row
        ends = first + np.flatnonzero(ready)  # index of the last row of each shape
        if ends.size:
            # block sums added row by row in a fixed order: the same bits for any batch split
            sums = np.zeros((ends.size, blocks, self.channels))
            starts = ends[:, None] - self.span + 1 + block * np.arange(blocks)[None, :]
            for offset in range(block):
                sums += seen[starts + offset]
            out[ready] = (sums / block).reshape(ends.size, -1)
        self._rows = seen[max(0, len(seen) - self.span + 1):]
        return out

    def scores(self, rows: FloatArray) -> FloatArray:
        """(B, C) rows in stream order -> (B,) distance of each row's long shape to the k-th
        nearest remembered one (NaN while not scored); the memory then holds the shapes."""
        shapes = self.shapes(rows)
        out = np.full(len(shapes), np.nan)
        ready = np.isfinite(shapes).all(axis=1)
        if ready.any():
            distances = self.memory.distances(shapes[ready])
            out[ready] = np.where(np.isfinite(distances), distances, np.nan)
        return out
