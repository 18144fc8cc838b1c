"""A tiny but real bundle for agent tests, built without training.

- `distance.onnx` (onnx.helper): `euclidean` = ||x|| and `mahalanobis` = ||x / sd|| over the
  last `lags` rows of the window, run by the real onnxruntime backend.
- `lstm_ae.tflite`: a Keras model with one Dense layer (kernel 0.5 * I, so it "reconstructs"
  x as x / 2 and the per-channel error grows with |x|), converted to full int8 by the real
  TFLiteConverter in a subprocess (a converter crash becomes an error, not a dead pytest).
- the manifest is written with `edge.bundle`; the thresholds are calibrated with the real
  `ScoringEngine` on synthetic normal windows (99.9% quantile of each raw score, x1.2).

Raw channel j is ``center_j + scale_j * N(0, 1)`` on normal data (see `normal_rows`).
`session_bundle` builds it once and caches it in pytest's cache directory, keyed by the
source of this file and of `edge/bundle.py`; tests get it as the `agent_bundle` fixture
(tests/conftest.py).

    python -m tests.agent_fixtures build DIR [WINDOW LSTM_UNITS]  # build a bundle into DIR
    python -m tests.agent_fixtures csv FILE ROWS   # write a synthetic 8-channel CSV
    python -m tests.agent_fixtures bench ROWS [WINDOW LSTM_UNITS]  # replay rows/s
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import (
    SCHEMA_VERSION,
    BundleError,
    ChannelPreprocess,
    Decision,
    DistanceSpec,
    Ensemble,
    IqrSpec,
    LstmAeSpec,
    Manifest,
    ModelFile,
    Preprocess,
    ScorerSpec,
    TensorSpec,
    Threshold,
    WindowSpec,
    checksums,
    load_bundle,
    write_manifest,
)

CHANNELS = 8
WINDOW = 16
LAGS = 2
START_TS = 1_700_000_000.0
FIXTURE_VERSION = "1"


def channel_names(n: int = CHANNELS) -> list[str]:
    return [f"ch{j}" for j in range(n)]


def centers(n: int = CHANNELS) -> np.ndarray:
    return 10.0 * (np.arange(n) + 1)


def scales(n: int = CHANNELS) -> np.ndarray:
    return 1.0 + 0.5 * np.arange(n)


def normal_rows(n_rows: int, seed: int = 0, n: int = CHANNELS) -> np.ndarray:
    """Normal data in raw sensor units, shape (n_rows, n)."""
    rng = np.random.default_rng(seed)
    return centers(n) + scales(n) * rng.standard_normal((n_rows, n))


def write_onnx(path: Path, width: int, sd: float = 1.5) -> None:
    import onnx
    from onnx import TensorProto, helper

    inv_sd = [1.0 / (sd + 0.1 * k) for k in range(width)]
    inv = helper.make_tensor("inv_sd", TensorProto.FLOAT, [width], inv_sd)
    nodes = [
        helper.make_node("ReduceSumSquare", ["x"], ["ss"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["ss"], ["euclidean"]),
        helper.make_node("Mul", ["x", "inv_sd"], ["xs"]),
        helper.make_node("ReduceSumSquare", ["xs"], ["ms"], axes=[1], keepdims=0),
        helper.make_node("Sqrt", ["ms"], ["mahalanobis"]),
    ]
    graph = helper.make_graph(
        nodes, "distance",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("euclidean", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("mahalanobis", TensorProto.FLOAT, ["n"])],
        initializer=[inv],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _convert_tflite(path: Path, window: int, channels: int, lstm_units: int = 0) -> None:
    """Runs in a subprocess: Keras Dense(0.5 * I) -> int8 TFLite. With `lstm_units`, an
    untrained unrolled LSTM autoencoder of the production shape instead (for timing only)."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(window, channels), batch_size=1)
    if lstm_units:
        layers = tf.keras.layers
        code = layers.LSTM(lstm_units, unroll=True)(inputs)
        seq = layers.LSTM(lstm_units, unroll=True, return_sequences=True)(
            layers.RepeatVector(window)(code))
        model = tf.keras.Model(inputs, layers.TimeDistributed(layers.Dense(channels))(seq))
    else:
        dense = tf.keras.layers.Dense(channels, use_bias=False)
        model = tf.keras.Model(inputs, dense(inputs))
        dense.set_weights([0.5 * np.eye(channels, dtype=np.float32)])
    rng = np.random.default_rng(1)

    def representative() -> Any:
        for _ in range(64):
            yield [np.clip(rng.standard_normal((1, window, channels)), -4, 4).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())


