"""The manifest's preprocessing, applied identically by the trainer and the device.

Per channel: raw -> transform(raw + offset) -> (t - center) / scale. The scaled values keep
their full range (scores are measured against them); the models see them clipped to
+/- `clip`. Missing values (NaN) are forward-filled from the channel's last valid reading,
or from the training median before the first one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from edge.bundle import Manifest, Preprocess
from edge.units import Units

FloatArray = npt.NDArray[np.float64]


def apply_transform(kind: str, values: FloatArray) -> FloatArray:
    """A channel's value transform (`ChannelPreprocess.transform`); the trainer chooses it with
    this same function."""
    if kind == "log1p":
        return np.log1p(np.maximum(values, 0.0))
    if kind == "sqrt":
        return np.sqrt(np.maximum(values, 0.0))
    return values


def scale_rows(raw: FloatArray, spec: Preprocess) -> FloatArray:
    """Transform and scale raw rows of shape (n, channels); NaN stays NaN."""
    out = np.empty(raw.shape, dtype=np.float64)
    for j, channel in enumerate(spec.channels):
        shifted = raw[:, j] + channel.offset
        out[:, j] = (apply_transform(channel.transform, shifted) - channel.center) / channel.scale
    return out


def unscale_rows(scaled: FloatArray, spec: Preprocess) -> FloatArray:
    """Inverse of `scale_rows`, for plots and explanations in the sensor's own units."""
    return Units(spec.channels)(np.asarray(scaled, dtype=np.float64))


def reading_to_raw(values: Mapping[str, float | None], manifest: Manifest) -> FloatArray:
    """One reading (channel -> value) as a raw row in manifest order; absent channels are NaN.

    A forecast residual channel is derived here from its measured and forecast columns.
    """
    residual = manifest.preprocess.forecast
    row = np.full(len(manifest.channels), np.nan)
    for j, name in enumerate(manifest.channels):
        if residual is not None and name == residual.name:
            measured, forecast = values.get(residual.measured), values.get(residual.forecast)
            if measured is not None and forecast is not None:
                row[j] = float(measured) - float(forecast)
            continue
        value = values.get(name)
        if value is not None:
            row[j] = float(value)
    return row


def forward_fill(rows: FloatArray, before: FloatArray) -> FloatArray:
    """(n, C) rows with each NaN replaced by its channel's last valid value, `before` (C,)
    standing for the value before the first row. Values are copied, never computed, so a
    block gives the bits of row-by-row filling (the trainer and the device both use this)."""
    stacked = np.vstack([np.asarray(before, dtype=np.float64)[None, :], rows])
    valid = np.isfinite(stacked)
    index = np.where(valid, np.arange(len(stacked))[:, None], 0)
    np.maximum.accumulate(index, axis=0, out=index)
    return np.asarray(np.take_along_axis(stacked, index, axis=0)[1:])


class ForwardFill:
    """Replaces NaN by the channel's last valid raw value (training median at first)."""

    def __init__(self, spec: Preprocess) -> None:
        self.last = np.array([c.fill for c in spec.channels], dtype=np.float64)

    def __call__(self, raw_row: FloatArray) -> FloatArray:
        valid = np.isfinite(raw_row)
        self.last = np.where(valid, raw_row, self.last)
        return self.last.copy()

    def fill_rows(self, raw: FloatArray) -> FloatArray:
        return np.vstack([self(row) for row in raw]) if len(raw) else raw.copy()
