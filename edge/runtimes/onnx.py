"""ONNX backend: onnxruntime on one thread by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.runtimes.tflite import RuntimeMissing

INSTALL_HINT = "onnxruntime is not installed: `pip install onnxruntime`"


class OnnxModel:
    """An ONNX model with one float input and named float outputs."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeMissing(INSTALL_HINT) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        outputs = self.session.run(self.output_names, {self.input_name: x.astype(np.float32)})
        pairs = zip(self.output_names, outputs, strict=True)
        return {name: np.asarray(value) for name, value in pairs}
