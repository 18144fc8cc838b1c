"""The bundle: the contract between the trainer (`edge-train`) and the device (`edge-agent`).

A bundle is a directory holding `manifest.json`, the model files it names and, optionally,
`manifest.sig` (an Ed25519 signature of the manifest bytes). The manifest lists the sha256 of
every other file, so verifying the manifest's signature covers the whole bundle.

This module is the one source of truth for the schema: the trainer builds a `Manifest` and
writes it with `write_manifest`, the device reads it with `load_bundle`, which refuses a bundle
whose schema version it does not know or whose files do not match their checksums.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 5  # what this trainer writes
# 2 added optional fields (scorer likelihood, cooldown_windows) only; 3 the scorer memory only;
# 4 the `range` scorer kind and the training range only; 5 the `long_shape` scorer kind only
READABLE_SCHEMAS = (1, 2, 3, 4, 5)
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"


class BundleError(Exception):
    """A bundle that must not be loaded; the message says which file and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelPreprocess(_Strict):
    """raw -> transform(raw + offset) -> (t - center) / scale, per channel."""

    name: str
    transform: Literal["none", "log1p", "sqrt"] = "none"
    offset: float = Field(0.0, description="added before the transform so its argument is >= 0")
    center: float = Field(description="median of the transformed training values")
    scale: float = Field(gt=0, description="robust spread (IQR/1.349) of the transformed values")
    fill: float = Field(description="raw value used before the first valid reading of a channel")


class ForecastResidual(_Strict):
    """A black-box forecast column turned into a residual channel `<name>` = measured - forecast."""

    name: str
    measured: str
    forecast: str


class Preprocess(_Strict):
    channels: list[ChannelPreprocess]
    clip: float = Field(8.0, gt=0, description="model inputs are clipped to +/- clip scaled units")
    max_gap_s: float = Field(
        gt=0, description="a gap longer than this between readings restarts the window")
    forecast: ForecastResidual | None = None


class TensorSpec(_Strict):
    name: str
    shape: list[int]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None


class ModelFile(_Strict):
    file: str
    runtime: Literal["tflite", "onnx"]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    weights_dtype: str = "float32"


class Threshold(_Strict):
    value: float = Field(gt=0)
    method: str = Field(description="quantile | iqr | pot | bhattacharyya | fence")
    params: dict[str, Any] = Field(default_factory=dict)


class LikelihoodSpec(_Strict):
    """Anomaly likelihood (HTM style), kept per device: how unusual the recent raw scores are
    against this device's own history of them (see `edge.likelihood`)."""

    short: int = Field(20, ge=1, description="windows in the recent mean of log scores")
    history: int = Field(
        20000, ge=2, le=100_000,
        description="windows of log-score history behind the mean and deviation")
    min_history: int = Field(
        150, ge=1, description="the likelihood is 0 until this many windows were scored")
    floor: float = Field(1e-6, gt=0, description="raw scores are floored at this before the log")
    min_variance: float = Field(
        1e-4, gt=0, description="floor of the history's variance of log scores")

    @model_validator(mode="after")
    def _fits(self) -> LikelihoodSpec:
        if self.short > self.history or self.min_history > self.history:
            raise ValueError("short and min_history cannot exceed history")
        return self


class MemorySpec(_Strict):
    """Recent-pattern memory, kept per device: a distance scorer's raw score becomes
    min(raw, distance to the k-th nearest of the device's own recent lag vectors), so that a
    pattern the device keeps seeing after training stops alerting (see `edge.memory`)."""

    lags: int = Field(ge=1, description="rows of the distance input compared (its last ones)")
    size: int = Field(3000, ge=2, le=100_000, description="lag vectors remembered per device")
    gap: int = Field(
        50, ge=1, description="the most recent windows left out (they overlap the current one)")
    k: int = Field(2, ge=1, description="a pattern is known once seen about k times")

    @model_validator(mode="after")
    def _fits(self) -> MemorySpec:
        if self.gap >= self.size:
            raise ValueError("gap must be smaller than size")
        return self


class LongShapeSpec(_Strict):
    """A long shape: the means of the last `blocks` blocks of `block` rows (see
    `edge.long_shape`)."""

    block: int = Field(ge=1, description="rows averaged into one block")
    blocks: int = Field(8, ge=1, description="blocks in one shape")


