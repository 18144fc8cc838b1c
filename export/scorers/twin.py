"""Fit the `twin` scorer (`edge.scorers.twin`): twin groups from the channel names confirmed by
correlation on the training rows (`export.twins`), and per member the centre (median) and
spread (IQR / 1.349) of its residual against its twins over the training windows. No twin
groups, no scorer."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.bundle import Threshold
from edge.scorers.twin import residual_mean, twin_matrix
from export import calibrate
from export.scorers.base import FloatArray, TrainerScorer, TrainingData
from export.twins import twin_groups

ROBUST = 1.349  # IQR of a standard normal
MIN_SPREAD = 1e-3  # scaled units: a residual constant in training still gets a finite score
# The threshold of a per-sensor kind is the configured calibration times this. It was 1.25
# while dropouts (judged as stuck) and mismatched twin transforms made false alarms; with both
# fixed, 1.0 (no extra margin) was chosen on pods 1-8 and confirmed on pods 9-12 (see
# export/recipes.py).
SENSOR_MARGIN = 1.0


def sensor_threshold(name: str, heldout: FloatArray, data: TrainingData) -> Threshold:
    """The configured calibration on the scores of the held-out and of the training windows
    (those scored: a kind with a history leaves its first windows unscored, NaN), times
    SENSOR_MARGIN.

    A member's centre and spread are a median and an IQR over thousands of windows, which
    hardly fit the training windows closer than unseen ones; what the held-out part alone
    (the last fifth of training, a day or two) misses is the slow wander of sensors' gains over
    a week, which the training windows hold. Chosen on pods 1-4 streamed for a week (6 -> 3
    false alarms), confirmed on pods 5-8 (15 -> 3); see `export/recipes.py`."""
    training = data.scored.get(name, np.empty(0))
    scores = np.concatenate([heldout, training])
    base = calibrate.calibrate(scores[~np.isnan(scores)], data.config)
    value = base.value * SENSOR_MARGIN
    held = heldout[~np.isnan(heldout)]
    return Threshold(value=value, method=base.method, params={
        **base.params, "sensor_margin": SENSOR_MARGIN, "heldout_windows": int(held.size),
        "heldout_over": round(float(np.mean(held > value)), 6) if held.size else 0.0,
        "training_windows": int(np.sum(~np.isnan(training)))})


def robust_center_spread(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Per column, over its known (not NaN) values: median and IQR / 1.349 (at least
    MIN_SPREAD; a member never judged in training gets 0 and MIN_SPREAD)."""
    known = np.isfinite(values)
    filled = np.where(known.any(axis=0), values, 0.0) if not known.all() else values
    q1, med, q3 = np.nanpercentile(filled, [25, 50, 75], axis=0)
    return med.tolist(), np.maximum((q3 - q1) / ROBUST, MIN_SPREAD).tolist()


class TwinGroupTrainer(TrainerScorer):
    """What the per-twin kinds share: the twin groups of the training rows, each member's
    centre and spread of what `member_values` gives on the training windows, and the
    threshold (`sensor_threshold`). No twins, no scorer."""

    @classmethod
    def member_values(cls, readings: FloatArray, matrix: FloatArray, members: list[int],
                      options: dict[str, Any]) -> tuple[FloatArray, dict[str, Any]]:
        """(B, members) what each member is judged on (NaN: not judged), and the kind's
        other spec fields, from the training windows' read values (NaN where filled)."""
        raise NotImplementedError

    @classmethod
    def judged(cls, readings: FloatArray, data: TrainingData) -> FloatArray:
        """The training windows' read values as the kind judges them (default: scaled)."""
        return readings

    @classmethod
    def fit(cls, data: TrainingData, options: dict[str, Any]) -> list[dict[str, Any]]:
        groups = twin_groups(data.channels, data.rows)
        readings = data.readings()
        if not groups or readings is None:
            return []
        values, fields = cls.member_values(cls.judged(readings, data),
                                           twin_matrix(groups, len(data.channels)),
                                           [i for g in groups for i in g], options)
        center, spread = robust_center_spread(values)
        names = [[data.channels[i] for i in g] for g in groups]
        return [{"name": cls.kind, "kind": cls.kind, "groups": names, "center": center,
                 "spread": spread, **fields}]

    @classmethod
    def threshold(cls, name: str, heldout: FloatArray, data: TrainingData,
                  options: dict[str, Any]) -> Threshold:
        return sensor_threshold(name, heldout, data)


class TwinTrainer(TwinGroupTrainer):
    kind = "twin"

    @classmethod
    def member_values(cls, readings: FloatArray, matrix: FloatArray, members: list[int],
                      options: dict[str, Any]) -> tuple[FloatArray, dict[str, Any]]:
        """Each member's residual against its twins' mean, over the whole window."""
        return residual_mean(readings, matrix), {"rows": readings.shape[1]}
