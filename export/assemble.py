"""Assemble the manifest from what the stages produced (edge.bundle.Manifest is the schema)."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edge.bundle import (
    SCHEMA_VERSION,
    Decision,
    DistanceSpec,
    Ensemble,
    LstmAeSpec,
    Manifest,
    ModelFile,
    ScorerSpec,
    Threshold,
    WindowSpec,
    checksums,
)
from export.config import FitConfig
from export.prepare import Prepared

PACKAGES = (
    "numpy",
    "tensorflow-cpu",
    "keras",
    "scikit-learn",
    "skl2onnx",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "scipy",
    "edge-anomaly",
)
DISTANCE_OUTPUTS = ("spe", "euclidean", "mahalanobis")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def scorer_specs(thresholds: dict[str, Threshold], spe: bool) -> list[ScorerSpec]:
    """lstm_ae, the distance outputs (spe only when it is not identically zero), iqr."""
    specs = [ScorerSpec(name="lstm_ae", kind="lstm_ae", threshold=thresholds["lstm_ae"])]
    for output in DISTANCE_OUTPUTS:
        if output != "spe" or spe:
            specs.append(
                ScorerSpec(
                    name=output, kind="distance", output=output, threshold=thresholds[output]
                )
            )
    specs.append(ScorerSpec(name="iqr", kind="iqr", threshold=thresholds["iqr"]))
    return specs


def assemble_manifest(
    prep: Prepared,
    config: FitConfig,
    *,
    folder: Path,
    identity: tuple[str, str, str],
    models: dict[str, ModelFile],
    lags: int,
    spe: bool,
    thresholds: dict[str, Threshold],
    parity: dict[str, Any],
    training: dict[str, Any],
) -> Manifest:
    """The manifest; `identity` is (name, version, created); model files must be in `folder`."""
    name, version, created = identity
    members = [m for m in config.ensemble_members if spe or m != "spe"]
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        created=created,
        channels=prep.data.channels,
        sample_period_s=prep.sample_period_s,
        window=WindowSpec(length=config.window, stride=config.stride),
        preprocess=prep.preprocess,
        models=models,
        lstm_ae=LstmAeSpec(reduce=config.lstm_reduce),  # type: ignore[arg-type]
        distance=DistanceSpec(lags=lags, clip_inputs=config.distance_clip),
        iqr=prep.iqr,
        scorers=scorer_specs(thresholds, spe),
        ensemble=Ensemble(
            rule=config.ensemble_rule,  # type: ignore[arg-type]
            members=members,
            weights=dict(config.ensemble_weights or {}),
            votes=min(config.ensemble_votes, len(members)),
        ),
        decision=Decision(
            smoothing=config.smoothing,
            trigger=config.trigger,
            release=config.release,
            release_level=config.release_level,
            cooldown_s=config.cooldown_s,
            warmup_windows=config.warmup_windows,
        ),
        files=checksums(folder, [m.file for m in models.values()]),
        parity=parity,
        training=training,
        versions=versions(),
    )
