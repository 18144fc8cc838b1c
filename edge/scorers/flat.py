"""kind `flat`: how far the newest row of the channels that were constant in training
(`channels`) lies from their training value, in tolerances, largest over those channels.

The trainer scales such a channel by its tolerance around its training value (preprocess
`scale` and `center`), so the score is just the newest row's size in scaled units: 1.0 is a
departure of exactly the tolerance, and the threshold is 1.0. Stateless.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


class FlatScorerSpec(ScorerSpec):
    kind: Literal["flat"]
    channels: list[str] = Field(
        min_length=1, description="the channels constant in the training rows, each scaled by "
        "its tolerance around its training value")


class FlatScorer(Scorer):
    kind: ClassVar[str] = "flat"
    spec_type = FlatScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, FlatScorerSpec)
        self.index = np.array([manifest.channels.index(c) for c in spec.channels], dtype=int)

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, FlatScorerSpec)
        strange = [c for c in spec.channels if c not in manifest.channels]
        if strange:
            raise ValueError(f"scorer {spec.name!r}: channels {strange} are not channels")

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        return np.asarray(np.abs(batch.newest[:, self.index]).max(axis=1))
