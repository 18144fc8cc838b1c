"""Decision and member experiments replayed in numpy on the device's own member scores.

Step 1 records, for every bundle of a `tests.bench.quality` run, what the device computes
(`edge.replay.replay_table`): each scorer's normalised score and its raw score before any
likelihood step, the ensemble score, the open alert and the alert starts. Step 2 re-runs the
decision (or adds a candidate member) in numpy and scores the same protocol per part of the
fixed split (NAB: `tests.bench.nab_corpus`; SKAB: even / odd files). Each experiment first
re-runs today's decision and prints it beside the device's figures, so a numpy figure is read
against its own baseline.

    PYTHONPATH=. .venv/bin/python -m tests.bench.quality nab --configs after --epochs 1 \\
        --variants "as fitted" --out /tmp/q/nab
    PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.member_replays dump-nab \\
        /tmp/q/nab/nab/after /tmp/q/nab-members
    PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.member_replays nab /tmp/q/nab-members

    (the same with `quality skab`, `dump-skab` and `skab`; `pump WORK` takes the work folder of
    `python -m tests.bench.pods --device pump --configs recipe --work WORK`)

Experiments (2026-12-07, none kept; `export/recipes.py` has the figures):
- nab: a lag member counts only where its raw distance also exceeds the q-quantile of its own
  raw distances over the probation rows (x 1 or 1.5); a new start inside the cooldown when the
  ensemble exceeds k x the peak of the alert that set it.
- skab: a relation member (each kept channel's 8-row mean against a ridge regression on the
  others', MSET-like: the plant's relations rather than its operating point), a per-channel
  8-row-mean member (the largest robust z over the kept channels), and a log-sd floor of each
  channel raised to its resolution (quantised pressure and flow).
- pump: the per-channel 8-row-mean member on `edge-sim`'s pump.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.experiments.common import Decision, roll_mean

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
SKAB_TRAIN, SKAB_FIT = 400, 300  # the leaderboard protocol; the trainer's held-out rows
UNIVARIATE = ("lag_distance_8", "lag_distance_4", "range", "long_shape_64", "long_shape_128",
              "long_shape_256", "stuck", "seasonal", "flat")
MULTIVARIATE = ("window_mahalanobis", "channel_kmeans", "stuck")
MULTIVARIATE_DECISION = Decision(smoothing=8, trigger=1, release=10, release_level=0.8)
INPUT_FAULTS = {"dropout", "ts_gap", "ts_duplicate", "ts_out_of_order"}


# ----------------------------------------------------------------------------- step 1


def _replay_members(bundle: Path, csv: Path) -> dict[str, np.ndarray]:
    """The device's replay of `csv`: scores (m_*), raw scores (r_*), alerts, labels."""
    from edge import engine as engine_module
    from edge.bundle import load_bundle
    from edge.replay import replay_table
    from edge.table import read_table
    from export.evaluate import alert_starts

    manifest = load_bundle(bundle).manifest
    table = read_table(csv, channels=list(manifest.channels))
    raws: list[dict[str, np.ndarray]] = []
    score_windows = engine_module.ScoringEngine.score_windows

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        scores = score_windows(self, *args, **kwargs)
        raws.append(scores.raw)
        return scores

    engine_module.ScoringEngine.score_windows = recording  # type: ignore[method-assign]
    try:
        result = replay_table(bundle, table)
    finally:
        engine_module.ScoringEngine.score_windows = score_windows  # type: ignore[method-assign]
    out = {"score": result.score, "anomaly": result.is_anomaly, "starts": alert_starts(result)}
    for name, values in result.scorers.items():
        out[f"m_{name}"] = values
        scored = np.isfinite(values)
        raw = np.concatenate([r[name] for r in raws])
        if raw.size == scored.sum():  # windows in row order: the scored rows
            out[f"r_{name}"] = np.full(values.size, np.nan)
            out[f"r_{name}"][scored] = raw
    if table.labels is not None:
        out["labels"] = np.asarray(table.labels)
    return out


def _dump_one(args: tuple[Path, Path, Path]) -> str:
    bundle, csv, out = args
    np.savez_compressed(out / f"{bundle.name}.npz", **_replay_members(bundle, csv))
    return bundle.name