class ScorerSpec(_Strict):
    """One score, higher = more anomalous, normalised on the device as score / threshold.

    kind `lstm_ae`: mean squared reconstruction error of the TFLite autoencoder over the window.
    kind `distance`: one output (`output`) of the ONNX distance model.
    kind `iqr`: the largest Tukey-fence excess over channels, already in fence units.
    kind `range`: how far the newest row lies beyond the range of every row the device has
    seen (`range`, the training rows' to start with), in range widths, largest over channels.
    kind `long_shape`: the distance of the device's last `long_shape.block x blocks` rows,
    as block means, to the k-th nearest such shape it saw before (`memory`, required).

    With `memory`, the raw score is first lowered to the distance to the device's own recent
    lag vectors where that is smaller. With `likelihood`, the raw score then goes through the
    device's likelihood step and the threshold applies to its output (a z value).
    """

    name: str
    kind: Literal["lstm_ae", "distance", "iqr", "range", "long_shape"]
    output: str | None = None
    threshold: Threshold
    likelihood: LikelihoodSpec | None = Field(
        None, description="anomaly-likelihood step between the raw score and the threshold")
    memory: MemorySpec | None = Field(
        None, description="kind distance: the device's recent-pattern memory, before the "
        "likelihood step; kind long_shape: the memory of long shapes the score comes from")
    long_shape: LongShapeSpec | None = Field(None, description="kind long_shape: its shape")


class LstmAeSpec(_Strict):
    model: str = "lstm_ae"
    reduce: Literal["mean", "last"] = Field(
        "mean", description="window error: mean over time steps, or the last step only")


class DistanceSpec(_Strict):
    model: str = "distance"
    lags: int = Field(1, ge=1, description="rows of the window fed as one flattened input row")
    clip_inputs: bool = Field(
        True, description="clip inputs to +/- preprocess.clip; off when the model is built to "
        "measure the full size of a deviation")


class IqrSpec(_Strict):
    q1: list[float]
    q3: list[float]
    k: float = 1.5


class RangeSpec(_Strict):
    """Per channel, the lowest and highest training row (scaled units): where a device's
    running range starts."""

    low: list[float]
    high: list[float]


class Ensemble(_Strict):
    """How the normalised member scores combine into one score (>= 1 means anomalous)."""

    rule: Literal["max", "mean", "weighted_mean", "vote"]
    members: list[str]
    weights: dict[str, float] = Field(default_factory=dict)
    votes: int = Field(1, ge=1, description="for `vote`: members over threshold needed")


class Decision(_Strict):
    """Default alert policy; the agent's config may override any of it."""

    smoothing: int = Field(1, ge=1, description="moving average of the ensemble score, in windows")
    trigger: int = Field(3, ge=1, description="consecutive windows over 1.0 to start an alert")
    release: int = Field(5, ge=1, description="consecutive windows under `release_level` to end")
    release_level: float = Field(0.9, gt=0)
    cooldown_s: float = Field(0.0, ge=0, description="seconds after an end before a new start")
    cooldown_windows: int = Field(
        0, ge=0, description="scored windows after an end before a new start (for sampling "
        "periods that differ from device to device)")
    warmup_windows: int = Field(0, ge=0)


class WindowSpec(_Strict):
    length: int = Field(ge=1)
    stride: int = Field(1, ge=1)


