"""Trainer scorer kinds found by discovery (every module of `export.scorers` defining a
`TrainerScorer` subclass), their options parsed from `--scorer-options KIND.NAME=VALUE`, and
the fit of the kinds a bundle adds (`--scorers`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter

import export.scorers as package
from edge.bundle import ScorerSpec, Threshold
from edge.scorers.registry import SCORERS, AnyScorerSpec, kinds_in
from edge.units import ChannelScaling
from export.config import FitConfig
from export.errors import InputError
from export.scorers.base import FloatArray, TrainerScorer, TrainingData

_INFRASTRUCTURE = frozenset({"base", "registry"})


def _discover() -> dict[str, type[TrainerScorer]]:
    found: dict[str, type[TrainerScorer]] = {}
    for cls in kinds_in(package.__name__, package.__path__, TrainerScorer, _INFRASTRUCTURE):
        if cls.kind not in SCORERS:
            raise TypeError(f"{cls.__qualname__}: no device scorer of kind {cls.kind!r} in "
                            "edge.scorers")
        found[cls.kind] = cls
    return found


TRAINERS: dict[str, type[TrainerScorer]] = _discover()


def trainer(kind: str) -> type[TrainerScorer]:
    if kind not in TRAINERS:
        known = ", ".join(sorted(TRAINERS)) or "none"
        raise InputError(f"--scorers {kind!r}: not a kind the trainer can add (known: {known})")
    return TRAINERS[kind]


def options_of(kind: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    """Kind `kind`'s options: its defaults, overridden by `KIND.NAME=VALUE` pairs for it."""
    cls = trainer(kind)
    out = {name: option.default for name, option in cls.options.items()}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        owner, _, name = key.partition(".")
        if not sep or not name:
            raise InputError(f"--scorer-options {pair!r}: expected KIND.NAME=VALUE")
        if owner != kind:
            continue
        if name not in cls.options:
            known = ", ".join(sorted(cls.options)) or "none"
            raise InputError(f"--scorer-options {pair!r}: kind {kind} has no option {name!r} "
                             f"(its options: {known})")
        try:
            out[name] = cls.options[name].parse(text)
        except ValueError as exc:
            raise InputError(f"--scorer-options {pair!r}: {exc}") from exc
    return out


@dataclass(frozen=True)
class Added:
    """A scorer of an added kind, fitted: its trainer, options and spec (no threshold yet)."""

    trainer: type[TrainerScorer]
    options: dict[str, Any]
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec["name"])


def training_data(channels: list[str], scaled: FloatArray, timestamps: FloatArray,
                  fit_rows: npt.NDArray[np.bool_], config: FitConfig,
                  windows: FloatArray | None = None,
                  missing: npt.NDArray[np.bool_] | None = None,
                  scaling: Sequence[ChannelScaling] | None = None) -> TrainingData:
    return TrainingData(list(channels), scaled[fit_rows], timestamps[fit_rows], config, windows,
                        missing, scaling)


def fit_added(data: TrainingData) -> list[Added]:
    """Fit every kind of `--scorers` on the training rows (InputError: the data cannot)."""
    config = data.config
    kinds = config.scorers or ()
    for pair in config.scorer_options:
        owner = pair.partition("=")[0].partition(".")[0]
        if owner not in kinds:
            raise InputError(f"--scorer-options {pair!r}: kind {owner!r} is not in --scorers")
    added: list[Added] = []
    for kind in kinds:
        cls = trainer(kind)
        options = options_of(kind, config.scorer_options)
        added += [Added(cls, options, spec) for spec in cls.fit(data, options)]
    return added


def spec_with(added: Added, threshold: Threshold) -> ScorerSpec:
    """The manifest spec of an added scorer, validated as its kind's."""
    return _ADAPTER.validate_python({**added.spec, "threshold": threshold.model_dump()})


_ADAPTER: TypeAdapter[ScorerSpec] = TypeAdapter(AnyScorerSpec)
