"""The simulator's Python API: clean device readings + injected faults -> labelled rows.

    >>> from firmware_sim import generate
    >>> r = generate("airpod", "1d", seed=1, faults="none")
    >>> r.channels[:3], r.values.shape
    (('pm25_pms_1', 'pm25_pms_2', 'pm25_pms_3'), (1440, 17))
    >>> r = generate("airpod", "1d", seed=1)  # the default mix: some rows are gone or repeated
    >>> len(r), int(r.anomaly.sum()), sorted({e["type"] for e in r.schedule})[:3]
    (1430, 188, ['dropout', 'level_shift', 'noise_burst'])

Randomness: one `numpy.random.SeedSequence(seed)` (per fleet unit) feeds three
independent generators: the device model, the fault mix and the fault noise.
So the clean signal does not depend on the faults: outside the labelled rows,
`--faults default` and `--faults none` give the same readings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.devices import DeviceModel, get_device, make_device
from firmware_sim.faults import (
    BlockInfo,
    FaultSpec,
    apply_value_fault,
    check_channels,
    robust_scale,
)
from firmware_sim.scenario import default_mix, load_scenario
from firmware_sim.timeline import Placed, emission_order, grid_rows, labels
from firmware_sim.timeparse import format_iso, parse_duration, to_epoch

FaultsArg = str | Path | Sequence[FaultSpec]


@dataclass(frozen=True)
class Reading:
    """One emitted row, as published: timestamp, values (None = missing) and its truth."""

    ts: float
    values: dict[str, float | None]
    anomaly: int
    fault: str
    channels: tuple[str, ...]

    def payload(self) -> dict[str, Any]:
        """The MQTT readings payload: ``{"ts": ..., "values": {...}}``."""
        return {"ts": self.ts, "values": self.values}

    def truth(self) -> dict[str, Any]:
        """The MQTT truth payload: ``{"ts", "anomaly", "fault", "channels"}``."""
        return {
            "ts": self.ts,
            "anomaly": self.anomaly,
            "fault": self.fault,
            "channels": list(self.channels),
        }


@dataclass
class SimResult:
    """Generated rows in emission order (timestamp glitches included) and their truth.

    `values` and `clean` are (rows, channels) float64; NaN is a missing value.
    `clean` is what the sensors would have read without any value fault.
    `schedule` is what `<stem>.faults.json` holds: one dict per fault with type,
    channels, start, end (ISO-8601, end exclusive), start_row, end_row (0-based
    data rows, inclusive; null when no row carries the label) and params.
    """

    device: str
    channels: tuple[str, ...]
    period_s: float
    seed: int
    start: float
    timestamps: np.ndarray
    values: np.ndarray
    clean: np.ndarray
    anomaly: np.ndarray
    fault: list[str]
    fault_channels: list[tuple[str, ...]]
    schedule: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.timestamps.size)

    def readings(self) -> Iterator[Reading]:
        """The rows one by one, values rounded to 6 significant digits as in the CSV."""
        for i in range(len(self)):
            vals = {
                ch: (None if v != v else float(f"{v:.6g}"))
                for ch, v in zip(self.channels, self.values[i].tolist(), strict=True)
            }
            yield Reading(
                float(self.timestamps[i]),
                vals,
                int(self.anomaly[i]),
                self.fault[i],
                self.fault_channels[i],
            )

    def schedule_json(self) -> str:
        return json.dumps(self.schedule, indent=2) + "\n"


def _rngs(seed: int, unit: int) -> tuple[np.random.Generator, ...]:
    children = np.random.SeedSequence(seed, spawn_key=(unit,)).spawn(3)
    return tuple(np.random.default_rng(s) for s in children)


def resolve_period(device: str, period_s: float | str | None) -> float:
    """The sample period in seconds: the device default, or a whole number of seconds."""
    period = get_device(device).default_period_s if period_s is None else parse_duration(period_s)
    if period < 1 or period != int(period):
        raise ValueError(f"period must be a whole number of seconds >= 1, got {period!r}")
    return float(period)


def _round_params(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _round_params(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.6g}")
    if isinstance(value, np.integer):
        return int(value)
    return value


def _resolve_faults(faults: FaultsArg, start: float, device: str) -> list[FaultSpec] | None:
    """Fixed fault specs, or None for the seeded default mix."""
    if isinstance(faults, (str, Path)):
        if str(faults) == "default":
            return None
        if str(faults) == "none":
            return []
        return load_scenario(faults, start, device)
    return list(faults)


def _specs_for_block(
    fixed: list[FaultSpec] | None,
    model: DeviceModel,
    n: int,
    offset_s: float,
    mix_rng: np.random.Generator,
    first: bool,
) -> list[FaultSpec]:
    if fixed is None:
        return default_mix(model, n, model.period_s, mix_rng, 0.2 if first else 0.0)
    span = n * model.period_s
    out = []
    for s in fixed:
        lo, hi = s.start_s - offset_s, s.start_s + s.duration_s - offset_s
        if lo >= span or (lo < 0 and hi <= 0):
            continue
        out.append(
            FaultSpec(s.type, max(lo, 0.0), min(hi, span) - max(lo, 0.0), s.channels, s.params)
        )
    return out


def _assemble(
    model: DeviceModel,
    t: np.ndarray,
    clean: np.ndarray,
    specs: list[FaultSpec],
    rng: np.random.Generator,
    seed: int,
) -> SimResult:
    n = t.size
    values = clean.copy()
    col = {ch: i for i, ch in enumerate(model.channels)}
    block = BlockInfo(
        model.channels,
        robust_scale(clean),
        np.nanmedian(clean, axis=0) if n else np.zeros(len(col)),
        np.array([model.bounds.get(ch, (-np.inf, np.inf))[0] for ch in model.channels]),
        model.groups,
    )
    placed = []
    for spec in specs:
        channels = check_channels(spec, model.channels, model.fault_channels, model.groups)
        row0, row1 = grid_rows(spec, n, model.period_s)
        if row0 >= n:
            raise ValueError(
                f"fault {spec.type!r} at {spec.start_s:.0f} s starts after the "
                f"end of the data ({n * model.period_s:.0f} s)"
            )
        p = Placed(spec, row0, row1, channels, {})
        if not spec.moves_rows:
            p.params = apply_value_fault(
                spec, values, slice(row0, row1), [col[ch] for ch in channels], block, rng
            )
        placed.append(p)
    values = np.where(np.isnan(values), np.nan, model.clip(values))
    src = emission_order(n, placed, rng)
    anomaly, fault, row_channels, spans = labels(placed, src)
    schedule = []
    for p, (first_row, last_row) in zip(placed, spans, strict=True):
        schedule.append(
            {
                "type": p.spec.type,
                "channels": list(p.channels),
                "start": format_iso(t[p.row0]),
                "end": format_iso(t[p.row0] + (p.row1 - p.row0) * model.period_s),
                "start_row": first_row,
                "end_row": last_row,
                "params": _round_params(p.params),
            }
        )
    return SimResult(
        model.name,
        model.channels,
        model.period_s,
        seed,
        float(t[0]) if n else 0.0,
        t[src],
        values[src],
        clean[src],
        anomaly,
        fault,
        row_channels,
        schedule,
    )


def stream(
    device: str,
    seed: int = 0,
    faults: FaultsArg = "default",
    start: datetime | str | float | None = None,
    period_s: float | str | None = None,
    *,
    duration_s: float | str | None = None,
    unit: int = 0,
    forecast: bool = False,
    chunk_rows: int = 10080,
) -> Iterator[SimResult]:
    """Consecutive blocks of `chunk_rows` rows (forever when `duration_s` is None).

    The device state carries over between blocks, so there are no seams. With
    the default mix, only the first block keeps a clean head; scenario faults
    are clipped to the blocks they fall in.
    """
    period = resolve_period(device, period_s)
    t0 = to_epoch(start)
    total = None if duration_s is None else int(parse_duration(duration_s) // period)
    if total is not None and total < 1:
        raise ValueError("duration is shorter than one period")
    fixed = _resolve_faults(faults, t0, device)
    for spec in fixed or []:
        if total is not None and spec.start_s >= total * period:
            raise ValueError(
                f"fault {spec.type!r} at {spec.start_s:.0f} s starts after the "
                f"end of the data ({total * period:.0f} s)"
            )
    model_rng, mix_rng, apply_rng = _rngs(seed, unit)
    options = {"forecast": True} if forecast else {}
    model = make_device(device, model_rng, period, t0, **options)
    done = 0
    while total is None or done < total:
        n = chunk_rows if total is None else min(chunk_rows, total - done)
        t = t0 + period * (done + np.arange(n, dtype=np.float64))
        specs = _specs_for_block(fixed, model, n, done * period, mix_rng, done == 0)
        yield _assemble(model, t, model.simulate(t), specs, apply_rng, seed)
        done += n


def generate(
    device: str,
    duration_s: float | str,
    seed: int = 0,
    faults: FaultsArg = "default",
    start: datetime | str | float | None = None,
    period_s: float | str | None = None,
    *,
    unit: int = 0,
    forecast: bool = False,
) -> SimResult:
    """Simulate `duration_s` of `device` with faults ("default", "none", a TOML path or specs).

    `start` defaults to 2026-01-05T00:00:00Z; `period_s` to the device's own
    (airpod 60 s, pump 1 s, metric 300 s). `unit` picks a fleet member (its own
    random stream); `forecast` adds the metric's `predicted` column.
    """
    total = int(parse_duration(duration_s) // resolve_period(device, period_s))
    return next(
        stream(
            device,
            seed,
            faults,
            start,
            period_s,
            duration_s=duration_s,
            unit=unit,
            forecast=forecast,
            chunk_rows=max(total, 1),
        )
    )


def stream_readings(
    device: str,
    seed: int = 0,
    faults: FaultsArg = "default",
    start: datetime | str | float | None = None,
    period_s: float | str | None = None,
    *,
    duration_s: float | str | None = None,
    unit: int = 0,
    forecast: bool = False,
) -> Iterator[Reading]:
    """Readings one by one (forever when `duration_s` is None), e.g. for publishing.

    With a duration the rows are exactly those `generate` gives for the same arguments.
    """
    if duration_s is not None:
        yield from generate(
            device, duration_s, seed, faults, start, period_s, unit=unit, forecast=forecast
        ).readings()
        return
    for block in stream(device, seed, faults, start, period_s, unit=unit, forecast=forecast):
        yield from block.readings()
