"""kind `stuck`: a sensor that repeats its last reading longer than it ever did in training.

Per judged channel (`channels`): the run of read values equal to the window's newest one,
counted back from the newest row, in the channel's `limits` (rows): 1.0 is a run as long as
the limit, the threshold. A value the window forward-filled is not read, so it ends a run and
a filled newest value scores 0 (a dropout's held value is no stuck sensor). Values are
compared exactly: a sensor stuck on its last value sends that value again, bit for bit, where
a live one in the same units does not. Largest over channels; per channel (`channel_scores`),
so the alert names the sensor. Stateless: a run longer than the window is seen as the window.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


class StuckScorerSpec(ScorerSpec):
    kind: Literal["stuck"]
    channels: list[str] = Field(min_length=1, description="the channels judged")
    limits: list[int] = Field(
        min_length=1, description="per channel, the run of equal readings (rows) that scores "
        "1.0: twice the longest of the training rows, at least half the window")

    @model_validator(mode="after")
    def _fits(self) -> StuckScorerSpec:
        if len(self.limits) != len(self.channels):
            raise ValueError("limits: one per channel")
        if min(self.limits) < 2:
            raise ValueError("limits: each at least 2 rows (a run of one is any reading)")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: each at most once")
        return self


def trailing_runs(readings: FloatArray) -> FloatArray:
    """(B, rows, K) -> (B, K): how many of the last rows equal the newest one (NaN: not read,
    equal to nothing, so a NaN newest value has a run of 0)."""
    newest = readings[:, -1:, :]
    same = (readings == newest)[:, ::-1, :]
    return np.asarray(np.cumprod(same, axis=1).sum(axis=1), dtype=np.float64)


class StuckScorer(Scorer):
    kind: ClassVar[str] = "stuck"
    spec_type = StuckScorerSpec
    trouble: ClassVar[str] = "sensor"

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, StuckScorerSpec)
        self.index = np.array([manifest.channels.index(c) for c in spec.channels], dtype=int)
        self.limits = np.asarray(spec.limits, dtype=np.float64)

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, StuckScorerSpec)
        cls.check_channels(spec.name, spec.channels, manifest)
        length = manifest.window.length
        if max(spec.limits) > length:
            raise ValueError(f"scorer {spec.name!r}: limits {max(spec.limits)} exceed the "
                             f"window ({length} rows): such a run cannot be seen")

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        per = trailing_runs(batch.readings()[:, :, self.index]) / self.limits
        self.leave_channel_scores(batch, self.index, per)
        return np.asarray(per.max(axis=1), dtype=np.float64)
