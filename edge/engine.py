"""Score windows with a bundle: TFLite LSTM-AE, ONNX distances, IQR fences, the running
range and the long shapes, then the ensemble.

Every score is "higher = more anomalous" and is normalised by its calibrated threshold, so a
normalised score >= 1 means over threshold. `score_windows` takes a batch so that replay can
feed many windows at once; the live agent passes a batch of one. Both run this same code.

The engine itself holds no per-device state and is shared by the devices of a gateway. A
scorer with a `likelihood` step needs the history of its device: each device keeps a
`ScoreState` (`new_state()`) and passes it with every batch, windows in stream order. A
scorer with a `memory` (its device's recent lag vectors) needs it too, and so do a `range`
scorer (the range of every row its device has seen) and a `long_shape` scorer (its recent
rows and remembered long shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.bundle import Bundle, Ensemble, Manifest
from edge.runtimes.onnx import OnnxModel
from edge.runtimes.tflite import TfliteModel
from edge.score_state import ScoreState

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Scores:
    """Scores of a batch of B windows over C channels."""

    raw: dict[str, FloatArray]  # scorer -> (B,)
    normalized: dict[str, FloatArray]  # scorer -> (B,), score (or its likelihood) / threshold
    ensemble: FloatArray  # (B,), >= 1 means anomalous
    channel_error: FloatArray  # (B, C), per-channel reconstruction error (attribution)
    iqr_excess: FloatArray  # (B, C), >= 1 means outside the Tukey fence

    def __len__(self) -> int:
        return int(self.ensemble.shape[0])


def combine(rule: Ensemble, normalized: dict[str, FloatArray]) -> FloatArray:
    """The ensemble rule over normalised member scores; >= 1 means anomalous."""
    stacked = np.vstack([normalized[m] for m in rule.members])
    if rule.rule == "max":
        return np.asarray(stacked.max(axis=0))
    if rule.rule == "mean":
        return np.asarray(stacked.mean(axis=0))
    if rule.rule == "weighted_mean":
        weights = np.array([rule.weights.get(m, 1.0) for m in rule.members])[:, None]
        return np.asarray((stacked * weights).sum(axis=0) / weights.sum())
    # vote: the k-th largest member score is >= 1 exactly when k members are over threshold
    k = min(rule.votes, stacked.shape[0])
    return np.asarray(np.sort(stacked, axis=0)[-k])


class ScoringEngine:
    """Loads the bundle's models once; scores windows of scaled (unclipped) rows."""

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        m = self.manifest
        self.clip = m.preprocess.clip
        self.tflite: TfliteModel | None = None
        self.onnx: OnnxModel | None = None
        if m.lstm_ae is not None:
            self.tflite = TfliteModel(bundle.model_path(m.lstm_ae.model), threads)
        if m.distance is not None:
            self.onnx = OnnxModel(bundle.model_path(m.distance.model), threads)
        q1, q3 = np.array(m.iqr.q1), np.array(m.iqr.q3)
        self._iqr_q1, self._iqr_q3 = q1, q3
        self._iqr_width = np.maximum(m.iqr.k * (q3 - q1), 1e-9)
        self._thresholds = {s.name: s.threshold.value for s in m.scorers}

    def new_state(self) -> ScoreState:
        """Fresh per-device state for the bundle's stateful steps (memories, likelihoods)."""
        return ScoreState(self.manifest)

    def lstm_errors(self, windows: FloatArray) -> FloatArray:
        """Per-window, per-channel squared reconstruction error, shape (B, C).

        The model sees clipped inputs; the error is measured against the unclipped values so
        that a large fault keeps its size instead of saturating at the model's input range.
        """
        assert self.tflite is not None and self.manifest.lstm_ae is not None
        clipped = np.clip(windows, -self.clip, self.clip).astype(np.float32)
        errors = np.empty((windows.shape[0], windows.shape[2]))
        last_only = self.manifest.lstm_ae.reduce == "last"
        for i in range(windows.shape[0]):
            recon = self.tflite.run(clipped[i : i + 1])[0]
            sq = np.square(windows[i] - recon)
            errors[i] = sq[-1] if last_only else sq.mean(axis=0)
        return errors

    def lag_vectors(self, windows: FloatArray) -> FloatArray:
        """The distance model's input rows: the last `lags` rows of each window, flattened."""
        assert self.manifest.distance is not None
        lags = self.manifest.distance.lags
        flat = windows[:, -lags:, :].reshape(windows.shape[0], -1)
        if self.manifest.distance.clip_inputs:
            flat = np.clip(flat, -self.clip, self.clip)
        return np.asarray(flat, dtype=np.float64)

    def distances(self, vectors: FloatArray) -> dict[str, FloatArray]:
        """The ONNX distance model's outputs for its input rows (`lag_vectors`)."""
        assert self.onnx is not None
        outputs = self.onnx.run(vectors.astype(np.float32))
        return {k: v.reshape(-1).astype(np.float64) for k, v in outputs.items()}

    def iqr_excess(self, rows: FloatArray) -> FloatArray:
        """Distance beyond the quartiles in units of k*IQR: 1.0 is exactly on the fence."""
        excess = np.maximum(rows - self._iqr_q3, self._iqr_q1 - rows)
        return np.asarray(excess / self._iqr_width)

    def score_windows(self, windows: FloatArray, state: ScoreState | None = None) -> Scores:
        """Score windows of shape (B, window, C) holding scaled, filled, unclipped rows.

        `state` is the device's (`new_state()`), the windows being its next ones in order;
        without it, a bundle with likelihood steps treats the batch as a whole stream."""
        raw: dict[str, FloatArray] = {}
        state = state if state is not None else self.new_state()
        channel_error = np.zeros((windows.shape[0], windows.shape[2]))
        iqr_excess = self.iqr_excess(windows[:, -1, :])
        outputs: dict[str, FloatArray] = {}
        vectors = self.lag_vectors(windows) if self.onnx is not None else None
        if vectors is not None:
            outputs = self.distances(vectors)
        for scorer in self.manifest.scorers:
            if scorer.kind == "lstm_ae":
                channel_error = self.lstm_errors(windows)
                raw[scorer.name] = channel_error.mean(axis=1)
            elif scorer.kind == "distance":
                raw[scorer.name] = outputs[str(scorer.output)]
            elif scorer.kind == "range":
                raw[scorer.name] = state.range_excess(windows[:, -1, :])
            elif scorer.kind == "long_shape":
                raw[scorer.name] = state.long_shape_distance(scorer.name, windows[:, -1, :])
            else:
                raw[scorer.name] = iqr_excess.max(axis=1)
        stepped = state.apply(raw, vectors)
        normalized = {name: stepped[name] / self._thresholds[name] for name in raw}
        ensemble = combine(self.manifest.ensemble, normalized)
        if self.tflite is None:
            channel_error = np.square(windows[:, -1, :])
        return Scores(raw, normalized, ensemble, channel_error, iqr_excess)
