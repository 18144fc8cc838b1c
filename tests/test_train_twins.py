"""Twin residual features: groups from names and data, the residual maths, the ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.config import FitConfig
from export.onnx_export import export_distance, onnx_parity
from export.twins import name_groups, residual_matrix, twin_groups
from export.window_features import fit_window_features


def lagged(rows: np.ndarray, lags: int) -> np.ndarray:
    return np.stack([rows[i - lags + 1 : i + 1].reshape(-1) for i in range(lags - 1, len(rows))])


def pod_rows(n: int, seed: int) -> np.ndarray:
    """Three twins following one signal, two twins of another, and a lone channel."""
    rng = np.random.default_rng(seed)
    a, b = np.sin(np.arange(n) / 30.0), np.cos(np.arange(n) / 50.0)
    twins_a = a[:, None] + 0.1 * rng.normal(size=(n, 3))
    twins_b = b[:, None] + 0.1 * rng.normal(size=(n, 2))
    return np.hstack([twins_a, twins_b, rng.normal(size=(n, 1))])


NAMES = ["o3_1", "o3_2", "o3_3", "no2a", "no2b", "temp_c"]


def test_groups_come_from_names_with_a_trailing_number() -> None:
    names = ["pm25_pms_1", "pm25_pms_2", "o3_1", "o3_2", "o3_3", "t1", "t2", "temp_c",
             "Accelerometer1RMS", "Accelerometer2RMS"]
    assert name_groups(names) == [[0, 1], [2, 3, 4], [5, 6]]


def test_uncorrelated_namesakes_are_not_twins() -> None:
    rows = pod_rows(500, seed=1)
    rows[:, 2] = np.random.default_rng(9).normal(size=500)  # o3_3 follows nothing
    assert twin_groups(["o3_1", "o3_2", "o3_3"], rows[:, :3]) == [[0, 1]]


def test_residual_is_member_minus_twins_mean() -> None:
    matrix = residual_matrix([[0, 1, 2]], 4)
    row = np.array([[3.0, 1.0, 2.0, 100.0]])
    np.testing.assert_allclose(row @ matrix, [[1.5, -1.5, 0.0]])


def test_a_sensor_leaving_its_twins_scores_high_and_the_graph_matches(tmp_path: Path) -> None:
    rows = pod_rows(900, seed=2)
    config = FitConfig(slow_ratio=0.0, twin_features=True)  # every level is "slow"
    model = fit_window_features(lagged(rows[:600], 8), 8, rows[:600], config, NAMES)
    assert model.info["twin_groups"] == [[0, 1, 2]]  # no2a and no2b do not end in a number
    test = rows[600:].copy()
    test[150:, 1] -= 1.0  # o3_2 reads low; its twins do not
    x = lagged(test, 8)
    scores = model.scores(x)["window_mahalanobis"]
    without = fit_window_features(
        lagged(rows[:600], 8), 8, rows[:600], FitConfig(slow_ratio=0.0), NAMES)
    plain = without.scores(x)["window_mahalanobis"]
    # only the twin residual sees a level change when every level is left out
    assert scores[200:].mean() > 3 * scores[:100].mean()
    assert plain[200:].mean() < 1.5 * plain[:100].mean()
    export_distance(model, tmp_path / "distance.onnx")
    parity = onnx_parity(tmp_path / "distance.onnx", model, x)
    assert parity["window_mahalanobis"] < 1e-4, parity


def test_twins_share_one_transform_chosen_on_their_pooled_values(tmp_path: Path) -> None:
    """Skewed twins whose own choices would differ get one transform, the one on which they
    agree best; a lone channel and a namesake that does not follow its group keep their own."""
    from edge.preprocess import apply_transform
    from export.prepare import agreement, choose_transform, prepare

    rng = np.random.default_rng(4)
    n = 3000
    level = np.exp(rng.normal(2.5, 0.5, n))
    pm = [level * g + rng.normal(0, noise, n) for g, noise in
          ((1.0, 0.3), (1.1, 6.0), (0.9, 0.3))]  # the second is noisy: much less skewed
    pm = [np.maximum(v, 0.0) for v in pm]
    lone = rng.exponential(3.0, n)
    stray = rng.exponential(3.0, n)  # named like a twin, follows nothing
    columns = {"pm_1": pm[0], "pm_2": pm[1], "pm_3": pm[2], "temp": lone, "pm_4": stray}
    config = FitConfig(window=8)
    own = {k: choose_transform(v[: int(n * 0.75)], config)[0] for k, v in columns.items()}
    assert len({own["pm_1"], own["pm_2"], own["pm_3"]}) > 1, own  # the case worth testing
    csv = tmp_path / "pod.csv"
    stamps = 1_700_000_000 + 60 * np.arange(n)
    lines = ["timestamp," + ",".join(columns)]
    lines += [f"{t}," + ",".join(f"{columns[k][i]:.5f}" for k in columns)
              for i, t in enumerate(stamps)]
    csv.write_text("\n".join(lines) + "\n")
    prep = prepare(csv, config)
    chosen = {c.name: c.transform for c in prep.preprocess.channels}
    assert chosen["pm_1"] == chosen["pm_2"] == chosen["pm_3"]
    members = np.column_stack([v[prep.fit_rows] for v in pm])
    agree = {k: agreement(apply_transform(k, members)) for k in ("none", "sqrt", "log1p")}
    assert chosen["pm_1"] == min(agree, key=lambda k: agree[k]), agree
    assert chosen["temp"] == own["temp"] and chosen["pm_4"] == own["pm_4"]
    assert prep.summary["channels"]["pm_2"]["transform_of_twins"] is True
    assert "transform_of_twins" not in prep.summary["channels"]["temp"]
