"""The multivariate distance model: features of the last `lags` rows, Mahalanobis distance.

Per window, over its last `lags` scaled rows (the distance model's input, unclipped):

- the mean of each channel that is not *slow*,
- ln(population standard deviation + eps) of every channel, and
- for each member of a twin group (`export.twins`), its mean minus its twins' mean: a sensor
  that disagrees with its co-located twins, whatever the weather does to all of them.

A channel is slow when its level wanders on the scale of the training stretch: the standard
deviation of its trailing `span`-row mean exceeds `ratio` x its own standard deviation
(temperatures, pressures that drift). Its level drifts after a fault and on its own, so only
its short-term variability is a feature. The score is the Mahalanobis distance of the features
to their training mean under a covariance estimated (Ledoit-Wolf by default) on standardised
features, so the shrinkage treats every feature alike whatever its unit. A channel constant in
training has no feature: its features would have no variance (a singular covariance, or a
shrinkage term that weighs them at random); the `flat` scorer judges it instead.

The whole computation runs in the ONNX graph (`WindowFeatureModel.onnx`): Reshape to
[N, lags, C], ReduceMean, Gather, Sqrt/Log, Concat, centre, MatMul by a factor A of the
precision (P = A A^T), ReduceSumSquare, Sqrt. `WindowFeatureModel.scores` is the float64
numpy reference it is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from edge.scorers.spec import TaughtSpec
from export.config import FitConfig
from export.linear import _precision
from export.onnx_export import INPUT, OPSET, const, finish_model
from export.twins import residual_matrix, twin_groups

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
OUTPUT = "window_mahalanobis"


def slow_channels(rows: FloatArray, span: int, ratio: float) -> BoolArray:
    """Channels whose `span`-row trailing mean (over rows span-1.., full spans only) has a
    standard deviation above `ratio` x the channel's own; none when there are too few rows."""
    rows = np.asarray(rows, dtype=np.float64)
    n, c = rows.shape
    if n < span + 2:
        return np.zeros(c, dtype=bool)
    cumulative = np.vstack([np.zeros((1, c)), np.cumsum(rows, axis=0)])
    means = (cumulative[span:] - cumulative[:-span]) / span  # windows ending at span-1 .. n-1
    return np.asarray(means[1:].std(axis=0) > ratio * (rows.std(axis=0) + 1e-12))


def window_features(
    x: FloatArray, lags: int, keep: BoolArray, eps: float, twins: FloatArray | None = None
) -> FloatArray:
    """Features of flattened inputs (N, lags*C): means of the `keep` channels, the log
    standard deviations of all channels, then the twin residuals `mean @ twins` (float64)."""
    windows = np.asarray(x, dtype=np.float64).reshape(len(x), lags, -1)
    mean = windows.mean(axis=1)
    sd = np.sqrt(np.mean(np.square(windows - mean[:, None, :]), axis=1))
    parts = [mean[:, keep], np.log(sd + eps)]
    if twins is not None and twins.shape[1]:
        parts.append(mean @ twins)
    return np.hstack(parts)


@dataclass
class WindowFeatureModel:
    lags: int
    channels: int
    keep: BoolArray  # (C,) channels whose mean is a feature (the ones that are not slow)
    eps: float
    center: FloatArray  # (F,) training mean of the features
    factor: FloatArray  # (F, F) A with A A^T = precision (in feature units)
    info: dict[str, Any] = field(default_factory=dict)
    twins: FloatArray | None = None  # (C, T) twin-residual matrix, see export.twins

    outputs = (OUTPUT,)
    scorers = (OUTPUT,)

    @property
    def n_features(self) -> int:
        return self.lags * self.channels

    def scores(self, x: FloatArray) -> dict[str, FloatArray]:
        f = window_features(x, self.lags, self.keep, self.eps, self.twins)
        projected = (f - self.center) @ self.factor
        return {OUTPUT: np.sqrt(np.sum(np.square(projected), axis=1))}

    def onnx(self) -> onnx.ModelProto:
        return build_window_model(self)


def _factor(precision: FloatArray) -> FloatArray:
    """A with A A^T = precision (eigen-decomposition: also for a semi-definite one)."""
    values, vectors = np.linalg.eigh((precision + precision.T) / 2.0)
    return np.asarray(vectors * np.sqrt(np.maximum(values, 0.0))[None, :])


