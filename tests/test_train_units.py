"""Trainer pieces that need no TensorFlow: preprocessing fit, windows, ONNX parity, thresholds."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import ChannelPreprocess, Preprocess
from edge.preprocess import ForwardFill
from edge.runtimes.onnx import OnnxModel
from export import calibrate
from export.config import FitConfig
from export.linear import fit_linear, lag_features
from export.onnx_export import export_distance, onnx_parity
from export.prepare import choose_transform, fit_channel, forward_fill, window_ends, windows_at


def _spec(fill: list[float]) -> Preprocess:
    channels = [
        ChannelPreprocess(name=f"c{j}", center=0.0, scale=1.0, fill=f) for j, f in enumerate(fill)
    ]
    return Preprocess(channels=channels, max_gap_s=5.0)


def test_forward_fill_matches_the_device() -> None:
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(300, 3))
    raw[rng.random(raw.shape) < 0.3] = np.nan
    raw[:5, 1] = np.nan  # before the first valid value: the training median
    fill = np.array([10.0, 20.0, 30.0])
    expected = ForwardFill(_spec(fill.tolist())).fill_rows(raw)
    np.testing.assert_array_equal(forward_fill(raw, fill), expected)


def test_window_ends_respect_gaps_and_excluded_rows() -> None:
    ok = np.ones(12, dtype=bool)
    ok[5] = False
    gap = np.zeros(12, dtype=bool)
    gap[9] = True
    assert window_ends(ok, gap, 3).tolist() == [2, 3, 4, 8, 11]
    assert window_ends(ok, gap, 3, stride=2).tolist() == [2, 4, 8, 11]
    rows = np.arange(24, dtype=float).reshape(12, 2)
    windows = windows_at(rows, np.array([2, 11]), 3)
    assert windows.shape == (2, 3, 2)
    np.testing.assert_array_equal(windows[1], rows[9:12])


def test_transform_chosen_by_skewness() -> None:
    rng = np.random.default_rng(2)
    config = FitConfig()
    assert choose_transform(rng.lognormal(0, 1, 2000), config)[0] == "log1p"
    assert choose_transform(rng.normal(0, 1, 2000), config)[0] == "none"  # negative: none
    assert choose_transform(rng.normal(50, 1, 2000), config)[0] == "none"  # symmetric already


def test_robust_scale_survives_a_stuck_channel() -> None:
    values = np.full(400, 32.0)
    values[::10] = 33.0  # a quantised flow meter: the IQR is zero
    spec, info = fit_channel("flow", values, FitConfig())
    assert info["scale_from"] == "std"
    assert spec.scale == pytest.approx(values.std())


def test_onnx_distances_match_scikit_learn(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(6, 6))
    train = np.vstack([rng.normal(0, 1, (300, 6)), rng.normal(5, 1, (300, 6))]) @ mix
    model = fit_linear(train, FitConfig(seed=0))
    assert model.info["clusters"] == 2
    spec = export_distance(model, tmp_path / "distance.onnx")
    assert [o.name for o in spec.outputs] == ["spe", "euclidean", "mahalanobis"]
    held_out = np.vstack([rng.normal(0, 1, (200, 6)), rng.normal(5, 3, (200, 6))]) @ mix
    parity = onnx_parity(tmp_path / "distance.onnx", model, held_out)
    assert max(parity.values()) < 1e-4, parity
    outputs = OnnxModel(tmp_path / "distance.onnx").run(held_out[:7].astype(np.float32))
    assert {k: v.shape for k, v in outputs.items()} == {
        "spe": (7,),
        "euclidean": (7,),
        "mahalanobis": (7,),
    }


def test_lag_features_are_the_engine_layout() -> None:
    windows = np.arange(2 * 4 * 3, dtype=float).reshape(2, 4, 3)
    features = lag_features(windows, lags=2, clip=100.0)
    np.testing.assert_array_equal(features[0], windows[0, 2:].reshape(-1))


@pytest.mark.parametrize("method", ["quantile", "iqr", "pot", "bhattacharyya"])
def test_threshold_methods_sit_in_the_upper_tail(method: str) -> None:
    scores = np.random.default_rng(4).chisquare(4, size=2000)
    threshold = calibrate.calibrate(scores, FitConfig(), method)
    assert np.quantile(scores, 0.95) < threshold.value < 20 * scores.max()
    assert threshold.params["heldout_windows"] == 2000
    assert threshold.method == method


def test_pot_falls_back_with_too_few_excesses() -> None:
    threshold = calibrate.calibrate(np.linspace(1.0, 2.0, 20), FitConfig(pot_level=0.9), "pot")
    assert threshold.method == "quantile"
    assert "fallback" in threshold.params


def test_bhattacharyya_reading_on_a_gaussian() -> None:
    # linear space (scores can be negative): D_B = delta^2 / (8 sigma^2) -> 4 sigma for bound 2
    scores = np.random.default_rng(5).normal(0.0, 1.0, 20000)
    threshold = calibrate.calibrate(scores, FitConfig(bhattacharyya_bound=2.0), "bhattacharyya")
    assert threshold.params["space"] == "linear"
    assert threshold.value == pytest.approx(4.0, abs=0.3)


def test_every_fit_config_field_is_an_option() -> None:
    from dataclasses import fields

    from export.cli import build_parser
    from export.fit_command import add_arguments, config_from_args

    parser = build_parser()
    args = parser.parse_args(
        [
            "fit",
            "d.csv",
            "--out",
            "b",
            "--channels",
            "a, b",
            "--label-column",
            "none",
            "--ensemble-weights",
            "lstm_ae=2,mahalanobis=1",
            "--no-report",
            "--force",
            "--window",
            "12",
            "--pot-risk",
            "0.01",
            "--threshold-method",
            "bhattacharyya",
        ]
    )
    config = config_from_args(args)
    assert config.channels == ("a", "b") and config.label_column == ""
    assert config.ensemble_weights == {"lstm_ae": 2.0, "mahalanobis": 1.0}
    assert config.report is False and config.force is True
    assert config.window == 12 and config.pot_risk == 0.01
    assert config.threshold_method == "bhattacharyya"
    assert config_from_args(parser.parse_args(["fit", "d.csv", "--out", "b"])) == FitConfig()
    fit_parser = argparse.ArgumentParser()
    add_arguments(fit_parser)
    help_text = fit_parser.format_help()
    for f in fields(FitConfig):
        assert "--" + f.name.replace("_", "-") in help_text, f.name
