"""kind `iqr`: the largest Tukey-fence excess over channels (`iqr` fences per channel), in
fence units: 1.0 is exactly on the fence."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from edge.scorers.base import FloatArray, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


class IqrScorerSpec(ScorerSpec):
    kind: Literal["iqr"]


class IqrScorer(Scorer):
    kind: ClassVar[str] = "iqr"
    spec_type = IqrScorerSpec

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        return np.asarray(batch.shared.iqr_excess().max(axis=1))
