"""export.metrics on small hand-made cases whose answers are worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from export.metrics import (
    PointMetrics,
    average_precision,
    event_metrics,
    events_from_labels,
    point_metrics,
    pool,
    pr_curve,
)

# ---------------------------------------------------------------------------- point metrics


def test_point_metrics_by_hand() -> None:
    # row:    0  1  2  3  4  5  6  7
    # true:   1  1  1  0  0  0  0  1
    # pred:   1  1  0  1  0  0  0  0
    # TP = rows 0,1 -> 2; FN = rows 2,7 -> 2; FP = row 3 -> 1; TN = rows 4,5,6 -> 3
    m = point_metrics([1, 1, 1, 0, 0, 0, 0, 1], [1, 1, 0, 1, 0, 0, 0, 0])
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 2, 3)
    assert m.precision == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert m.recall == pytest.approx(0.5)  # 2 / (2 + 2)
    # SKAB F1 = TP / (TP + (FP + FN)/2) = 2 / (2 + 1.5) = 4/7, same as 2PR/(P+R) = (2/3)/(7/6)
    assert m.f1 == pytest.approx(4 / 7)
    assert m.far_pct == pytest.approx(25.0)  # 1 / (1 + 3) * 100
    assert m.mar_pct == pytest.approx(50.0)  # 2 / (2 + 2) * 100


def test_point_metrics_accepts_bool_and_float_labels() -> None:
    a = point_metrics(np.array([True, False]), np.array([1.0, 0.0]))
    assert (a.tp, a.fp, a.fn, a.tn) == (1, 0, 0, 1)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "counts"),
    [
        ([], [], (0, 0, 0, 0)),  # empty
        ([0, 0, 0], [0, 0, 0], (0, 0, 0, 3)),  # no anomaly, no alarm
        ([1, 1], [1, 1], (2, 0, 0, 0)),  # all anomalous, all caught: FAR has 0/0
        ([0, 0], [1, 1], (0, 2, 0, 0)),  # only false alarms: MAR has 0/0
    ],
)
def test_point_metrics_degenerate_inputs_never_raise(
    y_true: list[int], y_pred: list[int], counts: tuple[int, int, int, int]
) -> None:
    m = point_metrics(y_true, y_pred)
    assert (m.tp, m.fp, m.fn, m.tn) == counts
    for value in m.as_dict().values():
        assert np.isfinite(value)


def test_point_metrics_zero_division_is_zero() -> None:
    m = point_metrics([0, 0, 0], [0, 0, 0])
    assert (m.precision, m.recall, m.f1, m.far_pct, m.mar_pct) == (0.0, 0.0, 0.0, 0.0, 0.0)
    perfect = point_metrics([1, 1], [1, 1])
    assert (perfect.f1, perfect.far_pct, perfect.mar_pct) == (1.0, 0.0, 0.0)


def test_point_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="rows"):
        point_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="NaN"):
        point_metrics([0, 1], [0, float("nan")])


def test_pool_sums_counts_before_taking_ratios() -> None:
    # file A (above): TP 2, FP 1, FN 2, TN 3
    a = point_metrics([1, 1, 1, 0, 0, 0, 0, 1], [1, 1, 0, 1, 0, 0, 0, 0])
    # file B: true 1 1 0 0, pred 1 0 0 1 -> TP 1, FN 1, TN 1, FP 1
    b = point_metrics([1, 1, 0, 0], [1, 0, 0, 1])
    pooled = pool([a, b])
    assert pooled == PointMetrics(tp=3, fp=2, fn=3, tn=4)
    # F1 = 3 / (3 + (2 + 3)/2) = 3 / 5.5 = 6/11; FAR = 2/6; MAR = 3/6
    assert pooled.f1 == pytest.approx(6 / 11)
    assert pooled.far_pct == pytest.approx(100 / 3)
    assert pooled.mar_pct == pytest.approx(50.0)
    # not the mean of per-file F1s: (4/7 + 1/2) / 2 = 0.5357...
    assert pooled.f1 != pytest.approx((a.f1 + b.f1) / 2)


def test_pool_of_nothing_is_empty() -> None:
    assert pool([]) == PointMetrics(0, 0, 0, 0)


# ---------------------------------------------------------------------------- events


def test_events_from_labels() -> None:
    assert events_from_labels([0, 1, 1, 0, 1]) == [(1, 3), (4, 5)]
    assert events_from_labels([1, 1]) == [(0, 2)]
    assert events_from_labels([0, 0]) == []
    assert events_from_labels([]) == []


def test_event_metrics_by_hand() -> None:
    # row:   0  1   2   3   4   5   6   7   8    9   10   11
    ts = [0, 5, 10, 20, 40, 50, 60, 65, 90, 100, 110, 130]
    true = [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]  # events rows [2,5) and [7,9)
    pred = [0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1]  # alarm runs [1,2) [4,6) [8,9) [10,12)
    m = event_metrics(true, pred, ts)
    assert (m.n_events, m.caught, m.missed) == (2, 2, 0)
    # event 1 starts at row 2 (t=10), first alarm in it row 4 (t=40): 30 s
    # event 2 starts at row 7 (t=65), first alarm in it row 8 (t=90): 25 s
    assert m.delays_s == (30.0, 25.0)
    assert m.mean_delay_s == pytest.approx(27.5)
    assert m.median_delay_s == pytest.approx(27.5)
    # alarm runs [1,2) and [10,12) touch no event; [4,6) and [8,9) do
    assert m.false_alarm_events == 2
    # span 130 s = 130/86400 days -> 2 / (130/86400) = 1329.23 per day
    assert m.duration_days == pytest.approx(130 / 86400)
    assert m.false_alarms_per_day == pytest.approx(2 * 86400 / 130)
    assert event_metrics(true, pred, ts, duration_days=4.0).false_alarms_per_day == 0.5


def test_event_metrics_missed_event_and_late_alarm() -> None:
    # one event rows [1,3); the alarm at row 3 comes after it: missed, and a false alarm
    m = event_metrics([0, 1, 1, 0], [0, 0, 0, 1], [0, 1, 2, 3])
    assert (m.n_events, m.caught, m.missed, m.false_alarm_events) == (1, 0, 1, 1)
    assert m.delays_s == ()
    assert m.mean_delay_s is None and m.median_delay_s is None
    assert m.event_recall == 0.0


def test_event_metrics_degenerate() -> None:
    empty = event_metrics([], [], [])
    assert (empty.n_events, empty.false_alarm_events, empty.false_alarms_per_day) == (0, 0, 0.0)
    single = event_metrics([0], [1], [100.0])  # a false alarm over zero duration
    assert single.false_alarms_per_day == float("inf")
    assert single.as_dict()["n_events"] == 0
    with pytest.raises(ValueError, match="timestamps"):
        event_metrics([0, 1], [0, 1], [0.0])


# ---------------------------------------------------------------------------- ranking


def test_pr_curve_by_hand() -> None:
    y = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    # threshold 0.8 : flags {0.8}             TP 1 FP 0 -> P 1,   R 1/2
    # threshold 0.4 : flags {0.8,0.4}         TP 1 FP 1 -> P 1/2, R 1/2
    # threshold 0.35: flags {0.8,0.4,0.35}    TP 2 FP 1 -> P 2/3, R 1
    # threshold 0.1 : flags all               TP 2 FP 2 -> P 1/2, R 1
    precision, recall, thresholds = pr_curve(y, scores)
    np.testing.assert_allclose(thresholds, [0.1, 0.35, 0.4, 0.8])
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1 / 2, 1.0, 1.0])
    np.testing.assert_allclose(recall, [1.0, 1.0, 1 / 2, 1 / 2, 0.0])
    # AP = sum (R_n - R_{n-1}) P_n from the top: 1/2*1 + 0*1/2 + 1/2*2/3 + 0 = 5/6
    assert average_precision(y, scores) == pytest.approx(5 / 6)


def test_pr_curve_ties_form_one_threshold() -> None:
    # scores 0.5, 0.5 (one positive, one negative), 0.2 (negative)
    # threshold 0.5: TP 1 FP 1 -> P 1/2 R 1; threshold 0.2: P 1/3 R 1; AP = 1 * 1/2
    precision, recall, thresholds = pr_curve([1, 0, 0], [0.5, 0.5, 0.2])
    np.testing.assert_allclose(thresholds, [0.2, 0.5])
    np.testing.assert_allclose(precision, [1 / 3, 1 / 2, 1.0])
    np.testing.assert_allclose(recall, [1.0, 1.0, 0.0])
    assert average_precision([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.5)


def test_pr_curve_degenerate() -> None:
    assert average_precision([0, 0], [0.3, 0.9]) == 0.0  # no positive label
    precision, recall, thresholds = pr_curve([], [])
    assert (precision.tolist(), recall.tolist(), thresholds.size) == ([1.0], [0.0], 0)
    with pytest.raises(ValueError, match="NaN"):
        pr_curve([0, 1], [0.1, float("nan")])


def test_pr_curve_matches_scikit_learn() -> None:
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * y, 2)  # rounding makes ties
    precision, recall, thresholds = pr_curve(y, scores)
    sk_p, sk_r, sk_t = sk.precision_recall_curve(y, scores)
    np.testing.assert_allclose(precision, sk_p)
    np.testing.assert_allclose(recall, sk_r)
    np.testing.assert_allclose(thresholds, sk_t)
    assert average_precision(y, scores) == pytest.approx(sk.average_precision_score(y, scores))
