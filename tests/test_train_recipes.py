"""The recipes' pieces without TensorFlow: slow channels, the windowed-feature Mahalanobis and
lag-KMeans ONNX graphs against their numpy references, recipe resolution, old manifests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from edge.bundle import SCHEMA_VERSION, parse_manifest
from edge.runtimes.onnx import OnnxModel
from export.config import FitConfig
from export.errors import InputError
from export.lag_kmeans import fit_lag_kmeans
from export.onnx_export import export_distance, onnx_parity, relative_diff
from export.recipes import resolve
from export.window_features import fit_window_features, slow_channels, window_features


def drifting_rows(n: int, seed: int = 0) -> np.ndarray:
    """Columns: white noise, a random walk (slow), noise + a slow sine (slow), a fast sine."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.column_stack([
        rng.normal(size=n),
        np.cumsum(rng.normal(size=n)),
        np.sin(2 * np.pi * t / 300) * 3 + 0.3 * rng.normal(size=n),
        np.sin(2 * np.pi * t / 5) + 0.3 * rng.normal(size=n),
    ])


def lagged(rows: np.ndarray, lags: int) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(rows, lags, axis=0)  # (n-L+1, C, L)
    return np.ascontiguousarray(view.transpose(0, 2, 1)).reshape(len(view), -1)


def test_slow_channels_are_the_wandering_levels() -> None:
    rows = drifting_rows(400)
    assert slow_channels(rows, 32, 0.65).tolist() == [False, True, True, False]
    assert not slow_channels(rows[:20], 32, 0.65).any()  # too few rows: none
    assert slow_channels(rows, 32, 0.0).all()


def test_window_features_by_hand() -> None:
    x = np.array([[1.0, 10.0, 3.0, 10.0]])  # two rows of two channels
    f = window_features(x, 2, np.array([True, False]), 0.3)
    np.testing.assert_allclose(f, [[2.0, np.log(1.0 + 0.3), np.log(0.3)]])


@pytest.mark.parametrize("slow", ["some", "all"])
def test_window_feature_graph_matches_numpy(tmp_path: Path, slow: str) -> None:
    rows = drifting_rows(700, seed=1)
    config = FitConfig(slow_ratio=0.65 if slow == "some" else 0.0)
    x = lagged(rows[:400], 8)
    model = fit_window_features(x, 8, rows[:400], config)
    assert model.info["slow_channels"] == ([1, 2] if slow == "some" else [0, 1, 2, 3])
    spec = export_distance(model, tmp_path / "distance.onnx")
    assert [o.name for o in spec.outputs] == ["window_mahalanobis"]
    assert spec.inputs[0].shape == [-1, 32]
    test = lagged(rows, 8) * 1.5 + 0.2  # beyond the training range too
    parity = onnx_parity(tmp_path / "distance.onnx", model, test)
    assert parity["window_mahalanobis"] < 1e-4, parity


def test_window_mahalanobis_is_ledoit_wolf_on_standardised_features() -> None:
    rows = drifting_rows(500, seed=2)
    x = lagged(rows[:300], 8)
    model = fit_window_features(x, 8, rows[:300], FitConfig(slow_ratio=0.5))
    f = window_features(x, 8, model.keep, 0.3)
    mean, sd = f.mean(axis=0), f.std(axis=0)
    lw = LedoitWolf().fit((f - mean) / sd)
    test = lagged(rows[300:], 8)
    ft = (window_features(test, 8, model.keep, 0.3) - mean) / sd
    expected = np.sqrt(lw.mahalanobis(ft))
    assert relative_diff(model.scores(test)["window_mahalanobis"], expected) < 1e-9


def test_lag_kmeans_graph_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    t = np.arange(900)
    series = (np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=900))[:, None]
    model = fit_lag_kmeans(lagged(series[:600], 8), 8, FitConfig())
    assert model.outputs == ("lag_distance_8", "lag_distance_4")
    assert model.info["clusters"] == {"8": 16, "4": 16}
    export_distance(model, tmp_path / "distance.onnx")
    test = lagged(series, 8)
    test[700:] += 3.0  # a level shift: far from every centroid
    parity = onnx_parity(tmp_path / "distance.onnx", model, test)
    assert max(parity.values()) < 1e-4, parity
    got = OnnxModel(tmp_path / "distance.onnx").run(test.astype(np.float32))
    assert got["lag_distance_4"][710:].min() > got["lag_distance_4"][620:690].max()


def test_lag_kmeans_on_a_flat_series_has_one_centroid() -> None:
    flat = lagged(np.full((300, 1), 5.0), 8)
    model = fit_lag_kmeans(flat, 8, FitConfig())
    assert model.info["clusters"] == {"8": 1, "4": 1}
    assert np.all(model.scores(flat)["lag_distance_8"] == 0.0)


