"""The Numenta Anomaly Benchmark (NAB) scoring algorithm, re-implemented with numpy.

Reference: A. Lavin and S. Ahmad, "Evaluating Real-time Anomaly Detection
Algorithms - the Numenta Anomaly Benchmark", ICMLA 2015; and the NAB code,
numenta/NAB ``nab/sweeper.py`` (per-row weights, threshold sweep),
``nab/runner.py`` (``normalize``) and ``config/profiles.json`` (weights).

Per file, with anomaly windows ``[start_ts, end_ts]`` (inclusive, timestamps
matched to rows) and a probationary period of ``min(floor(0.15 * rows), 750)``
rows whose detections are ignored:

* Each detection row ``i`` carries a weight. Inside a window of ``W`` rows
  whose last row is ``r`` it is ``A_TP * S(-(r - i + 1) / W) / S(-1)``, so a
  detection on the first row of a window earns exactly ``A_TP`` and one on the
  last row ``A_TP * S(-1/W) / S(-1)``. Outside windows it is ``A_FP * S(y)``
  with ``y = (i - r) / (W - 1)`` relative to the closest *preceding* window
  (``S(y) = -1`` for ``y > 3`` or when no window precedes), so false positives
  just after a window cost little and those far from any window cost ``A_FP``.
  ``S(y) = 2 / (1 + exp(5 y)) - 1`` is NAB's scaled sigmoid.
* A window contributes the weight of its best (i.e. first) detection, or
  ``-A_FN`` when it holds none; every detection outside windows adds its weight.
* Corpus score = ``100 * (raw - null) / (perfect - null)`` with ``null`` the
  detector that never fires (``-A_FN`` per window) and ``perfect`` one
  detection at each window start (``A_TP`` per window).

One threshold for the whole corpus is chosen by an exhaustive sweep over the
anomaly scores (:func:`sweep_threshold`), as NAB's optimiser does; a score
``>= threshold`` is a detection.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

PROBATION_PERCENT = 0.15
PROBATION_MAX_ROWS = 750  # NAB: probationPercent * 5000


@dataclass(frozen=True)
class Profile:
    """NAB application profile: the A_TP, A_FP, A_FN weights (A_TN is unused by NAB)."""

    name: str
    tp: float
    fp: float
    fn: float


# numenta/NAB config/profiles.json
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0),
}


def get_profile(profile: Profile | str) -> Profile:
    """A :class:`Profile` from itself or its NAB name."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown NAB profile {profile!r}; known: {sorted(PROFILES)}") from None


def probation_period(n_rows: int) -> int:
    """NAB's probationary period: min(floor(0.15 * n_rows), 750) rows."""
    return int(min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_MAX_ROWS))


def scaled_sigmoid(y: ArrayLike) -> NDArray[np.float64]:
    """NAB's S(y) = 2 / (1 + exp(5 y)) - 1, and -1 for y > 3.

    S(-1) = 0.98661 (window start), S(0) = 0 (window end), S(1) = -0.98661.
    """
    y = np.asarray(y, dtype=float)
    clipped = np.minimum(y, 3.0)  # avoids overflow; the y > 3 branch is replaced below
    return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * clipped)) - 1.0)


MAX_TP = float(scaled_sigmoid(-1.0))


# --------------------------------------------------------------------------- one file


@dataclass(frozen=True)
class FileScore:
    """NAB result of one file.

    ``raw`` is the NAB score; ``tp``/``fn`` count detected/missed windows and
    ``fp`` the detection rows outside windows (after the probationary period);
    ``null`` and ``perfect`` are the raw scores of the never-firing and the
    ideal detector on this file, for :func:`normalized_score`.
    """

    raw: float
    tp: int
    fp: int
    fn: int
    null: float
    perfect: float


@dataclass(frozen=True)
class _RowWeights:
    """Per-row NAB bookkeeping of one file."""

    window: NDArray[np.intp]  # index of the window holding the row, -1 outside windows
    weight: NDArray[np.float64]  # what a detection on this row would score
    scored: NDArray[np.bool_]  # after the probationary period
    scored_windows: NDArray[np.intp]  # windows with at least one scored row


def _window_span(ts: NDArray[Any], start: Any, end: Any) -> tuple[int, int] | None:
    """First and last row of a window: from the first row at or after ``start`` through the
    first row equal to ``end`` (NAB's ``timestamps.index(end)``), else the last row not after it.
    """
    at_or_after = np.flatnonzero(ts >= start)
    if not at_or_after.size:
        return None
    first = int(at_or_after[0])
    beyond = np.flatnonzero(ts[first:] > end)
    stop = first + int(beyond[0]) if beyond.size else ts.size
    exact = np.flatnonzero(ts[first:stop] == end)
    last = first + int(exact[0]) if exact.size else stop - 1
    return (first, last) if last >= first else None


