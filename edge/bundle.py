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

from pydantic import Field, ValidationError, field_validator, model_validator

from edge.bundle_files import MANIFEST_NAME, SIGNATURE_NAME, BundleError
from edge.scorers.registry import AnyScorerSpec, scorer_class
from edge.scorers.spec import (
    IqrSpec,
    LikelihoodSpec,
    LongShapeSpec,
    MemorySpec,
    RangeSpec,
    ScorerSpec,
    Threshold,
)
from edge.scorers.spec import Strict as _Strict
from edge.signing import verify_manifest_signature

SCHEMA_VERSION = 6  # what this trainer writes
# 2 added optional fields (scorer likelihood, cooldown_windows) only; 3 the scorer memory only;
# 4 the `range` scorer kind and the training range only; 5 the `long_shape` scorer kind only;
# 6 the `flat` scorer kind and `lstm_ae.trusted` (absent: trusted) only. The distance model's
# TFLite twin (models.distance_tflite, distance.tflite) needs no new version: an agent that
# does not know it reads the entry as one more model file and scores with distance.onnx.
READABLE_SCHEMAS = (1, 2, 3, 4, 5, 6)

__all__ = [  # the scorer specs live in edge.scorers.spec, the file names and the error in
    # edge.bundle_files; the bundle's users find them here
    "MANIFEST_NAME", "SIGNATURE_NAME", "BundleError",
    "IqrSpec", "LikelihoodSpec", "LongShapeSpec", "MemorySpec", "RangeSpec", "ScorerSpec",
    "Threshold",
]


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


class LstmAeSpec(_Strict):
    model: str = "lstm_ae"
    reduce: Literal["mean", "last"] = Field(
        "mean", description="window error: mean over time steps, or the last step only")
    trusted: bool = Field(
        True, description="false when the quantised model failed its parity bound against the "
        "float model (`parity`): it is scored and reported but no ensemble member, and alerts "
        "are attributed to channels without it")


class DistanceSpec(_Strict):
    model: str = "distance"
    lags: int = Field(1, ge=1, description="rows of the window fed as one flattened input row")
    clip_inputs: bool = Field(
        True, description="clip inputs to +/- preprocess.clip; off when the model is built to "
        "measure the full size of a deviation")


class Ensemble(_Strict):
    """How the normalised member scores combine into one score (>= 1 means anomalous)."""

    rule: Literal["max", "max_or_mean", "mean", "weighted_mean", "vote"]
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
    scorers: list[AnyScorerSpec] = Field(min_length=1)
    ensemble: Ensemble
    decision: Decision = Decision()
    files: dict[str, str] = Field(description="file name -> sha256 hex of every other file")
    parity: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)

    @field_validator("scorers", mode="before")
    @classmethod
    def _as_kinds(cls, value: Any) -> Any:
        """A plain `ScorerSpec` (built by older code) is read as the spec of its kind."""
        if isinstance(value, list):
            return [v.model_dump() if type(v) is ScorerSpec else v for v in value]
        return value

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
        if self.lstm_ae is not None and not self.lstm_ae.trusted:
            members = [s.name for s in self.scorers
                       if s.kind == "lstm_ae" and s.name in self.ensemble.members]
            if members:
                raise ValueError(
                    f"ensemble member {members[0]!r} is an LSTM autoencoder marked not trusted "
                    "(lstm_ae.trusted false)")
        if self.distance is not None and self.distance.lags > self.window.length:
            raise ValueError("distance.lags cannot exceed window.length")
        for scorer in self.scorers:
            kind = scorer_class(scorer)
            if scorer.memory is not None and kind.memory_role == "none":
                raise ValueError(
                    f"scorer {scorer.name!r}: only a distance or long_shape scorer has a memory")
            kind.check(scorer, self)
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
