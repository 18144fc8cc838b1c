"""The `stuck` kind: its limits from the training windows (trainer), its score on the device,
and a stuck business metric alerting through the univariate recipe (a real fit and replay)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.scorers.base import ScoringBatch
from edge.scorers.stuck import StuckScorer, StuckScorerSpec, trailing_runs
from export.config import FitConfig
from export.scorers.base import TrainingData
from export.scorers.stuck import StuckTrainer, longest_runs
from tests.scorers.harness import ArrayInputs

WINDOW = 16


def windows_of(rows: np.ndarray) -> np.ndarray:
    return np.stack([rows[i : i + WINDOW] for i in range(len(rows) - WINDOW + 1)])


def plant(n: int = 800, seed: int = 0) -> np.ndarray:
    """(n, 4): a continuous sensor, a sensor quantised to whole units that repeats itself
    for up to about 6 readings, a two-valued state and a constant channel."""
    rng = np.random.default_rng(seed)
    live = np.sin(np.arange(n) / 30) + 0.1 * rng.normal(size=n)
    coarse = np.repeat(np.arange(n) % 50, rng.integers(1, 7, size=n))[:n]  # no merged runs
    state = (np.arange(n) // 50 % 2).astype(float)
    return np.column_stack([live, coarse.astype(float), state, np.zeros(n)])


def fitted(rows: np.ndarray) -> StuckScorerSpec:
    channels = ["live", "coarse", "state", "constant"]
    data = TrainingData(channels, rows, np.arange(len(rows)) * 60.0, FitConfig(),
                        windows_of(rows), np.zeros((len(rows) - WINDOW + 1, WINDOW, 4), bool))
    (raw,) = StuckTrainer.fit(data, {})
    return StuckScorerSpec.model_validate({**raw, "threshold": {"value": 1.0, "method": "run"}})


def test_runs_count_read_values_only() -> None:
    x = np.array([[[1.0], [2.0], [2.0], [2.0]], [[2.0], [2.0], [np.nan], [2.0]],
                  [[5.0], [5.0], [5.0], [np.nan]]])
    assert trailing_runs(x).ravel().tolist() == [3.0, 1.0, 0.0]
    assert longest_runs(x).tolist() == [3.0]


def test_limits_are_twice_the_training_runs_and_at_least_half_the_window() -> None:
    rows = plant()
    spec = fitted(rows)
    coarse_longest = int(longest_runs(windows_of(rows))[1])
    assert 2 <= coarse_longest <= 6
    assert spec.channels == ["live", "coarse"]  # the state and the constant are not judged
    assert spec.limits == [WINDOW // 2, max(2 * coarse_longest, WINDOW // 2)]
    rows[100:140, 1] = 7.0  # a coarse sensor that holds a value for 40 readings in training
    assert fitted(rows).channels == ["live"]  # its runs are longer than the device can see


def test_a_stuck_sensor_scores_its_run_and_is_named() -> None:
    rows = plant()
    spec = fitted(rows[:600])
    scorer = StuckScorer(spec, type("M", (), {"channels": ["live", "coarse", "state",
                                                           "constant"]})())  # type: ignore[arg-type]
    test = rows[600:].copy()
    test[100:, 0] = test[99, 0]  # the live sensor stuck from row 99 on
    w = windows_of(test)
    batch = ScoringBatch(w, np.full(len(w), np.nan), ArrayInputs(w))  # type: ignore[arg-type]
    scores = scorer.score(batch, {})
    newest = np.arange(len(w)) + WINDOW - 1
    assert (scores[newest < 99 + 7] < 1.0).all()  # a run shorter than the limit (8 rows)
    assert (scores[newest >= 99 + 7] >= 1.0).all()
    assert (batch.channel_scores["stuck"][newest >= 99 + 7].argmax(axis=1) == 0).all()


def test_a_stuck_metric_alerts_through_the_univariate_recipe(tmp_path: Path) -> None:
    from edge.replay import replay_table
    from edge.table import read_table
    from export.fit import fit_bundle

    rng = np.random.default_rng(3)
    n = 1400
    t = np.arange(n)
    value = 500 + 200 * np.sin(2 * np.pi * t / 288) + 30 * rng.normal(size=n)
    value[1200:1240] = value[1199]  # stuck for 40 readings (3 h 20 min of 5-minute rows)
    stamps = 1_767_225_600 + 300 * t
    csv = tmp_path / "metric.csv"
    lines = ["timestamp,value"] + [f"{s},{v:.3f}" for s, v in zip(stamps, value, strict=True)]
    csv.write_text("\n".join(lines) + "\n")
    said: list[str] = []
    fit = fit_bundle(csv, tmp_path / "bundle",
                     FitConfig(rows="0:1000", epochs=1, report=False, force=True), said.append)
    assert "stuck" in fit.manifest.ensemble.members
    # 1000 rows are 3.5 days: the recipe's daily profile needs a week, and the fit says so
    assert "seasonal" not in fit.manifest.ensemble.members
    assert any("no scorer from: seasonal" in line for line in said), said
    result = replay_table(tmp_path / "bundle", read_table(csv))
    starts = [row for e, row in zip(result.events, result.event_rows, strict=True)
              if e.state == "start"]
    assert any(1200 <= row < 1240 for row in starts), starts
    stuck_start = next(e for e, row in zip(result.events, result.event_rows, strict=True)
                       if e.state == "start" and 1200 <= row < 1240)
    assert stuck_start.trouble == "sensor"
