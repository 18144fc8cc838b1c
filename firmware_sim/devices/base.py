"""The base class of the device models (`firmware_sim.devices`), which each model subclasses."""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class DeviceModel:
    """Base class: the metadata the fault injector and writers need, plus `simulate`."""

    name: ClassVar[str] = ""
    default_period_s: ClassVar[float] = 60.0
    #: scales the default fault mix's durations (which are in rows)
    mix_duration_scale: ClassVar[float] = 1.0

    def __init__(self, rng: np.random.Generator, period_s: float, t0: float) -> None:
        self.rng, self.period_s, self.t0 = rng, period_s, t0
        #: channel names, in CSV column order
        self.channels: tuple[str, ...] = ()
        #: physical bounds applied after faults, per channel (lo, hi)
        self.bounds: dict[str, tuple[float, float]] = {}
        #: twin groups (sensors of one make deployed together), name -> channels
        self.groups: dict[str, tuple[str, ...]] = {}
        #: channels faults may be injected into (a forecast column is not a sensor)
        self.fault_channels: tuple[str, ...] = ()

    def clip(self, values: np.ndarray) -> np.ndarray:
        """Clip readings (n, channels) to the physical bounds; NaN stays NaN."""
        lo = np.array([self.bounds.get(ch, (-np.inf, np.inf))[0] for ch in self.channels])
        hi = np.array([self.bounds.get(ch, (-np.inf, np.inf))[1] for ch in self.channels])
        clipped: np.ndarray = np.clip(values, lo, hi)
        return clipped

    def simulate(self, t: np.ndarray) -> np.ndarray:
        """Clean readings, shape (len(t), len(channels)), for consecutive grid times `t`."""
        raise NotImplementedError
