"""The linear scorers: PCA, KMeans on the PCA features, and per point

- `spe`: squared PCA reconstruction error (the Q statistic),
- `euclidean`: distance to the nearest KMeans centroid in PCA space,
- `mahalanobis`: distance to that same centroid under the cluster's (or the pooled)
  inverse covariance from a scikit-learn estimator (Ledoit-Wolf by default).

`LinearModel.scores` is the float64 reference that the ONNX export is checked against; its
ONNX graph (`build_linear_model`): the PCA projection is converted by skl2onnx; the nodes it has
no converter for (nearest centroid with its Euclidean and Mahalanobis distances, and the
reconstruction error) are added with `onnx.helper`; outputs `spe`, `euclidean`, `mahalanobis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType
from sklearn.cluster import KMeans
from sklearn.covariance import EmpiricalCovariance, LedoitWolf, MinCovDet
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from export.config import FitConfig
from export.kmeans import fit_kmeans
from export.onnx_export import INPUT, OPSET, const, finish_model

FloatArray = npt.NDArray[np.float64]
MIN_SILHOUETTE = 0.25
OUTPUTS = ("spe", "euclidean", "mahalanobis")


@dataclass
class LinearModel:
    pca: PCA
    kmeans: KMeans
    precisions: FloatArray  # (K, d, d) inverse covariance used for each cluster
    info: dict[str, Any] = field(default_factory=dict)

    outputs = OUTPUTS

    @property
    def n_features(self) -> int:
        return int(self.pca.n_features_in_)

    @property
    def scorers(self) -> tuple[str, ...]:
        """spe only when it is not identically zero (one feature: PCA keeps it whole)."""
        return tuple(o for o in OUTPUTS if o != "spe" or self.n_features > 1)

    def onnx(self) -> onnx.ModelProto:
        return build_linear_model(self)

    def scores(self, x: FloatArray) -> dict[str, FloatArray]:
        """Reference scores of feature rows (N, lags*C) in float64."""
        x = np.asarray(x, dtype=np.float64)
        z = self.pca.transform(x)
        spe = np.sum(np.square(x - self.pca.inverse_transform(z)), axis=1)
        label = self.kmeans.predict(z)
        diff = z - self.kmeans.cluster_centers_[label]
        maha2 = np.einsum("nd,nde,ne->n", diff, self.precisions[label], diff)
        return {
            "spe": spe,
            "euclidean": np.linalg.norm(diff, axis=1),
            "mahalanobis": np.sqrt(np.maximum(maha2, 0.0)),
        }


def build_linear_model(model: LinearModel) -> onnx.ModelProto:
    """The ONNX graph of `LinearModel.scores`."""
    n = model.n_features
    pca = convert_sklearn(
        model.pca, initial_types=[("x64", DoubleTensorType([None, n]))], target_opset=OPSET
    )
    z = pca.graph.output[0].name
    nodes = [helper.make_node("Cast", [INPUT], ["x64"], to=TensorProto.DOUBLE)]
    nodes += list(pca.graph.node)
    inits = [
        *pca.graph.initializer,
        const("components", model.pca.components_),
        const("pca_mean", model.pca.mean_),
        const("centroids", model.kmeans.cluster_centers_),
        const("precisions", model.precisions),
        const("axis1", [1], np.int64),
        const("axis2", [2], np.int64),
        const("zero", 0.0),
    ]
    mk = helper.make_node
    nodes += [
        # spe = sum((x - (z @ components + mean))^2)
        mk("MatMul", [z, "components"], ["recon0"]),
        mk("Add", ["recon0", "pca_mean"], ["recon"]),
        mk("Sub", ["x64", "recon"], ["resid"]),
        mk("Mul", ["resid", "resid"], ["resid2"]),
        mk("ReduceSum", ["resid2", "axis1"], ["spe64"], keepdims=0),
        # differences to every centroid: [N, K, d]
        mk("Unsqueeze", [z, "axis1"], ["z3"]),
        mk("Sub", ["z3", "centroids"], ["diff"]),
        mk("Mul", ["diff", "diff"], ["diff2"]),
        mk("ReduceSum", ["diff2", "axis2"], ["d2"], keepdims=0),
        mk("ArgMin", ["d2"], ["label"], axis=1, keepdims=1),
        mk("GatherElements", ["d2", "label"], ["eu2"], axis=1),
        mk("Sqrt", ["eu2"], ["eu"]),
        mk("Squeeze", ["eu", "axis1"], ["eu64"]),
        # Mahalanobis to the nearest centroid: diff_k @ P_k . diff_k
        mk("Transpose", ["diff"], ["diff_t"], perm=[1, 0, 2]),
        mk("MatMul", ["diff_t", "precisions"], ["dp"]),
        mk("Mul", ["dp", "diff_t"], ["dpd"]),
        mk("ReduceSum", ["dpd", "axis2"], ["m2_t"], keepdims=0),
        mk("Transpose", ["m2_t"], ["m2"], perm=[1, 0]),
        mk("GatherElements", ["m2", "label"], ["m2_near"], axis=1),
        mk("Max", ["m2_near", "zero"], ["m2_pos"]),
        mk("Sqrt", ["m2_pos"], ["ma"]),
        mk("Squeeze", ["ma", "axis1"], ["ma64"]),
    ]
    for name, source in zip(model.outputs, ("spe64", "eu64", "ma64"), strict=True):
        nodes.append(mk("Cast", [source], [name], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "distance",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"]) for name in model.outputs],
        inits,
    )
    return finish_model(graph)


def lag_features(windows: FloatArray, lags: int, clip: float | None) -> FloatArray:
    """The distance model's input exactly as the engine builds it: the last `lags` rows,
    flattened, clipped to +/- `clip` (None: unclipped), rounded to float32."""
    flat = windows[:, -lags:, :].reshape(windows.shape[0], -1)
    if clip is not None:
        flat = np.clip(flat, -clip, clip)
    return flat.astype(np.float32).astype(np.float64)


def _components(pca: PCA, share: float, n_features: int) -> int:
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    k = int(np.searchsorted(cumulative, share) + 1)
    return max(1, min(k, n_features - 1)) if n_features > 1 else 1


def _choose_k(z: FloatArray, config: FitConfig) -> tuple[int, dict[str, float]]:
    if config.clusters > 0:
        return config.clusters, {}
    min_size = max(10, 2 * z.shape[1])
    sample = min(len(z), 2000)
    scores: dict[str, float] = {}
    for k in range(2, config.max_clusters + 1):
        if len(z) < k * min_size:
            break
        km = fit_kmeans(z, k, 10, config.seed)
        if np.bincount(km.labels_, minlength=k).min() < min_size:
            continue
        scores[str(k)] = float(
            silhouette_score(z, km.labels_, sample_size=sample, random_state=config.seed)
        )
    best = max(scores, key=lambda k: scores[k], default=None)
    if best is None or scores[best] < MIN_SILHOUETTE:
        return 1, scores
    return int(best), scores


def _estimator(kind: str, seed: int) -> Any:
    if kind == "mcd":
        return MinCovDet(random_state=seed)
    if kind == "empirical":
        return EmpiricalCovariance()
    return LedoitWolf()


def _precision(kind: str, seed: int, residuals: FloatArray) -> FloatArray:
    est = _estimator(kind, seed).fit(residuals)
    precision = np.asarray(est.get_precision(), dtype=np.float64)
    return (precision + precision.T) / 2.0


def fit_linear(x: FloatArray, config: FitConfig) -> LinearModel:
    """Fit PCA, KMeans and the inverse covariances on training feature rows."""
    n_features = x.shape[1]
    full = PCA(random_state=config.seed).fit(x)
    d = _components(full, config.pca_variance, n_features)
    pca = PCA(n_components=d, random_state=config.seed).fit(x)
    z = pca.transform(x)
    k, silhouettes = _choose_k(z, config)
    kmeans = fit_kmeans(z, k, 10, config.seed)
    labels = kmeans.labels_
    residuals = z - kmeans.cluster_centers_[labels]
    pooled = _precision(config.covariance, config.seed, residuals)
    precisions = np.repeat(pooled[None], k, axis=0)
    own = []
    if config.covariance_pooling == "per_cluster":
        for c in range(k):
            members = residuals[labels == c]
            if len(members) >= max(20, 5 * d):
                precisions[c] = _precision(config.covariance, config.seed, members)
                own.append(c)
    info = {
        "features": n_features,
        "pca_components": d,
        "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 6),
        "clusters": k,
        "silhouette": {key: round(v, 4) for key, v in silhouettes.items()},
        "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
        "covariance": config.covariance,
        "covariance_pooling": config.covariance_pooling,
        "clusters_with_own_covariance": own,
    }
    return LinearModel(pca, kmeans, precisions, info)
