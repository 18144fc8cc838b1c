"""Fit the `variability` scorer (`edge.scorers.variability`): the twin groups of `twin`, a
floor of 1% of the members' median window deviation, and per member the centre and spread of
its log-deviation difference from its twins over the training windows. No twins, no scorer."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.bundle import Threshold
from edge.scorers.twin import twin_matrix
from export.scorers.base import FloatArray, TrainerScorer, TrainingData
from export.scorers.twin import robust_center_spread, sensor_threshold
from export.twins import twin_groups

FLOOR_SHARE = 0.01  # of the members' median window standard deviation


class VariabilityTrainer(TrainerScorer):
    kind = "variability"

    @classmethod
    def fit(cls, data: TrainingData, options: dict[str, Any]) -> list[dict[str, Any]]:
        groups = twin_groups(data.channels, data.rows)
        if not groups or data.windows is None:
            return []
        members = [i for g in groups for i in g]
        sd = data.windows.std(axis=1)
        floor = max(float(np.median(sd[:, members])) * FLOOR_SHARE, 1e-9)
        diff = np.log(np.maximum(sd, floor)) @ twin_matrix(groups, len(data.channels))
        center, spread = robust_center_spread(diff)
        names = [[data.channels[i] for i in g] for g in groups]
        return [{"name": "variability", "kind": "variability", "groups": names,
                 "center": center, "spread": spread, "floor": floor}]

    @classmethod
    def threshold(cls, name: str, heldout: FloatArray, data: TrainingData,
                  options: dict[str, Any]) -> Threshold:
        return sensor_threshold(heldout, data)
