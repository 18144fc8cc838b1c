"""TFLite backend: ai-edge-litert, else tflite-runtime; never a silent switch to another."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "no TFLite runtime found: install one with `pip install ai-edge-litert` "
    "(or `pip install tflite-runtime` on platforms without ai-edge-litert wheels)"
)


class RuntimeMissing(ImportError):
    """The runtime a bundle needs is not installed; the message says how to install it."""


def _interpreter_class() -> tuple[Any, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise RuntimeMissing(INSTALL_HINT) from exc


class TfliteModel:
    """A single-input, single-output TFLite model run on float32 arrays.

    Quantized inputs are quantized here (saturating at the int8 range) and outputs
    dequantized, so callers always see float32 in the model's own units.
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        interpreter_class, self.runtime = _interpreter_class()
        self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"])
        self._in_scale, self._in_zero = self.input["quantization"]
        self._out_scale, self._out_zero = self.output["quantization"]
        self._in_dtype = self.input["dtype"]
        self._in_index = self.input["index"]
        self._out_index = self.output["index"]
        log.debug("loaded %s with %s (input %s %s)", path, self.runtime,
                  self.input_shape, np.dtype(self._in_dtype).name)

    def _quantize(self, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        if self._in_scale == 0.0:
            return x.astype(self._in_dtype)
        info = np.iinfo(self._in_dtype)
        q = np.round(x / self._in_scale + self._in_zero)
        return np.asarray(np.clip(q, info.min, info.max).astype(self._in_dtype))

    def _dequantize(self, y: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if self._out_scale == 0.0:
            return y.astype(np.float32)
        scaled = (y.astype(np.float32) - self._out_zero) * self._out_scale
        return np.asarray(scaled, dtype=np.float32)

    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run one input shaped like the model input (batch included)."""
        self.interpreter.set_tensor(self._in_index, self._quantize(x))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._out_index))

    def tensor_dtypes(self) -> list[str]:
        """Dtypes of every tensor in the graph, to check that weights really are int8."""
        return [np.dtype(t["dtype"]).name for t in self.interpreter.get_tensor_details()]


class TfliteSignatureModel:
    """A float TFLite model run through its signature: named inputs and outputs, any batch
    size (the input is resized to each call's). The distance model's TFLite twin."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        interpreter_class, self.runtime = _interpreter_class()
        self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
        signatures = self.interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ValueError(f"{path.name}: expected one signature, found {sorted(signatures)}")
        key, signature = next(iter(signatures.items()))
        inputs = list(signature["inputs"])
        if len(inputs) != 1:
            raise ValueError(f"{path.name}: expected one input, found {inputs}")
        self.input_name = str(inputs[0])
        self.outputs = [str(o) for o in signature["outputs"]]
        self.runner = self.interpreter.get_signature_runner(key)
        log.debug("loaded %s with %s (outputs %s)", path, self.runtime, self.outputs)

    def run(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Outputs by name for one batch of input rows (float32)."""
        result = self.runner(**{self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return {name: np.asarray(result[name], dtype=np.float32) for name in self.outputs}