class Manifest(_Strict):
    schema_version: int
    name: str
    version: str
    created: str
    channels: list[str] = Field(min_length=1)
    sample_period_s: float = Field(gt=0)
    window: WindowSpec
    preprocess: Preprocess
    models: dict[str, ModelFile]
    lstm_ae: LstmAeSpec | None = None
    distance: DistanceSpec | None = None
    iqr: IqrSpec
    range: RangeSpec | None = None
    scorers: list[ScorerSpec] = Field(min_length=1)
    ensemble: Ensemble
    decision: Decision = Decision()
    files: dict[str, str] = Field(description="file name -> sha256 hex of every other file")
    parity: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        n = len(self.channels)
        if [c.name for c in self.preprocess.channels] != self.channels:
            raise ValueError("preprocess.channels must list `channels` in the same order")
        if len(self.iqr.q1) != n or len(self.iqr.q3) != n:
            raise ValueError(f"iqr.q1 and iqr.q3 need one value per channel ({n})")
        names = {s.name for s in self.scorers}
        if len(names) != len(self.scorers):
            raise ValueError("scorer names must be unique")
        unknown = [m for m in self.ensemble.members if m not in names]
        if unknown:
            raise ValueError(f"ensemble members {unknown} are not scorers")
        for model in self.models.values():
            if model.file not in self.files:
                raise ValueError(f"model file {model.file!r} has no sha256 in `files`")
        kinds = {s.kind for s in self.scorers}
        if "lstm_ae" in kinds and (self.lstm_ae is None or self.lstm_ae.model not in self.models):
            raise ValueError("an lstm_ae scorer needs `lstm_ae` and its model in `models`")
        if "distance" in kinds and (
            self.distance is None or self.distance.model not in self.models
        ):
            raise ValueError("a distance scorer needs `distance` and its model in `models`")
        if "range" in kinds and (
            self.range is None or len(self.range.low) != n or len(self.range.high) != n
        ):
            raise ValueError(f"a range scorer needs `range`: a low and a high per channel ({n})")
        if self.distance is not None and self.distance.lags > self.window.length:
            raise ValueError("distance.lags cannot exceed window.length")
        for scorer in self.scorers:
            if (scorer.kind == "long_shape") != (scorer.long_shape is not None):
                raise ValueError(f"scorer {scorer.name!r}: `long_shape` goes with kind long_shape")
            if scorer.kind == "long_shape":
                if scorer.memory is None:
                    raise ValueError(f"scorer {scorer.name!r}: a long_shape scorer needs `memory`")
                continue
            if scorer.memory is None:
                continue
            if scorer.kind != "distance" or self.distance is None:
                raise ValueError(
                    f"scorer {scorer.name!r}: only a distance or long_shape scorer has a memory")
            if scorer.memory.lags > self.distance.lags:
                raise ValueError(
                    f"scorer {scorer.name!r}: memory.lags {scorer.memory.lags} exceeds "
                    f"distance.lags {self.distance.lags}")
        return self


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk. One loaded from a `.tar.gz` owns the temporary directory it
    was extracted to: `close()` or the end of a `with` block removes it (else garbage
    collection or the interpreter's exit does)."""

    path: Path
    manifest: Manifest
    manifest_sha256: str
    signed: bool
    extracted: tempfile.TemporaryDirectory[str] | None = field(
        default=None, repr=False, compare=False)

    def file(self, name: str) -> Path:
        return self.path / name

    def model_path(self, key: str) -> Path:
        return self.path / self.manifest.models[key].file

    def close(self) -> None:
        """Remove the extracted archive, if any (the runtimes hold the models by then)."""
        if self.extracted is not None:
            self.extracted.cleanup()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def manifest_json(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n").encode()


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    """Write `manifest.json`; `files` must already hold the checksums of the other files."""
    target = bundle_dir / MANIFEST_NAME
    target.write_bytes(manifest_json(manifest))
    return target


def checksums(bundle_dir: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(bundle_dir / name) for name in sorted(names)}


def _format_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "manifest"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_manifest(raw: bytes, source: str = MANIFEST_NAME) -> Manifest:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{source} must hold a JSON object")
    version = data.get("schema_version")
    if version not in READABLE_SCHEMAS:
        readable = " and ".join(str(v) for v in READABLE_SCHEMAS)
        raise BundleError(
            f"{source}: schema_version {version!r} is not supported by this agent "
            f"(it reads schema_version {readable}); use an agent and trainer of one release"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{source} is invalid: {_format_validation(exc)}") from exc


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    for name, expected in manifest.files.items():
        if Path(name).name != name:
            raise BundleError(f"manifest names {name!r}: bundle files must be plain file names")
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{name} is listed in the manifest but missing from {bundle_dir}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{name} does not match its sha256 in the manifest "
                f"(expected {expected[:12]}..., found {actual[:12]}...): the file was changed "
                f"or corrupted after export; refusing the bundle"
            )


def load_bundle(path: Path | str, public_key: Path | str | None = None) -> Bundle:
    """Load and verify a bundle directory (or `.tar.gz`).

    With `public_key` (an Ed25519 public key, PEM or raw 32 bytes), `manifest.sig` must exist
    and verify; without it, a signature present is not checked. An archive is extracted to a
    temporary directory that the bundle owns (`Bundle.close`), removed at once if refused.
    """
    source = Path(path)
    if not (source.is_file() and source.name.endswith((".tar.gz", ".tgz"))):
        return _load_dir(source, public_key)
    extracted = tempfile.TemporaryDirectory(prefix="edge-bundle-")
    try:
        bundle = _load_dir(_extract(source, Path(extracted.name)), public_key)
    except BaseException:
        extracted.cleanup()
        raise
    return replace(bundle, extracted=extracted)


def _load_dir(bundle_dir: Path, public_key: Path | str | None) -> Bundle:
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle {bundle_dir} does not exist or is not a directory")
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{bundle_dir} has no {MANIFEST_NAME}: not a bundle")
    raw = manifest_path.read_bytes()
    signed = False
    if public_key is not None:
        from edge.signing import verify_manifest_signature

        verify_manifest_signature(bundle_dir, raw, Path(public_key))
        signed = True
    manifest = parse_manifest(raw)
    verify_files(bundle_dir, manifest)
    return Bundle(bundle_dir, manifest, hashlib.sha256(raw).hexdigest(), signed)


def _extract(archive: Path, target: Path) -> Path:
    """Extract into `target`; the bundle is `target` or its one subdirectory."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"cannot read bundle archive {archive}: {exc}") from exc
    entries = [p for p in target.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return target
