"""TSB-AD's MSL telemetry files: how well the trainer's default continuous score ranks,
measured with TSB-AD's own VUS-PR (and AUC-PR) against its published per-file figures.

    PYTHONPATH=. .venv/bin/python -m tests.bench.tsbad                 # the 14 M files
    PYTHONPATH=. .venv/bin/python -m tests.bench.tsbad --kind M,U      # and the 5 U files
    PYTHONPATH=. .venv/bin/python -m tests.bench.tsbad --set key=value # a FitConfig change
    PYTHONPATH=. .venv/bin/python -m tests.bench.tsbad --check-package # TSB-AD's KMeansAD/PCA

Per file (`../shared/data/tsbad/{M,U}/<idx>_MSL_id_<k>_Sensor_tr_<T>_1st_<F>.csv`): the rows
[0, T) are written, without the label column and with a time column (one row a minute), to a
training CSV; `fit_bundle` fits it with the trainer's defaults (`FitConfig()`); `replay_table`
(the agent's window -> score code) replays every row of the file, training rows included, as
TSB-AD scores them. The score judged is the ensemble's continuous score, the manifest's
ensemble rule over the normalised member scores (`edge.engine.combine`; 1.0 is the threshold),
before the alert policy (smoothing, trigger, hysteresis); the smoothed score the policy sees is
reported next to it. Rows before the first full window get the first score. Then TSB-AD's
evaluation code (the `tsb-ad` package, installed without its dependencies by `make bench`;
see the Makefile): the score min-max scaled to [0, 1] as TSB-AD's runner does,
`slidingWindow = find_length_rank(first data column, rank=1)`, VUS-PR from
`generate_curve(labels, score, slidingWindow, 'opt', 250)` and AUC-PR from
`basic_metricor().metric_PR`: the two figures `get_metrics(..., version='opt', thre=250)`
returns, without its threshold-dependent ones (affiliation, event F1), which cost minutes.

A fit that is refused is reported with its reason and counts as a constant score (what a user
would get: nothing ranked). The split for choosing defaults is fixed by file index: files with
an even index are the *choose* half, odd ones the *confirm* half. No label reaches a fit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
NAME = re.compile(r"^(?P<idx>\d+)_(?P<dataset>[A-Za-z]+)_.*_tr_(?P<train>\d+)_1st_(?P<first>\d+)"
                  r"\.csv$")
PERIOD_S = 60.0  # the files carry no time: one row a minute
EPOCH0 = 1_700_000_000.0
KINDS = ("M", "U")
SCORES = ("ensemble", "smoothed")  # the judged score first


@dataclass(frozen=True)
class TsbFile:
    path: Path
    kind: str  # "M" or "U"
    idx: int
    train_rows: int
    first_anomaly: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def half(self) -> str:
        """The fixed split for choosing defaults: even index -> choose, odd -> confirm."""
        return "choose" if self.idx % 2 == 0 else "confirm"


def parse_name(path: Path, kind: str) -> TsbFile:
    m = NAME.match(path.name)
    if m is None:
        raise ValueError(f"{path.name}: not a TSB-AD file name (<idx>_..._tr_<T>_1st_<F>.csv)")
    return TsbFile(path, kind, int(m["idx"]), int(m["train"]), int(m["first"]))


def tsbad_files(root: Path, kinds: Sequence[str] = ("M",)) -> list[TsbFile]:
    """The TSB-AD files under `root/tsbad/<kind>/`, by index."""
    files = [parse_name(p, k) for k in kinds for p in (root / "tsbad" / k).glob("*.csv")]
    return sorted(files, key=lambda f: (f.kind, f.idx))


def load(path: Path) -> tuple[list[str], FloatArray, npt.NDArray[np.int64]]:
    """(data column names, data (rows x columns), labels) of a TSB-AD CSV (last column
    `Label`). TSB-AD drops rows with a NaN; these files have none, which is checked."""
    header = path.open().readline().strip().split(",")
    if header[-1] != "Label":
        raise ValueError(f"{path.name}: the last column is {header[-1]!r}, not 'Label'")
    raw = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if not np.isfinite(raw).all():
        raise ValueError(f"{path.name}: NaN cells (TSB-AD would drop those rows)")
    return header[:-1], raw[:, :-1], raw[:, -1].astype(np.int64)


def write_sensor_csv(path: Path, columns: Sequence[str], data: FloatArray) -> None:
    """The data as a sensor CSV: a `timestamp` column (epoch seconds, one row a minute), the
    data columns under their own names, no label column."""
    ts = EPOCH0 + PERIOD_S * np.arange(len(data))
    with path.open("w") as fh:
        fh.write(",".join(["timestamp", *columns]) + "\n")
        np.savetxt(fh, np.column_stack([ts, data]), delimiter=",", fmt="%.10g")


def sliding_window(first_column: FloatArray) -> int:
    """TSB-AD's slidingWindow: the ACF period of the first data column (125 when none)."""
    from TSB_AD.utils.slidingWindows import find_length_rank

    return int(find_length_rank(np.asarray(first_column).reshape(-1, 1), rank=1))


