"""kind `seasonal`: how far each channel's newest reading lies from what is usual for it at
this time of day (and day of week), in that time's own spread; the largest over channels.

Training learns, per channel and per time bin (an hour of the day, or of the week when the
training data spans weeks), the median level and robust spread of the scaled readings. A
pump that runs loud at 6 am every day is then normal at 6 am, and the same reading at 3 am is
far. Bins are taken from the window's timestamp (epoch seconds) plus `offset_s` (the local
time zone of the site, fixed at training); a window without a known time is not scored (NaN).
Stateless: the profile is the bundle's.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec

DAY_S, WEEK_S = 86_400.0, 604_800.0


class SeasonalScorerSpec(ScorerSpec):
    kind: Literal["seasonal"]
    period_s: float = Field(gt=0, le=WEEK_S, description="length of one season (a day, a week)")
    offset_s: float = Field(
        0.0, ge=-DAY_S, le=DAY_S, description="added to epoch seconds before binning (the "
        "site's UTC offset)")
    level: list[list[float]] = Field(
        min_length=1, description="per channel, per time bin: the usual level (scaled units)")
    spread: list[list[float]] = Field(
        min_length=1, description="per channel, per time bin: the usual spread, > 0")

    @model_validator(mode="after")
    def _shapes(self) -> SeasonalScorerSpec:
        bins = {len(row) for row in [*self.level, *self.spread]}
        if len(self.level) != len(self.spread) or len(bins) != 1:
            raise ValueError("level and spread need the same channels and time bins")
        if bins.pop() < 1:
            raise ValueError("level and spread need at least one time bin")
        if not all(s > 0 for row in self.spread for s in row):
            raise ValueError("spread values must be positive")
        return self


class SeasonalScorer(Scorer):
    kind: ClassVar[str] = "seasonal"
    spec_type = SeasonalScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, SeasonalScorerSpec)
        self.level = np.asarray(spec.level, dtype=np.float64).T  # (bins, C)
        self.spread = np.asarray(spec.spread, dtype=np.float64).T
        self.period_s, self.offset_s = spec.period_s, spec.offset_s

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, SeasonalScorerSpec)
        if len(spec.level) != len(manifest.channels):
            raise ValueError(f"scorer {spec.name!r}: level and spread need one row per channel "
                             f"({len(manifest.channels)})")

    def bins(self, timestamps: FloatArray) -> FloatArray:
        """The time bin of each timestamp (float, NaN where the time is unknown)."""
        n = self.level.shape[0]
        phase = np.mod(timestamps + self.offset_s, self.period_s) / self.period_s
        return np.asarray(np.minimum(np.floor(phase * n), n - 1))

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        where = self.bins(batch.timestamps)
        known = ~np.isnan(where)
        out = np.full(len(batch), np.nan)
        if known.any():
            b = where[known].astype(np.intp)
            z = np.abs(batch.newest[known] - self.level[b]) / self.spread[b]
            out[known] = np.nan_to_num(z, nan=0.0).max(axis=1)
        return out
