"""kind `twin`: each sensor against its co-located twins (`o3_1` against `o3_2`, `o3_3`).

Per member of a twin group, its residual is its value minus the mean of the other members,
averaged over the last `rows` rows of the window; that residual's distance from its training
centre, in its training spread, is the member's score, and the largest over members is the
scorer's. Weather and pollution move twins together and cancel out; a sensor that drifts,
sticks, scales or leaves its twins does not. Per channel, so the alert names the sensor
(`channel_scores`). Its state is only what a person taught as normal (`TaughtScores`, for
every per-twin kind that scores through `TwinGroupScorer.score` or `taught_scores`).

Only values the sensors sent count: a value the device forward-filled (a dropout) is left
out, a member's residual is averaged over the rows where it and its twins were all read, and
a member with fewer than half such rows is not judged in that window, so a silent sensor's
held value is not taken for a fault; silence is reported by the agent's `channel_silent`
event instead.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edge.memory import TaughtScores
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


def min_read_rows(length: int) -> int:
    """A window judges a sensor on its read rows when at least half of it (and 2 rows) is."""
    return max(2, (length + 1) // 2)


def read_mean(readings: FloatArray, min_rows: int = 1) -> FloatArray:
    """(B, rows, C) -> (B, C) the mean of each channel's read rows (NaN: fewer than
    `min_rows` read)."""
    known = np.isfinite(readings)
    if known.all():
        return np.asarray(readings.mean(axis=1))
    count = known.sum(axis=1)
    total = np.where(known, readings, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count >= min_rows, total / count, np.nan))


def residual_mean(readings: FloatArray, matrix: FloatArray) -> FloatArray:
    """(B, rows, C) -> (B, members): each member's residual against its twins averaged over
    the rows where all of them were read (NaN: fewer than half the rows)."""
    if np.isfinite(readings).all():
        return np.asarray(readings.mean(axis=1) @ matrix)
    b, rows, c = readings.shape
    per_row = combine_members(readings.reshape(b * rows, c), matrix)
    return read_mean(per_row.reshape(b, rows, -1), min_read_rows(rows))


def read_sd(readings: FloatArray, min_rows: int) -> FloatArray:
    """(B, rows, C) -> (B, C) the standard deviation of each channel's read rows (NaN: fewer
    than `min_rows` read)."""
    known = np.isfinite(readings)
    if known.all():
        return np.asarray(readings.std(axis=1))
    count = known.sum(axis=1)
    mean = read_mean(readings)
    deviation = np.where(known, readings - mean[:, None, :], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((deviation**2).sum(axis=1) / count)
    return np.asarray(np.where(count >= min_rows, sd, np.nan))


def combine_members(values: FloatArray, matrix: FloatArray) -> FloatArray:
    """(B, C) per-channel values -> (B, members) `values @ matrix`, NaN for a member that
    uses an unknown (NaN) channel; unknown channels outside its group do not matter."""
    known = np.isfinite(values)
    if known.all():
        return np.asarray(values @ matrix)
    out = np.where(known, values, 0.0) @ matrix
    unknown = (~known).astype(np.float64) @ (matrix != 0).astype(np.float64)
    return np.asarray(np.where(unknown > 0, np.nan, out))


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

    def member_values(self, readings: FloatArray) -> FloatArray:
        """(B, members) what each member is judged on, before its centre and spread, from
        the windows' read values (NaN where filled); NaN where a member cannot be judged."""
        raise NotImplementedError

    def new_state(self) -> dict[str, Stateful]:
        """What a person taught as normal on this device (`feedback`): the windows' member
        scores, each later window judged by its departure from the nearest taught one."""
        return {f"taught.{self.name}": TaughtScores()}

    def taught_scores(self, z: FloatArray, state: dict[str, Stateful]) -> FloatArray:
        """(B, members) |z| where nothing was taught, else each member's departure from the
        nearest taught window where that is smaller (signed z: the members' own scores)."""
        taught = state.get(f"taught.{self.name}")
        if taught is None:
            return np.asarray(np.abs(z))
        assert isinstance(taught, TaughtScores)
        return taught.excused(z)

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        z = (self.member_values(batch.readings()) - self.center) / self.spread
        return self.report(batch, self.taught_scores(z, state))

    def report(self, batch: ScoringBatch, per_member: FloatArray) -> FloatArray:
        """Leave each member's (B, members) score as its channel's (`channel_scores`) and
        return the largest per window (NaN members count as 0)."""
        self.leave_channel_scores(batch, self.members, per_member)
        return np.asarray(np.nan_to_num(per_member, nan=0.0).max(axis=1))


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

    def member_values(self, readings: FloatArray) -> FloatArray:
        """Each member's residual against its twins' mean, over the window's last rows."""
        return residual_mean(readings[:, -self.rows:, :], self.matrix)
