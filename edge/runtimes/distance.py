"""The distance model's runtime: onnxruntime on `distance.onnx`, or a TFLite runtime on its
twin `distance.tflite` (the same maths in TFLite built-in ops, float32, for a device without
onnxruntime: 32-bit Raspberry Pi OS has no onnxruntime wheel).

`[bundle] distance_runtime` chooses: "onnx" or "tflite" exactly that (a clear error naming the
key when its runtime or the twin is missing, never another runtime instead); "auto" (the
default) ONNX when onnxruntime imports, else the twin, and says so. The twin is the manifest's
`models["<distance.model>_tflite"]` (`twin_key`); a bundle of an older trainer has none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from edge.bundle import Bundle, BundleError
from edge.runtimes.onnx import OnnxModel
from edge.runtimes.tflite import RuntimeMissing, TfliteSignatureModel

log = logging.getLogger(__name__)

DistanceRuntime = Literal["auto", "onnx", "tflite"]
KEY = "[bundle] distance_runtime"
TWIN_SUFFIX = "_tflite"
REEXPORT = ("re-export the bundle with `edge-train fit` of this release, which writes the "
            "TFLite twin distance.tflite beside distance.onnx")


class DistanceModel(Protocol):
    """What the engine needs of the distance model: outputs by name for a batch of rows."""

    runtime: str  # the runtime's package, e.g. onnxruntime, ai-edge-litert, tflite-runtime

    def run(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]: ...


@dataclass(frozen=True)
class LoadedDistance:
    model: DistanceModel
    file: str
    why: str  # how it was chosen, for the log and check-config

    def describe(self) -> str:
        return f"{self.file} on {self.model.runtime} ({self.why})"


def twin_key(bundle: Bundle) -> str | None:
    """The manifest's `models` key of the distance model's TFLite twin; None without one."""
    spec = bundle.manifest.distance
    if spec is None:
        return None
    key = spec.model + TWIN_SUFFIX
    model = bundle.manifest.models.get(key)
    return key if model is not None and model.runtime == "tflite" else None


def load_distance(bundle: Bundle, choice: DistanceRuntime = "auto",
                  threads: int = 1) -> LoadedDistance:
    """Load the bundle's distance model on the runtime `choice` asks for; RuntimeMissing or
    BundleError (naming `[bundle] distance_runtime`) when that cannot be done."""
    spec = bundle.manifest.distance
    assert spec is not None
    onnx_file = bundle.manifest.models[spec.model].file
    twin = twin_key(bundle)
    twin_file = bundle.manifest.models[twin].file if twin is not None else None
    if choice == "onnx":
        try:
            return LoadedDistance(OnnxModel(bundle.model_path(spec.model), threads), onnx_file,
                                  f'{KEY} = "onnx"')
        except RuntimeMissing as exc:
            other = (f'set {KEY} = "tflite" (or "auto") to score with the bundle\'s TFLite '
                     f"twin {twin_file}" if twin_file else REEXPORT)
            raise RuntimeMissing(f'{KEY} = "onnx" but {exc}; or {other}') from exc
    if choice == "tflite":
        if twin is None or twin_file is None:
            raise BundleError(
                f'{KEY} = "tflite" but the bundle has no TFLite twin of {onnx_file} '
                f"(models.{spec.model}{TWIN_SUFFIX}): {REEXPORT}, or set {KEY} = \"onnx\"")
        return LoadedDistance(_twin(bundle, twin, threads, f'{KEY} = "tflite"'), twin_file,
                              f'{KEY} = "tflite"')
    try:
        return LoadedDistance(OnnxModel(bundle.model_path(spec.model), threads), onnx_file,
                              f'{KEY} = "auto": onnxruntime is installed')
    except RuntimeMissing as exc:
        if twin is None or twin_file is None:
            raise RuntimeMissing(
                f"onnxruntime is not installed and the bundle has no TFLite twin of "
                f"{onnx_file}: {REEXPORT} (for devices with a TFLite runtime only, such as "
                "32-bit Raspberry Pi OS), or install onnxruntime (`pip install onnxruntime`, "
                "64-bit OS)") from exc
        why = f'{KEY} = "auto": onnxruntime is not installed ({exc.__cause__ or exc})'
        return LoadedDistance(_twin(bundle, twin, threads, f'{KEY} = "auto"'), twin_file, why)


def _twin(bundle: Bundle, key: str, threads: int, chosen: str) -> TfliteSignatureModel:
    try:
        return TfliteSignatureModel(bundle.model_path(key), threads)
    except RuntimeMissing as exc:
        raise RuntimeMissing(f"{chosen} chose the TFLite twin of the distance model, but {exc}"
                             ) from exc
