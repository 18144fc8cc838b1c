"""The trainer's scorer contract: what a kind module in `export.scorers` provides.

A kind module defines a `TrainerScorer` subclass with:
- `kind`: the device kind it fits (`edge.scorers.<kind>`, same string);
- `options`: its own `--scorer-options KIND.NAME=VALUE` options, name -> `Option`;
- `fit(data, options)`: the specs (without thresholds) of the scorers it adds, fitted on the
  training rows only; raises `FitError`/`InputError` naming why the data cannot support it;
- `threshold(name, heldout, data, options)`: the threshold from the raw scores of the held-out
  normal windows (default: the trainer's configured method, `export.calibrate`); the training
  windows' raw scores are in `data.scored` for a kind that calibrates on them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from edge.bundle import Threshold
from edge.units import ChannelScaling
from export import calibrate
from export.config import FitConfig

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Option:
    parse: Callable[[str], Any]
    default: Any
    help: str


def flag(text: str) -> bool:
    """An on/off option's value (`--scorer-options KIND.NAME=true`)."""
    return text.lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class TrainingData:
    """What a kind may fit on: the training rows only (scaled, filled) and their times."""

    channels: list[str]
    rows: FloatArray  # (n, C) scaled training rows
    timestamps: FloatArray  # (n,) epoch seconds
    config: FitConfig
    windows: FloatArray | None = None  # (B, window, C) the training windows, when needed
    missing: npt.NDArray[np.bool_] | None = None  # (B, window, C) filled, not read
    # the channels' scaling (`edge.bundle.ChannelPreprocess`, in channel order), for kinds
    # that judge sensors in their own units; None: the scaled values are taken as the units
    scaling: Sequence[ChannelScaling] | None = None
    # the raw scores of the training windows by scorer name (the windows the kinds were fitted
    # on, scored by the provisional bundle), set before the thresholds; empty until then
    scored: dict[str, FloatArray] = field(default_factory=dict)

    def readings(self) -> FloatArray | None:
        """The training windows with NaN where a value was filled rather than read (as
        `edge.scorers.base.ScoringBatch.readings` on the device)."""
        if self.windows is None or self.missing is None or not self.missing.any():
            return self.windows
        return np.where(self.missing, np.nan, self.windows)


def judged_channels(rows: FloatArray) -> list[int]:
    """Channels with more than two distinct (finite) values in the training rows: a constant
    one is `flat`'s, a two-valued one a state (a command, a valve open or shut)."""
    out = []
    for c in range(rows.shape[1]):
        values = rows[:, c][np.isfinite(rows[:, c])]
        if np.unique(values).size > 2:
            out.append(c)
    return out


class TrainerScorer:
    kind: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}

    @classmethod
    def fit(cls, data: TrainingData, options: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def threshold(cls, name: str, heldout: FloatArray, data: TrainingData,
                  options: dict[str, Any]) -> Threshold:
        return calibrate.calibrate(heldout, data.config)
