"""kind `lstm_ae`: the mean squared reconstruction error of the int8 TFLite autoencoder over
the window (per channel, averaged over channels); the model is the manifest's `lstm_ae`."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from edge.scorers.base import FloatArray, ManifestView, Scorer, ScoringBatch, Stateful
from edge.scorers.spec import ScorerSpec


class LstmAeScorerSpec(ScorerSpec):
    kind: Literal["lstm_ae"]


class LstmAeScorer(Scorer):
    kind: ClassVar[str] = "lstm_ae"
    spec_type = LstmAeScorerSpec

    @classmethod
    def check(cls, spec: ScorerSpec, manifest: ManifestView) -> None:
        if manifest.lstm_ae is None or manifest.lstm_ae.model not in manifest.models:
            raise ValueError("an lstm_ae scorer needs `lstm_ae` and its model in `models`")

    def score(self, batch: ScoringBatch, state: dict[str, Stateful]) -> FloatArray:
        return np.asarray(batch.shared.lstm_errors().mean(axis=1))
