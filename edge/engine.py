"""Score windows with a bundle: each scorer of the manifest (`edge.scorers`, one module per
kind), its steps, then the ensemble.

Every score is "higher = more anomalous" and is normalised by its calibrated threshold, so a
normalised score >= 1 means over threshold. `score_windows` takes a batch so that replay can
feed many windows at once; the live agent passes a batch of one. Both run this same code.

The engine loads the bundle's models once (TFLite LSTM-AE, ONNX distances) and holds no
per-device state: it is shared by the devices of a gateway. Each device keeps a `ScoreState`
(`new_state()`: its running range, memories, likelihood histories, ...) and passes it with
every batch, windows in stream order. What several scorers use (the LSTM errors, the lag
vectors, the ONNX outputs, the IQR excess) is computed once per batch and only when asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.bundle import Bundle, Ensemble, Manifest
from edge.runtimes.distance import DistanceModel, DistanceRuntime, load_distance
from edge.runtimes.tflite import TfliteModel
from edge.score_state import ScoreState, scorers_of
from edge.scorers.base import Lazy, ScoringBatch

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """Scores of a batch of B windows over C channels."""

    raw: dict[str, FloatArray]  # scorer -> (B,)
    normalized: dict[str, FloatArray]  # scorer -> (B,), score (or its likelihood) / threshold
    ensemble: FloatArray  # (B,), >= 1 means anomalous
    channel_error: FloatArray  # (B, C), per-channel evidence for the alert's attribution
    iqr_excess: FloatArray  # (B, C), >= 1 means outside the Tukey fence
    trouble: tuple[str, ...] = ()  # (B,) "sensor" or "process": the top member's kind says

    def __len__(self) -> int:
        return int(self.ensemble.shape[0])


# weight of the members' corroborating evidence in a `max` ensemble over its threshold: small
# enough that the level stays the largest member's, large enough to order equal maxima
TIE_BREAK = 1e-3


def combine(rule: Ensemble, normalized: dict[str, FloatArray]) -> FloatArray:
    """The ensemble rule over normalised member scores; >= 1 means anomalous.

    `max`: the largest member, and where it is over the threshold, plus TIE_BREAK x the
    members' mean evidence (each clipped to [0, 1]): a member that holds one level over many
    windows (`flat` while a departure is in the window) would otherwise tie them all, and the
    continuous score could not say which of them the other members back. What is over the
    threshold stays over it and what is under is unchanged.

    `max_or_mean`: the same over the threshold; under it, the members' mean evidence, so that
    windows no member calls anomalous rank by how far all of them are towards their
    thresholds rather than by the one nearest (which of several members is nearest is mostly
    noise). Which windows are over the threshold is the same as with `max`; with smoothing
    over several windows the smoothed score, and so the decision, is not."""
    stacked = np.vstack([normalized[m] for m in rule.members])
    if rule.rule in ("max", "max_or_mean"):
        top = stacked.max(axis=0)
        evidence = np.clip(stacked, 0.0, 1.0).mean(axis=0)
        under = top if rule.rule == "max" else evidence
        return np.asarray(np.where(top >= 1.0, top + TIE_BREAK * evidence, under))
    if rule.rule == "mean":
        return np.asarray(stacked.mean(axis=0))
    if rule.rule == "weighted_mean":
        weights = np.array([rule.weights.get(m, 1.0) for m in rule.members])[:, None]
        return np.asarray((stacked * weights).sum(axis=0) / weights.sum())
    # vote: the k-th largest member score is >= 1 exactly when k members are over threshold
    k = min(rule.votes, stacked.shape[0])
    return np.asarray(np.sort(stacked, axis=0)[-k])


class ScoringEngine:
    """Loads the bundle's models once; scores windows of scaled (unclipped) rows.

    The distance model runs on onnxruntime or on its TFLite twin, as `distance_runtime`
    ([bundle] distance_runtime: auto, onnx, tflite) chooses (`edge.runtimes.distance`);
    `runtimes` says which file runs on which runtime, and the choice is logged."""

    def __init__(self, bundle: Bundle, threads: int = 1,
                 distance_runtime: DistanceRuntime = "auto") -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        m = self.manifest
        self.clip = m.preprocess.clip
        self.tflite: TfliteModel | None = None
        self.distance_model: DistanceModel | None = None
        self.runtimes: dict[str, str] = {}
        if m.lstm_ae is not None:
            self.tflite = TfliteModel(bundle.model_path(m.lstm_ae.model), threads)
            self.runtimes["lstm_ae"] = f"{m.models[m.lstm_ae.model].file} on {self.tflite.runtime}"
        if m.distance is not None:
            loaded = load_distance(bundle, distance_runtime, threads)
            self.distance_model = loaded.model
            self.runtimes["distance"] = loaded.describe()
        for part, how in self.runtimes.items():
            log.info("%s: %s", part, how)
        q1, q3 = np.array(m.iqr.q1), np.array(m.iqr.q3)
        self._iqr_q1, self._iqr_q3 = q1, q3
        self._iqr_width = np.maximum(m.iqr.k * (q3 - q1), 1e-9)
        self._thresholds = {s.name: s.threshold.value for s in m.scorers}
        self.scorers = scorers_of(m)
        self._trouble = {s.name: s.trouble for s in self.scorers}

    @property
    def onnx(self) -> DistanceModel | None:
        """The distance model when it runs on onnxruntime (None on its TFLite twin)."""
        model = self.distance_model
        return model if model is not None and model.runtime == "onnxruntime" else None

    def new_state(self) -> ScoreState:
        """Fresh per-device state for the bundle's stateful scorers and steps."""
        return ScoreState(self.manifest, self.scorers)

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
        """The distance model's outputs for its input rows (`lag_vectors`)."""
        assert self.distance_model is not None
        outputs = self.distance_model.run(vectors.astype(np.float32))
        return {k: v.reshape(-1).astype(np.float64) for k, v in outputs.items()}

    def iqr_excess(self, rows: FloatArray) -> FloatArray:
        """Distance beyond the quartiles in units of k*IQR: 1.0 is exactly on the fence."""
        excess = np.maximum(rows - self._iqr_q3, self._iqr_q1 - rows)
        return np.asarray(excess / self._iqr_width)

    def score_windows(self, windows: FloatArray, state: ScoreState | None = None,
                      timestamps: FloatArray | None = None,
                      missing: BoolArray | None = None) -> Scores:
        """Score windows of shape (B, window, C) holding scaled, filled, unclipped rows.

        `state` is the device's (`new_state()`), the windows being its next ones in order;
        without it, a bundle with stateful scorers treats the batch as a whole stream.
        `timestamps` (B,) are the epoch seconds of each window's newest row (unknown: NaN,
        and a scorer that needs the time of day leaves those windows unscored). `missing`
        (B, window, C) marks the values that were forward-filled, not read."""
        state = state if state is not None else self.new_state()
        shared = _Shared(self, windows)
        times = (np.asarray(timestamps, dtype=np.float64) if timestamps is not None
                 else np.full(windows.shape[0], np.nan))
        batch = ScoringBatch(windows, times, shared, missing)
        raw, stepped = state.score(batch)
        normalized = {name: stepped[name] / self._thresholds[name] for name in raw}
        ensemble = combine(self.manifest.ensemble, normalized)
        evidence, trouble = self._attribution(batch, normalized, shared.attribution())
        return Scores(raw, normalized, ensemble, evidence, shared.iqr_excess(), trouble)

    def _attribution(self, batch: ScoringBatch, normalized: dict[str, FloatArray],
                     default: FloatArray) -> tuple[FloatArray, tuple[str, ...]]:
        """Per window, the channel evidence and the kind of trouble of the ensemble member
        with the highest normalised score: its own channel scores when it has them."""
        members = self.manifest.ensemble.members
        if not members:
            return default, ()
        stacked = np.vstack([normalized[m] for m in members])
        top = np.argmax(np.nan_to_num(stacked, nan=-np.inf), axis=0)
        trouble = tuple(self._trouble[members[t]] for t in top.tolist())
        per_channel = [m for m in members if m in batch.channel_scores]
        if not per_channel:
            return default, trouble
        evidence = default.copy()
        for k, name in enumerate(members):
            if name in batch.channel_scores:
                rows = top == k
                evidence[rows] = np.square(batch.channel_scores[name][rows])
        return evidence, trouble

