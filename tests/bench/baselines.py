"""Comparison detectors for the benchmarks: SKAB leaderboard harness, NAB windowed Gaussian.

SKAB protocol (waico/SKAB README, leaderboard "outlier detection"): for each
file, fit on the first 400 rows and predict the rest; pool TP/FP/FN/TN over
all test rows of all files (:func:`export.metrics.pool`).

Every detector here is fitted by a ``fit_*(train) -> Detector`` function on
training rows only: constant training columns are dropped, a StandardScaler is
fitted, and the decision threshold is derived from the training data. A
Detector has ``score(X)`` (higher = more anomalous) and ``predict(X)`` (0/1).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from export.metrics import PointMetrics, point_metrics, pool

Array = NDArray[np.float64]


class Detector(Protocol):
    def score(self, X: ArrayLike) -> Array: ...

    def predict(self, X: ArrayLike) -> NDArray[np.int_]: ...


# --------------------------------------------------------------------------- data


SKAB_LABELS = ("anomaly", "changepoint")


def load_skab_csv(path: Path) -> tuple[Array, NDArray[np.int_]]:
    """Sensor matrix and ``anomaly`` labels of one SKAB file (``;``-separated, ``datetime`` first).

    The ``datetime`` and ``changepoint`` columns are dropped.
    """
    with Path(path).open(newline="") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader)
        rows = [row for row in reader if row]
    dropped = ("datetime", *SKAB_LABELS)
    features = [i for i, name in enumerate(header) if name not in dropped]
    table = np.array(rows, dtype=object)
    X = table[:, features].astype(float)
    y = table[:, header.index("anomaly")].astype(float).astype(int)
    return X, y


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class _Standardizer:
    """Drop columns constant on the training rows, then StandardScaler (fitted on training rows)."""

    keep: NDArray[np.bool_]
    scaler: StandardScaler

    @classmethod
    def fit(cls, train: ArrayLike) -> _Standardizer:
        X = _matrix(train)
        keep = np.ptp(X, axis=0) > 0
        if not keep.any():
            raise ValueError("every training column is constant; nothing to learn from")
        return cls(keep, StandardScaler().fit(X[:, keep]))

    def __call__(self, X: ArrayLike) -> Array:
        return np.asarray(self.scaler.transform(_matrix(X)[:, self.keep]), dtype=float)


def _matrix(X: ArrayLike) -> Array:
    arr = np.asarray(X, dtype=float)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


# --------------------------------------------------------------------------- scikit-learn detectors


@dataclass(frozen=True)
class ScoreThresholdDetector:
    """Anomaly score of a fitted model on standardised rows, flagged above ``threshold_``."""

    prep: _Standardizer
    score_fn: Callable[[Array], Array]
    threshold_: float

    def score(self, X: ArrayLike) -> Array:
        return np.asarray(self.score_fn(self.prep(X)), dtype=float)

    def predict(self, X: ArrayLike) -> NDArray[np.int_]:
        return (self.score(X) > self.threshold_).astype(int)


def fit_isolation_forest(
    train: ArrayLike, contamination: float = 0.01, random_state: int = 0
) -> ScoreThresholdDetector:
    """Isolation Forest; threshold = the (1 - contamination) quantile of training scores."""
    prep = _Standardizer.fit(train)
    model = IsolationForest(contamination=contamination, random_state=random_state)
    model.fit(prep(train))
    return ScoreThresholdDetector(prep, lambda Z: -model.score_samples(Z), -float(model.offset_))


def fit_lof(
    train: ArrayLike, contamination: float = 0.01, n_neighbors: int = 20
) -> ScoreThresholdDetector:
    """Local Outlier Factor with ``novelty=True``.

    The threshold is scikit-learn's ``offset_``: the contamination quantile of
    the training rows' own (leave-self-out) outlier factors.
    """
    prep = _Standardizer.fit(train)
    model = LocalOutlierFactor(n_neighbors=n_neighbors, novelty=True, contamination=contamination)
    model.fit(prep(train))
    return ScoreThresholdDetector(prep, lambda Z: -model.score_samples(Z), -float(model.offset_))


def fit_ocsvm(
    train: ArrayLike, contamination: float = 0.01, nu: float = 0.05
) -> ScoreThresholdDetector:
    """One-Class SVM (RBF, gamma="scale"); threshold = (1 - contamination) training quantile."""
    prep = _Standardizer.fit(train)
    Z = prep(train)
    model = OneClassSVM(kernel="rbf", gamma="scale", nu=nu).fit(Z)
    train_scores = -model.score_samples(Z)
    threshold = float(np.quantile(train_scores, 1.0 - contamination))
    return ScoreThresholdDetector(prep, lambda X: -model.score_samples(X), threshold)


# --------------------------------------------------------------------------- PCA T-squared + Q


QLimit = Literal["skab", "jackson-mudholkar"]


def _t2_limit(m: int, n: int, p_value: float) -> float:
    """Hotelling T2 upper control limit m(n-1)(n+1) / (n(n-m)) * F_p(m, n-m) (SKAB core/t2.py)."""
    return m * (n - 1) * (n + 1) / (n * (n - m)) * float(stats.f.ppf(p_value, m, n - m))


def _q_limit(residual_eigenvalues: Array, p_value: float, kind: QLimit) -> float:
    """Jackson-Mudholkar limit of the SPE (Q) statistic at confidence ``p_value``.

    Q_lim = theta1 * (c h0 sqrt(2 theta2) / theta1 + 1 + theta2 h0 (h0 - 1) / theta1^2)^(1/h0)
    with h0 = 1 - 2 theta1 theta3 / (3 theta2^2) and c the normal p-quantile.

    ``jackson-mudholkar``: theta_i = sum_j lambda_j^i over the residual
    eigenvalues (Jackson & Mudholkar 1979). ``skab``: theta_i = (sum_j lambda_j)^i,
    as SKAB's ``core/t2.py`` computes it (h0 is then always 1/3 and the limit
    is looser); kept to reproduce the published SKAB figure.
    """
    lam = np.clip(residual_eigenvalues, 0.0, None)
    if kind == "skab":
        theta = [float(lam.sum()) ** i for i in (1, 2, 3)]
    else:
        theta = [float(np.sum(lam**i)) for i in (1, 2, 3)]
    if theta[0] <= np.finfo(float).tiny:
        return 0.0
    h0 = 1.0 - 2.0 * theta[0] * theta[2] / (3.0 * theta[1] ** 2)
    c = float(stats.norm.ppf(p_value))
    core = c * h0 * math.sqrt(2.0 * theta[1]) / theta[0] + 1.0
    core += theta[1] * h0 * (h0 - 1.0) / theta[0] ** 2
    return float(theta[0] * core ** (1.0 / h0))


def _trailing_median(x: Array, window: int) -> Array:
    """Median of each value and the ``window - 1`` before it; -inf until the window is full."""
    if window <= 1:
        return x
    out = np.full(x.shape, -np.inf)
    if x.size >= window:
        out[window - 1 :] = np.median(sliding_window_view(x, window), axis=1)
    return out


@dataclass(frozen=True)
class T2QDetector:
    """PCA Hotelling T2 (principal subspace) + Q / SPE (residual subspace), SKAB style.

    A row is anomalous when the trailing median of T2 or of Q exceeds its limit.
    """

    prep: _Standardizer
    pca: PCA
    inv_cov: Array
    t2_limit_: float
    q_limit_: float
    median_window: int

    def statistics(self, X: ArrayLike) -> tuple[Array, Array]:
        """Per-row (T2, Q) before the median filter."""
        Z = self.prep(X)
        T = self.pca.transform(Z)
        t2 = np.einsum("ij,jk,ik->i", T, self.inv_cov, T)
        residual = (Z - self.pca.mean_) - T @ self.pca.components_
        return t2, np.sum(residual**2, axis=1)

    def score(self, X: ArrayLike) -> Array:
        """max(T2 / T2 limit, Q / Q limit) after the median filter: > 1 means anomalous."""
        t2, q = (_trailing_median(s, self.median_window) for s in self.statistics(X))
        q_ratio = q / self.q_limit_ if self.q_limit_ > 0 else np.where(q > 0, np.inf, 0.0)
        return np.maximum(t2 / self.t2_limit_, q_ratio)

    def predict(self, X: ArrayLike) -> NDArray[np.int_]:
        return (self.score(X) > 1.0).astype(int)


def fit_t2q(
    train: ArrayLike,
    explained_variance: float = 0.85,
    p_value: float = 0.999,
    median_window: int = 5,
    q_limit: QLimit = "skab",
) -> T2QDetector:
    """T2+Q as SKAB's ``notebooks/t2_with_q_SKAB.ipynb``: ``T2(scaling=True, using_pca=True)``,
    PCA keeping 85% of the variance, limits at p = 0.999, predictions from a
    5-row rolling median of each statistic.
    """
    prep = _Standardizer.fit(train)
    Z = prep(train)
    pca = PCA(n_components=explained_variance, svd_solver="full").fit(Z)
    m, n = int(pca.n_components_), Z.shape[0]
    T = pca.transform(Z)
    inv_cov = np.linalg.inv(np.atleast_2d(np.cov(T.T)))
    eigenvalues = np.sort(np.linalg.eigvalsh(np.atleast_2d(np.cov(Z.T))))[::-1]
    residual = eigenvalues[m:]
    q_lim = _q_limit(residual, p_value, q_limit) if residual.size else math.inf
    return T2QDetector(prep, pca, inv_cov, _t2_limit(m, n, p_value), q_lim, median_window)


# --------------------------------------------------------------------------- SKAB harness


SKAB_DETECTORS: dict[str, Callable[[Array], Detector]] = {
    "Isolation forest": fit_isolation_forest,
    "LOF": fit_lof,
    "One-class SVM": fit_ocsvm,
    "T2+Q (PCA)": fit_t2q,
}


def run_skab_baselines(
    files: Sequence[tuple[ArrayLike, ArrayLike]],
    train_rows: int = 400,
    detectors: Mapping[str, Callable[[Array], Detector]] | None = None,
) -> dict[str, PointMetrics]:
    """Pooled point metrics of each detector under the SKAB protocol.

    Each file ``(X, y)`` is split into its first ``train_rows`` rows (fit) and
    the rest (predict and score).
    """
    chosen = SKAB_DETECTORS if detectors is None else detectors
    results = {}
    for name, fit in chosen.items():
        per_file = []
        for X, y in files:
            Xa, ya = _matrix(X), np.asarray(y).reshape(-1)
            if Xa.shape[0] <= train_rows:
                raise ValueError(f"a file has {Xa.shape[0]} rows; need more than {train_rows}")
            detector = fit(Xa[:train_rows])
            per_file.append(point_metrics(ya[train_rows:], detector.predict(Xa[train_rows:])))
        results[name] = pool(per_file)
    return results


def plot_comparison(results: Mapping[str, PointMetrics], path: Path | str) -> Path:
    """Bar charts of F1, FAR (%) and MAR (%) per detector, side by side, saved to ``path``."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    names = list(results)
    panels = (
        ("F1 (higher is better)", [results[n].f1 for n in names], (0.0, 1.0)),
        ("FAR % (lower is better)", [results[n].far_pct for n in names], (0.0, 100.0)),
        ("MAR % (lower is better)", [results[n].mar_pct for n in names], (0.0, 100.0)),
    )
    fig = Figure(figsize=(12.0, 0.45 * len(names) + 1.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True)
    for ax, (title, values, limits) in zip(axes, panels, strict=True):
        bars = ax.barh(names, values, color="tab:blue")
        ax.bar_label(bars, fmt="%.2f" if limits[1] == 1.0 else "%.1f", padding=2)
        ax.set_xlim(limits[0], limits[1] * 1.18)  # room for the labels
        ax.set_title(title)
    axes[0].invert_yaxis()  # first detector on top (the y axis is shared)
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out


# --------------------------------------------------------------------------- NAB windowed Gaussian

WG_WINDOW = 6400
WG_STEP = 100


def _gaussian_tail_score(x: float, mean: float, std: float) -> float:
    """1 - Q(|x - mean| / std): NAB's ``1 - normalProbability`` (folded upper tail)."""
    if x < mean:
        x = 2 * mean - x  # NAB flips to the upper tail the same way
    z = (x - mean) / std
    return 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))