def _window_rows(ts: NDArray[Any], windows: Sequence[tuple[Any, Any]]) -> list[tuple[int, int]]:
    """Row spans of the windows (timestamps inclusive) that cover at least one row, in order."""
    rows: list[tuple[int, int]] = []
    for start, end in sorted(windows, key=lambda w: w[0]):
        bounds = np.asarray([start, end], dtype=ts.dtype)
        span = _window_span(ts, bounds[0], bounds[1])
        if span is None:
            continue
        if rows and span[0] <= rows[-1][1]:
            raise ValueError(f"anomaly windows overlap: {windows}")
        rows.append(span)
    return rows


def _row_weights(
    timestamps: ArrayLike, windows: Sequence[tuple[Any, Any]], profile: Profile, probation: int
) -> _RowWeights:
    ts = np.asarray(timestamps)
    n = ts.size
    window = np.full(n, -1, dtype=np.intp)
    weight = np.full(n, -profile.fp)  # no preceding window: S = -1
    bounds = _window_rows(ts, windows)
    for k, (first, last) in enumerate(bounds):
        width = last - first + 1
        rows = np.arange(first, last + 1)
        window[first : last + 1] = k
        weight[first : last + 1] = profile.tp * scaled_sigmoid(-(last - rows + 1) / width) / MAX_TP
        stop = bounds[k + 1][0] if k + 1 < len(bounds) else n
        after = np.arange(last + 1, stop)
        rel = (after - last) / (width - 1) if width > 1 else np.full(after.size, np.inf)
        weight[last + 1 : stop] = profile.fp * scaled_sigmoid(rel)
    scored = np.arange(n) >= probation
    return _RowWeights(window, weight, scored, np.unique(window[scored & (window >= 0)]))


def _score_rows(rw: _RowWeights, detections: NDArray[np.bool_], profile: Profile) -> FileScore:
    det = detections & rw.scored
    fp_rows = det & (rw.window < 0)
    raw = float(np.sum(rw.weight[fp_rows]))
    tp = 0
    for k in rw.scored_windows:
        hits = det & (rw.window == k)
        if hits.any():
            tp += 1
            raw += max(-profile.fn, float(np.max(rw.weight[hits])))
        else:
            raw -= profile.fn
    n_windows = int(rw.scored_windows.size)
    return FileScore(
        raw=raw,
        tp=tp,
        fp=int(fp_rows.sum()),
        fn=n_windows - tp,
        null=-profile.fn * n_windows,
        perfect=profile.tp * n_windows,
    )


def score_file(
    timestamps: ArrayLike,
    detections: ArrayLike,
    windows: Sequence[tuple[Any, Any]],
    profile: Profile | str = "standard",
    probation_rows: int | None = None,
) -> FileScore:
    """NAB score of one file's binary detections.

    ``timestamps``: in row order (normally increasing), of any type the
    window bounds convert to (numbers, ``datetime64``). ``windows``:
    ``(start_ts, end_ts)`` pairs, both inclusive. ``probation_rows`` defaults
    to NAB's ``min(floor(0.15 n), 750)``.
    Windows lying wholly in the probationary period are not scored (as in NAB).
    """
    prof = get_profile(profile)
    ts = np.asarray(timestamps)
    det = np.asarray(detections).astype(bool).reshape(-1)
    if det.size != ts.size:
        raise ValueError(f"{ts.size} timestamps but {det.size} detections")
    probation = probation_period(ts.size) if probation_rows is None else int(probation_rows)
    return _score_rows(_row_weights(ts, windows, prof, probation), det, prof)


def normalized_score(scores: Sequence[FileScore]) -> float:
    """Corpus score 100 * (raw - null) / (perfect - null), summed over files (NAB ``normalize``).

    0 for the never-firing detector, 100 for one detection at every window
    start. Raises ValueError for a corpus without any scorable window.
    """
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    if perfect == null:
        raise ValueError("the corpus has no scorable anomaly window; the NAB score is undefined")
    return 100.0 * (raw - null) / (perfect - null)


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class NabFile:
    """One NAB data file with its label windows."""

    name: str  # e.g. "realKnownCause/nyc_taxi.csv", the key in combined_windows.json
    timestamps: NDArray[np.datetime64]
    values: NDArray[np.float64]
    windows: tuple[tuple[np.datetime64, np.datetime64], ...]

    @property
    def probation_rows(self) -> int:
        return probation_period(self.timestamps.size)

    def labels(self) -> NDArray[np.bool_]:
        """True on rows inside an anomaly window."""
        out = np.zeros(self.timestamps.size, dtype=bool)
        for first, last in _window_rows(self.timestamps, self.windows):
            out[first : last + 1] = True
        return out

    def score(self, detections: ArrayLike, profile: Profile | str = "standard") -> FileScore:
        """:func:`score_file` on this file with NAB's probationary period."""
        return score_file(self.timestamps, detections, self.windows, profile, self.probation_rows)


