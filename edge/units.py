"""Scaled values back in the sensor's own units: the inverse of the manifest's preprocessing
(`edge.preprocess`), for scorers that model sensors as their makers specify them (an offset,
a gain, noise that grows with the level) and for plots. A leaf module: scorers use it without
importing the bundle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class ChannelScaling(Protocol):
    """What `edge.bundle.ChannelPreprocess` holds: raw -> transform(raw + offset) -> scaled."""

    @property
    def transform(self) -> str: ...

    @property
    def offset(self) -> float: ...

    @property
    def center(self) -> float: ...

    @property
    def scale(self) -> float: ...


class Units:
    """Scaled values (..., C) -> the same values in each channel's own units."""

    def __init__(self, channels: Sequence[ChannelScaling]) -> None:
        self.center = np.array([c.center for c in channels], dtype=np.float64)
        self.scale = np.array([c.scale for c in channels], dtype=np.float64)
        self.offset = np.array([c.offset for c in channels], dtype=np.float64)
        self.log1p = np.array([c.transform == "log1p" for c in channels])
        self.sqrt = np.array([c.transform == "sqrt" for c in channels])

    def __call__(self, scaled: FloatArray) -> FloatArray:
        t = scaled * self.scale + self.center
        if self.log1p.any():
            t = np.where(self.log1p, np.expm1(t), t)
        if self.sqrt.any():
            t = np.where(self.sqrt, np.square(t), t)
        return np.asarray(t - self.offset)
