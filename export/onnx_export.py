"""Export a distance model as one ONNX model, `distance.onnx`; the PCA/KMeans graph.

Every distance model (`DistanceModel`: `export.linear.LinearModel`,
`export.window_features.WindowFeatureModel`, `export.lag_kmeans.LagKmeansModel`) takes input
`x` float32 [N, lags*C] (scaled rows, flattened as the engine does), computes in float64 and
returns float32 outputs of shape [N], so it matches its float64 numpy/scikit-learn reference
(`scores`) to float32 rounding.

PCA/KMeans (`LinearModel`): the PCA projection is converted by skl2onnx; the nodes it has no
converter for (nearest centroid with its Euclidean and Mahalanobis distances, and the
reconstruction error) are added with `onnx.helper`; outputs `spe`, `euclidean`, `mahalanobis`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType

from edge.bundle import ModelFile, TensorSpec
from edge.runtimes.onnx import OnnxModel

if TYPE_CHECKING:
    from export.linear import LinearModel

FloatArray = npt.NDArray[np.float64]
OPSET = 17
INPUT = "x"


class DistanceModel(Protocol):
    """What `fit_bundle` needs of a distance model."""

    outputs: tuple[str, ...]  # the ONNX graph's outputs
    scorers: tuple[str, ...]  # the outputs that become scorers
    info: dict[str, Any]

    @property
    def n_features(self) -> int: ...

    def scores(self, x: FloatArray) -> dict[str, FloatArray]: ...

    def onnx(self) -> onnx.ModelProto: ...


def const(value_name: str, value: npt.ArrayLike, dtype: type = np.float64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), value_name)


def finish_model(graph: onnx.GraphProto, opset: int = OPSET) -> onnx.ModelProto:
    """Wrap a graph as a checked model readable by older onnxruntime releases."""
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edge-train"
    )
    proto.ir_version = min(proto.ir_version, 8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def build_distance_model(model: LinearModel) -> onnx.ModelProto:
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


def export_distance(model: DistanceModel, path: Path) -> ModelFile:
    path.write_bytes(model.onnx().SerializeToString())
    n = model.n_features
    return ModelFile(
        file=path.name,
        runtime="onnx",
        inputs=[TensorSpec(name=INPUT, shape=[-1, n], dtype="float32")],
        outputs=[TensorSpec(name=name, shape=[-1], dtype="float32") for name in model.outputs],
        weights_dtype="float64",
    )


def relative_diff(actual: FloatArray, expected: FloatArray) -> float:
    """max |a - e| / max(|e|, 1e-6): relative, with a floor so exact zeros do not divide."""
    return float(np.max(np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-6)))


def onnx_parity(path: Path, model: DistanceModel, x: FloatArray) -> dict[str, float]:
    """Max relative difference per output between onnxruntime and scikit-learn/numpy."""
    got = OnnxModel(path).run(x.astype(np.float32))
    expected = model.scores(x.astype(np.float32).astype(np.float64))
    return {
        name: relative_diff(got[name].astype(np.float64).reshape(-1), expected[name])
        for name in model.outputs
    }
