"""kind `range`: how far the newest row lies beyond the range of every row the device has
seen (the manifest's `range`, the training rows', to start with), in range widths, largest
over channels (`edge.running_range`, one per device)."""

from __future__ import annotations

from typing import ClassVar, Literal

from edge.running_range import RunningRange
from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import RangeSpec, ScorerSpec

STATE_KEY = "range"  # one running range per device, whatever the scorer's name


class RangeScorerSpec(ScorerSpec):
    kind: Literal["range"]


class RangeScorer(Scorer):
    kind: ClassVar[str] = "range"
    spec_type = RangeScorerSpec

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        assert manifest.range is not None, "checked by the manifest"
        self.start: RangeSpec = manifest.range

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        n = len(manifest.channels)
        known = manifest.range
        if known is None or len(known.low) != n or len(known.high) != n:
            raise ValueError(f"a range scorer needs `range`: a low and a high per channel ({n})")

    def new_state(self) -> dict[str, Stateful]:
        return {STATE_KEY: RunningRange(self.start)}

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        seen = state[STATE_KEY]
        assert isinstance(seen, RunningRange)
        return seen.excess(batch.newest)
