"""kind `long_shape`: the distance of the device's last `long_shape.block x blocks` rows, as
block means, to the k-th nearest such shape it saw before (`memory`, required;
`edge.long_shape`, one per device and scorer). NaN until the device has seen enough rows."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from edge.long_shape import LongShape
from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


class LongShapeScorerSpec(ScorerSpec):
    kind: Literal["long_shape"]
    takes_long_shape = True

    @model_validator(mode="after")
    def _complete(self) -> LongShapeScorerSpec:
        if self.long_shape is None:
            raise ValueError(f"scorer {self.name!r}: `long_shape` goes with kind long_shape")
        if self.memory is None:
            raise ValueError(f"scorer {self.name!r}: a long_shape scorer needs `memory`")
        return self


class LongShapeScorer(Scorer):
    kind: ClassVar[str] = "long_shape"
    spec_type = LongShapeScorerSpec
    memory_role = "own"

    def __init__(self, spec: ScorerSpec, manifest: ManifestView) -> None:
        super().__init__(spec, manifest)
        self.key = f"long_shape.{spec.name}"

    def new_state(self) -> dict[str, Stateful]:
        assert self.spec.long_shape is not None and self.spec.memory is not None
        return {self.key: LongShape(self.spec.long_shape, self.spec.memory, self.channels)}

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        shape = state[self.key]
        assert isinstance(shape, LongShape)
        return shape.scores(batch.newest)