def fit_window_features(
    x: FloatArray,
    lags: int,
    slow_rows: FloatArray,
    config: FitConfig,
    names: list[str] | None = None,
    constant: BoolArray | None = None,
) -> WindowFeatureModel:
    """Fit on training inputs `x` (N, lags*C); `slow_rows` (n, C) are the scaled training rows
    in time order, for the slow-channel and twin tests; `names` the channel names; the
    `constant` channels (flat in training) get no weight in the distance."""
    channels = x.shape[1] // lags
    constant = np.zeros(channels, dtype=bool) if constant is None else np.asarray(constant)
    slow = slow_channels(slow_rows, config.slow_span, config.slow_ratio)
    keep = ~slow & ~constant
    groups = twin_groups(names, slow_rows) if names and config.twin_features else []
    twins = residual_matrix(groups, channels)
    f = window_features(x, lags, keep, config.feature_eps, twins)
    active = np.ones(f.shape[1], dtype=bool)
    active[int(keep.sum()) + np.flatnonzero(constant)] = False  # their log sd
    mean, sd = f.mean(axis=0), f.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)  # a feature constant in training: unit scale
    factor = np.zeros((f.shape[1], max(1, int(active.sum()))))
    if active.any():
        z = (f[:, active] - mean[active]) / sd[active]
        precision = _precision(config.covariance, config.seed, z)
        factor[active] = _factor(precision) / sd[active][:, None]
    info = {
        "features": int(f.shape[1]),
        "feature_window": lags,
        "slow_channels": np.flatnonzero(slow & ~constant).tolist(),
        "constant_channels": np.flatnonzero(constant).tolist(),
        "twin_groups": groups,
        "slow_span": config.slow_span,
        "slow_ratio": config.slow_ratio,
        "eps": config.feature_eps,
        "covariance": config.covariance,
        "training_windows": len(x),
    }
    return WindowFeatureModel(
        lags, channels, keep, config.feature_eps, mean, factor, info, twins)


def taught_spec(model: Any, config: FitConfig) -> TaughtSpec | None:
    """The device's taught memory of a window-features distance (`--taught-memory`; None for
    another distance model or 0): the model's constants, so that the device whitens a window's
    features as the model does (`edge.memory.TaughtMemory`)."""
    if not isinstance(model, WindowFeatureModel) or not config.taught_memory:
        return None
    twins = model.twins if model.twins is not None and model.twins.shape[1] else None
    return TaughtSpec(lags=model.lags, keep=np.flatnonzero(model.keep).tolist(),
                      eps=model.eps, twins=twins.tolist() if twins is not None else [],
                      center=model.center.tolist(), factor=model.factor.tolist(),
                      level=config.taught_level, size=config.taught_memory)


def build_window_model(model: WindowFeatureModel) -> onnx.ModelProto:
    """The ONNX graph of `WindowFeatureModel.scores` (float64 inside, float32 output)."""
    mk = helper.make_node
    keep = np.flatnonzero(model.keep)
    inits = [
        const("shape3", [-1, model.lags, model.channels], np.int64),
        const("eps", model.eps),
        const("center", model.center),
        const("factor", model.factor),
    ]
    nodes = [
        mk("Cast", [INPUT], ["x64"], to=TensorProto.DOUBLE),
        mk("Reshape", ["x64", "shape3"], ["rows"]),
        mk("ReduceMean", ["rows"], ["mean3"], axes=[1], keepdims=1),
        mk("Sub", ["rows", "mean3"], ["dev"]),
        mk("Mul", ["dev", "dev"], ["dev2"]),
        mk("ReduceMean", ["dev2"], ["var"], axes=[1], keepdims=0),
        mk("Sqrt", ["var"], ["sd"]),
        mk("Add", ["sd", "eps"], ["sd_eps"]),
        mk("Log", ["sd_eps"], ["log_sd"]),
    ]
    parts = ["log_sd"]
    twins = model.twins is not None and model.twins.shape[1] > 0
    if keep.size or twins:
        nodes.append(mk("ReduceMean", ["rows"], ["mean"], axes=[1], keepdims=0))
    if keep.size:
        inits.append(const("keep", keep, np.int64))
        nodes.append(mk("Gather", ["mean", "keep"], ["mean_kept"], axis=1))
        parts = ["mean_kept", "log_sd"]
    if twins:
        inits.append(const("twins", model.twins))
        nodes.append(mk("MatMul", ["mean", "twins"], ["twin_residuals"]))
        parts.append("twin_residuals")
    nodes += [
        mk("Concat", parts, ["features"], axis=1),
        mk("Sub", ["features", "center"], ["centred"]),
        mk("MatMul", ["centred", "factor"], ["projected"]),
        mk("ReduceSumSquare", ["projected"], ["d2"], axes=[1], keepdims=0),
        mk("Sqrt", ["d2"], ["d64"]),
        mk("Cast", ["d64"], [OUTPUT], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "window_features",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", model.n_features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N"])],
        inits,
    )
    return finish_model(graph, OPSET)
