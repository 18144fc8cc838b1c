"""Timestamp glitches and ground-truth labels on the emitted rows.

The devices produce a regular grid of rows; row faults then decide which grid
rows are emitted, in which order and how often:

- ``ts_gap`` (and ``dropout`` with mode "missing"): the rows are absent. The
  label goes on the first row emitted after the gap (the row that reveals it).
- ``ts_duplicate``: each row of the interval is emitted again right after
  itself (same timestamp, same values). Originals and copies are labelled.
- ``ts_out_of_order``: the rows of the interval arrive late, after
  `delay_rows` later rows. The late rows are labelled.

Value faults label the emitted rows whose grid row lies in their interval.
A row hit by several faults gets their names joined with "+" (the default mix
never overlaps faults, a scenario may).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_sim.faults import FaultSpec


@dataclass
class Placed:
    """A fault resolved onto the grid: rows [row0, row1) and the channels it touches."""

    spec: FaultSpec
    row0: int
    row1: int
    channels: tuple[str, ...]
    params: dict[str, Any]


def grid_rows(spec: FaultSpec, n: int, period_s: float) -> tuple[int, int]:
    """Grid rows [row0, row1) whose times fall in the fault's interval (at least one row)."""
    row0 = int(np.ceil(spec.start_s / period_s - 1e-9))
    row1 = int(np.ceil((spec.start_s + spec.duration_s) / period_s - 1e-9))
    return min(row0, n), min(max(row1, row0 + 1), n)


def emission_order(n: int, placed: list[Placed], rng: np.random.Generator) -> np.ndarray:
    """Source grid row of every emitted row, after gaps, duplicates and late rows.

    Fills in the resolved parameters (delay_rows, copies) of the row faults.
    """
    keys = np.arange(n, dtype=np.float64)
    keep = np.ones(n, dtype=bool)
    copies = np.zeros(n, dtype=np.int64)
    for p in placed:
        kind, length = p.spec.type, p.row1 - p.row0
        if p.spec.moves_rows and kind != "ts_duplicate" and kind != "ts_out_of_order":
            keep[p.row0 : p.row1] = False
            p.params = {"mode": "missing"} if kind == "dropout" else {}
        elif kind == "ts_duplicate":
            c = int(p.spec.params.get("copies", 1))
            copies[p.row0 : p.row1] += c
            p.params = {"copies": c}
        elif kind == "ts_out_of_order":
            delay = int(p.spec.params.get("delay_rows", rng.integers(2, 11)))
            delay = max(0, min(delay, n - p.row1))
            after = p.row1 - 1 + delay
            keys[p.row0 : p.row1] = after + 0.5 + 0.4 * (np.arange(length) + 1) / (length + 2)
            p.params = {"delay_rows": delay}
    src = np.nonzero(keep)[0]
    order_keys = keys[src]
    dup = np.repeat(src, copies[src])
    if dup.size:
        rank = np.concatenate([np.arange(1, c + 1) for c in copies[src][copies[src] > 0]])
        src = np.concatenate([src, dup])
        order_keys = np.concatenate([order_keys, keys[dup] + 1e-4 * rank])
    return src[np.argsort(order_keys, kind="stable")]


class SourceIndex:
    """Finds the emitted positions of grid rows quickly (src is a near-sorted permutation)."""

    def __init__(self, src: np.ndarray) -> None:
        self.order = np.argsort(src, kind="stable")
        self.sorted = src[self.order]

    def positions(self, row0: int, row1: int) -> np.ndarray:
        """Emitted positions whose grid row is in [row0, row1), in emission order."""
        lo, hi = np.searchsorted(self.sorted, [row0, row1])
        return np.sort(self.order[lo:hi])

    def first_after(self, row: int) -> np.ndarray:
        """The earliest emitted position of any grid row >= `row` (empty if none)."""
        lo = int(np.searchsorted(self.sorted, row))
        rest = self.order[lo:]
        return rest[[int(np.argmin(rest))]] if rest.size else rest


def label_positions(p: Placed, index: SourceIndex) -> np.ndarray:
    """Emitted-row positions labelled with fault `p`."""
    if p.spec.moves_rows and p.spec.type in ("ts_gap", "dropout"):
        return index.first_after(p.row1)
    return index.positions(p.row0, p.row1)


def labels(
    placed: list[Placed], src: np.ndarray
) -> tuple[np.ndarray, list[str], list[tuple[str, ...]], list[tuple[int | None, int | None]]]:
    """Per emitted row: anomaly flag, fault name(s), channels; per fault: first/last row."""
    m, index = src.size, SourceIndex(src)
    names: dict[int, list[str]] = {}
    chans: dict[int, set[str]] = {}
    spans: list[tuple[int | None, int | None]] = []
    for p in placed:
        pos = label_positions(p, index)
        spans.append((int(pos[0]), int(pos[-1])) if pos.size else (None, None))
        for i in pos.tolist():
            row_names = names.setdefault(i, [])
            if p.spec.type not in row_names:
                row_names.append(p.spec.type)
            chans.setdefault(i, set()).update(p.channels)
    anomaly = np.zeros(m, dtype=np.int8)
    anomaly[list(names)] = 1
    fault = [""] * m
    row_channels: list[tuple[str, ...]] = [()] * m
    order: dict[str, int] = {}
    for p in placed:
        for ch in p.channels:
            order.setdefault(ch, len(order))
    for i, row_names in names.items():
        fault[i] = "+".join(row_names)
        row_channels[i] = tuple(sorted(chans[i], key=order.__getitem__))
    return anomaly, fault, row_channels, spans