def dump(bundles: Path, out: Path, csv_of: Callable[[str], Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(b, csv_of(b.name), out) for b in sorted(bundles.iterdir())
             if (b / "manifest.json").exists()]
    with ProcessPoolExecutor(2) as pool:
        for name in pool.map(_dump_one, tasks):
            print("recorded", name, flush=True)


# ----------------------------------------------------------------------------- NAB


def _univariate_starts(top: np.ndarray, trouble: np.ndarray, first: int, cooldown: int = 150,
                       restart_over_peak: float | None = None) -> np.ndarray:
    """`edge.decide` for the univariate recipe (trigger 1, release 1 at 1.0, a cooldown of
    `cooldown` windows for an alert of the same trouble); optionally a new start inside the
    cooldown when the score exceeds `restart_over_peak` x the peak of the alert that set it."""
    starts = np.zeros(top.size, dtype=bool)
    is_open, cool_until, cooled, current = False, 0, "", ""
    peak, last_peak = 0.0, np.inf
    for windows, i in enumerate(range(first, top.size), 1):
        over = top[i] >= 1.0
        if is_open:
            peak = max(peak, top[i])
            if not over:
                is_open, cool_until, cooled, last_peak = False, windows + cooldown, current, peak
        elif over and (windows >= cool_until or trouble[i] != cooled or (
                restart_over_peak is not None and top[i] >= restart_over_peak * last_peak)):
            is_open, current, peak = True, str(trouble[i]), float(top[i])
            starts[i] = True
    return starts


def _nab_members(rec: dict[str, np.ndarray]) -> list[str]:
    return [m for m in UNIVARIATE if f"m_{m}" in rec]


def _nab_decide(rec: dict[str, np.ndarray], probation: int, gate_q: float | None = None,
                gate_factor: float = 1.0, restart_over_peak: float | None = None) -> np.ndarray:
    names = _nab_members(rec)
    scores = {m: rec[f"m_{m}"].copy() for m in names}
    if gate_q is not None:  # the lag members count only beyond their raw probation quantile
        for m in ("lag_distance_8", "lag_distance_4"):
            raw = rec[f"r_{m}"]
            gate = gate_factor * float(np.nanquantile(raw[:probation], gate_q))
            scores[m] = np.where(raw > gate, scores[m], np.minimum(scores[m], 0.999))
    stacked = np.nan_to_num(np.vstack([scores[m] for m in names]), nan=-np.inf)
    top = stacked.max(axis=0)
    trouble = np.array(["sensor" if names[k] == "stuck" else "process"
                        for k in stacked.argmax(axis=0)])
    first = int(np.flatnonzero(np.isfinite(rec["score"]))[0])
    return _univariate_starts(top, trouble, first, restart_over_peak=restart_over_peak)


def nab(records: Path) -> None:
    from export.nab import load_nab_corpus
    from tests.bench.nab_corpus import split_scores

    files = load_nab_corpus(DATA / "nab")
    recs = {f.name: dict(np.load(records / (f.name.replace("/", "__").removesuffix(".csv")
                                            + ".npz"))) for f in files}

    def show(label: str, detections: dict[str, np.ndarray]) -> None:
        split = split_scores(files, [detections[f.name] for f in files])
        cells = []
        for part, v in [*split["parts"].items(), ("realKnownCause",
                                                  split["categories"]["realKnownCause"])]:
            cells.append(f"{part} {v['standard']:.1f}/{v['reward_low_FP_rate']:.1f} "
                         f"(fp {v['fp']}, missed {v['fn']})")
        print(f"{label:34s} " + "; ".join(cells), flush=True)

    show("device", {n: r["starts"] for n, r in recs.items()})
    show("numpy, today's decision", {f.name: _nab_decide(recs[f.name], f.probation_rows)
                                     for f in files})
    for q in (0.5, 0.9, 0.99, 1.0):
        for factor in (1.0, 1.5):
            show(f"raw gate q {q} x {factor}", {f.name: _nab_decide(
                recs[f.name], f.probation_rows, gate_q=q, gate_factor=factor) for f in files})
    for k in (1.0, 1.5, 2.0, 3.0):
        show(f"restart over {k} x peak", {f.name: _nab_decide(
            recs[f.name], f.probation_rows, restart_over_peak=k) for f in files})


# ----------------------------------------------------------------------------- SKAB


def _skab(records: Path, bundles: Path) -> dict[int, dict[str, Any]]:
    from tests.bench.baselines import load_skab_csv

    out = {}
    for i in range(16):
        x, y = load_skab_csv(DATA / "skab" / "valve1" / f"{i}.csv")
        manifest = json.loads((bundles / str(i) / "manifest.json").read_text())
        wm = next(s for s in manifest["scorers"] if s["name"] == "window_mahalanobis")
        pre = manifest["preprocess"]["channels"]
        out[i] = {"x": x, "y": y.astype(bool), "keep": list(wm["taught"]["keep"]),
                  "center": np.array([p["center"] for p in pre]),
                  "scale": np.array([p["scale"] for p in pre]),
                  "rec": dict(np.load(records / f"{i}.npz"))}
    return out


def _skab_line(label: str, files: dict[int, dict[str, Any]],
               active: dict[int, np.ndarray]) -> None:
    from export.metrics import point_metrics, pool

    parts: dict[str, list[Any]] = {"even (chosen)": [], "odd (confirmed)": [], "all": []}
    for i, f in files.items():
        m = point_metrics(f["y"][SKAB_TRAIN:], active[i][SKAB_TRAIN:])
        parts["even (chosen)" if i % 2 == 0 else "odd (confirmed)"].append(m)
        parts["all"].append(m)
    cells = [f"{k} {p.f1:.3f}/{p.far_pct:.1f}/{p.mar_pct:.1f}"
             for k, p in ((k, pool(v)) for k, v in parts.items())]
    print(f"{label:34s} " + "  ".join(cells), flush=True)


def _with_member(f: dict[str, Any], extra: np.ndarray | None,
                 replace_wm: np.ndarray | None = None) -> np.ndarray:
    rec = f["rec"]
    members = [np.nan_to_num(rec[f"m_{m}"], nan=0.0) for m in MULTIVARIATE]
    if replace_wm is not None:
        members[0] = replace_wm
    if extra is not None:
        members.append(extra)
    return MULTIVARIATE_DECISION.run(np.vstack(members).max(axis=0))[0]


def relation_score(x: np.ndarray, keep: list[int], alpha: float = 10.0, lags: int = 8
                   ) -> np.ndarray:
    """Each kept channel's 8-row mean against a ridge regression on the other kept channels'
    (fitted on the trainer's fit rows), in its fit-row residual spread; the RMS over channels,
    threshold 1.2 x its held-out maximum."""
    z = (x - x[:SKAB_FIT].mean(0)) / (x[:SKAB_FIT].std(0) + 1e-9)
    means = roll_mean(z, lags)[:, keep]
    ones = np.ones((len(means), 1))
    residuals = []
    for c in range(len(keep)):
        others = np.hstack([np.delete(means, c, axis=1), ones])
        a, b = others[lags:SKAB_FIT], means[lags:SKAB_FIT, c]
        w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ b)
        r = means[:, c] - others @ w
        residuals.append(r / (r[lags:SKAB_FIT].std() + 1e-9))
    score = np.sqrt(np.mean(np.square(np.array(residuals)), axis=0))
    return score / (1.2 * score[SKAB_FIT:SKAB_TRAIN].max())


