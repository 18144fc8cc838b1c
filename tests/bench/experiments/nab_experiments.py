"""NAB experiments: raw scorer x likelihood post-processor x alert policy -> NAB scores.

Protocol: per file, fit on the probationary rows (first 15%, at most 750), score causally,
detections = alert STARTS (one per alert; the alert holds while the score stays high, then a
cooldown). The one global knob -- the cut on the normalised score (threshold margin, or the
likelihood cut) -- is swept for the whole corpus, as NAB's optimiser sweeps its threshold.

Run: PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.nab_experiments
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from export.nab import load_nab_corpus, normalized_score, sweep_threshold
from tests.bench.baselines import windowed_gaussian_scores
from tests.bench.experiments.common import Decision

ROOT = Path("/work/shared/data/nab")
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def scale_params(x):
    med = float(np.median(x))
    iqr = float(np.subtract(*np.percentile(x, [75, 25]))) / 1.349
    sd = float(x.std())
    return med, max(iqr, 0.5 * sd, 1e-6 * max(1.0, abs(med)), 1e-9)


def embed(z, L):
    """Row t -> [z_{t-L+1} .. z_t] (edge-padded at the start): the window's last L rows."""
    pad = np.concatenate([np.full(L - 1, z[0]), z])
    return np.lib.stride_tricks.sliding_window_view(pad, L)


# ----------------------------------------------------------------- raw scorers (fit on probation)


def raw_z(x, n0, **_):
    med, sc = scale_params(x[:n0])
    return np.abs(x - med) / sc


