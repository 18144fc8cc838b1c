"""Thresholds from the scores of held-out normal windows (ones the models never trained on).

Methods (each records its parameters in the manifest's `Threshold.params`):

- `quantile`: the q-quantile of the held-out scores times (1 + margin).
- `iqr`: Tukey's fence on the scores, Q3 + k * (Q3 - Q1).
- `pot`: peaks over threshold, SPOT-style (Siffer et al., KDD 2017): excesses over an initial
  threshold t (the `level` quantile) are fitted with a generalised Pareto law (scipy's
  genpareto, location 0); the threshold is the score exceeded with probability `risk`,
  z = t + sigma/gamma * ((risk * n / n_t)^-gamma - 1). Falls back to `quantile` when there
  are too few excesses or the fit is degenerate (recorded as `fallback`).
- `bhattacharyya`: distance-shift-from-normal. Our reading: estimate the density p of the
  normal scores (Gaussian KDE, on log scores when all are positive); a shifted copy
  p(s - delta) stands for the scores of a changed process. The threshold is median + delta*,
  where delta* is the smallest shift whose Bhattacharyya distance -ln int sqrt(p(s) p(s-delta))
  reaches `bound`: a shift any smaller is not reliably told apart from normal. For a Gaussian
  of deviation sigma, D_B = delta^2 / (8 sigma^2), so bound 2 gives median + 4 sigma.
- `fence` (IQR scorer only): 1.0, the Tukey fence itself.
- `tolerance` (`range` and `flat` scorers): fixed, a share of the range beyond the record, or
  a departure of one tolerance from a channel's constant training value.
- `likelihood` (scorers with the device's likelihood step): a fixed threshold on its z, not
  calibrated here: the step judges each raw score against the device's own history.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edge.bundle import Threshold
from export.config import FitConfig

FloatArray = npt.NDArray[np.float64]
MIN_EXCESSES = 5
TINY = 1e-12


def _threshold(value: float, method: str, scores: FloatArray, **params: object) -> Threshold:
    value = max(float(value), TINY)
    params["heldout_windows"] = int(scores.size)
    params["heldout_over"] = round(float(np.mean(scores > value)), 6)
    return Threshold(value=value, method=method, params=params)


def quantile(scores: FloatArray, q: float, margin: float) -> Threshold:
    base = float(np.quantile(scores, q))
    return _threshold(
        base * (1.0 + margin), "quantile", scores, quantile=q, margin=margin, base=base
    )


def iqr(scores: FloatArray, k: float) -> Threshold:
    q1, q3 = (float(v) for v in np.percentile(scores, [25, 75]))
    return _threshold(q3 + k * (q3 - q1), "iqr", scores, q1=q1, q3=q3, k=k)


def pot(scores: FloatArray, level: float, risk: float, config: FitConfig) -> Threshold:
    from scipy.stats import genpareto

    t = float(np.quantile(scores, level))
    excess = scores[scores > t] - t
    n, n_t = scores.size, excess.size
    reason = None
    if n_t < MIN_EXCESSES:
        reason = f"{n_t} excesses over the initial threshold (need {MIN_EXCESSES})"
    else:
        gamma, _, sigma = genpareto.fit(excess, floc=0.0)
        ratio = risk * n / n_t
        if abs(gamma) < 1e-8:
            z = t - sigma * math.log(ratio)
        else:
            z = t + sigma / gamma * (ratio ** (-gamma) - 1.0)
        if not math.isfinite(z) or z <= t or sigma <= 0:
            reason = f"degenerate GPD fit (gamma {gamma:.3g}, sigma {sigma:.3g})"
        else:
            return _threshold(
                z,
                "pot",
                scores,
                level=level,
                risk=risk,
                initial=t,
                gamma=float(gamma),
                sigma=float(sigma),
                excesses=n_t,
            )
    fallback = quantile(scores, config.threshold_quantile, config.threshold_margin)
    params = dict(fallback.params, fallback=f"quantile: {reason}", level=level, risk=risk)
    return Threshold(value=fallback.value, method="quantile", params=params)


def _kde(samples: FloatArray, grid: FloatArray) -> FloatArray:
    if samples.size > 4000:  # the density of many scores from 4000 of their quantiles
        samples = np.quantile(samples, np.linspace(0.0, 1.0, 4000))
    sd = float(samples.std())
    iqr_sd = float(np.subtract(*np.percentile(samples, [75, 25]))) / 1.349
    spread = min(sd, iqr_sd) if iqr_sd > 0 else sd
    h = max(0.9 * spread * samples.size ** (-0.2), TINY)  # Silverman's rule
    u = (grid[:, None] - samples[None, :]) / h
    density = np.exp(-0.5 * u * u).sum(axis=1)
    return np.asarray(density / (density.sum() * (grid[1] - grid[0])))


def bhattacharyya(scores: FloatArray, bound: float) -> Threshold:
    log_space = bool(np.all(scores > 0))
    s = np.log(scores) if log_space else scores.astype(np.float64)
    spread = max(float(np.ptp(s)), TINY)
    step = spread / 400
    grid = np.arange(s.min() - spread, s.max() + 6 * spread + 20 * step, step)
    p = _kde(s, grid)
    shift = 0
    distance = 0.0
    for shift in range(1, grid.size):
        overlap = float(np.sum(np.sqrt(p[shift:] * p[:-shift])) * step)
        distance = -math.log(max(overlap, 1e-300))
        if distance >= bound:
            break
    delta = shift * step
    centre = float(np.median(s))
    value = math.exp(centre + delta) if log_space else centre + delta
    return _threshold(
        value,
        "bhattacharyya",
        scores,
        bound=bound,
        space="log" if log_space else "linear",
        median=centre,
        shift=delta,
        distance=round(distance, 4),
    )


def calibrate(scores: FloatArray, config: FitConfig, method: str | None = None) -> Threshold:
    """The threshold of one scorer from its held-out normal window scores."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    method = method or config.threshold_method
    if method == "quantile":
        return quantile(scores, config.threshold_quantile, config.threshold_margin)
    if method == "iqr":
        return iqr(scores, config.threshold_iqr_k)
    if method == "pot":
        return pot(scores, config.pot_level, config.pot_risk, config)
    if method == "bhattacharyya":
        return bhattacharyya(scores, config.bhattacharyya_bound)
    raise ValueError(f"unknown threshold method {method!r}")


def likelihood(z: float) -> Threshold:
    """A threshold on the likelihood step's z; HTM's likelihood 1 - Q(z) in the params."""
    level = 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))
    return Threshold(value=z, method="likelihood", params={"likelihood": round(level, 6)})


def tolerance(share: float) -> Threshold:
    """The range scorer's threshold: how far beyond the record, in widths of the range, a row
    must lie (not calibrated: held-out rows lie inside the training range by construction)."""
    return Threshold(value=share, method="tolerance", params={})


def flat(tolerance: float) -> Threshold:
    """The `flat` scorer's threshold: 1.0, a departure of exactly the channel's tolerance
    (`tolerance` x max(|value|, 1), its scale), not calibrated: the held-out rows do not
    move."""
    return Threshold(value=1.0, method="tolerance",
                     params={"flat_tolerance": tolerance, "unit": "flat_tolerance x max(|v|, 1)"})


def fence(scores: FloatArray) -> Threshold:
    return _threshold(1.0, "fence", np.asarray(scores, dtype=np.float64))