def windowed_gaussian_scores(
    values: ArrayLike, probation_rows: int = 0, nab_csv_digits: int | None = None
) -> Array:
    """NAB's windowed Gaussian detector (``nab/detectors/gaussian/windowedGaussian_detector.py``).

    Causal: row i is scored under the mean and (population) std of the window
    as it stood before row i. The window grows row by row to 6400 values, then
    slides forward 100 values at a time; a zero std is replaced by 1e-6. The
    first row scores 0. Rows in the probationary period, which NAB's scorer
    ignores, are set to 0.

    ``nab_csv_digits=12`` rounds the scores to the 12 significant digits of
    NAB's results CSVs, which its scorer reads back: with it the per-file
    scores equal NAB's published ones (the threshold 1.0 then also catches
    scores within 5e-13 of 1).
    """
    x = np.asarray(values, dtype=float).reshape(-1)
    scores = np.zeros(x.size)
    lo = hi = pending = 0  # the window is x[lo:hi]; pending values wait for the next slide
    mean, std = 0.0, 1.0
    for i, value in enumerate(x):
        if hi > lo:
            scores[i] = _gaussian_tail_score(float(value), mean, std)
        if hi - lo < WG_WINDOW:
            hi = i + 1
        else:
            pending += 1
            if pending < WG_STEP:
                continue
            lo, hi, pending = lo + WG_STEP, i + 1, 0
        mean, std = float(np.mean(x[lo:hi])), float(np.std(x[lo:hi]))
        std = std if std != 0.0 else 1e-6
    scores[: max(0, probation_rows)] = 0.0
    if nab_csv_digits is not None:
        scores = np.array([float(f"{v:.{nab_csv_digits}g}") for v in scores])
    return scores
