"""kind `variability`: each twin sensor's variability against its twins' (stuck or noisy).

Per member of a twin group: the log of its standard deviation over the window minus the mean
of its twins' log deviations; that difference's distance from its training centre, in its
training spread, is the member's score, the largest over members the scorer's. A stuck sensor
(its variance collapses while its twins move) and a noisy one (its variance explodes) stand
out; a windy hour that makes every twin noisier does not. `floor` (scaled units, from the
training rows) keeps a perfectly flat window finite. Per channel; stateless.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec
from edge.scorers.twin import twin_matrix


class VariabilityScorerSpec(ScorerSpec):
    kind: Literal["variability"]
    groups: list[list[str]] = Field(min_length=1, description="channels of each twin group")
    center: list[float] = Field(description="per member (groups flattened): training centre")
    spread: list[float] = Field(description="per member: training spread, > 0")
    floor: float = Field(gt=0, description="standard deviations are floored at this")

    @model_validator(mode="after")
    def _shapes(self) -> VariabilityScorerSpec:
        members = [c for g in self.groups for c in g]
        if any(len(g) < 2 for g in self.groups) or len(set(members)) != len(members):
            raise ValueError("groups need two or more channels each, each channel once")
        if len(self.center) != len(members) or len(self.spread) != len(members):
            raise ValueError(f"center and spread need one value per member ({len(members)})")
        if not all(s > 0 for s in self.spread):
            raise ValueError("spread values must be positive")
        return self


class VariabilityScorer(Scorer):
    kind: ClassVar[str] = "variability"
    spec_type = VariabilityScorerSpec
    trouble = "sensor"

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, VariabilityScorerSpec)
        index = [[manifest.channels.index(c) for c in g] for g in spec.groups]
        self.members = np.array([i for g in index for i in g], dtype=np.intp)
        self.matrix = twin_matrix(index, self.channels)
        self.center, self.spread = np.array(spec.center), np.array(spec.spread)
        self.floor = spec.floor

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, VariabilityScorerSpec)
        strange = [c for g in spec.groups for c in g if c not in manifest.channels]
        if strange:
            raise ValueError(f"scorer {spec.name!r}: {strange} are not channels")

    def member_scores(self, windows: FloatArray) -> FloatArray:
        """(B, members) each member's log-deviation difference, in its training spreads."""
        log_sd = np.log(np.maximum(windows.std(axis=1), self.floor))
        return np.asarray(np.abs(log_sd @ self.matrix - self.center) / self.spread)

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        z = self.member_scores(batch.windows)
        per_channel = np.zeros((len(batch), self.channels))
        per_channel[:, self.members] = z
        batch.channel_scores[self.name] = per_channel
        return np.asarray(np.nan_to_num(z, nan=0.0).max(axis=1))
