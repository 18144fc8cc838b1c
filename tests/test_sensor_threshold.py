"""The per-sensor kinds' threshold is calibrated on the training windows' scores as well as the
held-out ones: a sensor's slow gain wander over the training week raises it, where the
held-out day or two alone would set it under what a week of normal data reaches."""

from __future__ import annotations

import dataclasses

import numpy as np

from export.config import FitConfig
from export.scorers.base import TrainingData
from export.scorers.twin import SENSOR_MARGIN, TwinTrainer


def test_the_threshold_covers_the_training_windows_too() -> None:
    rng = np.random.default_rng(4)
    heldout = np.abs(rng.normal(size=500))
    heldout[7] = np.nan  # a window a kind with a history left unscored
    rows = rng.normal(size=(10, 3))
    data = TrainingData(["a_1", "a_2", "a_3"], rows, np.arange(10) * 60.0, FitConfig())
    alone = TwinTrainer.threshold("twin", heldout, data, {})
    training = np.abs(rng.normal(size=3000)) * 1.5  # a week that wandered further
    with_training = TwinTrainer.threshold(
        "twin", heldout, dataclasses.replace(data, scored={"twin": training}), {})
    expected = max(np.nanmax(heldout), training.max()) * (1 + FitConfig().threshold_margin)
    assert np.isclose(with_training.value, expected * SENSOR_MARGIN)
    assert with_training.value > alone.value
    assert with_training.params["heldout_windows"] == 499
    assert with_training.params["training_windows"] == 3000
    assert 0 <= with_training.params["heldout_over"] < 0.01
    # another scorer's training scores are not this one's
    other = TwinTrainer.threshold(
        "twin", heldout, dataclasses.replace(data, scored={"variability": training}), {})
    assert np.isclose(other.value, alone.value)
