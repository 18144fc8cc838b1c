"""Fit the `twin_spike` scorer (`edge.scorers.twin_spike`): the twin groups of `twin`, and
per member the centre (median) and spread (IQR / 1.349) of its single-row residual against
its twins over the training rows that end a window. No twins, no scorer."""

from __future__ import annotations

from typing import Any

from edge.scorers.twin_spike import row_residuals
from export.scorers.base import FloatArray
from export.scorers.twin import TwinGroupTrainer


class TwinSpikeTrainer(TwinGroupTrainer):
    kind = "twin_spike"

    @classmethod
    def member_values(cls, readings: FloatArray, matrix: FloatArray, members: list[int],
                      options: dict[str, Any]) -> tuple[FloatArray, dict[str, Any]]:
        """Each member's residual against its twins on the newest row of each window."""
        return row_residuals(readings[:, -1:, :], matrix)[:, 0, :], {}
