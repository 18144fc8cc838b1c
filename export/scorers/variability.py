"""Fit the `variability` scorer (`edge.scorers.variability`): the twin groups of `twin`, a
floor of 1% of the members' median window deviation, and per member the centre and spread of
its log-deviation difference from its twins over the training windows. No twins, no scorer."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.scorers.twin import combine_members, min_read_rows, read_sd
from export.scorers.base import FloatArray
from export.scorers.twin import TwinGroupTrainer

FLOOR_SHARE = 0.01  # of the members' median window standard deviation


class VariabilityTrainer(TwinGroupTrainer):
    kind = "variability"

    @classmethod
    def member_values(cls, readings: FloatArray, matrix: FloatArray, members: list[int],
                      options: dict[str, Any]) -> tuple[FloatArray, dict[str, Any]]:
        """Each member's log deviation minus its twins' mean one, over each window."""
        sd = read_sd(readings, min_read_rows(readings.shape[1]))
        known = sd[:, members][np.isfinite(sd[:, members])]
        floor = max(float(np.median(known)) * FLOOR_SHARE if known.size else 0.0, 1e-9)
        return combine_members(np.log(np.maximum(sd, floor)), matrix), {"floor": floor}