def raw_lagdist(x, n0, L=8, k=16, detrend=False, **_):
    """Distance of the (scaled) last-L-rows vector to the nearest KMeans centroid of probation
    vectors: PCA+KMeans Euclidean distance with `lags`=L on a univariate stream.
    detrend: subtract the vector's own mean (shape only) and add the mean as one feature."""
    med, sc = scale_params(x[:n0])
    z = (x - med) / sc
    E = embed(z, L)
    if detrend:
        m = E.mean(1, keepdims=True)
        E = np.hstack([E - m, m])
    km = KMeans(min(k, n0 // 4), n_init=3, random_state=0).fit(E[L:n0])
    d = ((E[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1).min(1)
    return np.sqrt(d)


def raw_resid(x, n0, alpha=0.1, **_):
    """|x_t - EMA_{t-1}| scaled by the probation spread of that residual."""
    med, sc = scale_params(x[:n0])
    z = (x - med) / sc
    e = np.empty_like(z)
    s = z[0]
    for i in range(len(z)):
        e[i] = z[i] - s
        s += alpha * (z[i] - s)
    r = np.abs(e)
    return r / (np.quantile(r[1:n0], 0.9) + 1e-9)


RAW = {"z": raw_z, "lagdist": raw_lagdist, "resid": raw_resid}


# ----------------------------------------------------------------- likelihood (device step)


def likelihood_z(s, short=10, long=8640, min_hist=300, log=True, n0=None, of_avg=False):
    """HTM-style: z = (mean of the last `short` raw scores - long mean) / long sd, where the
    long-term mean/sd are over the raw scores of the last `long` rows (running sums on the
    device). likelihood = 1 - Q(z); we keep z (numerically stable; cut z <=> cut likelihood)."""
    x = np.log(np.maximum(s, 1e-6)) if log else np.asarray(s, float)
    n = len(x)
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    i = np.arange(n)
    a = np.maximum(0, i - short + 1)
    ms = (c1[i + 1] - c1[a]) / (i + 1 - a)
    lo = np.maximum(0, i + 1 - long)
    m = i + 1 - lo
    mu = (c1[i + 1] - c1[lo]) / m
    var = (c2[i + 1] - c2[lo]) / m - mu * mu
    sd = np.sqrt(np.maximum(var, 1e-4))
    if of_avg:  # HTM: long-term distribution of the short moving averages themselves
        d1 = np.concatenate([[0.0], np.cumsum(ms)])
        d2 = np.concatenate([[0.0], np.cumsum(ms * ms)])
        mu = (d1[i + 1] - d1[lo]) / m
        sd = np.sqrt(np.maximum((d2[i + 1] - d2[lo]) / m - mu * mu, 1e-4))
    z = (ms - mu) / sd
    z[m < min_hist] = 0.0
    return z


# ----------------------------------------------------------------- corpus evaluation


def alert_starts(score, cut, cooldown, release=1, release_level=1.0, warmup=0):
    d = Decision(
        trigger=1, release=release, release_level=release_level, cooldown=cooldown, warmup=warmup
    )
    _, starts, _ = d.run(score / cut)
    return starts


def evaluate(files, scores, cuts, cooldown, release=1, release_level=1.0):
    """Best cut per profile, and the three profiles at the cut best for `standard`."""
    table = {}
    for cut in cuts:
        dets = [alert_starts(s, cut, cooldown, release, release_level) for s in scores]
        table[cut] = {
            p: normalized_score([f.score(d, p) for f, d in zip(files, dets, strict=False)])
            for p in PROFILES
        }
    best = {p: max(table.values(), key=lambda r: r[p])[p] for p in PROFILES}
    cstd = max(table, key=lambda c: table[c]["standard"])
    return best, cstd, table[cstd]


def main(argv):
    files = load_nab_corpus(ROOT)
    lines = []

    def report(label, best, cut, at):
        line = (
            f"{label:62s} best/profile std {best['standard']:6.2f} lowFP "
            f"{best['reward_low_FP_rate']:6.2f} lowFN {best['reward_low_FN_rate']:6.2f} | "
            f"one cut {cut:.3g}: {at['standard']:6.2f} {at['reward_low_FP_rate']:6.2f} "
            f"{at['reward_low_FN_rate']:6.2f}"
        )
        lines.append(line)
        print(line, flush=True)

    # N0: reference -- windowed Gaussian, NAB's sweep on per-row scores (every row a detection)
    wg = [windowed_gaussian_scores(f.values, f.probation_rows) for f in files]
    res = {p: sweep_threshold(list(zip(files, wg, strict=False)), p).score for p in PROFILES}
    report("N0 windowed Gaussian, NAB sweep, rows as detections", res, float("nan"), res)

    zcuts = [0.75, 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 5, 6, 8]
    raw_cache = {}

    def raw(name, **kw):
        key = (name, tuple(sorted(kw.items())))
        if key not in raw_cache:
            raw_cache[key] = [RAW[name](f.values, f.probation_rows, **kw) for f in files]
        return raw_cache[key]

    # N1: raw scores thresholded directly (normalised by probation max), alert starts
    for name, kw in [("z", {}), ("lagdist", dict(L=8, k=16)), ("resid", {})]:
        R = raw(name, **kw)
        S = [r / (r[: f.probation_rows].max() + 1e-9) for r, f in zip(R, files, strict=False)]
        report(
            f"N1 {name} / probation max, alert starts, cooldown 0",
            *evaluate(files, S, [0.8, 1.0, 1.2, 1.5, 2, 3, 5, 8], cooldown=0),
        )
    # N2: + likelihood
    for name, kw in [("z", {}), ("lagdist", dict(L=8, k=16)), ("resid", {})]:
        R = raw(name, **kw)
        S = [likelihood_z(r) for r in R]
        report(
            f"N2 {name} + likelihood(short 10, long 8640, log)",
            *evaluate(files, S, zcuts, cooldown=0),
        )
    R = raw("lagdist", L=8, k=16)
    S = [likelihood_z(r) for r in R]
    for cd, rel, lvl in [
        (50, 1, 1.0),
        (200, 1, 1.0),
        (400, 1, 1.0),
        (0, 20, 0.5),
        (100, 20, 0.5),
        (300, 20, 0.5),
    ]:
        report(
            f"N3 lagdist+lik, cooldown {cd}, release {rel} under {lvl}",
            *evaluate(files, S, zcuts, cooldown=cd, release=rel, release_level=lvl),
        )
    R4 = raw("lagdist", L=4, k=16)
    S = [likelihood_z(r, short=20, of_avg=True) for r in R4]
    report(
        "N6 lagdist L4 + lik of moving averages (HTM), short 20, cd 200",
        *evaluate(files, S, [*zcuts, 10, 12, 15], cooldown=200),
    )
    S = [likelihood_z(r, short=20) for r in R4]
    report("N6 lagdist L4 + lik short 20, cd 200", *evaluate(files, S, zcuts, cooldown=200))
    Sz = [likelihood_z(r, short=20) for r in raw("z")]
    S8 = [likelihood_z(r, short=20) for r in raw("lagdist", L=8, k=16)]
    report(
        "N7 ensemble max(lik(lagdist L4), lik(z level))",
        *evaluate(
            files, [np.maximum(a, b) for a, b in zip(S, Sz, strict=False)], zcuts, cooldown=200
        ),
    )
    report(
        "N7 ensemble max(lik(lagdist L4), lik(lagdist L8))",
        *evaluate(
            files, [np.maximum(a, b) for a, b in zip(S, S8, strict=False)], zcuts, cooldown=200
        ),
    )
    report(
        "N7 ensemble mean(lik(lagdist L4), lik(lagdist L8))",
        *evaluate(files, [(a + b) / 2 for a, b in zip(S, S8, strict=False)], zcuts, cooldown=200),
    )
    S16 = [likelihood_z(r, short=20) for r in raw("lagdist", L=16, k=16)]
    S2 = [likelihood_z(r, short=20) for r in raw("lagdist", L=2, k=16)]
    report(
        "N8 ensemble max(lik(lagdist L4, L8, L16))",
        *evaluate(
            files,
            [np.maximum(np.maximum(a, b), c) for a, b, c in zip(S, S8, S16, strict=False)],
            zcuts,
            cooldown=200,
        ),
    )
    report(
        "N8 ensemble max(lik(lagdist L2, L4, L8))",
        *evaluate(
            files,
            [np.maximum(np.maximum(a, b), c) for a, b, c in zip(S2, S, S8, strict=False)],
            zcuts,
            cooldown=200,
        ),
    )
    for cd in [100, 300]:
        report(
            f"N8 ensemble max(lik(lagdist L4, L8)), cooldown {cd}",
            *evaluate(
                files, [np.maximum(a, b) for a, b in zip(S, S8, strict=False)], zcuts, cooldown=cd
            ),
        )
    if "--more" not in argv:
        return lines
    for short, long, lg in [(5, 8640, True), (20, 8640, True), (10, 2000, True), (10, 8640, False)]:
        S = [likelihood_z(r, short=short, long=long, log=lg) for r in R]
        report(
            f"N4 lagdist+lik short {short} long {long} log {lg}, cd 200",
            *evaluate(files, S, zcuts, cooldown=200),
        )
    for kw in [
        dict(L=4, k=16),
        dict(L=16, k=16),
        dict(L=8, k=4),
        dict(L=8, k=32),
        dict(L=8, k=16, detrend=True),
    ]:
        S = [likelihood_z(r) for r in raw("lagdist", **kw)]
        report(f"N5 lagdist {kw} + lik, cd 200", *evaluate(files, S, zcuts, cooldown=200))
    return lines


if __name__ == "__main__":
    main(sys.argv[1:])
