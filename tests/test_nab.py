"""export.nab on hand-made files; the expected values are worked out in the comments.

Notation: S(y) = 2 / (1 + exp(5 y)) - 1 = -tanh(5 y / 2), NAB's scaled sigmoid.
Most cases use one file of 100 rows with timestamps 0..99 and one anomaly
window on rows 40..49 (W = 10 rows), standard profile (A_TP 1, A_FP 0.11,
A_FN 1) and no probationary period unless stated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from export.nab import (
    PROFILES,
    FileScore,
    NabFile,
    load_nab_corpus,
    normalized_score,
    probation_period,
    scaled_sigmoid,
    score_file,
    sweep_threshold,
)

TS = np.arange(100)
WINDOW = [(40, 49)]


def detect(*rows: int, n: int = 100) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(rows)] = True
    return out


def raw(*rows: int, profile: str = "standard", probation: int = 0) -> float:
    return score_file(TS, detect(*rows), WINDOW, profile, probation).raw


def test_profiles_are_nabs() -> None:
    # numenta/NAB config/profiles.json
    assert (PROFILES["standard"].tp, PROFILES["standard"].fp, PROFILES["standard"].fn) == (
        1.0,
        0.11,
        1.0,
    )
    assert PROFILES["reward_low_FP_rate"].fp == 0.22
    assert (PROFILES["reward_low_FN_rate"].fp, PROFILES["reward_low_FN_rate"].fn) == (0.11, 2.0)
    with pytest.raises(ValueError, match="unknown NAB profile"):
        score_file(TS, detect(), WINDOW, "nope", 0)


def test_scaled_sigmoid_values() -> None:
    # S(-1) = 2/(1+e^-5) - 1 = tanh(2.5) = 0.98661429815...
    assert float(scaled_sigmoid(-1.0)) == pytest.approx(0.9866142981514303, abs=1e-15)
    assert float(scaled_sigmoid(-0.5)) == pytest.approx(math.tanh(1.25))  # 0.84828
    assert float(scaled_sigmoid(0.0)) == 0.0
    assert float(scaled_sigmoid(1.0)) == pytest.approx(-0.9866142981514303)
    # y = 3 is still on the curve, -tanh(7.5) = -0.99999938820; beyond 3 it is exactly -1
    assert float(scaled_sigmoid(3.0)) == pytest.approx(-0.9999993881955461)
    assert float(scaled_sigmoid(3.0001)) == -1.0
    assert float(scaled_sigmoid(1e6)) == -1.0  # no overflow warning


def test_probation_period() -> None:
    # min(floor(0.15 n), 750)
    assert probation_period(100) == 15
    assert probation_period(4032) == 604  # floor(604.8)
    assert probation_period(5000) == 750
    assert probation_period(22695) == 750


def test_detection_at_window_start_scores_a_tp() -> None:
    # row 40: position -(49 - 40 + 1)/10 = -1 -> A_TP * S(-1)/S(-1) = 1 exactly
    s = score_file(TS, detect(40), WINDOW, "standard", 0)
    assert s.raw == pytest.approx(1.0, abs=1e-15)
    assert (s.tp, s.fp, s.fn, s.null, s.perfect) == (1, 0, 0, -1.0, 1.0)


def test_detection_at_window_end() -> None:
    # row 49: position -(49 - 49 + 1)/10 = -0.1; S(-0.1) = tanh(0.25) = 0.244918662
    # divided by S(-1) = 0.986614298: 0.248241550
    assert raw(49) == pytest.approx(0.24824154977542992)


def test_detection_mid_window_and_only_the_first_counts() -> None:
    # row 45: position -(49 - 45 + 1)/10 = -0.5 -> tanh(1.25)/tanh(2.5) = 0.859792567
    assert raw(45) == pytest.approx(0.8597925669097837)
    # rows 45 and 49: only the earlier one counts; rows 40..49: the window start counts
    assert raw(45, 49) == pytest.approx(0.8597925669097837)
    assert raw(*range(40, 50)) == pytest.approx(1.0)


def test_missed_window_costs_a_fn() -> None:
    assert raw() == -1.0
    assert raw(profile="reward_low_FN_rate") == -2.0
    s = score_file(TS, detect(), WINDOW, "standard", 0)
    assert (s.tp, s.fn) == (0, 1)


def test_false_positive_weights() -> None:
    # row 10, no window before it: -A_FP = -0.11 (and -0.22 for reward_low_FP_rate)
    assert raw(10, 40) == pytest.approx(1.0 - 0.11)
    assert raw(10, 40, profile="reward_low_FP_rate") == pytest.approx(1.0 - 0.22)
    # row 50, one row past the window end (row 49): y = (50 - 49)/(W - 1) = 1/9
    # S(1/9) = -tanh(5/18) = -0.270847119 -> 0.11 * -0.270847119 = -0.029793183
    assert raw(40, 50) == pytest.approx(1.0 - 0.029793183036839352)
    # row 76: y = 27/9 = 3 exactly -> S(3) = -tanh(7.5) -> -0.109999933
    assert raw(40, 76) == pytest.approx(1.0 - 0.10999993270151008)
    # row 90: y = 41/9 > 3 -> -1 -> -0.11; and each FP row counts
    assert raw(40, 90) == pytest.approx(1.0 - 0.11)
    s = score_file(TS, detect(10, 40, 50, 90), WINDOW, "standard", 0)
    assert s.fp == 3
    assert s.raw == pytest.approx(1.0 - 0.11 - 0.029793183036839352 - 0.11)


def test_false_positive_weighted_by_the_preceding_window() -> None:
    # two windows: rows 20..29 (W 10) and 60..64 (W 5); an FP at row 66 is 2 rows past
    # the second one: y = 2/(5 - 1) = 0.5 -> S(0.5) = -tanh(1.25) = -0.848283640 -> * 0.11
    windows = [(20, 29), (60, 64)]
    s = score_file(TS, detect(20, 60, 66), windows, "standard", 0)
    assert s.raw == pytest.approx(2.0 - 0.11 * math.tanh(1.25))
    # an FP at row 31 is 2 rows past the first window: y = 2/9 -> -tanh(5/9) * 0.11
    s = score_file(TS, detect(20, 60, 31), windows, "standard", 0)
    assert s.raw == pytest.approx(2.0 - 0.11 * math.tanh(5 / 9))


def test_probationary_detections_are_ignored() -> None:
    # probation 45 rows: the detections at rows 5 (FP) and 40 (window start) are ignored;
    # row 47: position -(49 - 47 + 1)/10 = -0.3 -> tanh(0.75)/tanh(2.5) = 0.643766215
    assert raw(5, 40, 47, probation=45) == pytest.approx(0.6437662150014793)
    # with only probationary detections the window counts as missed
    assert raw(5, 40, probation=45) == -1.0
    # a window wholly inside the probationary period is not scored at all
    s = score_file(TS, detect(), WINDOW, "standard", 50)
    assert (s.raw, s.tp, s.fn, s.null, s.perfect) == (0.0, 0, 0, 0.0, 0.0)


def test_default_probation_is_nabs() -> None:
    # 100 rows -> 15 probationary rows: an FP at row 14 is ignored, one at row 15 is not
    assert score_file(TS, detect(14, 40), WINDOW).raw == pytest.approx(1.0)
    assert score_file(TS, detect(15, 40), WINDOW).raw == pytest.approx(0.89)


def test_windows_match_timestamps_inclusively() -> None:
    # timestamps every 10 s; window [395, 480] covers rows 40..48 (400..480), W = 9
    ts = np.arange(100) * 10
    s = score_file(ts, detect(48), [(395, 480)], "standard", 0)
    # row 48 is the last row: position -1/9 -> tanh(5/18)/tanh(2.5)
    assert s.raw == pytest.approx(math.tanh(5 / 18) / math.tanh(2.5))
    with pytest.raises(ValueError, match="overlap"):
        score_file(ts, detect(), [(100, 200), (150, 300)], "standard", 0)


def test_normalisation_perfect_null_and_between() -> None:
    # file A: window rows 40..49; file B: windows rows 10..19 and 70..79
    wins_b = [(10, 19), (70, 79)]
    perfect = [
        score_file(TS, detect(40), WINDOW, "standard", 0),
        score_file(TS, detect(10, 70), wins_b, "standard", 0),
    ]
    null = [
        score_file(TS, detect(), WINDOW, "standard", 0),
        score_file(TS, detect(), wins_b, "standard", 0),
    ]
    assert normalized_score(perfect) == pytest.approx(100.0)
    assert normalized_score(null) == pytest.approx(0.0)
    # A perfect (+1), B one hit at a start (+1) one missed (-1): raw 1; null -3, perfect 3
    # -> 100 * (1 - -3) / (3 - -3) = 66.67
    half = [perfect[0], score_file(TS, detect(10), wins_b, "standard", 0)]
    assert normalized_score(half) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="no scorable"):
        normalized_score([FileScore(raw=-0.11, tp=0, fp=1, fn=0, null=0.0, perfect=0.0)])


def _nab_file(n: int = 100) -> NabFile:
    ts = np.datetime64("2024-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    return NabFile("cat/one.csv", ts, np.zeros(n), ((ts[40], ts[49]),))


def test_sweep_threshold_by_hand() -> None:
    # 100 rows -> probation 15 rows; window rows 40..49. Anomaly scores are 0 except
    #   row 20: 0.95 (FP, no preceding window: -0.11)
    #   row 45: 0.90 (TP at position -0.5: tanh(1.25)/tanh(2.5) = 0.859792567)
    #   row 60: 0.50 (FP 11 rows past the window: y = 11/9, -tanh(55/18) * 0.11 = -0.109513)
    # candidate thresholds (null = -1, perfect = 1):
    #   > 0.95: raw -1                                -> 0
    #   0.95  : -1 - 0.11 = -1.11                     -> -5.5
    #   0.90  : 0.859792567 - 0.11 = 0.749792567      -> 100 * 1.749792567 / 2 = 87.4896
    #   0.50  : 0.749792567 - 0.109513101 = 0.640279  -> 82.01
    #   0.00  : every scored row fires: many FPs      -> far below
    f = _nab_file()
    scores = np.zeros(100)
    scores[[20, 45, 60]] = [0.95, 0.90, 0.50]
    result = sweep_threshold([(f, scores)], "standard")
    assert result.threshold == 0.90
    assert result.score == pytest.approx(87.4896283454892)
    assert result.raw == pytest.approx(0.8597925669097837 - 0.11)
    assert (result.files[0].tp, result.files[0].fp) == (1, 1)


def test_sweep_never_firing_wins_when_everything_is_noise() -> None:
    # only false positives available: the best is to never fire (score 0)
    f = _nab_file()
    scores = np.zeros(100)
    scores[[20, 80]] = [0.7, 0.6]
    result = sweep_threshold([(f, scores)], "standard")
    assert result.threshold > 0.7
    assert result.score == 0.0


def test_sweep_matches_brute_force_over_thresholds() -> None:
    # random scores on three files: the sweep's best equals the best of score_file at
    # every distinct score used as threshold
    rng = np.random.default_rng(3)
    pairs = []
    layouts = [((100, 130), (300, 320)), ((250, 299),), ((20, 40), (380, 399))]
    for k, windows in enumerate(layouts):
        nab_file = NabFile(f"f{k}.csv", np.arange(400), np.zeros(400), windows)  # type: ignore[arg-type]
        scores = np.round(rng.random(400) ** 3, 2)
        scores[windows[0][0] + 5] = 0.99
        pairs.append((nab_file, scores))
    for profile in PROFILES:
        result = sweep_threshold(pairs, profile)
        candidates = np.unique(np.concatenate([s for _, s in pairs]))
        brute = [normalized_score([f.score(s >= t, profile) for f, s in pairs]) for t in candidates]
        assert result.score == pytest.approx(max(*brute, 0.0))
        assert normalized_score(result.files) == pytest.approx(result.score)


def test_load_nab_corpus(tmp_path: Path) -> None:
    (tmp_path / "data" / "realX").mkdir(parents=True)
    (tmp_path / "labels").mkdir()
    rows = [f"2014-04-01 00:{m:02d}:00,{m}.5" for m in range(0, 60, 5)]
    (tmp_path / "data" / "realX" / "a.csv").write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    labels = {
        "realX/a.csv": [["2014-04-01 00:20:00.000000", "2014-04-01 00:30:00.000000"]],
        "realX/missing.csv": [],  # labelled but absent from data/: skipped
    }
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    [f] = load_nab_corpus(tmp_path)
    assert f.name == "realX/a.csv"
    assert f.timestamps[0] == np.datetime64("2014-04-01T00:00:00")
    assert f.values[1] == 5.5
    assert f.probation_rows == 1  # floor(0.15 * 12)
    # window 00:20..00:30 = rows 4, 5, 6
    assert np.flatnonzero(f.labels()).tolist() == [4, 5, 6]
    assert f.score(detect(4, n=12)).raw == pytest.approx(1.0)
    (tmp_path / "data" / "realX" / "a.csv").unlink()
    with pytest.raises(FileNotFoundError):
        load_nab_corpus(tmp_path)
