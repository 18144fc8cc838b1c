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
    LikelihoodSpec,
    LongShapeSpec,
    LstmAeSpec,
    Manifest,
    MemorySpec,
    ModelFile,
    ScorerSpec,
    Threshold,
    WindowSpec,
    checksums,
)
from edge.scorers.distance import DistanceScorerSpec
from edge.scorers.flat import FlatScorerSpec
from edge.scorers.spec import TaughtSpec
from export.config import FitConfig
from export.lag_kmeans import scale_of
from export.prepare import Prepared
from export.recipes import long_shape_blocks

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


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def likelihood_spec(config: FitConfig) -> LikelihoodSpec:
    return LikelihoodSpec(
        short=config.likelihood_short,
        history=config.likelihood_history,
        min_history=config.likelihood_min_history,
    )


def memory_spec(scorer: str, config: FitConfig) -> MemorySpec | None:
    """The device memory of a lag_kmeans scorer (`lag_distance_<rows>`), if configured."""
    scale = scale_of(scorer)
    if not config.lag_memory or scale is None:
        return None
    return MemorySpec(lags=scale, size=config.lag_memory,
                      gap=config.lag_memory_gap, k=config.lag_memory_k)


def bundle_scorers(distance_scorers: list[str], config: FitConfig, flat: tuple[str, ...] = ()
                   ) -> list[tuple[str, str, str | None]]:
    """(name, kind, ONNX output) of every scorer a bundle holds, in manifest order: lstm_ae,
    the distance model's scorers, iqr, range, the long shapes, and `flat` when channels were
    constant in training (`flat`)."""
    return [("lstm_ae", "lstm_ae", None),
            *((name, "distance", name) for name in distance_scorers),
            ("iqr", "iqr", None), ("range", "range", None),
            *((name, "long_shape", None) for name in long_shape_blocks(config)),
            *((("flat", "flat", None),) if flat else ())]


def long_shape_specs(name: str, config: FitConfig) -> tuple[LongShapeSpec, MemorySpec]:
    """The shape and the device memory of long-shape scorer `name`: the shapes overlapping
    the current one (its span) are left out of the comparison."""
    shape = LongShapeSpec(block=long_shape_blocks(config)[name], blocks=config.long_shape_blocks)
    memory = MemorySpec(lags=shape.blocks, size=config.long_shape_memory,
                        gap=shape.block * shape.blocks, k=config.lag_memory_k)
    return shape, memory


def scorer_specs(
    thresholds: dict[str, Threshold], distance_scorers: list[str], config: FitConfig,
    flat: tuple[str, ...] = (), taught: TaughtSpec | None = None,
) -> list[ScorerSpec]:
    """The bundle's scorers (`bundle_scorers`), with a likelihood step and a memory where
    configured; a long shape always has both; the distance scorers hold `taught` (a
    window-features model's taught memory, `export.window_features.taught_spec`)."""
    step = likelihood_spec(config)
    chosen = set(config.likelihood_scorers or ())
    out: list[ScorerSpec] = []
    for name, kind, output in bundle_scorers(distance_scorers, config, flat):
        if kind == "flat":
            out.append(FlatScorerSpec(name=name, kind="flat", channels=list(flat),
                                      tolerance=config.flat_tolerance,
                                      threshold=thresholds[name]))
            continue
        shape, memory = (long_shape_specs(name, config) if kind == "long_shape"
                         else (None, memory_spec(name, config)))
        if kind == "distance" and taught is not None:
            out.append(DistanceScorerSpec(
                name=name, kind="distance", output=output, threshold=thresholds[name],
                likelihood=step if name in chosen else None, memory=memory, taught=taught))
            continue
        out.append(ScorerSpec(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            output=output,
            threshold=thresholds[name],
            likelihood=step if name in chosen or shape is not None else None,
            memory=memory,
            long_shape=shape,
        ))
    return out


def assemble_manifest(
    prep: Prepared,
    config: FitConfig,
    *,
    folder: Path,
    identity: tuple[str, str, str],
    models: dict[str, ModelFile],
    lags: int,
    distance_scorers: list[str],
    thresholds: dict[str, Threshold],
    parity: dict[str, Any],
    training: dict[str, Any],
    lstm_trusted: bool = True,
    added: tuple[ScorerSpec, ...] = (),
    taught: TaughtSpec | None = None,
) -> Manifest:
    """The manifest; `identity` is (name, version, created); model files must be in `folder`;
    `lstm_trusted` false marks the autoencoder as failing its parity bound; `added`: the
    scorers of the kinds `--scorers` adds (`export.scorers`), ensemble members too."""
    name, version, created = identity
    members = list(config.ensemble_members or ()) + [s.name for s in added]
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
        lstm_ae=LstmAeSpec(
            reduce=config.lstm_reduce, trusted=lstm_trusted  # type: ignore[arg-type]
        ),
        distance=DistanceSpec(lags=lags, clip_inputs=config.distance_clip),
        iqr=prep.iqr,
        range=prep.range,
        scorers=[*scorer_specs(thresholds, distance_scorers, config, prep.flat, taught),
                 *added],
        ensemble=Ensemble(
            rule=config.ensemble_rule,  # type: ignore[arg-type]
            members=members,
            weights=dict(config.ensemble_weights or {}),
            votes=min(config.ensemble_votes, len(members)),
        ),
        decision=Decision(
            smoothing=config.smoothing,  # type: ignore[arg-type]  # resolved: not None
            trigger=config.trigger,  # type: ignore[arg-type]
            release=config.release,  # type: ignore[arg-type]
            release_level=config.release_level,  # type: ignore[arg-type]
            cooldown_s=config.cooldown_s,
            cooldown_windows=config.cooldown_windows,  # type: ignore[arg-type]
            warmup_windows=config.warmup_windows,
        ),
        files=checksums(folder, [m.file for m in models.values()]),
        parity=parity,
        training=training,
        versions=versions(),
    )