def write_tflite(path: Path, window: int, channels: int, lstm_units: int = 0) -> None:
    code = (f"from pathlib import Path; from tests.agent_fixtures import _convert_tflite; "
            f"_convert_tflite(Path({str(path)!r}), {window}, {channels}, {lstm_units})")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    if done.returncode != 0 or not path.is_file():
        raise RuntimeError(f"TFLite conversion failed ({done.returncode}): {done.stderr[-2000:]}")


def make_manifest(files: dict[str, str], thresholds: dict[str, float], n: int, window: int,
                  decision: Decision | None = None) -> Manifest:
    names = channel_names(n)
    width = LAGS * n
    return Manifest(
        schema_version=SCHEMA_VERSION, name="agent-fixture", version=FIXTURE_VERSION,
        created=datetime.now(timezone.utc).isoformat(), channels=names, sample_period_s=1.0,
        window=WindowSpec(length=window, stride=1),
        preprocess=Preprocess(
            channels=[ChannelPreprocess(name=c, center=float(m), scale=float(s), fill=float(m))
                      for c, m, s in zip(names, centers(n), scales(n), strict=True)],
            clip=8.0, max_gap_s=5.0),
        models={
            "lstm_ae": ModelFile(
                file="lstm_ae.tflite", runtime="tflite",
                inputs=[TensorSpec(name="input", shape=[1, window, n], dtype="int8")],
                outputs=[TensorSpec(name="output", shape=[1, window, n], dtype="int8")],
                weights_dtype="int8"),
            "distance": ModelFile(
                file="distance.onnx", runtime="onnx",
                inputs=[TensorSpec(name="x", shape=[-1, width], dtype="float32")],
                outputs=[TensorSpec(name="euclidean", shape=[-1], dtype="float32"),
                         TensorSpec(name="mahalanobis", shape=[-1], dtype="float32")]),
        },
        lstm_ae=LstmAeSpec(), distance=DistanceSpec(lags=LAGS),
        iqr=IqrSpec(q1=[-0.6745] * n, q3=[0.6745] * n, k=1.5),
        scorers=[
            ScorerSpec(name="lstm", kind="lstm_ae",
                       threshold=Threshold(value=thresholds["lstm"], method="quantile")),
            ScorerSpec(name="euclidean", kind="distance", output="euclidean",
                       threshold=Threshold(value=thresholds["euclidean"], method="quantile")),
            ScorerSpec(name="mahalanobis", kind="distance", output="mahalanobis",
                       threshold=Threshold(value=thresholds["mahalanobis"], method="quantile")),
            ScorerSpec(name="iqr", kind="iqr", threshold=Threshold(value=2.0, method="fence")),
        ],
        ensemble=Ensemble(rule="max", members=["lstm", "euclidean", "mahalanobis", "iqr"]),
        decision=decision or Decision(),
        files=files,
    )


def build_bundle(target: Path, n: int = CHANNELS, window: int = WINDOW,
                 lstm_units: int = 0) -> Path:
    """Build the fixture bundle into `target` (created) and return it; `lstm_units` > 0 puts
    an untrained unrolled LSTM-AE of that size in it (realistic timing, meaningless scores)."""
    from edge.engine import ScoringEngine
    from edge.preprocess import scale_rows

    target.mkdir(parents=True, exist_ok=True)
    write_onnx(target / "distance.onnx", LAGS * n)
    write_tflite(target / "lstm_ae.tflite", window, n, lstm_units)
    files = checksums(target, ["distance.onnx", "lstm_ae.tflite"])
    provisional = {"lstm": 1.0, "euclidean": 1.0, "mahalanobis": 1.0}
    write_manifest(target, make_manifest(files, provisional, n, window))
    engine = ScoringEngine(load_bundle(target))
    scaled = scale_rows(normal_rows(4000, seed=7, n=n), engine.manifest.preprocess)
    windows = np.lib.stride_tricks.sliding_window_view(scaled, window, axis=0)
    scores = engine.score_windows(np.ascontiguousarray(windows.transpose(0, 2, 1)))
    calibrated = {k: float(np.quantile(scores.raw[k], 0.999) * 1.2) for k in provisional}
    write_manifest(target, make_manifest(files, calibrated, n, window))
    return target


