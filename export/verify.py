"""Checks of a freshly built bundle: ONNX vs float64 reference, int8 vs float, int8 tensors, speed.

Every check runs the device's own code (`edge.bundle.load_bundle`, `edge.engine.ScoringEngine`,
the runtimes in `edge.runtimes`) against the workstation references (scikit-learn/numpy in
float64, the float Keras model) on the same inputs.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import load_bundle
from edge.engine import ScoringEngine
from export.config import FitConfig
from export.errors import FitError
from export.linear import lag_features
from export.onnx_export import DistanceModel, onnx_parity
from export.prepare import Prepared
from export.scoring import WindowScores

FloatArray = npt.NDArray[np.float64]


def correlation(a: FloatArray, b: FloatArray) -> float:
    """Pearson correlation; 1.0 for two equal constant series."""
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def parity(
    prep: Prepared,
    config: FitConfig,
    *,
    distance_path: Path,
    linear: DistanceModel,
    ae_model: Any,
    lags: int,
    distance_clip: float | None,
    scored: dict[str, WindowScores],
    threshold: float,
) -> dict[str, Any]:
    """Figures per window set in `scored` (e.g. held-out normal, every window of the file):
    max relative ONNX-vs-scikit-learn difference, and the int8 engine's LSTM window scores
    against the float Keras model's (correlation, agreement of the threshold decisions)."""
    from export.lstm_ae import window_errors

    out: dict[str, Any] = {}
    for label, scores in scored.items():
        windows = prep.windows(scores.ends, config.window)
        features = lag_features(windows, lags, distance_clip)
        per_output = onnx_parity(distance_path, linear, features)
        ref = window_errors(ae_model, windows, config.clip, config.lstm_reduce).mean(axis=1)
        got = scores.raw["lstm_ae"]
        agree = float(np.mean((got >= threshold) == (ref >= threshold)))
        out[label] = {
            "windows": len(scores.ends),
            "onnx_max_rel_diff": max(per_output.values()),
            "onnx_max_rel_diff_by_output": per_output,
            "int8_float_corr": round(correlation(got, ref), 6),
            "int8_float_agreement": round(agree, 6),
            "int8_float_max_abs_diff": float(np.max(np.abs(got - ref))),
        }
    return out


def summarise(figures: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `parity`: the held-out figures on top, every set below."""
    held, every = figures["heldout"], figures["all_rows"]
    return {
        "onnx_max_rel_diff": max(f["onnx_max_rel_diff"] for f in figures.values()),
        "int8_float_corr": held["int8_float_corr"],
        "int8_float_agreement": held["int8_float_agreement"],
        "int8_float_corr_all_rows": every["int8_float_corr"],
        "int8_float_agreement_all_rows": every["int8_float_agreement"],
        "reference": "float Keras model and scikit-learn/numpy float64 on the same inputs; "
        "relative difference |a-b| / max(|b|, 1e-6)",
        **figures,
    }


def check_onnx(figures: dict[str, Any], config: FitConfig) -> None:
    """FitError when ONNX differs from its float64 reference beyond its bound."""
    if figures["onnx_max_rel_diff"] > config.max_onnx_rel_diff:
        raise FitError(
            f"distance.onnx differs from scikit-learn by {figures['onnx_max_rel_diff']:.2g}"
            f" (relative; bound {config.max_onnx_rel_diff:g}, --max-onnx-rel-diff)"
        )


def int8_problem(figures: dict[str, Any], config: FitConfig) -> str | None:
    """What of the quantised autoencoder's parity falls outside its bounds (None: nothing),
    as the figures and the bounds with their options."""
    corr, agree = figures["int8_float_corr"], figures["int8_float_agreement"]
    # Held-out normal scores can be nearly constant (a quiet series): their correlation is
    # then noise, so the correlation over every window of the file (where the scores do vary)
    # also counts; the decisions must agree on the held-out windows either way.
    corr_all = figures.get("int8_float_corr_all_rows", corr)
    if max(corr, corr_all) >= config.min_int8_corr and agree >= config.min_int8_agreement:
        return None
    return (
        f"score correlation {corr:.3f} on held-out windows and {corr_all:.3f} on all rows "
        f"(bound {config.min_int8_corr}, --min-int8-corr), decision agreement {agree:.1%} on "
        f"held-out windows (bound {config.min_int8_agreement:.0%}, --min-int8-agreement)"
    )


def verify_bundle(folder: Path) -> tuple[ScoringEngine, dict[str, int]]:
    """Load the bundle as the device does; FitError unless the TFLite graph is all integer
    with int8 tensors (read from the interpreter, not from the manifest)."""
    engine = ScoringEngine(load_bundle(folder))
    if engine.tflite is None:
        raise FitError("the bundle has no TFLite model")
    counts: dict[str, int] = {}
    for dtype in engine.tflite.tensor_dtypes():
        counts[dtype] = counts.get(dtype, 0) + 1
    if counts.get("int8", 0) == 0 or any(d.startswith("float") for d in counts):
        raise FitError(f"the TFLite model is not full-integer int8: tensor dtypes {counts}")
    return engine, counts


def latency(engine: ScoringEngine, window: FloatArray, runs: int = 200) -> dict[str, Any]:
    """Median milliseconds to score one window on this machine, one thread: the whole engine
    and the TFLite model alone."""
    assert engine.tflite is not None
    clipped = np.clip(window, -engine.clip, engine.clip).astype(np.float32)
    timings: dict[str, list[float]] = {"engine": [], "tflite": []}
    for i in range(runs + 10):
        t0 = time.perf_counter()
        engine.score_windows(window)
        t1 = time.perf_counter()
        engine.tflite.run(clipped)
        t2 = time.perf_counter()
        if i >= 10:  # warm-up
            timings["engine"].append(t1 - t0)
            timings["tflite"].append(t2 - t1)
    out: dict[str, Any] = {k: round(1000 * float(np.median(v)), 4) for k, v in timings.items()}
    out["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    return out
