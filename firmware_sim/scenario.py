"""Where faults go: a TOML scenario, the seeded default mix, or none.

A scenario file (read with tomllib)::

    description = "PMS unit 2 spikes, then the logger drops out"   # optional
    device = "airpod"                                              # optional check

    [[fault]]
    type = "spike"
    channel = "pm25_pms_2"              # or channels = ["o3_1", "o3_2"]; omit for all
    start = 2026-01-06T08:00:00Z        # TOML datetime, ISO string, or offset "30h"
    duration = "3m"                     # or end = ...
    magnitude = 8                       # any other key is a parameter of the fault

    [[fault]]
    type = "ts_gap"
    start = "2d"
    duration = "20m"

The default mix (`--faults default`) leaves the first fifth of the data clean
(a stretch to train on), then places about one fault per 800 rows (at least
one of every type that fits the device when there is room) in separate slots,
so faults never overlap; types, channels, times and sizes come from the seed.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.devices import DeviceModel
from firmware_sim.faults import FAULT_TYPES, FaultSpec
from firmware_sim.timeparse import parse_duration, parse_time

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: default-mix duration range per type, in rows
DURATION_ROWS: dict[str, tuple[int, int]] = {
    "spike": (1, 3),
    "level_shift": (30, 180),
    "drift": (120, 480),
    "stuck": (30, 120),
    "dropout": (10, 60),
    "noise_burst": (10, 60),
    "twin_disagree": (60, 240),
    "slope_change": (60, 240),
    "ts_duplicate": (1, 4),
    "ts_out_of_order": (1, 5),
    "ts_gap": (5, 30),
}
CLEAN_HEAD = 0.2
ROWS_PER_FAULT = 800
_TOP_KEYS = {"fault", "description", "device"}


def _instant(value: Any, start_epoch: float, where: str) -> float:
    """Seconds from the data start for a TOML datetime, ISO string, offset string or number."""
    if isinstance(value, datetime):
        return parse_time(value).timestamp() - start_epoch
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return parse_time(value).timestamp() - start_epoch
    raise ValueError(f"{where}: expected a time, got {value!r}")


def parse_scenario(data: dict[str, Any], start_epoch: float, device: str) -> list[FaultSpec]:
    """Fault specs from a parsed scenario document (see the module docstring)."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(
            f"scenario: unknown key(s) {', '.join(sorted(unknown))}; expected [[fault]] tables"
        )
    if data.get("device", device) != device:
        raise ValueError(f"scenario is for device {data['device']!r}, not {device!r}")
    specs = []
    for i, table in enumerate(data.get("fault", [])):
        where = f"scenario fault #{i + 1}"
        entry = dict(table)
        kind = entry.pop("type", None)
        if kind not in FAULT_TYPES:
            raise ValueError(f"{where}: type must be one of {', '.join(FAULT_TYPES)}, got {kind!r}")
        if "start" not in entry:
            raise ValueError(f"{where}: 'start' is required")
        start = _instant(entry.pop("start"), start_epoch, f"{where}.start")
        if start < 0:
            raise ValueError(f"{where}: starts before the data ({start:.0f} s)")
        if "end" in entry:
            duration = _instant(entry.pop("end"), start_epoch, f"{where}.end") - start
        else:
            duration = parse_duration(entry.pop("duration", 0))
        if "channel" in entry and "channels" in entry:
            raise ValueError(f"{where}: give 'channel' or 'channels', not both")
        channels = entry.pop("channels", None) or (
            [entry.pop("channel")] if "channel" in entry else []
        )
        try:
            specs.append(FaultSpec(kind, start, duration, tuple(channels), entry))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return specs


def load_scenario(path: str | Path, start_epoch: float, device: str) -> list[FaultSpec]:
    """Fault specs from a TOML scenario file."""
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    try:
        return parse_scenario(data, start_epoch, device)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def mix_types(model: DeviceModel) -> tuple[str, ...]:
    """The fault types that make sense on this device."""
    return tuple(t for t in FAULT_TYPES if t != "twin_disagree" or model.groups)


def _pick_channels(
    kind: str, model: DeviceModel, rng: np.random.Generator
) -> tuple[tuple[str, ...], dict[str, Any]]:
    if kind.startswith("ts_"):
        return (), {}
    if kind == "twin_disagree":
        group = list(model.groups.values())[int(rng.integers(len(model.groups)))]
        return (group[int(rng.integers(len(group)))],), {}
    if kind == "dropout" and rng.random() < 0.4:  # the whole logger
        return (), {"mode": "missing" if rng.random() < 0.5 else "nan"}
    chosen = model.fault_channels[int(rng.integers(len(model.fault_channels)))]
    return (chosen,), ({"mode": "nan"} if kind == "dropout" else {})


def default_mix(
    model: DeviceModel,
    n_rows: int,
    period_s: float,
    rng: np.random.Generator,
    clean_head: float = CLEAN_HEAD,
) -> list[FaultSpec]:
    """A seeded, non-overlapping mix of faults over `n_rows` rows."""
    types = mix_types(model)
    lo_row = int(np.ceil(n_rows * clean_head))
    avail = n_rows - lo_row - 2
    count = max(avail // ROWS_PER_FAULT, min(len(types), avail // 150))
    if count <= 0:
        return []
    cycle: list[str] = []
    while len(cycle) < count:
        cycle.extend(rng.permutation(np.array(types)).tolist())
    edges = np.linspace(lo_row, lo_row + avail, count + 1).astype(int)
    specs = []
    for k in range(count):
        kind = cycle[k]
        slot = int(edges[k + 1] - edges[k])
        lo, hi = DURATION_ROWS[kind]
        dur = max(1, int(rng.integers(lo, hi + 1) * model.mix_duration_scale))
        dur = min(dur, max(1, slot // 2))
        params: dict[str, Any] = {}
        extra = 0
        if kind == "ts_out_of_order":
            params["delay_rows"] = extra = min(int(rng.integers(2, 11)), max(1, slot // 4))
        first = int(edges[k]) + int(rng.integers(1, max(2, slot - dur - extra - 1)))
        channels, more = _pick_channels(kind, model, rng)
        specs.append(
            FaultSpec(kind, first * period_s, dur * period_s, channels, {**params, **more})
        )
    return specs
