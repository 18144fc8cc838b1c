"""Detection-quality metrics: point-wise (SKAB), event-wise, and precision-recall.

numpy only, so the same code can score `edge-agent replay` output anywhere.

Point metrics follow the SKAB leaderboard (waico/SKAB, ``core/metrics.py``,
``chp_score(metric="binary")``):

    F1  = TP / (TP + (FP + FN) / 2)
    FAR = FP / (FP + TN) * 100      (false alarm rate, %)
    MAR = FN / (FN + TP) * 100      (missed alarm rate, %)

and the leaderboard pools TP/FP/FN/TN over the test rows of all files before
taking the ratios (:func:`pool`), rather than averaging per-file scores.

Every ratio whose denominator is zero is reported as 0.0 (the convention of
scikit-learn's ``zero_division=0``), so empty or one-class inputs never raise
or produce NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

SECONDS_PER_DAY = 86_400.0


def _ratio(num: float, den: float) -> float:
    """num / den, or 0.0 when the denominator is zero."""
    return float(num) / float(den) if den else 0.0


def _as_bool(y: ArrayLike, name: str) -> NDArray[np.bool_]:
    """A 1-D boolean vector from 0/1, bool or float labels; NaN is refused."""
    arr = np.asarray(y, dtype=float).reshape(-1)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; fill it (e.g. with 0) before scoring")
    flags: NDArray[np.bool_] = arr != 0
    return flags


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    t, p = _as_bool(y_true, "y_true"), _as_bool(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} rows but y_pred has {p.size}")
    return t, p


# --------------------------------------------------------------------------- point metrics


@dataclass(frozen=True)
class PointMetrics:
    """Row-wise confusion counts and the SKAB ratios derived from them."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        """TP / (TP + FP)."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """TP / (TP + FN)."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """SKAB F1 = TP / (TP + (FP + FN) / 2), equal to 2PR / (P + R)."""
        return _ratio(self.tp, self.tp + (self.fp + self.fn) / 2)

    @property
    def far_pct(self) -> float:
        """False alarm rate FP / (FP + TN) in percent."""
        return 100.0 * _ratio(self.fp, self.fp + self.tn)

    @property
    def mar_pct(self) -> float:
        """Missed alarm rate FN / (FN + TP) in percent."""
        return 100.0 * _ratio(self.fn, self.fn + self.tp)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    def as_dict(self) -> dict[str, float]:
        """Counts and ratios, ready for JSON."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "far_pct": self.far_pct,
            "mar_pct": self.mar_pct,
        }


def point_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> PointMetrics:
    """Confusion counts of binary predictions against binary labels (non-zero = anomaly)."""
    t, p = _pair(y_true, y_pred)
    return PointMetrics(
        tp=int(np.sum(t & p)),
        fp=int(np.sum(~t & p)),
        fn=int(np.sum(t & ~p)),
        tn=int(np.sum(~t & ~p)),
    )


def pool(metrics: Iterable[PointMetrics]) -> PointMetrics:
    """Sum the counts over files, as the SKAB leaderboard does before taking ratios."""
    tp = fp = fn = tn = 0
    for m in metrics:
        tp, fp, fn, tn = tp + m.tp, fp + m.fp, fn + m.fn, tn + m.tn
    return PointMetrics(tp=tp, fp=fp, fn=fn, tn=tn)


# --------------------------------------------------------------------------- event metrics


def events_from_labels(y: ArrayLike) -> list[tuple[int, int]]:
    """Contiguous runs of non-zero labels as half-open row ranges ``[start, stop)``.

    >>> events_from_labels([0, 1, 1, 0, 1])
    [(1, 3), (4, 5)]
    """
    flags = _as_bool(y, "y").astype(np.int8)
    edges = np.diff(np.concatenate(([0], flags, [0])))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