class _Shared:
    """The `SharedInputs` of one batch: each computed on first use, then kept."""

    def __init__(self, engine: ScoringEngine, windows: FloatArray) -> None:
        self.engine = engine
        self.windows = windows
        self._lstm = Lazy(lambda: engine.lstm_errors(windows))
        self._vectors = Lazy(lambda: engine.lag_vectors(windows))
        self._distances = Lazy(lambda: engine.distances(self.lag_vectors()))
        self._iqr = Lazy(lambda: engine.iqr_excess(windows[:, -1, :]))

    def lstm_errors(self) -> FloatArray:
        return np.asarray(self._lstm.get())

    def lag_vectors(self) -> FloatArray:
        return np.asarray(self._vectors.get())

    def distances(self) -> dict[str, FloatArray]:
        return dict(self._distances.get())

    def iqr_excess(self) -> FloatArray:
        return np.asarray(self._iqr.get())

    def attribution(self) -> FloatArray:
        """(B, C) per-channel evidence for the alert's top channels: the LSTM errors when a
        scorer asked for them, else the newest row's squared size (no autoencoder, or one
        marked not trusted: `lstm_ae.trusted`), what the per-channel scorers measure."""
        trusted = self.engine.manifest.lstm_ae is None or self.engine.manifest.lstm_ae.trusted
        if self._lstm.done and trusted:
            return self.lstm_errors()
        if self.engine.tflite is None or not trusted:
            return np.asarray(np.square(self.windows[:, -1, :]))
        return np.zeros((self.windows.shape[0], self.windows.shape[2]))
