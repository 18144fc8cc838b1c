"""kind `distance`: one output (`output`) of the ONNX distance model, whose input rows are
the last `distance.lags` rows of each window (shared by every distance scorer of a bundle).
The lag-vector memory (`memory`) may lower it (`edge.scorers.steps`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


class DistanceScorerSpec(ScorerSpec):
    kind: Literal["distance"]


class DistanceScorer(Scorer):
    kind: ClassVar[str] = "distance"
    spec_type = DistanceScorerSpec
    memory_role = "step"

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        distance = manifest.distance
        if distance is None or distance.model not in manifest.models:
            raise ValueError("a distance scorer needs `distance` and its model in `models`")
        if spec.memory is not None and spec.memory.lags > distance.lags:
            raise ValueError(
                f"scorer {spec.name!r}: memory.lags {spec.memory.lags} exceeds "
                f"distance.lags {distance.lags}")

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        return batch.shared.distances()[str(self.spec.output)]
