"""Convert the Keras autoencoder to a full-integer int8 TFLite model, in a subprocess.

int8 weights and activations, int8 input and output, calibrated on training windows; or,
with `mode="16x8"`, int8 weights and int16 activations, input and output (finer activations
where int8 strays from the float model; about 5x slower on the device). The
converter runs in a child process (`python -m export.tflite_export MODEL CALIB OUT MODE`) because
when it crashes (it segfaults on a fused LSTM with TF 2.21 / Keras 3) it takes its process
down: here that becomes a FitError that says what happened instead of a dead trainer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import ModelFile, TensorSpec
from edge.runtimes.tflite import TfliteModel
from export.errors import FitError

FloatArray = npt.NDArray[np.float64]


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)


MODES = ("int8", "16x8")


def export_int8(
    model: Any, calib_windows: FloatArray, clip: float, out: Path, timeout_s: float = 900.0,
    mode: str = "int8",
) -> ModelFile:
    """Write `out` (TFLite, `mode` int8 or 16x8) from a Keras model; calibrate on
    `calib_windows`."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {MODES}")
    with tempfile.TemporaryDirectory(prefix="edge-train-tflite-") as tmp:
        model_path, calib_path = Path(tmp) / "model.keras", Path(tmp) / "calib.npy"
        model.save(model_path)
        np.save(calib_path, np.clip(calib_windows, -clip, clip).astype(np.float32))
        command = [
            sys.executable,
            "-m",
            "export.tflite_export",
            str(model_path),
            str(calib_path),
            str(out),
            mode,
        ]
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0"),
            "PYTHONWARNINGS": "ignore",
        }
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise FitError(
                f"TFLite {mode} conversion took longer than {timeout_s:.0f}s "
                "(--convert-timeout-s)"
            ) from exc
    if done.returncode != 0 or not out.is_file():
        if done.returncode < 0:
            how = f"the converter crashed with {signal.Signals(-done.returncode).name}"
        else:
            how = f"the converter exited with code {done.returncode}"
        raise FitError(
            f"TFLite {mode} conversion of the LSTM autoencoder failed: {how} "
            f"(a fused LSTM crashes it; the layers must use unroll=True). "
            f"Converter output: {_tail(done.stderr) or '(none)'}"
        )
    return describe(out)


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero = detail["quantization"]
    quantized = scale != 0.0
    return TensorSpec(
        name=str(detail["name"]),
        shape=[int(d) for d in detail["shape"]],
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero) if quantized else None,
    )


def describe(path: Path) -> ModelFile:
    """The manifest entry of a TFLite file, read from the interpreter."""
    model = TfliteModel(path)
    return ModelFile(
        file=path.name,
        runtime="tflite",
        inputs=[_spec(model.input)],
        outputs=[_spec(model.output)],
        weights_dtype="int8",
    )


def convert(model_path: Path, calib_path: Path, out: Path, mode: str = "int8") -> None:
    """Child-process side: load the Keras model and convert it to full-integer int8 (or
    16x8: int16 activations)."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path, compile=False)
    calib = np.load(calib_path)

    def representative() -> Any:
        for i in range(calib.shape[0]):
            yield [calib[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if mode == "16x8":
        ops = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = [ops]
        converter.inference_input_type = tf.int16
        converter.inference_output_type = tf.int16
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    out.write_bytes(converter.convert())


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
            sys.argv[4] if len(sys.argv) > 4 else "int8")
