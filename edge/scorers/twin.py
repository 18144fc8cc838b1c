"""kind `twin`: each sensor against its co-located twins (`o3_1` against `o3_2`, `o3_3`).

Per member of a twin group, its residual is its value minus the mean of the other members,
averaged over the last `rows` rows of the window; that residual's distance from its training
centre, in its training spread, is the member's score, and the largest over members is the
scorer's. Weather and pollution move twins together and cancel out; a sensor that drifts,
sticks, scales or leaves its twins does not. Per channel, so the alert names the sensor
(`channel_scores`). Stateless.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


class TwinScorerSpec(ScorerSpec):
    kind: Literal["twin"]
    groups: list[list[str]] = Field(min_length=1, description="channels of each twin group")
    center: list[float] = Field(description="per member (groups flattened): training centre")
    spread: list[float] = Field(description="per member: training spread of its residual, > 0")
    rows: int = Field(ge=1, description="the window's last rows averaged into the residual")

    @model_validator(mode="after")
    def _shapes(self) -> TwinScorerSpec:
        members = [c for g in self.groups for c in g]
        if any(len(g) < 2 for g in self.groups) or len(set(members)) != len(members):
            raise ValueError("groups need two or more channels each, each channel once")
        if len(self.center) != len(members) or len(self.spread) != len(members):
            raise ValueError(f"center and spread need one value per member ({len(members)})")
        if not all(s > 0 for s in self.spread):
            raise ValueError("spread values must be positive")
        return self


def twin_matrix(groups: list[list[int]], channels: int) -> FloatArray:
    """(channels, members): (rows @ R)[:, k] = member k minus the mean of its twins."""
    columns = []
    for members in groups:
        for i in members:
            column = np.zeros(channels)
            column[i] = 1.0
            column[[j for j in members if j != i]] = -1.0 / (len(members) - 1)
            columns.append(column)
    return np.array(columns).T


class TwinScorer(Scorer):
    kind: ClassVar[str] = "twin"
    spec_type = TwinScorerSpec
    trouble = "sensor"

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, TwinScorerSpec)
        index = [[manifest.channels.index(c) for c in g] for g in spec.groups]
        self.members = np.array([i for g in index for i in g], dtype=np.intp)
        self.matrix = twin_matrix(index, self.channels)
        self.center, self.spread = np.array(spec.center), np.array(spec.spread)
        self.rows = spec.rows

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, TwinScorerSpec)
        strange = [c for g in spec.groups for c in g if c not in manifest.channels]
        if strange:
            raise ValueError(f"scorer {spec.name!r}: {strange} are not channels")
        if spec.rows > manifest.window.length:
            raise ValueError(f"scorer {spec.name!r}: rows {spec.rows} exceeds the window")

    def member_scores(self, windows: FloatArray) -> FloatArray:
        """(B, members) each member's residual distance, in its training spreads."""
        residual = windows[:, -self.rows:, :].mean(axis=1) @ self.matrix
        return np.asarray(np.abs(residual - self.center) / self.spread)

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        z = self.member_scores(batch.windows)
        per_channel = np.zeros((len(batch), self.channels))
        per_channel[:, self.members] = z
        batch.channel_scores[self.name] = per_channel
        return np.asarray(np.nan_to_num(z, nan=0.0).max(axis=1))
