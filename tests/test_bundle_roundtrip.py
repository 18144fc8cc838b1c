"""Fit a tiny bundle once, then check it with the device code: round trip, parity, int8,
checksum and schema refusals. Synthetic data made here with numpy (no shared data sets)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import BundleError, load_bundle
from edge.engine import ScoringEngine
from edge.preprocess import ForwardFill, reading_to_raw, scale_rows
from edge.runtimes.tflite import TfliteModel
from edge.table import read_table
from export.cli import main
from export.config import FitConfig
from export.fit import default_lags, fit_bundle

pytestmark = pytest.mark.slow

N_ROWS = 700
FAULT = slice(560, 620)
TRAIN_LABELLED = slice(200, 211)
TINY = [
    "--window",
    "8",
    "--units",
    "8",
    "--epochs",
    "6",
    "--patience",
    "3",
    "--calib-samples",
    "64",
    "--batch-size",
    "16",
]


def synthetic_csv(path: Path, seed: int = 0) -> Path:
    """Three related channels at 1 Hz; a labelled fault (level shift plus broken correlation)
    in the test part and a short labelled one inside the training rows; a few NaN cells,
    one duplicate and one out-of-order time stamp; a changepoint column to ignore."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_ROWS, dtype=float)
    a = np.sin(2 * np.pi * t / 50) + 0.1 * rng.normal(size=N_ROWS)
    b = 0.8 * a + 0.3 * np.cos(2 * np.pi * t / 30) + 0.1 * rng.normal(size=N_ROWS)
    c = rng.lognormal(1.0, 0.4, size=N_ROWS)  # positive and skewed: log1p territory
    labels = np.zeros(N_ROWS, dtype=int)
    for fault in (FAULT, TRAIN_LABELLED):
        a[fault] += 4.0
        b[fault] = -b[fault]
        labels[fault] = 1
    stamps = np.datetime64("2024-03-01T00:00:00") + t.astype(int).astype("timedelta64[s]")
    rows = []
    for i in range(N_ROWS):
        cells = [f"{stamps[i]}Z", f"{a[i]:.5f}", f"{b[i]:.5f}", f"{c[i]:.5f}", str(labels[i]), "0"]
        if i % 97 == 5:
            cells[2] = ""
        rows.append(",".join(cells))
    rows.insert(101, rows[100])  # a duplicate time stamp
    rows[300], rows[301] = rows[301], rows[300]  # out of order
    path.write_text("timestamp,a,b,c,anomaly,changepoint\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    root = tmp_path_factory.mktemp("fit")
    csv = synthetic_csv(root / "pump.csv")
    out = root / "bundles" / "pump"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["fit", str(csv), "--out", str(out), "--rows", ":450", *TINY])
    assert code == 0, printed.getvalue()
    yield csv, out, printed.getvalue()


def test_progress_and_labelled_metrics_printed(fitted: tuple[Path, Path, str]) -> None:
    _, out, printed = fitted
    for stage in range(1, 8):
        assert f"[{stage}/7]" in printed
    assert "epoch   1/6" in printed
    for scorer in ("lstm_ae", "window_mahalanobis", "iqr", "ensemble"):
        assert any(line.split()[:1] == [scorer] for line in printed.splitlines()), scorer
    assert "precision" in printed and "test rows" in printed
    assert f"bundle: {out}" in printed


