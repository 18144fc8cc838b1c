"""Fit the `stuck` scorer (`edge.scorers.stuck`): per channel, how long a run of equal readings
must be to count as stuck, from the channel's own training windows.

Judged are the channels with more than two distinct training values (a constant one is
`flat`'s; a two-valued one is a state that holds by design). A channel's limit is twice the
longest run of equal read values in any training window (runs of a quantised sensor grow
slowly with the length of the stream: doubling covers streams far longer than the training
rows), and at least half the window, so a continuous sensor that never repeated itself in
training still needs a run of several readings; a channel whose limit exceeds the window is
left out (its runs are longer than the device can see). The threshold is 1.0, a run of the
limit; raised to the configured calibration of the held-out windows' scores where those reach
it (a held-out run beyond the training's). No judged channel, no scorer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.bundle import Threshold
from export import calibrate
from export.scorers.base import FloatArray, TrainerScorer, TrainingData, judged_channels


def longest_runs(readings: FloatArray) -> FloatArray:
    """(B, rows, C) -> (C,): the longest run of equal consecutive read values (NaN: not read,
    equal to nothing) in any window, in rows (1: no value repeated)."""
    windows, rows, channels = readings.shape
    if windows == 0:
        return np.ones(channels)
    same = readings[:, 1:, :] == readings[:, :-1, :]  # (B, rows - 1, C)
    streak = np.zeros((windows, channels))  # equal pairs ending at this row
    longest = np.zeros((windows, channels))
    for step in range(rows - 1):
        streak = np.where(same[:, step, :], streak + 1, 0)
        longest = np.maximum(longest, streak)
    return np.asarray(longest.max(axis=0) + 1)


class StuckTrainer(TrainerScorer):
    kind = "stuck"

    @classmethod
    def fit(cls, data: TrainingData, options: dict[str, Any]) -> list[dict[str, Any]]:
        readings = data.readings()
        if readings is None or readings.shape[0] == 0:
            return []
        length = readings.shape[1]
        longest = longest_runs(readings)
        judged, limits = [], []
        for c in judged_channels(data.rows):
            limit = max(2 * int(longest[c]), (length + 1) // 2, 2)
            if limit <= length:
                judged.append(c)
                limits.append(limit)
        if not judged:
            return []
        return [{"name": "stuck", "kind": "stuck",
                 "channels": [data.channels[c] for c in judged], "limits": limits}]

    @classmethod
    def threshold(cls, name: str, heldout: FloatArray, data: TrainingData,
                  options: dict[str, Any]) -> Threshold:
        held = heldout[np.isfinite(heldout)]
        reached = held.size > 0 and float(held.max()) >= 1.0
        value = max(1.0, calibrate.calibrate(held, data.config).value) if reached else 1.0
        return Threshold(value=value, method="run", params={
            "unit": "the channel's limit (rows)", "heldout_windows": int(held.size),
            "heldout_max": round(float(held.max()), 6) if held.size else 0.0})
