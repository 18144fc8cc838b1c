"""Fault types, their parameters, and the injection of value faults into a block of readings.

Value faults change readings in place (rows stay where they are); parameters
in brackets, "sd" as defined below:

- ``spike``: a sudden jump for 1-3 rows [magnitude 4-8 sd, sign, or delta in units].
- ``level_shift``: a step offset for the interval [magnitude 2-4 sd, sign, delta].
- ``drift``: an offset growing linearly to full size at the end [magnitude 2-5 sd,
  sign, delta].
- ``stuck``: stuck-at / flatline, holds the last good reading [value].
- ``dropout``: missing values, NaN (an empty CSV cell), or the rows absent
  [mode: nan | missing].
- ``noise_burst``: extra white noise [magnitude 1-2.5 sd].
- ``twin_disagree``: one sensor of a triplicate departs from its twins: gain x
  factor plus its own slow wander [factor 0.3-0.5 or 1.8-2.5, noise 0.5 sd].
- ``slope_change``: calibration slope change, readings x factor [factor 0.45-0.7
  or 1.4-1.8]; the Denver O3 sensor went from 1.2 to 0.6, a factor of 0.5.

Row faults (timestamp glitches) move, repeat or drop whole rows; see `timeline`:
``ts_duplicate`` (copies: 1), ``ts_out_of_order`` (delay_rows: 2-10: the rows
arrive late, after that many later rows), ``ts_gap`` (rows absent).
UART-only faults (see `uart`): ``corrupt_bytes``, ``truncated_frame``.

"sd" is the channel's robust spread in the clean block (IQR / 1.349, at least
half the standard deviation). PM and
other non-negative channels spike upwards and do not shift below 30 % of their
median; every reading is clipped to the channel's physical bounds afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_sim.signals import ar1_filter

VALUE_FAULTS = (
    "spike",
    "level_shift",
    "drift",
    "stuck",
    "dropout",
    "noise_burst",
    "twin_disagree",
    "slope_change",
)
ROW_FAULTS = ("ts_duplicate", "ts_out_of_order", "ts_gap")
FAULT_TYPES = VALUE_FAULTS + ROW_FAULTS
UART_FAULTS = ("corrupt_bytes", "truncated_frame")

PARAMS: dict[str, frozenset[str]] = {
    "spike": frozenset({"magnitude", "sign", "delta"}),
    "level_shift": frozenset({"magnitude", "sign", "delta"}),
    "drift": frozenset({"magnitude", "sign", "delta"}),
    "stuck": frozenset({"value"}),
    "dropout": frozenset({"mode"}),
    "noise_burst": frozenset({"magnitude"}),
    "twin_disagree": frozenset({"factor", "noise"}),
    "slope_change": frozenset({"factor"}),
    "ts_duplicate": frozenset({"copies"}),
    "ts_out_of_order": frozenset({"delay_rows"}),
    "ts_gap": frozenset(),
}
MAGNITUDE = {
    "spike": (4.0, 8.0),
    "level_shift": (2.0, 4.0),
    "drift": (2.0, 5.0),
    "noise_burst": (1.0, 2.5),
}


@dataclass(frozen=True)
class FaultSpec:
    """One scripted fault. Times are seconds from the first row of the data.

    `channels` empty means every channel faults may touch (a logger dropout,
    a timestamp glitch).
    """

    type: str
    start_s: float
    duration_s: float
    channels: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in PARAMS:
            raise ValueError(f"unknown fault type {self.type!r}; known: {', '.join(FAULT_TYPES)}")
        unknown = set(self.params) - PARAMS[self.type]
        if unknown:
            allowed = ", ".join(sorted(PARAMS[self.type])) or "none"
            raise ValueError(
                f"fault {self.type!r}: unknown parameter(s) {', '.join(sorted(unknown))} "
                f"(allowed: {allowed})"
            )
        if self.type == "dropout" and self.params.get("mode", "nan") not in ("nan", "missing"):
            raise ValueError("fault 'dropout': mode must be 'nan' or 'missing'")
        if self.duration_s < 0 or self.start_s < 0:
            raise ValueError(f"fault {self.type!r}: start and duration must not be negative")

    @property
    def moves_rows(self) -> bool:
        """True for faults that drop, repeat or reorder rows rather than change values."""
        return self.type in ROW_FAULTS or (
            self.type == "dropout" and self.params.get("mode") == "missing"
        )


def robust_scale(clean: np.ndarray) -> np.ndarray:
    """Per-column spread: IQR / 1.349, at least half the std (for stepped channels), else 1."""
    if clean.shape[0] == 0:
        return np.ones(clean.shape[1])
    q75, q25 = np.nanpercentile(clean, [75, 25], axis=0)
    scale = np.maximum((q75 - q25) / 1.349, 0.5 * np.nanstd(clean, axis=0))
    return np.where(scale > 0, scale, 1.0)


@dataclass
class BlockInfo:
    """What value faults need to know about the block they are injected into."""

    names: tuple[str, ...]
    scale: np.ndarray
    median: np.ndarray
    lower: np.ndarray
    groups: dict[str, tuple[str, ...]]


def _signed_deltas(
    kind: str, params: dict[str, Any], cols: list[int], block: BlockInfo, rng: np.random.Generator
) -> tuple[dict[str, Any], dict[int, float]]:
    mag = (
        float(params["magnitude"])
        if "magnitude" in params
        else float(rng.uniform(*MAGNITUDE[kind]))
    )
    nonneg = all(block.lower[c] >= 0 for c in cols)
    if "sign" in params:
        sign = 1 if float(params["sign"]) >= 0 else -1
    else:
        sign = 1 if (kind == "spike" and nonneg) else int(rng.choice([-1, 1]))
    deltas: dict[int, float] = {}
    for c in cols:
        d = float(params["delta"]) if "delta" in params else sign * mag * block.scale[c]
        if block.lower[c] >= 0 and d < 0 and "delta" not in params:
            d = max(d, -0.7 * block.median[c])
        deltas[c] = d
    return {"magnitude": mag, "sign": sign}, deltas


def apply_value_fault(
    spec: FaultSpec,
    values: np.ndarray,
    rows: slice,
    cols: list[int],
    block: BlockInfo,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Inject `spec` into `values[rows, cols]` in place; return the resolved parameters."""
    kind, params = spec.type, dict(spec.params)
    n = rows.stop - rows.start
    if kind in ("spike", "level_shift", "drift"):
        resolved, deltas = _signed_deltas(kind, params, cols, block, rng)
        ramp = np.arange(1, n + 1) / n if kind == "drift" else np.ones(n)
        for c, d in deltas.items():
            values[rows, c] += d * ramp
        return {**resolved, "delta": {block.names[c]: d for c, d in deltas.items()}}
    if kind == "stuck":
        held: dict[str, float] = {}
        for c in cols:
            if "value" in params:
                v = float(params["value"])
            else:
                before = values[max(rows.start - 1, 0), c]
                v = float(before) if np.isfinite(before) else float(block.median[c])
            values[rows, c] = v
            held[block.names[c]] = v
        return {"value": held}
    if kind == "dropout":
        values[rows, cols] = np.nan
        return {"mode": "nan"}
    if kind == "noise_burst":
        mag = float(params.get("magnitude", rng.uniform(*MAGNITUDE[kind])))
        for c in cols:
            values[rows, c] += rng.normal(0.0, mag * block.scale[c], n)
        return {"magnitude": mag}
    if kind == "twin_disagree":
        factor = (
            float(params["factor"])
            if "factor" in params
            else float(rng.uniform(0.3, 0.5) if rng.random() < 0.5 else rng.uniform(1.8, 2.5))
        )
        noise = float(params.get("noise", 0.5))
        a = float(np.exp(-1.0 / 30.0))
        for c in cols:
            wander = ar1_filter(rng.normal(0.0, np.sqrt(1 - a * a), n), a, 0.0)
            values[rows, c] = values[rows, c] * factor + wander * noise * block.scale[c]
        return {"factor": factor, "noise": noise}
    if kind == "slope_change":
        factor = (
            float(params["factor"])
            if "factor" in params
            else float(rng.uniform(0.45, 0.7) if rng.random() < 0.5 else rng.uniform(1.4, 1.8))
        )
        values[rows, cols] *= factor
        return {"factor": factor}
    raise ValueError(f"{kind!r} is not a value fault")


def check_channels(
    spec: FaultSpec,
    channels: tuple[str, ...],
    fault_channels: tuple[str, ...],
    groups: dict[str, tuple[str, ...]],
) -> tuple[str, ...]:
    """The channels `spec` touches (all fault channels when empty); raise on a bad choice."""
    if spec.type in ROW_FAULTS:
        return channels
    chosen = spec.channels or fault_channels
    bad = [ch for ch in chosen if ch not in fault_channels]
    if bad:
        raise ValueError(
            f"fault {spec.type!r}: channel(s) {', '.join(bad)} cannot take faults here; "
            f"choose from: {', '.join(fault_channels)}"
        )
    if spec.type == "twin_disagree":
        twins = [ch for ch in chosen if any(ch in g for g in groups.values())]
        if len(chosen) != 1 or not twins:
            names = ", ".join(ch for g in groups.values() for ch in g) or "none on this device"
            raise ValueError(
                f"fault 'twin_disagree' needs exactly one channel of a twin group ({names})"
            )
    return tuple(chosen)
