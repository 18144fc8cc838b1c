"""The univariate distance model: lag vectors at several scales, nearest KMeans centroid.

For each scale s in `lag_scales`, the last s rows of the window (flattened) are a lag vector;
KMeans (`lag_clusters` centroids, fitted on the training windows' lag vectors) summarises the
shapes seen in training, and the score `lag_distance_<s>` is the Euclidean distance to the
nearest centroid: how far the recent stretch of the series is from any stretch seen before.
A short scale reacts to spikes, a longer one to changed shapes. The scores usually go through
the device's likelihood step (`edge.likelihood`), which judges them against their own history.

The ONNX graph per scale: Slice the last s*C columns, subtract every centroid,
ReduceSumSquare, ReduceMin, Sqrt. `LagKmeansModel.scores` is the float64 numpy reference.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from export.config import FitConfig
from export.kmeans import fit_kmeans
from export.onnx_export import INPUT, const, finish_model

FloatArray = npt.NDArray[np.float64]
PREFIX = "lag_distance_"


def output_name(scale: int) -> str:
    return f"{PREFIX}{scale}"


def scale_of(name: str) -> int | None:
    """The lag scale of a `lag_distance_<n>` scorer, None for any other scorer."""
    rest = name.removeprefix(PREFIX)
    return int(rest) if rest != name and rest.isdigit() else None


@dataclass
class LagKmeansModel:
    lags: int
    channels: int
    centroids: dict[int, FloatArray]  # scale -> (K, scale*C)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(output_name(s) for s in self.centroids)

    @property
    def scorers(self) -> tuple[str, ...]:
        return self.outputs

    @property
    def n_features(self) -> int:
        return self.lags * self.channels

    def scores(self, x: FloatArray) -> dict[str, FloatArray]:
        x = np.asarray(x, dtype=np.float64)
        out = {}
        for scale, centres in self.centroids.items():
            tail = x[:, x.shape[1] - scale * self.channels :]
            d2 = np.square(tail[:, None, :] - centres[None]).sum(axis=2).min(axis=1)
            out[output_name(scale)] = np.sqrt(np.maximum(d2, 0.0))
        return out

    def onnx(self) -> onnx.ModelProto:
        return build_lag_model(self)


def fit_lag_kmeans(x: FloatArray, lags: int, config: FitConfig) -> LagKmeansModel:
    """KMeans per scale on training inputs `x` (N, lags*C); k is capped by the number of
    distinct lag vectors and by N/4 (a flat training stretch gets one centroid)."""
    channels = x.shape[1] // lags
    centroids: dict[int, FloatArray] = {}
    clusters: dict[str, int] = {}
    for scale in sorted(set(config.lag_scales), reverse=True):
        tail = np.asarray(x[:, x.shape[1] - scale * channels :], dtype=np.float64)
        distinct = len(np.unique(tail.round(9), axis=0))
        k = max(1, min(config.lag_clusters, len(tail) // 4, distinct))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on near-duplicate vectors
            km = fit_kmeans(tail, k, config.lag_n_init, config.seed)
        centroids[scale] = np.asarray(km.cluster_centers_, dtype=np.float64)
        clusters[str(scale)] = k
    info = {
        "features": int(x.shape[1]),
        "scales": sorted(centroids, reverse=True),
        "clusters": clusters,
        "training_windows": len(x),
    }
    return LagKmeansModel(lags, channels, centroids, info)


def build_lag_model(model: LagKmeansModel) -> onnx.ModelProto:
    """The ONNX graph of `LagKmeansModel.scores` (float64 inside, float32 outputs)."""
    mk = helper.make_node
    width = model.n_features
    nodes = [mk("Cast", [INPUT], ["x64"], to=TensorProto.DOUBLE)]
    inits = [const("axis1", [1], np.int64), const("end", [width], np.int64)]
    for scale, centres in model.centroids.items():
        s = f"s{scale}"
        inits += [
            const(f"{s}_start", [width - scale * model.channels], np.int64),
            const(f"{s}_centroids", centres),
        ]
        nodes += [
            mk("Slice", ["x64", f"{s}_start", "end", "axis1"], [f"{s}_tail"]),
            mk("Unsqueeze", [f"{s}_tail", "axis1"], [f"{s}_tail3"]),
            mk("Sub", [f"{s}_tail3", f"{s}_centroids"], [f"{s}_diff"]),
            mk("ReduceSumSquare", [f"{s}_diff"], [f"{s}_d2"], axes=[2], keepdims=0),
            mk("ReduceMin", [f"{s}_d2"], [f"{s}_near"], axes=[1], keepdims=0),
            mk("Sqrt", [f"{s}_near"], [f"{s}_d"]),
            mk("Cast", [f"{s}_d"], [output_name(scale)], to=TensorProto.FLOAT),
        ]
    graph = helper.make_graph(
        nodes,
        "lag_kmeans",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N"]) for o in model.outputs],
        inits,
    )
    return finish_model(graph)
