"""The comparison detectors of tests/bench/baselines.py on synthetic data (no benchmark files)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tests.bench import baselines
from tests.bench.baselines import (
    SKAB_DETECTORS,
    fit_t2q,
    load_skab_csv,
    plot_comparison,
    run_skab_baselines,
    windowed_gaussian_scores,
)


def _sensor_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Four channels driven by two latent factors plus noise, and one constant channel."""
    latent = rng.normal(size=(n, 2))
    mixing = np.array([[1.0, 0.5, 0.0, 0.3], [0.0, 0.5, 1.0, -0.3]])
    X = latent @ mixing + 0.1 * rng.normal(size=(n, 4))
    return np.column_stack([X * [1.0, 10.0, 0.1, 5.0] + [0.0, 100.0, 3.0, -7.0], np.full(n, 32.0)])


def _shifted_file(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """600 rows: 400 normal (training), 100 normal, then 100 with the four sensors up 6 sd.

    (Isolation Forest cannot see a shift beyond the training range of a single
    channel: such a row is isolated no faster than the most extreme training row.)
    """
    rng = np.random.default_rng(seed)
    X = _sensor_rows(rng, 600)
    X[500:, :4] += 6.0 * X[:400, :4].std(axis=0)
    y = np.r_[np.zeros(500, int), np.ones(100, int)]
    return X, y


@pytest.mark.parametrize("name", list(SKAB_DETECTORS))
def test_detector_flags_an_obvious_shift(name: str) -> None:
    X, y = _shifted_file(seed=1)
    detector = SKAB_DETECTORS[name](X[:400])
    pred = detector.predict(X[400:])
    assert set(np.unique(pred)) <= {0, 1}
    shifted, normal = pred[y[400:] == 1], pred[y[400:] == 0]
    assert shifted.mean() >= 0.9, f"{name} caught only {shifted.mean():.0%} of shifted rows"
    assert normal.mean() <= 0.1, f"{name} flagged {normal.mean():.0%} of normal rows"
    scores = detector.score(X[400:])
    assert scores[y[400:] == 1].mean() > scores[y[400:] == 0].mean()


def test_run_skab_baselines_pools_the_test_rows() -> None:
    files = [_shifted_file(seed) for seed in (2, 3)]
    results = run_skab_baselines(files, train_rows=400)
    assert list(results) == list(SKAB_DETECTORS)
    for metrics in results.values():
        assert metrics.total == 2 * 200  # the 200 rows after training, twice
        assert metrics.tp + metrics.fn == 2 * 100
        assert metrics.f1 > 0.85
    with pytest.raises(ValueError, match="need more than 400"):
        run_skab_baselines([(np.zeros((400, 3)), np.zeros(400))])


def test_t2q_limits_by_hand() -> None:
    # T2 limit with m = 2 components, n = 400 rows, p = 0.999:
    # m (n-1)(n+1) / (n (n-m)) * F_0.999(2, 398) = 2*399*401/(400*398) * F
    f = stats.f.ppf(0.999, 2, 398)
    assert baselines._t2_limit(2, 400, 0.999) == pytest.approx(2 * 399 * 401 / (400 * 398) * f)
    # Q limit on r = 3 equal residual eigenvalues 0.5 (S = 1.5), c = z_0.999 = 3.0902:
    # textbook: theta_i = 3 * 0.5^i -> h0 = 1 - 2*1.5*0.375/(3*0.75^2) = 1/3 and
    #   Q = S (1 + c sqrt(2/r)/3 - 2/(9r))^3
    # SKAB's: theta_i = S^i -> h0 = 1/3 and Q = S (1 + c sqrt(2)/3 - 2/9)^3 (always looser)
    c = stats.norm.ppf(0.999)
    lam = np.full(3, 0.5)
    textbook = 1.5 * (1 + c * math.sqrt(2 / 3) / 3 - 2 / 27) ** 3
    skab = 1.5 * (1 + c * math.sqrt(2) / 3 - 2 / 9) ** 3
    assert baselines._q_limit(lam, 0.999, "jackson-mudholkar") == pytest.approx(textbook)
    assert baselines._q_limit(lam, 0.999, "skab") == pytest.approx(skab)
    assert skab > textbook


def test_t2q_median_filter_and_residual_flag() -> None:
    # trailing median over 3: [1, 5, 2, 8, 3] -> [-, -, med(1,5,2)=2, med(5,2,8)=5, med(2,8,3)=3]
    out = baselines._trailing_median(np.array([1.0, 5.0, 2.0, 8.0, 3.0]), 3)
    assert out.tolist() == [-np.inf, -np.inf, 2.0, 5.0, 3.0]
    # breaking the correlation between channels (not the range of any one) shows in Q
    rng = np.random.default_rng(4)
    train = _sensor_rows(rng, 400)
    test = _sensor_rows(rng, 50)
    test[:, 1] = 100.0 - 10.0 * (test[:, 1] - 100.0) / 10.0  # channel 1 flips sign
    detector = fit_t2q(train, median_window=1)
    _, q = detector.statistics(test)
    assert np.mean(q > detector.q_limit_) > 0.5


def test_windowed_gaussian_by_hand() -> None:
    # row 0: empty window -> 0
    # row 1: window [1]    -> mean 1, std 0 -> 1e-6; x = 1, z = 0   -> 1 - Q(0) = 0.5
    # row 2: window [1, 1] -> std 0 -> 1e-6; x = 3, z = 2e6        -> 1.0
    # row 3: window [1, 1, 3]: mean 5/3, std sqrt(8/9); x = 1, z = (2/3)/sqrt(8/9) = 1/sqrt(2)
    #        -> 1 - Q(1/sqrt 2) = 1 - erfc(1/2)/2 = 0.760249939
    scores = windowed_gaussian_scores([1.0, 1.0, 3.0, 1.0])
    assert scores.tolist()[:3] == [0.0, 0.5, 1.0]
    assert scores[3] == pytest.approx(1 - math.erfc(0.5) / 2)
    assert windowed_gaussian_scores([1.0, 1.0, 3.0, 1.0], probation_rows=3).tolist()[:3] == [0] * 3


def _nab_reference(values: list[float], window_size: int, step: int) -> list[float]:
    """Line-by-line transcription of NAB's WindowedGaussianDetector.handleRecord."""
    window: list[float] = []
    buffer: list[float] = []
    mean, std, out = 0.0, 1.0, []
    for x in values:
        score = 0.0
        if window:
            xp = 2 * mean - x if x < mean else x
            score = 1 - 0.5 * math.erfc((xp - mean) / std / math.sqrt(2))
        if len(window) < window_size:
            window.append(x)
            mean, std = float(np.mean(window)), float(np.std(window)) or 1e-6
        else:
            buffer.append(x)
            if len(buffer) == step:
                window = window[step:] + buffer
                buffer = []
                mean, std = float(np.mean(window)), float(np.std(window)) or 1e-6
        out.append(score)
    return out


def test_windowed_gaussian_slides_like_nab(monkeypatch: pytest.MonkeyPatch) -> None:
    # a window of 8 that then slides by 3, against the transcription above
    monkeypatch.setattr(baselines, "WG_WINDOW", 8)
    monkeypatch.setattr(baselines, "WG_STEP", 3)
    values = np.random.default_rng(5).normal(size=40).round(1).tolist()
    np.testing.assert_allclose(windowed_gaussian_scores(values), _nab_reference(values, 8, 3))
    # rounding to 12 significant digits, as NAB's result CSVs do
    rounded = windowed_gaussian_scores([1.0, 1.0, 3.0, 1.0], nab_csv_digits=12)
    assert rounded[3] == 0.760249938907


def test_load_skab_csv(tmp_path: Path) -> None:
    path = tmp_path / "0.csv"
    path.write_text(
        "datetime;Accelerometer1RMS;Current;anomaly;changepoint\n"
        "2020-03-09 10:34:33;0.027;0.87;0.0;0.0\n"
        "2020-03-09 10:34:34;0.026;1.30;1.0;1.0\n"
    )
    X, y = load_skab_csv(path)
    np.testing.assert_allclose(X, [[0.027, 0.87], [0.026, 1.30]])
    assert y.tolist() == [0, 1]


def test_plot_comparison_writes_a_png(tmp_path: Path) -> None:
    results = run_skab_baselines([_shifted_file(6)], detectors={"T2+Q": fit_t2q})
    out = plot_comparison(results, tmp_path / "cmp.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