def test_bundle_files_and_no_leftovers(fitted: tuple[Path, Path, str]) -> None:
    _, out, _ = fitted
    names = sorted(p.name for p in out.iterdir())
    assert names == ["distance.onnx", "distance.tflite", "lstm_ae.tflite", "manifest.json",
                     "report"]
    report = sorted(p.name for p in (out / "report").iterdir())
    assert report == [
        "loss.png",
        "metrics.json",
        "report.html",
        "score_distributions.png",
        "scores_over_time.png",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["pump"]  # no temp dirs left
    assert out.stat().st_mode & 0o777 == 0o755


def test_manifest_records_the_cleaning(fitted: tuple[Path, Path, str]) -> None:
    _, out, _ = fitted
    m = load_bundle(out).manifest
    assert m.channels == ["a", "b", "c"]
    assert m.training["duplicate_stamps_dropped"] == 1
    assert m.training["anomalous_training_rows_left_out"] == 11
    assert m.sample_period_s == 1.0 and m.preprocess.max_gap_s == 5.0
    transforms = {c.name: c.transform for c in m.preprocess.channels}
    assert transforms["c"] in ("log1p", "sqrt") and transforms["a"] == "none"
    assert m.distance is not None and m.distance.lags == 8 and not m.distance.clip_inputs
    assert [s.name for s in m.scorers] == ["lstm_ae", "window_mahalanobis", "iqr", "range",
                                          "channel_kmeans", "stuck"]
    assert m.range is not None and "range" not in m.ensemble.members  # scored, no member
    assert all(s.threshold.method in ("quantile", "fence", "tolerance", "run")
               for s in m.scorers)
    assert all(s.likelihood is None for s in m.scorers)
    assert m.ensemble.members == ["window_mahalanobis", "channel_kmeans", "stuck"]
    assert m.training["config"]["recipe"] == "multivariate"
    assert m.training["distance_model"]["kind"] == "window_features"
    latency = m.training["latency_ms_per_window"]
    assert 0 < latency["tflite"] <= latency["engine"] < 50


def _device_windows(csv: Path, out: Path) -> tuple[ScoringEngine, np.ndarray, np.ndarray]:
    """Score every window of the file the way the agent would: reading by reading."""
    engine = ScoringEngine(load_bundle(out))
    m = engine.manifest
    table = read_table(csv)
    order = np.argsort(table.timestamps, kind="stable")
    fill = ForwardFill(m.preprocess)
    rows = []
    for i in order:
        reading = dict(zip(table.channels, table.values[i].tolist(), strict=True))
        rows.append(fill(reading_to_raw(reading, m)))
    scaled = scale_rows(np.vstack(rows), m.preprocess)
    length = m.window.length
    windows = np.lib.stride_tricks.sliding_window_view(scaled, length, axis=0)
    windows = windows.transpose(0, 2, 1)
    assert table.labels is not None
    return engine, windows, table.labels[order][length - 1 :]


def test_round_trip_scores_clean_low_and_faulty_high(fitted: tuple[Path, Path, str]) -> None:
    csv, out, _ = fitted
    engine, windows, labels = _device_windows(csv, out)
    scores = engine.score_windows(windows)
    ends = np.arange(len(windows)) + engine.manifest.window.length - 1
    clean = (~labels) & (ends > 470)  # normal rows after the training rows
    faulty = labels & (ends > 470)
    assert np.median(scores.ensemble[clean]) < 1.0
    assert np.median(scores.ensemble[faulty]) > 1.0
    assert np.mean(scores.ensemble[faulty] >= 1.0) > 0.8
    assert scores.channel_error.shape == (len(windows), 3)


def test_parity_figures_within_bounds(fitted: tuple[Path, Path, str]) -> None:
    _, out, _ = fitted
    parity = load_bundle(out).manifest.parity
    assert parity["onnx_max_rel_diff"] < 1e-4
    assert parity["int8_float_corr"] >= 0.9
    assert parity["int8_float_agreement"] >= 0.9
    assert parity["int8_float_corr_all_rows"] >= 0.9
    assert parity["heldout"]["windows"] > 50


def test_tflite_tensors_really_int8(fitted: tuple[Path, Path, str]) -> None:
    _, out, _ = fitted
    bundle = load_bundle(out)
    dtypes = TfliteModel(bundle.model_path("lstm_ae")).tensor_dtypes()
    assert "int8" in dtypes
    assert "float32" not in dtypes
    spec = bundle.manifest.models["lstm_ae"]
    assert spec.inputs[0].dtype == "int8" and spec.outputs[0].dtype == "int8"
    assert spec.inputs[0].scale is not None and spec.weights_dtype == "int8"


def test_tampered_file_is_refused(fitted: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, out, _ = fitted
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    data = bytearray((copy / "distance.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "distance.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"distance\.onnx does not match its sha256"):
        load_bundle(copy)


def test_report_files_may_be_stripped(fitted: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, out, _ = fitted
    copy = Path(shutil.copytree(out, tmp_path / "device"))
    shutil.rmtree(copy / "report")
    assert load_bundle(copy).manifest.name == "pump"


def test_unknown_schema_version_is_refused(fitted: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, out, _ = fitted
    copy = Path(shutil.copytree(out, tmp_path / "future"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        load_bundle(copy)


def test_force_replaces_and_forecast_residual(tmp_path: Path) -> None:
    """In-process API: a forecast column becomes a residual channel the device derives."""
    rng = np.random.default_rng(7)
    n = 400
    t = np.arange(n)
    value = 10 + np.sin(2 * np.pi * t / 40) + 0.1 * rng.normal(size=n)
    predicted = 10 + np.sin(2 * np.pi * t / 40)
    value[330:350] += 3.0
    lines = ["timestamp,value,predicted"] + [
        f"{1_700_000_000 + 60 * i},{value[i]:.4f},{predicted[i]:.4f}" for i in range(n)
    ]
    csv = tmp_path / "nab.csv"
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "nab"
    out.mkdir()
    config = FitConfig(
        forecast_column="predicted",
        rows=":300",
        window=8,
        units=8,
        epochs=4,
        patience=2,
        lags=4,
        calib_samples=32,
        force=True,
        report=False,
    )
    result = fit_bundle(csv, out, config)
    m = result.manifest
    assert m.channels == ["value", "value_residual"]
    assert m.preprocess.forecast is not None and m.preprocess.forecast.forecast == "predicted"
    assert m.sample_period_s == 60.0
    assert m.distance is not None and m.distance.lags == 4
    assert m.models["distance"].inputs[0].shape == [-1, 8]
    assert not (out / "report").exists()
    raw = reading_to_raw({"value": 12.0, "predicted": 10.5}, m)
    assert raw.tolist() == [12.0, 1.5]
    assert result.metrics == {}  # no label column
    assert result.file_bytes["lstm_ae.tflite"] > 0 and result.bundle_bytes > 0


def test_default_lags_follow_the_distance_model() -> None:
    assert default_lags(1, FitConfig()) == 8  # lag_kmeans: the largest lag scale
    assert default_lags(1, FitConfig(lag_scales=(6, 2))) == 6
    assert default_lags(1, FitConfig(window=4)) == 4
    assert default_lags(5, FitConfig()) == 8  # window_features: the feature window
    assert default_lags(5, FitConfig(distance_model="pca_kmeans")) == 1
    assert default_lags(1, FitConfig(distance_model="pca_kmeans")) == 8
    assert default_lags(5, FitConfig(lags=3)) == 3
