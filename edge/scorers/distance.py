"""kind `distance`: one output (`output`) of the ONNX distance model, whose input rows are
the last `distance.lags` rows of each window (shared by every distance scorer of a bundle).
The lag-vector memory (`memory`) may lower it (`edge.scorers.steps`).

A window-features distance (`window_mahalanobis`) may hold `taught` (`TaughtSpec`): the
windows a person labelled normal on this device (`feedback`), kept in the device's state
(`taught.<name>`, `edge.memory.TaughtMemory`). Its score is then min(the model's distance,
the distance of the window's whitened features to the nearest taught departure): the same
model, with the taught patterns excused. Nothing taught: the model's output, bit for bit.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from edge.memory import TaughtMemory
from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec, TaughtSpec


class DistanceScorerSpec(ScorerSpec):
    kind: Literal["distance"]
    taught: TaughtSpec | None = Field(
        None, description="window features: the device's memory of windows taught as normal")

    @model_serializer(mode="wrap")
    def _without_unset_taught(self, handler: SerializerFunctionWrapHandler) -> Any:
        # a spec without `taught` dumps as before it existed (manifests, the state digest)
        data = handler(self)
        if isinstance(data, dict) and data.get("taught", 0) is None:
            del data["taught"]
        return data


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
        taught = getattr(spec, "taught", None)
        if taught is None:
            return
        channels = len(manifest.channels)
        if taught.lags > distance.lags:
            raise ValueError(f"scorer {spec.name!r}: taught.lags {taught.lags} exceeds "
                             f"distance.lags {distance.lags}")
        if any(k >= channels for k in taught.keep) or (
                taught.twins and len(taught.twins) != channels):
            raise ValueError(f"scorer {spec.name!r}: taught.keep and taught.twins must be of "
                             f"the {channels} channels")
        if taught.features(channels) != len(taught.center):
            raise ValueError(f"scorer {spec.name!r}: taught has {len(taught.center)} features, "
                             f"its model gives {taught.features(channels)}")

    def new_state(self) -> dict[str, Stateful]:
        taught = getattr(self.spec, "taught", None)
        return {f"taught.{self.name}": TaughtMemory(taught)} if taught is not None else {}

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        distance = batch.shared.distances()[str(self.spec.output)]
        memory = state.get(f"taught.{self.name}")
        if memory is None:
            return distance
        assert isinstance(memory, TaughtMemory)
        vectors = batch.shared.lag_vectors()
        rows = vectors[:, vectors.shape[1] - memory.spec.lags * self.channels:]
        return np.asarray(np.minimum(distance, memory.distances(rows)))