def channel_mean_score(train: np.ndarray, rows: np.ndarray, keep: list[int], fit_rows: int,
                       margin: float, lags: int = 8) -> np.ndarray:
    """The largest robust z of a kept channel's 8-row mean (median and IQR/1.349 over the fit
    rows), threshold `margin` x its maximum over the held-out rows after them."""
    fit_means = roll_mean(train, lags)[:, keep]
    centre = np.median(fit_means[lags:fit_rows], axis=0)
    q75, q25 = np.percentile(fit_means[lags:fit_rows], [75, 25], axis=0)
    spread = (q75 - q25) / 1.349 + 1e-12
    held_out = (np.abs(fit_means[fit_rows:] - centre) / spread).max(axis=1).max()
    score = (np.abs(roll_mean(rows, lags)[:, keep] - centre) / spread).max(axis=1)
    return np.asarray(score / (margin * held_out))


def window_mahalanobis(z: np.ndarray, keep: list[int], eps: np.ndarray, lags: int = 8
                       ) -> np.ndarray:
    """`export.window_features` in numpy (per-channel log-sd floors `eps`): Ledoit-Wolf on the
    standardised features of the fit rows, threshold 1.2 x the held-out maximum."""
    from numpy.lib.stride_tricks import sliding_window_view
    from sklearn.covariance import LedoitWolf

    windows = sliding_window_view(z, lags, axis=0)
    features = np.hstack([windows.mean(-1)[:, keep], np.log(windows.std(-1) + eps)])
    features = np.vstack([np.repeat(features[:1], lags - 1, axis=0), features])
    fit = features[15:SKAB_FIT]
    mean, sd = fit.mean(0), fit.std(0) + 1e-12
    g = (features - mean) / sd
    precision = LedoitWolf().fit((fit - mean) / sd).precision_
    d = np.sqrt(np.einsum("ij,jk,ik->i", g, precision, g))
    return np.asarray(d / (1.2 * d[SKAB_FIT:SKAB_TRAIN].max()))