def fill_warmup(score: npt.ArrayLike) -> FloatArray:
    """NaN rows (before the first full window, skipped strides) get the score before them,
    and the rows before the first score get the first score."""
    s = np.asarray(score, dtype=np.float64).copy()
    finite = np.flatnonzero(np.isfinite(s))
    if finite.size == 0:
        return np.zeros_like(s)
    idx = np.where(np.isfinite(s), np.arange(s.size), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = finite[0]
    return s[idx]


def tsbad_metrics(score: npt.ArrayLike, labels: npt.ArrayLike, window: int) -> dict[str, float]:
    """VUS-PR and AUC-PR with TSB-AD's code, on the score min-max scaled as its runner does
    (`get_metrics(score, labels, window, version='opt', thre=250)` computes these two so)."""
    from TSB_AD.evaluation.basic_metrics import basic_metricor, generate_curve

    s = np.asarray(score, dtype=np.float64)
    lo, hi = float(s.min()), float(s.max())
    s = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    y = np.asarray(labels).astype(int)
    vus_pr = generate_curve(y, s, window, "opt", 250)[-1]
    return {"vus_pr": float(vus_pr), "auc_pr": float(basic_metricor().metric_PR(y, s))}


def published(root: Path, kind: str) -> dict[str, dict[str, float]]:
    """file -> method -> published VUS-PR."""
    path = root / "tsbad" / f"published_vus_pr_{kind}.csv"
    lines = path.read_text().strip().splitlines()
    methods = lines[0].split(",")[1:]
    out = {}
    for line in lines[1:]:
        cells = line.split(",")
        out[cells[0]] = {m: float(v) for m, v in zip(methods, cells[1:], strict=True) if v}
    return out


def fit_and_score(f: TsbFile, work: Path, overrides: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Worker task for one file: fit on the training rows, replay every row, TSB-AD's
    metrics of the continuous scores. A refused fit is returned with its reason."""
    from edge.engine import combine
    from edge.replay import replay_table
    from edge.table import read_table
    from export.errors import FitError, InputError
    from export.fit import fit_bundle
    from tests.bench.harness import cpu_seconds, fit_config

    columns, data, labels = load(f.path)
    window = sliding_window(data[:, 0])
    out: dict[str, Any] = {"file": f.name, "kind": f.kind, "idx": f.idx, "half": f.half,
                           "rows": len(data), "train_rows": f.train_rows,
                           "sliding_window": window,
                           "anomaly_rows": int(labels.sum())}
    const = {k: tsbad_metrics(np.zeros(len(data)), labels, window)[k]
             for k in ("vus_pr", "auc_pr")}
    out["constant"] = const
    folder = work / f"{f.kind}_{f.path.stem}"
    folder.mkdir(parents=True, exist_ok=True)
    train_csv, full_csv = folder / "train.csv", folder / "all.csv"
    write_sensor_csv(train_csv, columns, data[: f.train_rows])
    write_sensor_csv(full_csv, columns, data)
    started, cpu0 = time.perf_counter(), cpu_seconds()
    try:
        fit = fit_bundle(train_csv, folder / "bundle", fit_config(**(overrides or {})))
    except (FitError, InputError) as exc:
        out.update({"error": f"{type(exc).__name__}: {exc}",
                    "fit_s": time.perf_counter() - started,
                    "metrics": {s: dict(const) for s in SCORES}})
        return out
    out["fit_s"], out["fit_cpu_s"] = time.perf_counter() - started, cpu_seconds() - cpu0
    manifest = fit.manifest
    table = read_table(full_csv, channels=manifest.channels)
    result = replay_table(fit.out_dir, table)
    members = {m: result.scorers[m] for m in manifest.ensemble.members}
    scores = {"ensemble": fill_warmup(combine(manifest.ensemble, members)),
              "smoothed": fill_warmup(result.score)}
    out["metrics"] = {k: tsbad_metrics(v, labels, window) for k, v in scores.items()}
    np.savez_compressed(folder / "scores.npz", labels=labels, window=window,
                        **{f"scorer_{k}": v for k, v in result.scorers.items()})
    out["members"] = {m: tsbad_metrics(fill_warmup(v), labels, window)["vus_pr"]
                      for m, v in members.items()}
    out.update({"replay_s": result.elapsed_s, "warnings": list(fit.warnings),
                "ensemble": f"{manifest.ensemble.rule} of "
                            f"{'+'.join(manifest.ensemble.members)}",
                "window": manifest.window, "channels": len(manifest.channels)})
    return out


def submit(pool: ProcessPoolExecutor, files: Sequence[TsbFile], work: Path,
           overrides: dict[str, Any] | None = None) -> list[Future[dict[str, Any]]]:
    return [pool.submit(fit_and_score, f, work / "tsbad", overrides) for f in files]


def progress_line(done: int, total: int, r: dict[str, Any]) -> str:
    head = f"tsbad {done:>2}/{total} {r['kind']}/{r['file']}"
    if "error" in r:
        return f"{head}: FIT REFUSED: {r['error'][:200]}"
    m = r["metrics"]
    return (f"{head}: fit {r['fit_s']:.0f} s, replay {r['rows']} rows in {r['replay_s']:.1f} s; "
            f"VUS-PR {m['ensemble']['vus_pr']:.3f} (smoothed {m['smoothed']['vus_pr']:.3f}), "
            f"AUC-PR {m['ensemble']['auc_pr']:.3f}; {r['ensemble']}")


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(results: Sequence[dict[str, Any]], pub: dict[str, dict[str, dict[str, float]]]
              ) -> dict[str, Any]:
    """Per kind: a row per file (ours, the published best and mean) and the means over the
    files, the choose half and the confirm half; published method means over the same files."""
    out: dict[str, Any] = {"protocol": (
        "fit on rows [0, T) of each file with the trainer's defaults, replay every row; the "
        "ensemble's continuous score (before the alert policy), rows before the first full "
        "window given the first score; TSB-AD's VUS-PR (version opt, thre 250, slidingWindow "
        "= find_length_rank of the first column) and AUC-PR on the min-max scaled score; "
        "choose half = even file index, confirm half = odd")}
    for kind in sorted({r["kind"] for r in results}):
        rows = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["idx"])
        table = []
        for r in rows:
            p = pub.get(kind, {}).get(r["file"], {})
            best = max(p.items(), key=lambda kv: kv[1]) if p else ("n/a", float("nan"))
            table.append({
                "file": r["file"], "idx": r["idx"], "half": r["half"],
                "vus_pr": r["metrics"]["ensemble"]["vus_pr"],
                "auc_pr": r["metrics"]["ensemble"]["auc_pr"],
                "vus_pr_smoothed": r["metrics"]["smoothed"]["vus_pr"],
                "constant": r["constant"]["vus_pr"],
                "published_best": best[1], "published_best_method": best[0],
                "published_mean": float(np.mean(list(p.values()))) if p else None,
                "error": r.get("error"), "members": r.get("members", {}),
            })
        means: dict[str, dict[str, float | None]] = {}
        for part in ("all", "choose", "confirm"):
            sel = [t for t in table if part == "all" or t["half"] == part]
            means[part] = {k: _mean([t[k] for t in sel if t[k] is not None])
                           for k in ("vus_pr", "auc_pr", "vus_pr_smoothed", "constant",
                                     "published_best", "published_mean")}
        methods: dict[str, float] = {}
        if kind in pub:
            names = {m for r in rows for m in pub[kind].get(r["file"], {})}
            for m in names:
                vals = [pub[kind][r["file"]][m] for r in rows if m in pub[kind].get(r["file"], {})]
                if len(vals) == len(rows):
                    methods[m] = float(np.mean(vals))
        out[kind] = {"files": table, "means": means,
                     "published_methods": dict(sorted(methods.items(), key=lambda kv: -kv[1])),
                     "refused": {r["file"]: r["error"] for r in rows if "error" in r}}
    return out


def render(summary: dict[str, Any]) -> list[str]:
    """Markdown lines of the summary (for results.md and the standalone run)."""
    from tests.bench.harness import fmt, md_table

    lines = ["## TSB-AD MSL (VUS-PR of the continuous score)", "", summary["protocol"] + ".", ""]
    for kind in KINDS:
        if kind not in summary:
            continue
        s = summary[kind]
        rows = [[t["file"].split("_Sensor")[0], t["half"], fmt(t["vus_pr"]), fmt(t["auc_pr"]),
                 fmt(t["vus_pr_smoothed"]), fmt(t["constant"]),
                 f"{fmt(t['published_best'])} ({t['published_best_method']})",
                 fmt(t["published_mean"]), "REFUSED" if t["error"] else ""]
                for t in s["files"]]
        for part in ("choose", "confirm", "all"):
            m = s["means"][part]
            rows.append([f"**mean, {part}**", "", fmt(m["vus_pr"]), fmt(m["auc_pr"]),
                         fmt(m["vus_pr_smoothed"]), fmt(m["constant"]),
                         fmt(m["published_best"]), fmt(m["published_mean"]), ""])
        lines += [f"### {kind}: {len(s['files'])} files", "", md_table(
            ["file", "half", "ours VUS-PR", "ours AUC-PR", "ours smoothed VUS-PR",
             "constant VUS-PR", "published best (method)", "published mean", ""], rows), ""]
        top = list(s["published_methods"].items())[:6]
        if top:
            lines += ["Published methods' means over the same files: " + ", ".join(
                f"{m} {v:.3f}" for m, v in top) + ".", ""]
        for name, why in s["refused"].items():
            lines.append(f"- refused: `{name}`: {why}")
        if s["refused"]:
            lines.append("")
    return lines


# ---- the check of the package against TSB-AD's published figures --------------------------

def _stub_imports() -> None:
    """TSB_AD.utils.utility imports torch.nn and TSB_AD.models.feature imports hurst, for
    helpers that KMeansAD and PCA never call; `make bench` installs tsb-ad without its
    dependencies (torch alone is gigabytes), so stand-in modules take their place here."""
    import types

    torch = types.ModuleType("torch")
    nn = types.ModuleType("torch.nn")
    nn.Module = object  # type: ignore[attr-defined]
    torch.nn = nn  # type: ignore[attr-defined]
    torch.Tensor = type("Tensor", (), {})  # type: ignore[attr-defined]  # scipy looks for it
    hurst = types.ModuleType("hurst")
    hurst.compute_Hc = None  # type: ignore[attr-defined]
    for name, module in (("torch", torch), ("torch.nn", nn), ("hurst", hurst)):
        sys.modules.setdefault(name, module)


def check_package(files: Sequence[TsbFile], pub: dict[str, dict[str, dict[str, float]]],
                  methods: Sequence[str] = ("KMeansAD", "PCA")) -> list[dict[str, Any]]:
    """TSB-AD's own KMeansAD and PCA (its run_* wrappers' code with the multivariate
    optimal hyper-parameters of HP_list: KMeansAD k=10, window 40; PCA n_components 0.25,
    point-wise: its 100-row default window reproduces none of the published figures, one row
    reproduces them), run as its runner does (unsupervised: on the whole file; seed 2024),
    scored with the same metric code: VUS-PR against the published per-file figure."""
    import contextlib
    import io

    from sklearn.preprocessing import MinMaxScaler

    _stub_imports()
    from TSB_AD.HP_list import Optimal_Multi_algo_HP_dict as HP
    from TSB_AD.models.KMeansAD import KMeansAD
    from TSB_AD.models.PCA import PCA

    out = []
    for f in files:
        _, data, labels = load(f.path)
        window = sliding_window(data[:, 0])
        for method in methods:
            np.random.seed(2024)
            with contextlib.redirect_stdout(io.StringIO()):
                if method == "KMeansAD":
                    hp = HP["KMeansAD"]
                    score = KMeansAD(k=hp["n_clusters"], window_size=hp["window_size"],
                                     stride=1).fit_predict(data)
                else:
                    clf = PCA(slidingWindow=1, n_components=HP["PCA"]["n_components"])
                    clf.fit(data)
                    score = clf.decision_scores_
            score = MinMaxScaler().fit_transform(np.asarray(score).reshape(-1, 1)).ravel()
            ours = tsbad_metrics(score, labels, window)["vus_pr"]
            ref = pub.get(f.kind, {}).get(f.name, {}).get(method)
            out.append({"file": f.name, "method": method, "package": ours, "published": ref})
            print(f"check {f.kind}/{f.name} {method}: package {ours:.4f}, published "
                  f"{'n/a' if ref is None else f'{ref:.4f}'}", flush=True)
    return out


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    from tests.bench.harness import Progress, data_root, worker_pool

    p = argparse.ArgumentParser(prog="python -m tests.bench.tsbad", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="benchmark data (default ../shared/data)")
    p.add_argument("--kind", default="M", help="M, U or M,U")
    p.add_argument("--half", choices=("all", "choose", "confirm"), default="all")
    p.add_argument("--files", default="", help="comma-separated file indices (default all)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a FitConfig option for every fit (JSON value), for experiments")
    p.add_argument("--work", type=Path, default=Path("/tmp/tsbad-work"))
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--check-package", action="store_true",
                   help="run TSB-AD's KMeansAD and PCA on the files instead, against the "
                        "published figures")
    args = p.parse_args(argv)
    root = data_root(args.data)
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()]
    files = tsbad_files(root, kinds)
    if args.half != "all":
        files = [f for f in files if f.half == args.half]
    if args.files:
        wanted = {int(i) for i in args.files.split(",")}
        files = [f for f in files if f.idx in wanted]
    pub = {k: published(root, k) for k in kinds}
    if args.check_package:
        checks = check_package(files, pub)
        if args.json:
            args.json.write_text(json.dumps(checks, indent=1) + "\n")
        return 0
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        v = _value(value)
        overrides[key] = tuple(v) if isinstance(v, list) else v
    say = Progress()
    say(f"tsbad: {len(files)} files, {args.workers} worker(s), overrides {overrides or 'none'}")
    results = []
    with worker_pool(args.workers) as pool:
        futures = submit(pool, files, args.work, overrides)
        for i, fut in enumerate(as_completed(futures), 1):
            r = fut.result()
            results.append(r)
            say(progress_line(i, len(files), r))
    summary = summarise(results, pub)
    summary["overrides"] = {k: list(v) if isinstance(v, tuple) else v
                            for k, v in overrides.items()}
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "results": results}, indent=1,
                                        default=str) + "\n")
    print("\n".join(render(summary)))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

