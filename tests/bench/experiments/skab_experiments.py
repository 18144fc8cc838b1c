"""SKAB valve1 experiments: features x scorer x calibration x decision -> pooled F1/FAR/MAR.

Protocol (leaderboard): per file, fit on the first 400 rows (scorers on rows [w, 300),
thresholds on the held-out rows [300, 400)), score the rest, pool TP/FP/FN/TN over files.
No test labels are used for fitting or thresholds; one configuration for all 16 files.

Run: .venv/bin/python -m tests.bench.experiments.skab_experiments [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from export.metrics import point_metrics, pool
from tests.bench.baselines import load_skab_csv
from tests.bench.experiments.common import Decision, roll_mean, roll_std

ROOT = Path("/work/shared/data/skab/valve1")
TRAIN, FIT_END = 400, 300
CH = ["Acc1", "Acc2", "Current", "Pressure", "Temp", "Thermo", "Voltage", "Flow"]


def load_all():
    out = []
    for p in sorted(ROOT.glob("*.csv"), key=lambda p: int(p.stem)):
        X, y = load_skab_csv(p)
        out.append((p.stem, X, y))
    return out


SCALE = {"mode": "robust", "clip": None}


def robust_scale(X, mode=None):
    """robust: (x - median) / (IQR/1.349) [the manifest's scaling]; std: / sd;
    floor: / max(IQR/1.349, sd/2) -- a floor for quantised channels whose IQR collapses."""
    mode = mode or SCALE["mode"]
    tr = X[:TRAIN]
    med = np.median(tr, 0)
    iqr = np.subtract(*np.percentile(tr, [75, 25], 0)) / 1.349
    sd = tr.std(0) + 1e-6
    if mode == "robust":
        sc = np.where(iqr > 0, iqr, sd)
    elif mode == "std":
        sc = sd
    else:
        sc = np.maximum(iqr, 0.5 * sd)
    Z = (X - med) / sc
    if SCALE["clip"] is not None:  # the device clips model inputs to +/- preprocess.clip
        Z = np.clip(Z, -SCALE["clip"], SCALE["clip"])
    return Z


def drift_mask(Z, thr=1.0):
    """Channels treated by their changes instead of their level.

    thr > 0: training mean moves by more than thr sd between the two halves;
    thr = 'slow<r>': smooth channels, sd(lag-1 differences) < r * sd(levels) on training rows
    (thermal-like channels whose level wanders); 'all': every channel."""
    tr = Z[:TRAIN]
    if thr == "all":
        return np.ones(Z.shape[1], bool)
    if isinstance(thr, str) and thr.startswith("smooth"):
        # share of the level's spread that survives a 32-row moving average: > r = slow channel
        r = float(thr[6:])
        return roll_mean(tr, 32)[32:].std(0) > r * (tr.std(0) + 1e-9)
    if isinstance(thr, str) and thr.startswith("slow"):
        r = float(thr[4:])
        return np.diff(tr, axis=0).std(0) < r * (tr.std(0) + 1e-9)
    h = TRAIN // 2
    return np.abs(tr[:h].mean(0) - tr[h:].mean(0)) > thr * (tr.std(0) + 1e-9)


# ----------------------------------------------------------------- features (causal)


def features(
    Z, w=8, lag=64, std=True, drift="diff", drift_thr=1.0, channels=None, ema_alpha=None, eps=1e-2
):
    """Rolling means of the stable channels, log rolling std of all, and for drifting channels:
    drift='diff' -> mean(t) - mean(t-lag); 'drop' -> nothing; 'level' -> plain rolling mean;
    'ema' -> mean(t) - slow EMA baseline (frozen handled in score loop; here unfrozen)."""
    if channels is not None:
        Z = Z[:, channels]
    m = drift_mask(Z, drift_thr) if drift != "level" else np.zeros(Z.shape[1], bool)
    mean = roll_mean(Z, w)
    parts = [mean[:, ~m]]
    if std:
        parts.append(np.log(roll_std(Z, w) + eps))
    if m.any():
        if drift == "diff":
            D = np.zeros_like(mean)
            D[lag:] = mean[lag:] - mean[:-lag]
            parts.append(D[:, m])
        elif drift == "ema":
            base = np.empty_like(mean)
            b = mean[w - 1].copy()
            for i in range(len(mean)):
                b += ema_alpha * (mean[i] - b)
                base[i] = b
            parts.append((mean - base)[:, m])
    return np.hstack(parts)


# ----------------------------------------------------------------- scorers: fit(F_fit) -> f(F)


def sc_maha(Ff):
    c = LedoitWolf().fit(Ff)
    return lambda F: np.sqrt(c.mahalanobis(F))


def sc_euclid(Ff):
    mu, sd = Ff.mean(0), Ff.std(0) + 1e-6
    return lambda F: np.sqrt((((F - mu) / sd) ** 2).sum(1))


def sc_maxabs(Ff):
    """IQR-fence-like: max over features of |x - median| / (1.5 IQR)."""
    med = np.median(Ff, 0)
    iqr = np.subtract(*np.percentile(Ff, [75, 25], 0)) + 1e-6
    return lambda F: (np.abs(F - med) / iqr).max(1)


def sc_spe(Ff, var=0.9):
    mu, sd = Ff.mean(0), Ff.std(0) + 1e-6
    p = PCA(n_components=var).fit((Ff - mu) / sd)

    def f(F):
        G = (F - mu) / sd
        return np.sqrt(((G - p.inverse_transform(p.transform(G))) ** 2).sum(1))

    return f


def sc_t2q(Ff, var=0.9):
    mu, sd = Ff.mean(0), Ff.std(0) + 1e-6
    p = PCA(n_components=var).fit((Ff - mu) / sd)
    G0 = (Ff - mu) / sd
    t0 = (p.transform(G0) ** 2 / p.explained_variance_).sum(1)
    q0 = ((G0 - p.inverse_transform(p.transform(G0))) ** 2).sum(1)

    def f(F):
        G = (F - mu) / sd
        T = p.transform(G)
        t2 = (T**2 / p.explained_variance_).sum(1)
        q = ((G - p.inverse_transform(T)) ** 2).sum(1)
        return t2 / np.quantile(t0, 0.99) + q / np.quantile(q0, 0.99)

    return f


def sc_kmeans(Ff, k=4, maha=False, var=0.95):
    mu, sd = Ff.mean(0), Ff.std(0) + 1e-6
    p = PCA(n_components=var).fit((Ff - mu) / sd)
    T0 = p.transform((Ff - mu) / sd)
    km = KMeans(k, n_init=4, random_state=0).fit(T0)
    if maha:
        cov = LedoitWolf().fit(T0 - km.cluster_centers_[km.labels_]).precision_

    def f(F):
        T = p.transform((F - mu) / sd)
        d = T[:, None, :] - km.cluster_centers_[None]
        dist = np.einsum("bki,ij,bkj->bk", d, cov, d) if maha else (d**2).sum(-1)
        return np.sqrt(dist.min(1))

    return f


SCORERS = {
    "maha": sc_maha,
    "euclid": sc_euclid,
    "maxabs": sc_maxabs,
    "spe": sc_spe,
    "t2q": sc_t2q,
    "km_e": sc_kmeans,
    "km_m": lambda F: sc_kmeans(F, maha=True),
}


# ----------------------------------------------------------------- calibration


def calibrate(cal, method="max", margin=1.2, q=0.99):
    if method == "max":
        return cal.max() * margin
    if method == "quantile":
        return np.quantile(cal, q) * margin
    if method == "mad":  # median + k * MAD-sigma  (k = margin)
        med = np.median(cal)
        return med + margin * 1.4826 * np.median(np.abs(cal - med))
    raise ValueError(method)


# ----------------------------------------------------------------- one run


def evaluate(
    data,
    feat_kw,
    scorer="maha",
    cal=("max", 1.2),
    dec=None,
    ensemble=None,
    adaptive=None,
    per_file=False,
):
    """ensemble: list of (scorer, weight) combined by rule ensemble[0]; adaptive: dict for the
    frozen-EMA baseline (alpha, over) applied to the normalised score loop."""
    dec = dec or Decision()
    ms = []
    rows = []
    for name, X, y in data:
        Z = robust_scale(X)
        w = feat_kw.get("w", 8)
        warm = max(w, feat_kw.get("lag", 0) if feat_kw.get("drift", "diff") == "diff" else w)
        F = features(Z, **feat_kw)
        Ff, _Fc = F[warm:FIT_END], F[FIT_END:TRAIN]
        if ensemble is None:
            members = [(scorer, 1.0)]
            rule = "max"
        else:
            rule, members = ensemble
        norm = []
        for sname, wt in members:
            f = SCORERS[sname](Ff)
            s = f(F)
            thr = calibrate(s[FIT_END:TRAIN], *cal)
            norm.append((s / thr, wt))
        S = np.vstack([n for n, _ in norm])
        W = np.array([wt for _, wt in norm])[:, None]
        if rule == "max":
            s = S.max(0)
        elif rule == "mean":
            s = (S * W).sum(0) / W.sum()
        else:  # vote-k
            s = np.sort(S, 0)[-int(rule[4:])]
        active, _, _ = dec.run(s)
        m = point_metrics(y[TRAIN:], active[TRAIN:])
        ms.append(m)
        rows.append((name, m))
    p = pool(ms)
    if per_file:
        for name, m in rows:
            print(f"   {name:>3} F1 {m.f1:.3f} FAR {m.far_pct:5.1f} MAR {m.mar_pct:5.1f}")
    return p


def fmt(p):
    return f"F1 {p.f1:.3f}  FAR {p.far_pct:5.1f}  MAR {p.mar_pct:5.1f}"


def main(argv):
    data = load_all()
    results = []

    def run(label, **kw):
        p = evaluate(data, **kw)
        results.append((label, p))
        print(f"{label:70s} {fmt(p)}", flush=True)

    base = dict(w=8, lag=64, std=True, drift="diff")
    run("E0 user best: w8 lag64 std diff, maha, max*1.2", feat_kw=base)
    for sc in ["euclid", "maxabs", "spe", "t2q", "km_e", "km_m"]:
        run(f"E1 scorer={sc}", feat_kw=base, scorer=sc)
    for mode in ["std", "floor"]:
        SCALE["mode"] = mode
        for eps in [1e-2, 0.1, 0.3]:
            for sc in ["maha", "spe", "km_m"]:
                run(
                    f"E2 scale={mode} eps={eps} scorer={sc}", feat_kw=dict(base, eps=eps), scorer=sc
                )
    SCALE["mode"] = "robust"
    for mode in ["robust", "std"]:
        SCALE["mode"] = mode
        for dt in [0.5, 0.25, "slow0.3", "slow0.5", "all"]:
            for sc in ["maha", "spe"]:
                run(
                    f"E3 scale={mode} drift_thr={dt} eps=0.3 {sc}",
                    feat_kw=dict(base, eps=0.3, drift_thr=dt),
                    scorer=sc,
                )
    SCALE["mode"] = "robust"
    for dt in ["smooth0.6", "smooth0.65", "smooth0.7"]:
        for drift in ["diff", "drop"]:
            for sc in ["maha", "spe", "km_m"]:
                run(
                    f"E4 drift_thr={dt} drift={drift} eps=0.3 {sc}",
                    feat_kw=dict(base, eps=0.3, drift_thr=dt, drift=drift),
                    scorer=sc,
                )
    best = dict(w=8, std=True, drift="drop", drift_thr="smooth0.65", eps=0.3)
    for w in [4, 16, 32]:
        run(f"E5 best w={w}", feat_kw=dict(best, w=w))
    for eps in [0.1, 1.0]:
        run(f"E5 best eps={eps}", feat_kw=dict(best, eps=eps))
    run("E5 best no std features", feat_kw=dict(best, std=False))
    for cal in [
        ("max", 1.0),
        ("max", 1.1),
        ("max", 1.5),
        ("quantile", 1.2, 0.99),
        ("quantile", 1.5, 0.95),
        ("mad", 6.0),
        ("mad", 10.0),
    ]:
        run(f"E6 best calibration={cal}", feat_kw=best, cal=cal)
    for d in [
        dict(smoothing=4),
        dict(trigger=3, release=5, release_level=0.9),
        dict(smoothing=4, trigger=3, release=8, release_level=0.8),
    ]:
        run(f"E7 best decision={d}", feat_kw=best, dec=Decision(**d))
    for ens in [
        ("max", [("maha", 1), ("spe", 1)]),
        ("mean", [("maha", 1), ("spe", 1)]),
        ("mean", [("maha", 1), ("km_m", 1)]),
        ("vote2", [("maha", 1), ("spe", 1), ("km_m", 1)]),
        ("mean", [("maha", 2), ("spe", 1), ("km_m", 1)]),
    ]:
        run(
            f"E8 ensemble {ens[0]} {[m for m, _ in ens[1]]} w={[w for _, w in ens[1]]}",
            feat_kw=best,
            ensemble=ens,
        )
    final_dec = Decision(smoothing=4)
    for clip in [8.0, 20.0]:
        for mode in ["robust", "floor"]:
            SCALE.update(mode=mode, clip=clip)
            run(
                f"E9 best + smoothing 4, scale={mode}, inputs clipped to +/-{clip}",
                feat_kw=best,
                dec=final_dec,
            )
    SCALE.update(mode="robust", clip=None)
    if "--quick" in argv:
        return results
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
