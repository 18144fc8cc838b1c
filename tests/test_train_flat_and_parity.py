"""Issue 20, parts 3 and 4: a channel constant in training is kept (alone: any departure
beyond its tolerance alerts; among others: warned about, left out of the window features and
judged by the per-channel scorers), and an int8 autoencoder that fails its parity bound
degrades the bundle instead of blocking it, unless it is an ensemble member. The parity
failure is forced with a bound no model can meet (`min_int8_corr` above 1), not by mocking
TensorFlow. Synthetic data made here with numpy; small fits (one epoch, few units)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import BundleError, load_bundle, parse_manifest
from edge.engine import ScoringEngine
from edge.replay import replay_table
from edge.table import read_table
from export.config import FitConfig
from export.errors import FitError
from export.evaluate import alert_starts
from export.fit import FitResult, fit_bundle
from export.onnx_export import export_distance, onnx_parity
from export.recipes import resolve
from export.window_features import fit_window_features

slow = pytest.mark.slow  # the tests that fit a bundle (TensorFlow)
FLAT, TRAIN = 45.0, 300
SMALL = dict(epochs=1, units=8, window=8, report=False, force=True)


def write(path: Path, columns: dict[str, np.ndarray]) -> Path:
    n = len(next(iter(columns.values())))
    stamps = np.datetime64("2024-05-01T00:00:00") + (np.arange(n) * 60).astype("timedelta64[s]")
    lines = [",".join(["timestamp", *columns])]
    for i, stamp in enumerate(stamps):
        lines.append(",".join([f"{stamp}Z", *(f"{v[i]:.6f}" for v in columns.values())]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def univariate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FitResult]:
    """One channel at 45.0 for the whole file (the art_flatline case)."""
    root = tmp_path_factory.mktemp("flat")
    csv = write(root / "flat.csv", {"value": np.full(900, FLAT)})
    config = dataclasses.replace(FitConfig(), rows=f":{TRAIN}", **SMALL)  # type: ignore[arg-type]
    return csv, fit_bundle(csv, root / "bundle", config)


@slow
def test_a_constant_channel_fits_with_its_tolerance_as_scale(
        univariate: tuple[Path, FitResult]) -> None:
    _, result = univariate
    m = load_bundle(result.out_dir).manifest
    (channel,) = m.preprocess.channels
    assert channel.center == FLAT and channel.scale == pytest.approx(0.001 * FLAT)
    flat = next(s for s in m.scorers if s.kind == "flat")
    assert flat.channels == ["value"] and flat.threshold.value == 1.0  # type: ignore[attr-defined]
    assert m.ensemble.members == ["flat"]  # the shape scorers learnt only a flat line
    assert m.training["constant_channels"] == ["value"]
    assert m.lstm_ae is not None and m.lstm_ae.trusted
    assert any("'value'" in w and "constant" in w for w in result.warnings)


@slow
def test_replay_of_the_constant_file_raises_no_alert(univariate: tuple[Path, FitResult]) -> None:
    csv, result = univariate
    replayed = replay_table(load_bundle(result.out_dir), read_table(csv))
    assert replayed.alerts == 0 and not replayed.is_anomaly.any()


@slow
def test_a_departure_beyond_the_tolerance_alerts_and_one_within_does_not(
        univariate: tuple[Path, FitResult], tmp_path: Path) -> None:
    _, result = univariate
    values = np.full(900, FLAT)
    within, beyond, below = 400, 600, 800
    values[within] = FLAT + 0.04  # tolerance 0.045
    values[beyond] = FLAT + 0.05
    values[below] = FLAT - 1.0
    table = read_table(write(tmp_path / "departures.csv", {"value": values}))
    replayed = replay_table(load_bundle(result.out_dir), table)
    starts = np.flatnonzero(alert_starts(replayed))
    assert starts.tolist() == [beyond, below]
    flat = replayed.scorers["flat"]
    assert flat[within] == pytest.approx(0.04 / 0.045, rel=1e-6)
    # beyond the tolerance the departure counts in the channel's scale (45.0): a departure of
    # 1.0 is 1 + 0.001 x (1.0 / 0.045 - 1), and it holds while the row is in the window
    length = load_bundle(result.out_dir).manifest.window.length
    assert flat[below] == pytest.approx(1.0 + 0.001 * (1.0 / 0.045 - 1.0), rel=1e-6)
    assert np.allclose(flat[below:below + length], flat[below])
    assert flat[below - 1] == 0.0 and flat[below + length] == 0.0
    start = next(e for e in replayed.events if e.state == "start")
    assert start.channels[0].name == "value" and start.channels[0].fence == "high"


@pytest.fixture(scope="module")
def multivariate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FitResult]:
    """Two moving channels and a constant one (`valve`, 3.5), with the int8 parity bound set
    out of reach: the autoencoder, no member here, must degrade, not block."""
    root = tmp_path_factory.mktemp("multi")
    rng = np.random.default_rng(0)
    n = 700
    t = np.arange(n)
    columns = {"a": np.sin(2 * np.pi * t / 50) + rng.normal(0, 0.1, n),
               "b": np.cos(2 * np.pi * t / 50) + rng.normal(0, 0.1, n),
               "valve": np.full(n, 3.5)}
    columns["valve"][500:504] = 3.51  # beyond its tolerance, 0.001 x 3.5 = 0.0035
    columns["valve"][600] = 3.502  # within it
    csv = write(root / "pump.csv", columns)
    config = dataclasses.replace(FitConfig(), rows=":400", min_int8_corr=1.01,
                                 **SMALL)  # type: ignore[arg-type]
    return csv, fit_bundle(csv, root / "bundle", config)


@slow
def test_a_constant_channel_among_others_is_kept_warned_and_scored(
        multivariate: tuple[Path, FitResult]) -> None:
    csv, result = multivariate
    m = load_bundle(result.out_dir).manifest
    assert m.channels == ["a", "b", "valve"]
    warning = next(w for w in result.warnings if "constant" in w)
    assert "'valve'" in warning and "'a'" not in warning
    assert m.ensemble.members == ["window_mahalanobis", "flat", "channel_kmeans", "stuck"]
    assert m.iqr.q1[2] == pytest.approx(-0.25) and m.iqr.q3[2] == pytest.approx(0.25)
    assert m.range is not None and m.range.high[2] == pytest.approx(1 / 1.2)
    assert m.training["distance_model"]["constant_channels"] == [2]
    bundle = load_bundle(result.out_dir)
    replayed = replay_table(bundle, read_table(csv))
    # the departure of 0.01 (about 2.9 tolerances) is seen by every per-channel scorer
    for name in ("flat", "iqr", "range"):
        assert np.nanmax(replayed.scorers[name][500:504]) >= 1.0, name
    assert replayed.scorers["flat"][600] < 1.0 and replayed.scorers["iqr"][600] < 1.0
    # and not by the window features, which give the constant channel no weight
    text = csv.read_text().replace(",3.510000\n", ",3.500000\n").replace(",3.502000\n",
                                                                          ",3.500000\n")
    (csv.parent / "still.csv").write_text(text)
    still = replay_table(bundle, read_table(csv.parent / "still.csv"))
    assert np.allclose(replayed.scorers["window_mahalanobis"],
                       still.scorers["window_mahalanobis"], equal_nan=True)
    assert alert_starts(replayed)[500:510].any()
    (start,) = [e for e, row in zip(replayed.events, replayed.event_rows, strict=True)
                if e.state == "start" and 500 <= row < 510]
    assert start.channels[0].name == "valve"


@slow
def test_a_non_member_failing_parity_is_kept_but_not_trusted(
        multivariate: tuple[Path, FitResult]) -> None:
    _, result = multivariate
    m = load_bundle(result.out_dir).manifest
    assert m.lstm_ae is not None and not m.lstm_ae.trusted
    assert "lstm_ae" not in m.ensemble.members
    tried = m.parity["quantization_attempts"]
    assert [t["quantization"] for t in tried][-1] == "16x8" and tried[0]["quantization"] == "int8"
    assert m.parity["lstm_ae_trusted"] is False
    assert m.training["lstm_ae"]["quantization"] == "int8"  # the fast model is kept
    warning = next(w for w in result.warnings if "strays" in w)
    assert "corr" in warning and "--min-int8-corr 1.01" in warning and "not trusted" in warning


@slow
def test_the_device_ignores_an_untrusted_autoencoder(multivariate: tuple[Path, FitResult]
                                                     ) -> None:
    _, result = multivariate
    bundle = load_bundle(result.out_dir)
    engine = ScoringEngine(bundle)
    rng = np.random.default_rng(1)
    windows = rng.normal(0, 1, (4, bundle.manifest.window.length, 3))
    scores = engine.score_windows(windows)
    assert np.isfinite(scores.raw["lstm_ae"]).all()  # still scored and reported
    # attribution from the per-channel size of the newest row, not from the LSTM errors
    assert np.allclose(scores.channel_error, np.square(windows[:, -1, :]))
    assert not np.allclose(scores.channel_error, engine.lstm_errors(windows))
    raw = json.loads((result.out_dir / "manifest.json").read_text())
    raw["ensemble"]["members"].append("lstm_ae")
    with pytest.raises(BundleError, match="not trusted"):
        parse_manifest(json.dumps(raw).encode())
    # a bundle of an older release, without the field, is trusted
    raw["ensemble"]["members"].remove("lstm_ae")
    raw["schema_version"] = 5
    del raw["lstm_ae"]["trusted"]
    assert parse_manifest(json.dumps(raw).encode()).lstm_ae.trusted  # type: ignore[union-attr]


@slow
def test_a_member_failing_parity_fails_the_fit(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    csv = write(tmp_path / "d.csv", {"a": rng.normal(size=300), "b": rng.normal(size=300)})
    config = dataclasses.replace(
        FitConfig(), min_int8_corr=1.01,
        ensemble_members=("window_mahalanobis", "lstm_ae"), **SMALL)  # type: ignore[arg-type]
    with pytest.raises(FitError) as caught:
        fit_bundle(csv, tmp_path / "out" / "bundle", config)
    text = str(caught.value)
    for needle in ("strays", "corr", "16x8", "ensemble member", "--ensemble-members",
                   "--min-int8-corr 1.01"):
        assert needle in text, text
    assert not (tmp_path / "out" / "bundle").exists()
    assert not list((tmp_path / "out").iterdir())


def test_the_recipe_adds_the_flat_member() -> None:
    assert resolve(FitConfig(), 3, ("c",)).ensemble_members == ("window_mahalanobis", "flat")
    assert resolve(FitConfig(), 1, ("v",)).ensemble_members == ("flat",)
    assert resolve(FitConfig(), 2, ("c", "d")).ensemble_members == ("flat",)
    chosen = resolve(FitConfig(ensemble_members=("window_mahalanobis",)), 3, ("c",))
    assert chosen.ensemble_members == ("window_mahalanobis",)  # an explicit choice is kept


def test_a_constant_channel_has_no_weight_in_the_window_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = np.column_stack([rng.normal(size=600), rng.normal(size=600), np.zeros(600)])
    lagged = np.lib.stride_tricks.sliding_window_view(rows, 8, axis=0).transpose(0, 2, 1)
    x = np.ascontiguousarray(lagged).reshape(len(lagged), -1)
    constant = np.array([False, False, True])
    model = fit_window_features(x[:400], 8, rows[:400], FitConfig(slow_ratio=0.5),
                                ["a", "b", "valve"], constant)
    assert model.info["constant_channels"] == [2] and not model.keep[2]
    assert np.isfinite(model.factor).all() and not model.factor[-1].any()  # valve's log sd
    moved = x.copy()
    moved[:, 2::3] = rng.normal(50.0, 20.0, moved[:, 2::3].shape)  # the valve moves: its
    # level and its spread are far off, and the distance does not change
    base = model.scores(x)["window_mahalanobis"]
    np.testing.assert_allclose(model.scores(moved)["window_mahalanobis"], base)
    assert base[400:].max() < 10.0  # the moving channels' distance stays sane
    export_distance(model, tmp_path / "distance.onnx")
    parity = onnx_parity(tmp_path / "distance.onnx", model, np.vstack([x, moved]))
    assert parity["window_mahalanobis"] < 1e-4, parity