def _source_key() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for part in (Path(__file__), root / "edge" / "bundle.py"):
        digest.update(part.read_bytes())
    return digest.hexdigest()[:12]


def session_bundle(cache_dir: Path) -> Path:
    """The fixture bundle under `cache_dir`, rebuilt only when its sources changed."""
    target = cache_dir / f"agent-bundle-{_source_key()}"
    try:
        load_bundle(target)
        return target
    except BundleError:
        return build_bundle(target)


def cached_bundle_dir(config: Any, tmp_path_factory: Any) -> Path:
    """For a session fixture: the bundle in pytest's cache (or a temp dir without one). The
    directory is the one `tests/stress/common.py` reads."""
    cache = getattr(config, "cache", None)
    root = cache.mkdir("edge-agent-bundle") if cache is not None else tmp_path_factory.mktemp("b")
    return session_bundle(Path(root))


def synthetic_csv(path: Path, rows: int, *, seed: int = 0, fault: tuple[int, int, int] | None
                  = None, fault_size: float = 12.0) -> Path:
    """An 8-channel CSV with an ISO time column at 1 s; `fault` = (start, stop, channel) adds
    `fault_size` standard deviations to one channel on rows [start, stop) (labelled 1)."""
    data = normal_rows(rows, seed=seed)
    labels = np.zeros(rows, dtype=int)
    if fault is not None:
        start, stop, channel = fault
        data[start:stop, channel] += fault_size * scales()[channel]
        labels[start:stop] = 1
    names = channel_names()
    lines = [",".join(["timestamp", *names, "anomaly"])]
    for i in range(rows):
        stamp = datetime.fromtimestamp(START_TS + i, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(",".join([stamp, *(f"{v:.4f}" for v in data[i]), str(labels[i])]))
    path.write_text("\n".join(lines) + "\n")
    return path


def bench(rows: int, window: int = WINDOW, lstm_units: int = 0) -> None:
    """Replay throughput at stride 1 on a synthetic 8-channel file (one core)."""
    import tempfile

    from edge.replay import replay_table
    from edge.table import read_table

    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp) / "bundle", CHANNELS, window, lstm_units)
        table = read_table(synthetic_csv(Path(tmp) / "data.csv", rows, fault=(rows // 2,
                                                                             rows // 2 + 60, 3)))
        for stride in (1, 4):
            result = replay_table(bundle, table, stride=stride)
            print(f"window {window}, lstm units {lstm_units or 'none (Dense)'}, stride {stride}: "
                  f"{rows} rows in {result.elapsed_s:.2f} s = {result.rows_per_s:,.0f} rows/s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        shape = [int(a) for a in sys.argv[3:5]]
        print(build_bundle(Path(sys.argv[2]), CHANNELS, *shape))
    elif sys.argv[1:2] == ["bench"]:
        bench(*[int(a) for a in sys.argv[2:5]])
    elif sys.argv[1:2] == ["csv"]:
        print(synthetic_csv(Path(sys.argv[2]), int(sys.argv[3])))
    else:
        sys.exit(__doc__)


def bundle_variant(source: Path, target: Path, **update: Any) -> Path:
    """A copy of the bundle with manifest fields changed (a new, valid bundle)."""
    from edge.bundle import load_bundle

    shutil.copytree(source, target)
    manifest = load_bundle(target).manifest
    write_manifest(target, manifest.model_copy(update=update))
    return target
