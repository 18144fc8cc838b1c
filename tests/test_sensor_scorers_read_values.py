"""The per-sensor scorers judge only what the sensors sent: a dropout's forward-filled (flat)
run is not taken for a stuck sensor, on the device and in the trainer alike."""

from __future__ import annotations

import numpy as np

from edge.bundle import Threshold
from edge.scorers.base import ScoringBatch
from edge.scorers.twin import TwinScorer, TwinScorerSpec
from edge.scorers.variability import VariabilityScorer, VariabilityScorerSpec
from export.config import FitConfig
from export.scorers.base import TrainingData
from export.scorers.variability import VariabilityTrainer
from tests.scorers.harness import ArrayInputs

CHANNELS = ["pm_1", "pm_2", "pm_3"]
GROUPS = [CHANNELS]
LENGTH = 16
MANIFEST = type("M", (), {"channels": CHANNELS,
                          "window": type("W", (), {"length": LENGTH})()})()
THRESHOLD = Threshold(value=1.0, method="quantile").model_dump()


def twins_moving(n: int, seed: int = 3) -> np.ndarray:
    """(n, 3) three twins following one signal, each with its own noise."""
    rng = np.random.default_rng(seed)
    signal = np.cumsum(rng.normal(0, 0.3, n))
    return signal[:, None] + rng.normal(0, 0.2, (n, 3))


def batch(rows: np.ndarray, missing: np.ndarray | None) -> ScoringBatch:
    windows = np.lib.stride_tricks.sliding_window_view(rows, LENGTH, axis=0).transpose(0, 2, 1)
    gaps = (None if missing is None else
            np.lib.stride_tricks.sliding_window_view(missing, LENGTH, axis=0).transpose(0, 2, 1))
    return ScoringBatch(np.ascontiguousarray(windows), np.full(len(windows), np.nan),
                        ArrayInputs(windows), gaps)  # type: ignore[arg-type]


def held(rows: np.ndarray, start: int, stop: int, channel: int) -> np.ndarray:
    """`rows` with `channel` holding its value at `start` until `stop` (a flat run)."""
    out = rows.copy()
    out[start:stop, channel] = out[start - 1, channel]
    return out


def test_a_filled_flat_run_is_not_stuck_but_a_read_one_is() -> None:
    spec = VariabilityScorerSpec.model_validate(
        {"name": "variability", "kind": "variability", "groups": GROUPS, "floor": 1e-3,
         "center": [0.0] * 3, "spread": [0.3] * 3, "threshold": THRESHOLD})
    scorer = VariabilityScorer(spec, MANIFEST)  # type: ignore[arg-type]
    rows = held(twins_moving(120), 40, 100, 0)
    missing = np.zeros(rows.shape, dtype=bool)
    missing[40:100, 0] = True
    stuck = scorer.score(batch(rows, None), {})  # the sensor sent the same value 60 times
    dropout = scorer.score(batch(rows, missing), {})  # it sent nothing; the device held it
    flat_windows = slice(40, 100 - LENGTH + 1)  # the windows wholly inside the run
    assert stuck[flat_windows].min() > 10.0
    assert dropout[flat_windows].max() < 6.0
    # a window at least half read is judged on its read rows
    half = missing.copy()
    half[40:100, 0] = False
    half[40:100:2, 0] = True
    assert scorer.score(batch(rows, half), {})[flat_windows].min() > 10.0


def test_twin_residuals_leave_filled_values_out() -> None:
    spec = TwinScorerSpec.model_validate(
        {"name": "twin", "kind": "twin", "groups": GROUPS, "rows": LENGTH,
         "center": [0.0] * 3, "spread": [0.2] * 3, "threshold": THRESHOLD})
    scorer = TwinScorer(spec, MANIFEST)  # type: ignore[arg-type]
    rows = twins_moving(200)
    rows[60:140] += np.linspace(0, 30, 80)[:, None]  # the weather rises while pm_2 is silent
    rows = held(rows, 60, 140, 1)
    missing = np.zeros(rows.shape, dtype=bool)
    missing[60:140, 1] = True
    blind = scorer.score(batch(rows, None), {})
    seeing = scorer.score(batch(rows, missing), {})
    assert blind.max() > 50.0  # the held value leaves its twins: taken for a fault
    assert seeing.max() < 6.0
    # no mask and an all-false mask give the same bits
    assert np.array_equal(blind, scorer.score(batch(rows, np.zeros_like(missing)), {}))
    judged = scorer.member_values(batch(rows, missing).readings())
    assert np.isnan(judged[60:140 - LENGTH]).all(axis=0).sum() == 3  # a silent twin: no residual


def test_the_trainer_fits_on_read_values_only() -> None:
    rows = twins_moving(3000, seed=5)
    dropped = held(rows, 1000, 1800, 2)  # a long dropout in the training rows
    missing = np.zeros(rows.shape, dtype=bool)
    missing[1000:1800, 2] = True

    def fitted(values: np.ndarray, gaps: np.ndarray | None) -> dict[str, object]:
        windows = np.lib.stride_tricks.sliding_window_view(values, LENGTH, axis=0)
        mask = (None if gaps is None else np.ascontiguousarray(
            np.lib.stride_tricks.sliding_window_view(gaps, LENGTH, axis=0).transpose(0, 2, 1)))
        data = TrainingData(CHANNELS, values, np.arange(len(values)) * 60.0, FitConfig(),
                            np.ascontiguousarray(windows.transpose(0, 2, 1)), mask)
        (spec,) = VariabilityTrainer.fit(data, {})
        return spec

    clean, blind, seeing = fitted(rows, None), fitted(dropped, None), fitted(dropped, missing)
    assert abs(seeing["spread"][2] - clean["spread"][2]) < 0.1 * clean["spread"][2]
    assert blind["spread"][2] > 1.5 * clean["spread"][2]  # without the mask the run misleads