def _read_nab_csv(path: Path) -> tuple[NDArray[np.datetime64], NDArray[np.float64]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected header timestamp,value, got {header}")
        rows = [row for row in reader if row]
    ts = np.array([r[0] for r in rows], dtype="datetime64[s]")
    return ts, np.array([float(r[1]) for r in rows])


def load_nab_corpus(root: Path) -> list[NabFile]:
    """NAB files from ``root/data/<category>/<file>.csv`` and ``root/labels/combined_windows.json``.

    Only labelled files present under ``data/`` are loaded (a partial copy of
    the corpus is fine); raises FileNotFoundError when there is none.
    """
    root = Path(root)
    labels_path = root / "labels" / "combined_windows.json"
    with labels_path.open() as fh:
        labels: dict[str, list[list[str]]] = json.load(fh)
    files = []
    for name in sorted(labels):
        path = root / "data" / name
        if not path.is_file():
            continue
        ts, values = _read_nab_csv(path)
        windows = tuple(
            (np.datetime64(a).astype("datetime64[s]"), np.datetime64(b).astype("datetime64[s]"))
            for a, b in labels[name]
        )
        files.append(NabFile(name=name, timestamps=ts, values=values, windows=windows))
    if not files:
        raise FileNotFoundError(f"no labelled NAB data file under {root / 'data'}")
    return files


# --------------------------------------------------------------------------- threshold sweep


@dataclass(frozen=True)
class SweepResult:
    """The corpus-wide threshold that maximises the NAB score, and the files scored with it."""

    threshold: float
    score: float  # normalised, 0 = null detector, 100 = perfect
    raw: float
    files: tuple[FileScore, ...]


def _score_deltas(
    scores: NDArray[np.float64], weights: NDArray[np.float64], window: NDArray[np.intp], fn: float
) -> NDArray[np.float64]:
    """Change of the raw score as each row (in descending score order) becomes a detection.

    A row outside windows adds its weight; a row in a window raises that
    window's contribution to the running max of its rows' weights (from -A_FN).
    """
    delta = np.where(window < 0, weights, 0.0)
    by_window = np.argsort(window, kind="stable")  # keeps the descending-score order per window
    sorted_windows = window[by_window]
    starts = np.searchsorted(sorted_windows, np.unique(sorted_windows[sorted_windows >= 0]))
    ends = np.r_[starts[1:], sorted_windows.size]
    for a, b in zip(starts, ends, strict=True):
        rows = by_window[a:b]
        running = np.maximum.accumulate(np.r_[-fn, weights[rows]])
        delta[rows] = np.diff(running)
    return delta


def _scored_rows(
    files_scores: Sequence[tuple[NabFile, ArrayLike]], prof: Profile
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp], float]:
    """Scores, detection weights and corpus-wide window ids of all scored rows; the null score."""
    scores, weights, windows = [], [], []
    null, offset = 0.0, 0
    for nab_file, file_scores in files_scores:
        s = np.asarray(file_scores, dtype=float).reshape(-1)
        if s.size != nab_file.timestamps.size:
            raise ValueError(f"{nab_file.name}: {nab_file.timestamps.size} rows, {s.size} scores")
        if np.isnan(s).any():
            raise ValueError(f"{nab_file.name}: anomaly scores contain NaN")
        rw = _row_weights(nab_file.timestamps, nab_file.windows, prof, nab_file.probation_rows)
        keep = rw.scored
        scores.append(s[keep])
        weights.append(rw.weight[keep])
        windows.append(np.where(rw.window[keep] >= 0, rw.window[keep] + offset, -1))
        offset += len(nab_file.windows)
        null -= prof.fn * rw.scored_windows.size
    if not scores:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.intp), null
    return np.concatenate(scores), np.concatenate(weights), np.concatenate(windows), null


def sweep_threshold(
    files_scores: Sequence[tuple[NabFile, ArrayLike]], profile: Profile | str = "standard"
) -> SweepResult:
    """Best single threshold for the whole corpus, by NAB's exhaustive sweep.

    ``files_scores``: each file with its per-row anomaly scores (NAB expects
    [0, 1]). Every distinct score after the probationary periods is tried as a
    threshold (detection = score >= threshold), plus one just above all scores
    (never fire); ties go to the highest threshold, as in NAB.
    """
    prof = get_profile(profile)
    scores, weights, window, null = _scored_rows(files_scores, prof)
    order = np.argsort(-scores, kind="stable")
    scores, weights, window = scores[order], weights[order], window[order]
    totals = null + np.cumsum(_score_deltas(scores, weights, window, prof.fn))
    last_of_value = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1].astype(np.intp)
    never = float(np.nextafter(scores[0], np.inf)) if scores.size else 1.1
    thresholds = np.r_[never, scores[last_of_value[: scores.size]]]
    candidates = np.r_[null, totals[last_of_value[: scores.size]]]
    threshold = float(thresholds[int(np.argmax(candidates))])
    results = tuple(f.score(np.asarray(s) >= threshold, prof) for f, s in files_scores)
    return SweepResult(
        threshold=threshold,
        score=normalized_score(results),
        raw=float(sum(r.raw for r in results)),
        files=results,
    )
