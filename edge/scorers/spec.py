"""The manifest models of scorers and their steps: what every scorer kind shares.

A scorer kind's own spec (edge/scorers/<kind>.py) subclasses `ScorerSpec` with its `kind` as a
`Literal`; the manifest's `scorers` list is the discriminated union of the registered kinds
(`edge.scorers.registry`). The older optional fields (`output`, `likelihood`, `memory`,
`long_shape`) stay on the base so that every bundle written since schema 1 reads, and dumps,
exactly as before (the scoring-state digest hashes the dump).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(Strict):
    value: float = Field(gt=0)
    method: str = Field(description="quantile | iqr | pot | bhattacharyya | fence")
    params: dict[str, Any] = Field(default_factory=dict)


class LikelihoodSpec(Strict):
    """Anomaly likelihood (HTM style), kept per device: how unusual the recent raw scores are
    against this device's own history of them (see `edge.likelihood`)."""

    short: int = Field(20, ge=1, description="windows in the recent mean of log scores")
    history: int = Field(
        20000, ge=2, le=100_000,
        description="windows of log-score history behind the mean and deviation")
    min_history: int = Field(
        150, ge=1, description="the likelihood is 0 until this many windows were scored")
    floor: float = Field(1e-6, gt=0, description="raw scores are floored at this before the log")
    min_variance: float = Field(
        1e-4, gt=0, description="floor of the history's variance of log scores")

    @model_validator(mode="after")
    def _fits(self) -> LikelihoodSpec:
        if self.short > self.history or self.min_history > self.history:
            raise ValueError("short and min_history cannot exceed history")
        return self


class MemorySpec(Strict):
    """Recent-pattern memory, kept per device: a distance scorer's raw score becomes
    min(raw, distance to the k-th nearest of the device's own recent lag vectors), so that a
    pattern the device keeps seeing after training stops alerting (see `edge.memory`)."""

    lags: int = Field(ge=1, description="rows of the distance input compared (its last ones)")
    size: int = Field(3000, ge=2, le=100_000, description="lag vectors remembered per device")
    gap: int = Field(
        50, ge=1, description="the most recent windows left out (they overlap the current one)")
    k: int = Field(2, ge=1, description="a pattern is known once seen about k times")

    @model_validator(mode="after")
    def _fits(self) -> MemorySpec:
        if self.gap >= self.size:
            raise ValueError("gap must be smaller than size")
        return self


class TaughtSpec(Strict):
    """Windows a person labelled normal (`feedback`), kept per device, for a window-features
    distance (`export.window_features`): the scorer's raw score becomes min(distance, distance
    of the window's whitened features to a taught window's departure), so that a pattern
    taught as normal no longer alerts on this device (see `edge.memory.TaughtMemory`). Only
    taught windows count: the device learns nothing from what it merely sees.

    The features of the last `lags` rows (the distance input's): the means of the `keep`
    channels, ln(sd + eps) of every channel, then the twin residuals `mean @ twins`; whitened
    as (features - center) @ factor, in which space the distance model's output is the length.
    A taught window's departure is its whitened vector with the components under `level` (the
    part training explains) set to 0, so only what made it unusual is excused."""

    lags: int = Field(ge=1, description="rows of the distance input the features are of")
    keep: list[int] = Field(description="channels whose mean is a feature")
    eps: float = Field(gt=0, description="added to each sd before its log")
    twins: list[list[float]] = Field(
        default_factory=list, description="(channels, members) twin-residual matrix; [] none")
    center: list[float] = Field(min_length=1, description="training mean of each feature")
    factor: list[list[float]] = Field(
        min_length=1, description="(features, components) A with A A^T = the precision")
    level: float = Field(
        2.0, ge=0, description="whitened components of a taught window under this are left out")
    size: int = Field(3000, ge=1, le=100_000, description="taught windows kept per device")

    @model_validator(mode="after")
    def _shapes(self) -> TaughtSpec:
        if len(self.factor) != len(self.center) or len({len(r) for r in self.factor}) != 1:
            raise ValueError("factor needs one row per feature (center), all of one length")
        if self.twins and len({len(r) for r in self.twins}) != 1:
            raise ValueError("twins rows must be of one length")
        if any(k < 0 for k in self.keep) or len(set(self.keep)) != len(self.keep):
            raise ValueError("keep lists channel indices, each once")
        return self

    def features(self, channels: int) -> int:
        """How many features the spec's model has for `channels` channels."""
        return len(self.keep) + channels + (len(self.twins[0]) if self.twins else 0)


class LongShapeSpec(Strict):
    """A long shape: the means of the last `blocks` blocks of `block` rows (see
    `edge.long_shape`)."""

    block: int = Field(ge=1, description="rows averaged into one block")
    blocks: int = Field(8, ge=1, description="blocks in one shape")


class IqrSpec(Strict):
    q1: list[float]
    q3: list[float]
    k: float = 1.5


class RangeSpec(Strict):
    """Per channel, the lowest and highest training row (scaled units): where a device's
    running range starts."""

    low: list[float]
    high: list[float]


class ScorerSpec(Strict):
    """One score, higher = more anomalous, normalised on the device as score / threshold.

    Each kind documents its own score in its module (edge/scorers/<kind>.py). The steps any
    kind may declare: with `memory` (kinds that allow it), the raw score is first lowered to
    the distance to the device's own recent lag vectors where that is smaller; with
    `likelihood`, the raw score then goes through the device's likelihood step and the
    threshold applies to its output (a z value).
    """

    name: str
    kind: str
    output: str | None = None
    threshold: Threshold
    likelihood: LikelihoodSpec | None = Field(
        None, description="anomaly-likelihood step between the raw score and the threshold")
    memory: MemorySpec | None = Field(
        None, description="kind distance: the device's recent-pattern memory, before the "
        "likelihood step; kind long_shape: the memory of long shapes the score comes from")
    long_shape: LongShapeSpec | None = Field(None, description="kind long_shape: its shape")

    takes_long_shape: ClassVar[bool] = False  # the kind whose field `long_shape` is

    @model_validator(mode="after")
    def _own_fields(self) -> ScorerSpec:
        # the plain base (built by older code) is judged as its kind's spec in the manifest
        generic = type(self) is ScorerSpec
        if self.long_shape is not None and not self.takes_long_shape and not generic:
            raise ValueError(f"scorer {self.name!r}: `long_shape` goes with kind long_shape")
        return self
