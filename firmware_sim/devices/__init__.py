"""Device models: each turns a grid of timestamps into clean readings, one column per channel.

A model is stateful so it can be simulated block after block (a long stream)
without seams; `simulate(t)` must be called with consecutive, evenly spaced
timestamps. Adding a device is adding a file here (a `DeviceModel` subclass, from `base`)
and a line in `DEVICES`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from firmware_sim.devices.airpod import AirPod
from firmware_sim.devices.base import DeviceModel
from firmware_sim.devices.metric import Metric
from firmware_sim.devices.pump import Pump

DEVICES: dict[str, type[DeviceModel]] = {"airpod": AirPod, "pump": Pump, "metric": Metric}


def device_names() -> tuple[str, ...]:
    return tuple(DEVICES)


def get_device(name: str) -> type[DeviceModel]:
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    return DEVICES[name]


def make_device(
    name: str, rng: np.random.Generator, period_s: float, t0: float, **options: Any
) -> DeviceModel:
    """Build a device model; `options` are device-specific (metric: forecast=True)."""
    return get_device(name)(rng, period_s, t0, **options)