def resolution(values: np.ndarray) -> float:
    """The median gap between a channel's distinct values (its quantisation step)."""
    distinct = np.unique(values)
    return float(np.median(np.diff(distinct))) if distinct.size > 1 else 0.0


def skab(records: Path, bundles: Path) -> None:
    files = _skab(records, bundles)
    _skab_line("device", files, {i: f["rec"]["anomaly"] for i, f in files.items()})
    _skab_line("numpy, today's members", files, {i: _with_member(f, None)
                                                 for i, f in files.items()})
    for alpha in (0.1, 10.0):
        _skab_line(f"+ relation member (ridge {alpha})", files, {
            i: _with_member(f, relation_score(f["x"], f["keep"], alpha))
            for i, f in files.items()})
    for margin in (1.2, 1.5, 2.0):
        _skab_line(f"+ channel mean member x{margin}", files, {
            i: _with_member(f, channel_mean_score(f["x"][:SKAB_TRAIN], f["x"], f["keep"],
                                                  SKAB_FIT, margin))
            for i, f in files.items()})
    for factor in (0.0, 0.5, 1.0, 2.0):
        active = {}
        for i, f in files.items():
            z = (f["x"] - f["center"]) / f["scale"]
            steps = np.array([resolution(f["x"][:SKAB_FIT, c]) for c in range(z.shape[1])])
            eps = np.maximum(0.3, factor * steps / f["scale"])
            active[i] = _with_member(f, None, window_mahalanobis(z, f["keep"], eps))
        _skab_line(f"log-sd floor max(0.3, {factor} x step)", files, active)


# ----------------------------------------------------------------------------- pump


def pump(work: Path, seeds: list[int]) -> None:
    from edge.preprocess import forward_fill
    from edge.replay import replay_table
    from edge.table import read_table
    from tests.bench.pods import alert_runs

    def filled(rows: np.ndarray) -> np.ndarray:  # the device's fill, the first row before
        return forward_fill(rows, rows[0])

    devices = []
    for seed in seeds:
        folder = work / f"pump{seed}"
        manifest = json.loads((folder / "recipe" / "manifest.json").read_text())
        channels = list(manifest["channels"])
        train = filled(np.asarray(read_table(folder / "train.csv", channels=channels).values))
        table = read_table(folder / "stream.csv", channels=channels)
        result = replay_table(folder / "recipe", table)
        faults = [f for f in json.loads((folder / "stream.faults.json").read_text())
                  if f["type"] not in INPUT_FAULTS]
        wm = next(s for s in manifest["scorers"] if s["name"] == "window_mahalanobis")
        devices.append({"train": train, "rows": filled(np.asarray(table.values)),
                        "keep": list(wm["taught"]["keep"]), "faults": faults,
                        "window": manifest["window"]["length"],
                        "members": [np.nan_to_num(result.scorers[m], nan=0.0)
                                    for m in manifest["ensemble"]["members"]]})
    for margin in (None, 1.2, 1.5, 2.0):
        caught, false, total = 0, 0, 0
        for d in devices:
            members = list(d["members"])
            if margin is not None:
                fit_rows = int(0.75 * len(d["train"]))
                members.append(channel_mean_score(d["train"], d["rows"], d["keep"], fit_rows,
                                                  margin))
            runs = alert_runs(MULTIVARIATE_DECISION.run(np.vstack(members).max(axis=0))[0])
            spans = [(f["start_row"], f["end_row"] + d["window"] - 1) for f in d["faults"]]
            caught += sum(any(a <= e and b >= s for a, b in runs) for s, e in spans)
            false += sum(not any(a <= e and b >= s for s, e in spans) for a, b in runs)
            total += len(spans)
        label = "today's members" if margin is None else f"+ channel mean member x{margin}"
        print(f"{label:34s} {caught}/{total} caught, {false} false alarms", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__)
        return 2
    command, where = args[0], Path(args[1])
    if command == "dump-nab":
        dump(where, Path(args[2]), lambda name: DATA / "nab" / "data" / (
            name.replace("__", "/") + ".csv"))
    elif command == "dump-skab":
        dump(where, Path(args[2]), lambda name: DATA / "skab" / "valve1" / f"{name}.csv")
    elif command == "nab":
        nab(where)
    elif command == "skab":  # records, then the bundles they came from
        skab(where, Path(args[2]))
    elif command == "pump":
        pump(where, [int(s) for s in (args[2] if len(args) > 2 else "1,2,3,4,5,6,7,8")
                     .split(",")])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
