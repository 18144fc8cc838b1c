"""Export a distance model as one ONNX model, `distance.onnx`.

Every distance model (`DistanceModel`: `export.linear.LinearModel`,
`export.window_features.WindowFeatureModel`, `export.lag_kmeans.LagKmeansModel`) takes input
`x` float32 [N, lags*C] (scaled rows, flattened as the engine does), computes in float64 and
returns float32 outputs of shape [N], so it matches its float64 numpy/scikit-learn reference
(`scores`) to float32 rounding.

Each model module builds its own graph with the helpers here (`const`, `finish_model`, `INPUT`,
`OPSET`); this module writes the model file (`export_distance`) and checks it against the
reference (`onnx_parity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from edge.bundle import ModelFile, TensorSpec
from edge.runtimes.onnx import OnnxModel

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
