"""SKAB valve1 under the leaderboard protocol: ours (the agent's decision, the ensemble, each
scorer, the float Keras LSTM-AE) against the scikit-learn baselines, pooled over the files.

Per file: `fit_bundle` on rows :400 with the trainer's defaults (`keep_float` to keep the
float autoencoder), the whole file replayed through the agent's pipeline with
`export.evaluate.evaluate`, and the rows after the first 400 scored against the `anomaly`
label. The float LSTM-AE scores the same windows (the replay's scored rows) with its own
threshold, calibrated by the same method on the same held-out windows, so the int8 cost is
the difference between the `lstm_ae` and the float rows. TP/FP/FN/TN are pooled over files.

Split (issue 16, fixed before any figure was looked at by part): a default is *chosen on* the
even-numbered files (0.csv, 2.csv, ..., 14.csv) and *confirmed on* the odd-numbered ones
(1.csv, ..., 15.csv); each part is pooled on its own as well as all 16 together.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from export.metrics import PointMetrics, point_metrics, pool
from tests.bench.harness import Progress, cpu_seconds, fit_config

TRAIN_ROWS = 400
DECISION = "ours: agent decision"
ENSEMBLE = "ours: ensemble >= 1"
FLOAT = "ours: lstm_ae float (Keras)"
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
CHOSEN, CONFIRMED = "chosen-on", "confirmed-on"
PARTS = (CHOSEN, CONFIRMED)
SPLIT_RULE = ("chosen on the even-numbered files (0, 2, ..., 14.csv), confirmed on the "
              "odd-numbered ones (1, 3, ..., 15.csv)")


def part_of(name: str) -> str:
    """The fixed split of valve1: an even file number -> chosen-on, odd -> confirmed-on."""
    return CHOSEN if int(Path(name).stem) % 2 == 0 else CONFIRMED


def skab_files(root: Path) -> list[Path]:
    files = (root / "skab" / "valve1").glob("*.csv")
    return sorted(files, key=lambda p: (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem))


def scorer_label(name: str) -> str:
    return f"ours: {name}" + (" (int8)" if name == "lstm_ae" else "")


def file_metrics(labels: npt.ArrayLike, predictions: Mapping[str, npt.ArrayLike],
                 train_rows: int = TRAIN_ROWS) -> dict[str, PointMetrics]:
    """Each detector's confusion counts on the rows after the first `train_rows`."""
    truth = np.asarray(labels).astype(bool)
    if truth.size <= train_rows:
        raise ValueError(f"a file has {truth.size} rows; the protocol needs more than "
                         f"{train_rows}")
    out = {}
    for name, pred in predictions.items():
        flags = np.asarray(pred).astype(bool)
        if flags.shape != truth.shape:
            raise ValueError(f"{name}: {flags.size} predictions for {truth.size} rows")
        out[name] = point_metrics(truth[train_rows:], flags[train_rows:])
    return out


def pool_files(per_file: Sequence[Mapping[str, PointMetrics]]) -> dict[str, PointMetrics]:
    """Counts summed over files per detector (the leaderboard pools before the ratios)."""
    names = list(per_file[0]) if per_file else []
    return {name: pool(f[name] for f in per_file) for name in names}


def pool_by_part(names: Sequence[str], per_file: Sequence[Mapping[str, PointMetrics]]
                 ) -> dict[str, dict[str, PointMetrics]]:
    """`pool_files` over each part of the split separately."""
    return {part: pool_files([m for n, m in zip(names, per_file, strict=True)
                              if part_of(n) == part]) for part in PARTS}


def float_lstm_scores(csv: Path, config: Any, model_path: Path, scored: BoolArray
                      ) -> tuple[FloatArray, float, FloatArray]:
    """The float Keras autoencoder's normalised window scores on the rows in `scored` (NaN
    elsewhere), its threshold (the int8 model's method on the same held-out windows), and
    its raw held-out scores."""
    import keras

    from export import calibrate
    from export.lstm_ae import window_errors
    from export.prepare import prepare

    prep = prepare(csv, config)
    if len(prep.scaled) != scored.size:
        raise ValueError("the file has duplicate or unordered rows; row indices differ")
    model = keras.models.load_model(model_path, compile=False)

    def errors(ends: npt.NDArray[np.int64]) -> FloatArray:
        windows = prep.windows(ends, config.window)
        errs = window_errors(model, windows, config.clip, config.lstm_reduce)
        return np.asarray(errs.mean(axis=1), dtype=np.float64)

    heldout = errors(prep.calib_ends)
    threshold = calibrate.calibrate(heldout, config).value
    out = np.full(scored.size, np.nan)
    ends = np.flatnonzero(scored).astype(np.int64)
    out[ends] = errors(ends) / threshold
    return out, threshold, heldout


