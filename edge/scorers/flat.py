"""kind `flat`: how far the channels that were constant in training (`channels`) lie from
their training value, at the farthest row of the window, largest over those channels.

The trainer scales such a channel by its tolerance around its training value (preprocess
`scale` and `center`), so a row's size in scaled units is its departure in tolerances: 1.0 is
a departure of exactly the tolerance, and the threshold is 1.0. Beyond it the score counts the
departure in the channel's own scale (`tolerance`: the tolerance's share of that scale), so
that a command switching on (a departure of one unit) scores about 2, not 1000, and the
ensemble's continuous score still ranks the other members' larger troubles above it. The whole
window is judged, as the window members judge it, so a one-row departure keeps its window
anomalous while it is in the window. Per channel (`channel_scores`, in tolerances), so the
alert names the channel that moved. Stateless.
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
    tolerance: float | None = Field(
        default=None, gt=0, description="the tolerance's share of each channel's scale, "
        "max(|value|, 1) (the trainer's flat_tolerance): beyond the tolerance the score grows "
        "by one per unit of that scale; absent (bundles before 2026-12-07): in tolerances")


def departure_score(tolerances: FloatArray, share: float | None) -> FloatArray:
    """A departure in tolerances as the score: itself up to the threshold (1.0), then 1 plus
    the part beyond the tolerance in units of the channel's scale."""
    if share is None:
        return tolerances
    return np.where(tolerances > 1.0, 1.0 + (tolerances - 1.0) * share, tolerances)


class FlatScorer(Scorer):
    kind: ClassVar[str] = "flat"
    spec_type = FlatScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert isinstance(spec, FlatScorerSpec)
        self.index = np.array([manifest.channels.index(c) for c in spec.channels], dtype=int)
        self.share = spec.tolerance

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        assert isinstance(spec, FlatScorerSpec)
        cls.check_channels(spec.name, spec.channels, manifest)

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        per = np.abs(batch.windows[:, :, self.index]).max(axis=1)
        self.leave_channel_scores(batch, self.index, per)
        return departure_score(np.asarray(per.max(axis=1), dtype=np.float64), self.share)