@dataclass(frozen=True)
class EventMetrics:
    """Event-wise view: was each labelled anomaly caught, how late, and how many false alarms.

    An event is a run of consecutive anomalous rows in ``y_true``. It is caught
    when at least one row inside it is predicted positive; its detection delay
    is the time from its first row to the first positive prediction inside it.
    A false-alarm event is a run of positive predictions that overlaps no
    labelled event.
    """

    n_events: int
    caught: int
    missed: int
    delays_s: tuple[float, ...]
    false_alarm_events: int
    duration_days: float

    @property
    def event_recall(self) -> float:
        """caught / n_events (0.0 when there are no events)."""
        return _ratio(self.caught, self.n_events)

    @property
    def mean_delay_s(self) -> float | None:
        """Mean detection delay over caught events; None if none was caught."""
        return float(np.mean(self.delays_s)) if self.delays_s else None

    @property
    def median_delay_s(self) -> float | None:
        """Median detection delay over caught events; None if none was caught."""
        return float(np.median(self.delays_s)) if self.delays_s else None

    @property
    def false_alarms_per_day(self) -> float:
        """False-alarm events per day; 0.0 without false alarms, inf over a zero duration."""
        if self.false_alarm_events == 0:
            return 0.0
        if self.duration_days <= 0:
            return float("inf")
        return self.false_alarm_events / self.duration_days

    def as_dict(self) -> dict[str, object]:
        """All fields and derived figures, ready for JSON."""
        return {
            "n_events": self.n_events,
            "caught": self.caught,
            "missed": self.missed,
            "event_recall": self.event_recall,
            "delays_s": list(self.delays_s),
            "mean_delay_s": self.mean_delay_s,
            "median_delay_s": self.median_delay_s,
            "false_alarm_events": self.false_alarm_events,
            "false_alarms_per_day": self.false_alarms_per_day,
            "duration_days": self.duration_days,
        }


def _first_detection_delays(
    events: Sequence[tuple[int, int]], pred: NDArray[np.bool_], ts: NDArray[np.float64]
) -> list[float]:
    delays = []
    for start, stop in events:
        hits = np.flatnonzero(pred[start:stop])
        if hits.size:
            delays.append(float(ts[start + hits[0]] - ts[start]))
    return delays


def _count_false_alarm_events(true: NDArray[np.bool_], pred_runs: Sequence[tuple[int, int]]) -> int:
    return sum(1 for start, stop in pred_runs if not true[start:stop].any())


def event_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    timestamps_s: ArrayLike,
    duration_days: float | None = None,
) -> EventMetrics:
    """Event-wise metrics of binary predictions (see :class:`EventMetrics`).

    ``timestamps_s`` are seconds (any epoch) per row, non-decreasing.
    ``duration_days`` defaults to the span from the first to the last timestamp.
    """
    t, p = _pair(y_true, y_pred)
    ts = np.asarray(timestamps_s, dtype=float).reshape(-1)
    if ts.shape != t.shape:
        raise ValueError(f"timestamps_s has {ts.size} rows but the labels have {t.size}")
    if duration_days is None:
        duration_days = float(ts[-1] - ts[0]) / SECONDS_PER_DAY if ts.size else 0.0
    events = events_from_labels(t)
    delays = _first_detection_delays(events, p, ts)
    return EventMetrics(
        n_events=len(events),
        caught=len(delays),
        missed=len(events) - len(delays),
        delays_s=tuple(delays),
        false_alarm_events=_count_false_alarm_events(t, events_from_labels(p)),
        duration_days=float(duration_days),
    )


# --------------------------------------------------------------------------- ranking metrics


def pr_curve(
    y_true: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision-recall pairs for every distinct score used as threshold (``score >= t``).

    Same layout as scikit-learn's ``precision_recall_curve``: thresholds
    increasing, precision and recall one longer, ending with the point
    (recall 0, precision 1). Without any positive label recall is 0 throughout.
    """
    t = _as_bool(y_true, "y_true")
    s = np.asarray(scores, dtype=float).reshape(-1)
    if s.shape != t.shape:
        raise ValueError(f"scores has {s.size} rows but y_true has {t.size}")
    if np.isnan(s).any():
        raise ValueError("scores contains NaN")
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.array([], int)
    tps = np.cumsum(t)[last_of_value].astype(float)
    fps = (last_of_value + 1) - tps
    precision = np.divide(tps, tps + fps, out=np.zeros_like(tps), where=(tps + fps) > 0)
    recall = tps / tps[-1] if tps.size and tps[-1] > 0 else np.zeros_like(tps)
    return (
        np.r_[precision[::-1], 1.0],
        np.r_[recall[::-1], 0.0],
        s[last_of_value][::-1],
    )


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """AP = sum_n (R_n - R_{n-1}) P_n, the un-interpolated step integral (scikit-learn's).

    0.0 when there is no positive label.
    """
    precision, recall, _ = pr_curve(y_true, scores)
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))