def test_recipes_by_channel_count_and_explicit_options_win() -> None:
    multi = resolve(FitConfig(), 8)
    assert (multi.recipe, multi.distance_model) == ("multivariate", "window_features")
    assert multi.lags == 8
    assert multi.ensemble_members == ("window_mahalanobis",) and multi.likelihood_scorers == ()
    assert multi.cooldown_windows == 0 and multi.smoothing is not None
    uni = resolve(FitConfig(), 1)
    assert (uni.recipe, uni.distance_model, uni.lags) == ("univariate", "lag_kmeans", 8)
    assert uni.ensemble_members == ("lag_distance_8", "lag_distance_4", "range",
                                    "long_shape_64", "long_shape_128", "long_shape_256")
    assert multi.long_shapes == () and uni.long_shapes == (8, 16, 32)
    assert uni.likelihood_scorers == ("lag_distance_8", "lag_distance_4")
    assert (uni.trigger, uni.release, uni.cooldown_windows) == (1, 1, 150)
    assert (multi.ensemble_rule, uni.ensemble_rule) == ("max", "max_or_mean")
    assert uni.scorers == ("stuck", "seasonal") and "seasonal" not in (multi.scorers or ())
    assert uni.scorer_options == ("seasonal.min_days=7", "seasonal.required=false",
                                  "seasonal.min_z=5")
    mine = resolve(FitConfig(scorer_options=("seasonal.min_z=3",)), 1).scorer_options
    assert mine == ("seasonal.min_days=7", "seasonal.required=false", "seasonal.min_z=3")
    asked = resolve(FitConfig(scorers=("seasonal",)), 1)  # a user's kinds: their own defaults
    assert asked.scorer_options == ()
    assert resolve(FitConfig(ensemble_rule="max"), 1).ensemble_rule == "max"
    forced = resolve(FitConfig(recipe="univariate", smoothing=3), 8)
    assert forced.distance_model == "lag_kmeans" and forced.smoothing == 3
    old = resolve(FitConfig(distance_model="pca_kmeans"), 1)
    assert old.lags == 8 and old.ensemble_members == ("lstm_ae", "mahalanobis")
    none = dataclasses.replace(FitConfig(), likelihood_scorers=())
    assert resolve(none, 1).likelihood_scorers == ()
    with pytest.raises(InputError, match="--ensemble-members mahalanobis: choose among"):
        resolve(FitConfig(ensemble_members=("mahalanobis",)), 8)
    with pytest.raises(InputError, match="--lag-scales 8,4: each between 1 and --lags 4"):
        resolve(FitConfig(lags=4), 1)
    with pytest.raises(InputError, match="--lag-scales 20"):
        resolve(FitConfig(lag_scales=(20,)), 1)  # lags: at most the window (16)
    with pytest.raises(InputError, match="--likelihood-scorers nope"):
        resolve(FitConfig(likelihood_scorers=("nope",)), 1)
    with pytest.raises(InputError, match="--long-shape-memory 256 must exceed the longest "
                       "shape's 256 rows"):
        resolve(FitConfig(long_shape_memory=256), 1)
    with pytest.raises(InputError, match="--long-shapes 8,0: each block must be at least 1"):
        resolve(FitConfig(long_shapes=(8, 0)), 1)
    with pytest.raises(InputError, match="--ensemble-members long_shape_64: choose among"):
        resolve(FitConfig(ensemble_members=("long_shape_64",)), 8)  # none with 8 channels


def test_a_schema_1_manifest_still_loads() -> None:
    """Schemas 2 to 6 only added optional fields and kinds; an agent of this release reads 1."""
    manifest = {
        "schema_version": 1, "name": "old", "version": "1", "created": "2026-01-01T00:00:00Z",
        "channels": ["a"], "sample_period_s": 1.0, "window": {"length": 4},
        "preprocess": {"channels": [{"name": "a", "center": 0.0, "scale": 1.0, "fill": 0.0}],
                       "max_gap_s": 5.0},
        "models": {}, "iqr": {"q1": [-1.0], "q3": [1.0]},
        "scorers": [{"name": "iqr", "kind": "iqr", "threshold": {"value": 1.0,
                                                                  "method": "fence"}}],
        "ensemble": {"rule": "max", "members": ["iqr"]},
        "decision": {"smoothing": 1, "trigger": 3, "release": 5, "release_level": 0.9,
                     "cooldown_s": 0.0, "warmup_windows": 0},
        "files": {},
    }
    parsed = parse_manifest(json.dumps(manifest).encode())
    assert parsed.decision.cooldown_windows == 0 and parsed.scorers[0].likelihood is None
    assert SCHEMA_VERSION == 6


def test_kmeans_fits_the_same_whatever_the_thread_count() -> None:
    """A Dask worker runs one OpenMP thread, a workstation several: the centroids (and so a
    bundle's bytes) must not depend on it. Plain scikit-learn differs in the last bits here."""
    from threadpoolctl import threadpool_limits

    from export.kmeans import fit_kmeans
    from export.scorers.channel_kmeans import centroids_of

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 16)) + rng.integers(0, 4, size=(6000, 1))
    fitted = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            fitted[threads] = (fit_kmeans(x, 16, 4, 0).cluster_centers_,
                               centroids_of(x, 16, 0),
                               fit_lag_kmeans(x, 16, FitConfig(lag_scales=(16, 8))).centroids)
    for one, two in zip(fitted[1][:2], fitted[2][:2], strict=True):
        assert np.array_equal(one, two)
    assert all(np.array_equal(fitted[1][2][s], fitted[2][2][s]) for s in (16, 8))