def fit_and_replay(csv: Path, work: Path) -> dict[str, Any]:
    """Worker task for one file: fit, replay, score; everything the tables need."""
    from edge.table import read_table
    from export.evaluate import evaluate
    from export.fit import fit_bundle

    config = fit_config(rows=f":{TRAIN_ROWS}", keep_float=True)
    started, cpu0 = time.perf_counter(), cpu_seconds()
    fit = fit_bundle(csv, work / csv.stem, config)
    fit_s, fit_cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    table = read_table(csv, channels=fit.manifest.channels)
    assert table.labels is not None, f"{csv} has no anomaly column"
    rows = np.zeros(len(table), dtype=bool)
    rows[TRAIN_ROWS:] = True
    ev = evaluate(fit.out_dir, table, table.labels, rows, f"{TRAIN_ROWS}:")
    r = ev.replay
    predictions: dict[str, BoolArray] = {
        DECISION: r.is_anomaly, ENSEMBLE: np.nan_to_num(r.score) >= 1.0}
    predictions.update({scorer_label(k): np.nan_to_num(v) >= 1.0 for k, v in r.scorers.items()})
    float_note: dict[str, Any] = {}
    if fit.float_model is not None:
        scored = np.isfinite(r.scorers["lstm_ae"])
        normalised, threshold, _ = float_lstm_scores(csv, config, fit.float_model, scored)
        predictions[FLOAT] = np.nan_to_num(normalised) >= 1.0
        int8 = r.scorers["lstm_ae"][scored]
        test = scored & rows
        float_note = {
            "threshold_float": threshold,
            "threshold_int8": next(s.threshold.value for s in fit.manifest.scorers
                                   if s.name == "lstm_ae"),
            "corr_normalised": float(np.corrcoef(int8, normalised[scored])[0, 1]),
            "agreement_test_rows": float(np.mean(
                (r.scorers["lstm_ae"][test] >= 1) == (normalised[test] >= 1))),
        }
    metrics = file_metrics(table.labels, predictions)
    assert metrics[DECISION] == ev.point["decision"]  # the harness measures what evaluate does
    return {
        "file": csv.name, "rows": len(table), "fit_s": fit_s, "fit_cpu_s": fit_cpu,
        "stages": fit.stage_seconds,
        "bundle": str(fit.out_dir), "bundle_bytes": fit.bundle_bytes, "sizes": fit.file_bytes,
        "replay_s": r.elapsed_s, "metrics": metrics, "float": float_note,
        "alerts": len(ev.alerts), "events": ev.events.as_dict(),
    }


def submit(pool_: ProcessPoolExecutor, root: Path, work: Path) -> list[Future[dict[str, Any]]]:
    return [pool_.submit(fit_and_replay, csv, work / "skab") for csv in skab_files(root)]


def baselines(files: Sequence[Path]) -> dict[str, PointMetrics]:
    """The scikit-learn baselines of tests/bench/baselines.py on the same files."""
    return pool_parts(baselines_by_part(files))


def baselines_by_part(files: Sequence[Path]) -> dict[str, dict[str, PointMetrics]]:
    """The baselines pooled over each part of the split (each file fitted once)."""
    from tests.bench.baselines import load_skab_csv, run_skab_baselines

    out = {}
    for part in PARTS:
        mine = [p for p in files if part_of(p.name) == part]
        out[part] = run_skab_baselines([load_skab_csv(p) for p in mine], TRAIN_ROWS) \
            if mine else {}
    return out


def pool_parts(parts: Mapping[str, Mapping[str, PointMetrics]]) -> dict[str, PointMetrics]:
    """The parts' pooled counts summed into the whole (pooling is a sum of counts)."""
    names = [n for m in parts.values() for n in m]
    return {n: pool(m[n] for m in parts.values() if n in m) for n in dict.fromkeys(names)}


def summarise(per_file: list[dict[str, Any]], base: Mapping[str, Mapping[str, PointMetrics]],
              plot: Path, say: Progress) -> dict[str, Any]:
    """`base`: the baselines pooled per part (`baselines_by_part`)."""
    from tests.bench.baselines import plot_comparison

    pooled = pool_files([f["metrics"] for f in per_file])
    everything = {**pooled, **pool_parts(base)}
    plot_comparison(everything, plot)
    say(f"skab: pooled over {len(per_file)} files; comparison plot {plot.name}")
    names = [f["file"] for f in per_file]
    parts = pool_by_part(names, [f["metrics"] for f in per_file])
    for part in PARTS:
        d = parts[part].get(DECISION)
        if d is not None:
            say(f"skab {part}: agent decision F1 {d.f1:.3f} FAR {d.far_pct:.1f}% MAR "
                f"{d.mar_pct:.1f}%")
    return {
        "split": {
            "rule": SPLIT_RULE,
            "files": {part: [n for n in names if part_of(n) == part] for part in PARTS},
            "pooled": {part: {k: v.as_dict() for k, v in {**parts[part],
                                                          **base.get(part, {})}.items()}
                       for part in PARTS}},
        "protocol": f"valve1, fit on rows :{TRAIN_ROWS} of each file, score rows "
                    f"{TRAIN_ROWS}: against `anomaly`, counts pooled over files",
        "pooled": {k: v.as_dict() for k, v in everything.items()},
        "files": [{k: (v if k != "metrics" else {n: m.as_dict() for n, m in v.items()})
                   for k, v in f.items()} for f in per_file],
        "fit_seconds": [round(f["fit_s"], 1) for f in per_file],
        "plot": plot.name,
    }


def progress_line(done: int, total: int, f: dict[str, Any]) -> str:
    d = f["metrics"][DECISION]
    stages = f["stages"]
    return (f"skab {done:>2}/{total} {f['file']:>7}: fit {f['fit_s']:.0f} s (LSTM "
            f"{stages.get('lstm_train', 0):.0f} s, int8 {stages.get('tflite_convert', 0):.0f} s)"
            f", replay "
            f"{f['rows']} rows in {f['replay_s']:.2f} s, {f['alerts']} alerts; decision F1 "
            f"{d.f1:.2f} FAR {d.far_pct:.0f}% MAR {d.mar_pct:.0f}%")
