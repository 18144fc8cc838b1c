"""The distance model's TFLite twin, `distance.tflite`: the maths of `distance.onnx` in
TensorFlow built-in ops, float32, for a device that has a TFLite runtime but no onnxruntime
(32-bit Raspberry Pi OS: `tflite-runtime` has an armv7l wheel, onnxruntime has none).

`twin_constants` turns a fitted distance model (`export.linear.LinearModel`,
`export.window_features.WindowFeatureModel`, `export.lag_kmeans.LagKmeansModel`) into its kind
and float64 constants; the child process (`python -m export.tflite_distance CONSTANTS OUT`)
builds the same computation as a `tf.function` with input `x` float32 [N, lags*C] and one
float32 [N] output per ONNX output, saved with those names as its signature, and converts it
with built-in ops only. Float32 throughout (TFLite's built-in kernels have no float64): where
the ONNX graph subtracts two large numbers the twin is rearranged so that it does not (the PCA
residual is one product with the projection onto the discarded components; a Mahalanobis
distance is the length of the difference times a factor A of the precision, P = A A^T), so
its rounding stays relative to the result. `twin_parity` measures it against the ONNX model
and the float64 reference. int8 is not offered: the model is a few KB, and its square roots
and logarithms over inputs that reach +/- the clip would not keep parity in 8 bits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import ModelFile, TensorSpec
from edge.runtimes.distance import TWIN_SUFFIX
from edge.runtimes.onnx import OnnxModel
from edge.runtimes.tflite import TfliteSignatureModel
from export.errors import FitError
from export.onnx_export import INPUT, DistanceModel, relative_diff

FloatArray = npt.NDArray[np.float64]


def _factor(precision: FloatArray) -> FloatArray:
    """A with A A^T = precision (eigen-decomposition, so also for a semi-definite one)."""
    values, vectors = np.linalg.eigh((precision + precision.T) / 2.0)
    return np.asarray(vectors * np.sqrt(np.maximum(values, 0.0))[None, :])


def twin_constants(model: DistanceModel) -> dict[str, Any]:
    """The kind, output names and float64 constants the child builds the twin from."""
    from export.lag_kmeans import LagKmeansModel
    from export.linear import LinearModel
    from export.window_features import WindowFeatureModel

    out: dict[str, Any] = {"outputs": np.array(model.outputs), "width": model.n_features}
    if isinstance(model, LinearModel):
        components = np.asarray(model.pca.components_, dtype=np.float64)  # (d, n)
        if getattr(model.pca, "whiten", False):
            components = components / np.sqrt(model.pca.explained_variance_)[:, None]
        residual = np.eye(components.shape[1]) - model.pca.components_.T @ model.pca.components_
        out.update(kind="linear", mean=model.pca.mean_, projection=components.T,
                   residual=residual, centroids=model.kmeans.cluster_centers_,
                   factors=np.stack([_factor(p) for p in model.precisions]))
    elif isinstance(model, WindowFeatureModel):
        twins = model.twins if model.twins is not None else np.zeros((model.channels, 0))
        out.update(kind="window_features", lags=model.lags, channels=model.channels,
                   keep=np.flatnonzero(model.keep), eps=model.eps, center=model.center,
                   factor=model.factor, twins=twins)
    elif isinstance(model, LagKmeansModel):
        out.update(kind="lag_kmeans", channels=model.channels,
                   scales=np.array(list(model.centroids), dtype=np.int64),
                   **{f"centroids_{s}": c for s, c in model.centroids.items()})
    else:
        raise FitError(f"no TFLite twin for a distance model of type {type(model).__name__}")
    return out


class TwinJob:
    """The twin's conversion, started in a child process (`start`) so that it runs while the
    autoencoder trains; `finish` waits for it and returns its manifest entry."""

    def __init__(self, model: DistanceModel, out: Path, timeout_s: float = 900.0) -> None:
        self.model, self.out, self.timeout_s = model, out, timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-train-twin-")
        constants = Path(self._tmp.name) / "constants.npz"
        np.savez(constants, **twin_constants(model))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore",
               "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0")}
        self._stderr = (Path(self._tmp.name) / "stderr.txt").open("w+")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "export.tflite_distance", str(constants), str(out)],
            stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)

    def finish(self) -> ModelFile:
        """Wait for the conversion; FitError when it failed or took longer than allowed."""
        try:
            code = self._process.wait(self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            self._process.kill()
            self._process.wait()
            raise FitError(f"the distance model's TFLite conversion took longer than "
                           f"{self.timeout_s:.0f}s (--convert-timeout-s)") from exc
        finally:
            self._stderr.seek(0)
            text = self._stderr.read()
            self._stderr.close()
            self._tmp.cleanup()
        if code != 0 or not self.out.is_file():
            lines = [line for line in text.strip().splitlines() if line.strip()][-6:]
            raise FitError(f"TFLite conversion of the distance model failed (exit code {code}):"
                           f" {' | '.join(lines) or '(no output)'}")
        loaded = TfliteSignatureModel(self.out)
        if sorted(loaded.outputs) != sorted(self.model.outputs):
            raise FitError(f"the distance model's TFLite twin has outputs {loaded.outputs}, "
                           f"expected {list(self.model.outputs)}")
        n = self.model.n_features
        return ModelFile(
            file=self.out.name,
            runtime="tflite",
            inputs=[TensorSpec(name=INPUT, shape=[-1, n], dtype="float32")],
            outputs=[TensorSpec(name=name, shape=[-1], dtype="float32")
                     for name in self.model.outputs],
            weights_dtype="float32",
        )


def export_twin(model: DistanceModel, out: Path, timeout_s: float = 900.0) -> ModelFile:
    """Write `out` (float32 TFLite, built-in ops) and return its manifest entry."""
    return TwinJob(model, out, timeout_s).finish()


def twin_parity(twin_path: Path, onnx_path: Path, model: DistanceModel,
                x: FloatArray) -> dict[str, Any]:
    """Max relative difference per output of the twin against the float64 reference and
    against onnxruntime, on float32 inputs `x` (N, lags*C)."""
    x32 = np.asarray(x, dtype=np.float32)
    got = TfliteSignatureModel(twin_path).run(x32)
    onnx = OnnxModel(onnx_path).run(x32)
    expected = model.scores(x32.astype(np.float64))
    vs_ref = {n: relative_diff(got[n].astype(np.float64).reshape(-1), expected[n])
              for n in model.outputs}
    vs_onnx = {n: relative_diff(got[n].astype(np.float64).reshape(-1),
                                onnx[n].astype(np.float64).reshape(-1)) for n in model.outputs}
    return {"max_rel_diff": max(vs_ref.values()), "max_rel_diff_by_output": vs_ref,
            "vs_onnx_max_rel_diff": max(vs_onnx.values()),
            "vs_onnx_max_rel_diff_by_output": vs_onnx}


# -- in fit_bundle ----------------------------------------------------------------------------
TWIN_FILE = "distance.tflite"


def start_twin(build: Any) -> None:
    """Start converting `build.distance` to `TWIN_FILE` (export.fit's `_Build`)."""
    build.twin = TwinJob(build.distance, build.folder / TWIN_FILE, build.config.convert_timeout_s)


def attach_twin(build: Any) -> None:
    """Wait for the twin; list it in `build.models`. A failed conversion is a warning: the
    bundle is whole without it, for devices with onnxruntime."""
    job, build.twin = build.twin, None
    if job is None:
        return
    key = "distance" + TWIN_SUFFIX
    try:
        build.models[key] = job.finish()
    except FitError as exc:
        (build.folder / TWIN_FILE).unlink(missing_ok=True)
        build.warn(f"no TFLite twin of the distance model ({exc}): devices without "
                   "onnxruntime (32-bit Raspberry Pi OS) cannot use this bundle")
        return
    size = (build.folder / TWIN_FILE).stat().st_size / 1024
    build.say(f"      {TWIN_FILE}: the distance model as float32 TFLite (built-in ops), for "
              f"devices without onnxruntime, {size:.1f} KB")


def check_twin(build: Any, every: Any, thresholds: dict[str, Any], parity: dict[str, Any]
               ) -> None:
    """Parity of the twin (export.fit's `_calibrate`): its outputs against the float64
    reference and onnxruntime on the held-out and all windows' inputs, and the device engine
    on the twin against it on ONNX over every window (`every`, scored with provisional
    thresholds 1.0, so its normalised scores are the stepped ones): every scorer's and the
    ensemble's decisions with the `thresholds` must be the same. Otherwise the twin is left
    out of the bundle with a warning that gives the figures; they go to `parity`."""
    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine, combine
    from export.linear import lag_features
    from export.scoring import score_file

    key = "distance" + TWIN_SUFFIX
    if key not in build.models:
        return
    prep, config = build.prep, build.config
    figures: dict[str, Any] = {"file": TWIN_FILE, "dtype": "float32"}
    for label, ends in (("heldout", prep.calib_ends), ("all_rows", every.ends)):
        features = lag_features(prep.windows(ends, config.window), build.lags, build.distance_clip)
        figures[label] = {"windows": len(ends), **twin_parity(
            build.folder / TWIN_FILE, build.folder / build.models["distance"].file,
            build.distance, features)}
    for name in ("max_rel_diff", "vs_onnx_max_rel_diff"):
        figures[name] = max(figures["heldout"][name], figures["all_rows"][name])
    engine = ScoringEngine(load_bundle(build.folder), distance_runtime="tflite")
    twin = score_file(engine, prep.scaled, every.ends, timestamps=prep.data.timestamps,
                         missing=prep.missing)
    value = {name: t.value for name, t in thresholds.items()}
    changed: dict[str, int] = {}
    ensembles = []
    for scores in (every, twin):
        normalized = {n: scores.normalized[n] / value[n] for n in value}
        ensembles.append(combine(engine.manifest.ensemble, normalized) >= 1.0)
    for name in value:
        a, b = every.normalized[name] / value[name], twin.normalized[name] / value[name]
        if int(np.sum((a >= 1.0) != (b >= 1.0))):
            changed[name] = int(np.sum((a >= 1.0) != (b >= 1.0)))
    changed_ensemble = int(np.sum(ensembles[0] != ensembles[1]))
    diffs = [relative_diff(np.nan_to_num(twin.normalized[n]), np.nan_to_num(every.normalized[n]))
             for n in build.distance.scorers if n in value]
    figures.update({
        "engine_windows": len(every.ends),
        "engine_scores_max_rel_diff_vs_onnx": max(diffs, default=0.0),
        "scorer_decisions_changed": changed,
        "ensemble_decisions_changed": changed_ensemble,
        "reference": "float64 numpy/scikit-learn and onnxruntime on the same float32 inputs; "
                     "the device engine on the twin against the engine on distance.onnx",
    })
    problem = []
    if figures["max_rel_diff"] > config.max_onnx_rel_diff:
        problem.append(f"max rel diff {figures['max_rel_diff']:.2g} from the float64 reference "
                       f"(bound {config.max_onnx_rel_diff:g}, --max-onnx-rel-diff)")
    if changed or changed_ensemble:
        problem.append(f"decisions changed on {changed_ensemble} of {len(every.ends)} windows "
                       f"(ensemble), by scorer {changed}")
    figures["kept"] = not problem
    parity["distance_tflite"] = figures
    if problem:
        del build.models[key]
        (build.folder / TWIN_FILE).unlink(missing_ok=True)
        build.warn(f"the TFLite twin of the distance model strays from distance.onnx "
                   f"({'; '.join(problem)}): left out, so devices without onnxruntime "
                   "(32-bit Raspberry Pi OS) cannot use this bundle")
        return
    build.say(f"      {TWIN_FILE} vs its float64 reference: max rel diff "
              f"{figures['max_rel_diff']:.2g} (vs onnxruntime "
              f"{figures['vs_onnx_max_rel_diff']:.2g}); the device engine on it: the same "
              f"decisions on all {len(every.ends)} windows")


# -- the child process -----------------------------------------------------------------------
def _graph(c: dict[str, Any]) -> Any:
    """The twin as a tf.function of `x` (float32 [N, width]) returning {output: [N]}."""
    import tensorflow as tf

    def f32(name: str) -> Any:
        return tf.constant(np.asarray(c[name], dtype=np.float32))

    kind, names = str(c["kind"]), [str(n) for n in c["outputs"]]
    spec = tf.TensorSpec([None, int(c["width"])], tf.float32, name=INPUT)

    if kind == "linear":
        mean, projection, residual = f32("mean"), f32("projection"), f32("residual")
        centroids, factors = f32("centroids"), f32("factors")  # (K, d), (K, d, d)
        k = int(c["centroids"].shape[0])

        @tf.function(input_signature=[spec])
        def linear(x: Any) -> dict[str, Any]:
            centred = x - mean
            z = tf.matmul(centred, projection)
            spe = tf.reduce_sum(tf.square(tf.matmul(centred, residual)), axis=1)
            diff = tf.expand_dims(z, 0) - tf.expand_dims(centroids, 1)  # (K, N, d)
            d2 = tf.reduce_sum(tf.square(diff), axis=2)  # (K, N)
            near = tf.one_hot(tf.argmin(d2, axis=0), k, axis=0, dtype=tf.float32)
            m2 = tf.reduce_sum(tf.square(tf.matmul(diff, factors)), axis=2)  # (K, N)
            values = (spe, tf.sqrt(tf.reduce_min(d2, axis=0)),
                      tf.sqrt(tf.reduce_sum(near * m2, axis=0)))
            return dict(zip(names, values, strict=True))

        return linear

    if kind == "window_features":
        lags, channels = int(c["lags"]), int(c["channels"])
        keep = [int(i) for i in c["keep"]]
        eps, center, factor, twins = f32("eps"), f32("center"), f32("factor"), f32("twins")
        with_twins = int(c["twins"].shape[1]) > 0

        @tf.function(input_signature=[spec])
        def window(x: Any) -> dict[str, Any]:
            rows = tf.reshape(x, [-1, lags, channels])
            mean = tf.reduce_mean(rows, axis=1)
            sd = tf.sqrt(tf.reduce_mean(tf.square(rows - tf.expand_dims(mean, 1)), axis=1))
            parts = [tf.gather(mean, keep, axis=1)] if keep else []
            parts.append(tf.math.log(sd + eps))
            if with_twins:
                parts.append(tf.matmul(mean, twins))
            projected = tf.matmul(tf.concat(parts, axis=1) - center, factor)
            return {names[0]: tf.sqrt(tf.reduce_sum(tf.square(projected), axis=1))}

        return window

    if kind == "lag_kmeans":
        width, channels = int(c["width"]), int(c["channels"])
        scales = [int(s) for s in c["scales"]]
        centres = {s: f32(f"centroids_{s}") for s in scales}

        @tf.function(input_signature=[spec])
        def lag(x: Any) -> dict[str, Any]:
            out = {}
            for name, s in zip(names, scales, strict=True):
                tail = x[:, width - s * channels:]
                d2 = tf.reduce_sum(tf.square(tf.expand_dims(tail, 1) - centres[s]), axis=2)
                out[name] = tf.sqrt(tf.maximum(tf.reduce_min(d2, axis=1), 0.0))
            return out

        return lag
    raise ValueError(f"unknown distance model kind {kind!r}")


def convert(constants: Path, out: Path) -> None:
    """Child-process side: build the twin from `constants` and write float32 TFLite to `out`."""
    import tensorflow as tf

    with np.load(constants) as data:
        c = {key: data[key] for key in data.files}
    function = _graph(c)
    module = tf.Module()
    module.f = function
    with tempfile.TemporaryDirectory(prefix="edge-twin-saved-") as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": function})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        out.write_bytes(converter.convert())


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
