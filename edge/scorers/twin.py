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


class TwinGroupsSpec(ScorerSpec):
    """What a per-twin kind holds: its twin groups and each member's training centre and
    spread (groups flattened, in order)."""

    groups: list[list[str]] = Field(min_length=1, description="channels of each twin group")
    center: list[float] = Field(description="per member (groups flattened): training centre")
    spread: list[float] = Field(description="per member: training spread, > 0")

    @model_validator(mode="after")
    def _shapes(self) -> TwinGroupsSpec:
        members = [c for g in self.groups for c in g]
        if any(len(g) < 2 for g in self.groups) or len(set(members)) != len(members):
            raise ValueError("groups need two or more channels each, each channel once")
        if len(self.center) != len(members) or len(self.spread) != len(members):
            raise ValueError(f"center and spread need one value per member ({len(members)})")
        if not all(s > 0 for s in self.spread):
            raise ValueError("spread values must be positive")
        return self


class TwinScorerSpec(TwinGroupsSpec):
    kind: Literal["twin"]
    rows: int = Field(ge=1, description="the window's last rows averaged into the residual")


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


class TwinGroupScorer(Scorer):
    """What the per-twin kinds share: members, residual matrix, centres and spreads; each
    member's score left as the channel's (`channel_scores`), the largest the scorer's."""

    trouble = "sensor"

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, TwinGroupsSpec)
        index = [[manifest.channels.index(c) for c in g] for g in spec.groups]
        self.members = np.array([i for g in index for i in g], dtype=np.intp)
        self.matrix = twin_matrix(index, self.channels)
        self.center, self.spread = np.array(spec.center), np.array(spec.spread)

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, TwinGroupsSpec)
        strange = [c for g in spec.groups for c in g if c not in manifest.channels]
        if strange:
            raise ValueError(f"scorer {spec.name!r}: {strange} are not channels")

    def member_values(self, windows: FloatArray) -> FloatArray:
        """(B, members) what each member is judged on, before its centre and spread."""
        raise NotImplementedError

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        z = np.abs(self.member_values(batch.windows) - self.center) / self.spread
        per_channel = np.zeros((len(batch), self.channels))
        per_channel[:, self.members] = z
        batch.channel_scores[self.name] = per_channel
        return np.asarray(np.nan_to_num(z, nan=0.0).max(axis=1))


class TwinScorer(TwinGroupScorer):
    kind: ClassVar[str] = "twin"
    spec_type = TwinScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, TwinScorerSpec)
        self.rows = spec.rows

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().check(spec, manifest)
        assert isinstance(spec, TwinScorerSpec)
        if spec.rows > manifest.window.length:
            raise ValueError(f"scorer {spec.name!r}: rows {spec.rows} exceeds the window")

    def member_values(self, windows: FloatArray) -> FloatArray:
        """Each member's residual against its twins' mean, over the window's last rows."""
        return np.asarray(windows[:, -self.rows:, :].mean(axis=1) @ self.matrix)
