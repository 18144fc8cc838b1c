"""NAB: per file, fit on the probationary rows, replay the whole file, alert starts as
detections; NAB's three profiles normalised over the corpus, the windowed Gaussian alongside.

Ours is scored as deployed: the bundle's own thresholds and decision policy, one detection per
alert (its start), nothing tuned on the labels. NAB's published detectors (and the windowed
Gaussian here) get the threshold that maximises each profile's corpus score, found on the
labels by NAB's sweep; for reference the same sweep over our smoothed ensemble score is also
reported (then every row over the swept threshold is a detection, as for them).

Split by category (issue 16, fixed before any figure was looked at by category): a default is
*chosen on* `artificialNoAnomaly` and `realAWSCloudwatch` (22 of the 35 files here: the largest
real category, and the false alarms on normal-only series) and *confirmed on* every other
category (`artificialWithAnomaly`, `realKnownCause` here; `realAdExchange`, `realTraffic`,
`realTweets` of the full corpus too, which nothing was ever chosen on). Each part, and each
category, is normalised over its own files (a category without windows has no score, only
its false alarms).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from export.nab import PROFILES, FileScore, NabFile, load_nab_corpus, normalized_score
from tests.bench.harness import cpu_seconds, fit_config

OURS = "ours: alert starts (as deployed)"
SWEPT = "ours: ensemble score, swept threshold"
WG = "windowed Gaussian (swept threshold)"
BoolArray = npt.NDArray[np.bool_]
CHOSEN, CONFIRMED = "chosen-on", "confirmed-on"
PARTS = (CHOSEN, CONFIRMED)
CHOSEN_CATEGORIES = ("artificialNoAnomaly", "realAWSCloudwatch")
SPLIT_RULE = ("chosen on the categories " + " and ".join(CHOSEN_CATEGORIES)
              + ", confirmed on every other category")


def category_of(name: str) -> str:
    """The NAB folder of a file name such as "realKnownCause/nyc_taxi.csv"."""
    return name.split("/", 1)[0]


def part_of(name: str) -> str:
    """The fixed split: the chosen categories -> chosen-on, any other -> confirmed-on."""
    return CHOSEN if category_of(name) in CHOSEN_CATEGORIES else CONFIRMED


def split_scores(files: Sequence[NabFile], detections: Sequence[BoolArray]
                 ) -> dict[str, Any]:
    """Each part's and each category's NAB scores (normalised over their own files; None
    where they hold no window), with the detected/missed windows and the false alarms."""

    def group(members: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = {"files": len(members),
                               "windows": int(sum(len(files[i].windows) for i in members))}
        for profile in PROFILES:
            score, per = detections_score([files[i] for i in members],
                                          [detections[i] for i in members], profile)
            out[profile] = None if score is None else round(score, 2)
            if profile == "standard":
                out.update(tp=int(sum(s.tp for s in per)), fn=int(sum(s.fn for s in per)),
                           fp=int(sum(s.fp for s in per)))
        return out

    parts = {part: [i for i, f in enumerate(files) if part_of(f.name) == part]
             for part in PARTS}
    categories: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        categories.setdefault(category_of(f.name), []).append(i)
    return {
        "rule": SPLIT_RULE,
        "parts": {part: group(members) for part, members in parts.items() if members},
        "categories": {c: {"part": part_of(c + "/"), **group(members)}
                       for c, members in sorted(categories.items())},
    }


def held_out_gaps(split: dict[str, Any], profile: str = "standard") -> dict[str, float]:
    """Each confirmed-on category's score minus the chosen-on part's (the issue's target: no
    held-out category more than 5 points below)."""
    chosen = split["parts"].get(CHOSEN, {}).get(profile)
    if chosen is None:
        return {}
    return {c: round(v[profile] - chosen, 2) for c, v in split["categories"].items()
            if v["part"] == CONFIRMED and v[profile] is not None}


def corpus(root: Path) -> list[NabFile]:
    return load_nab_corpus(root / "nab")


def fit_and_replay(name: str, csv: Path, probation: int, work: Path) -> dict[str, Any]:
    """Worker task: fit on rows :probation, replay every row; detections = alert starts."""
    from edge.replay import replay_table
    from edge.table import read_table
    from export.errors import FitError, InputError
    from export.evaluate import alert_starts
    from export.fit import fit_bundle

    out = work / name.replace("/", "__").removesuffix(".csv")
    started, cpu0 = time.perf_counter(), cpu_seconds()
    try:
        fit = fit_bundle(csv, out, fit_config(rows=f":{probation}"))
    except (FitError, InputError) as exc:
        return {"file": name, "error": f"{type(exc).__name__}: {exc}",
                "fit_s": time.perf_counter() - started, "fit_cpu_s": cpu_seconds() - cpu0}
    fit_s, fit_cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    table = read_table(csv, channels=fit.manifest.channels)
    result = replay_table(fit.out_dir, table)
    return {
        "file": name, "bundle": str(out), "rows": len(table), "fit_s": fit_s,
        "fit_cpu_s": fit_cpu,
        "replay_s": result.elapsed_s,
        "stages": fit.stage_seconds,
        "starts": alert_starts(result), "score": np.nan_to_num(result.score),
        "alerts": result.alerts, "channels": len(fit.manifest.channels),
        "lags": fit.manifest.distance.lags if fit.manifest.distance else None,
    }


def submit(pool_: ProcessPoolExecutor, root: Path, files: Sequence[NabFile], work: Path
           ) -> list[Future[dict[str, Any]]]:
    data = root / "nab" / "data"
    return [pool_.submit(fit_and_replay, f.name, data / f.name, f.probation_rows, work / "nab")
            for f in files]


def detections_score(files: Sequence[NabFile], detections: Sequence[BoolArray],
                     profile: str) -> tuple[float | None, list[FileScore]]:
    """Corpus-normalised NAB score of fixed binary detections (no threshold sweep); None
    for a corpus without any scorable window."""
    scores = [f.score(d, profile) for f, d in zip(files, detections, strict=True)]
    try:
        return normalized_score(scores), scores
    except ValueError:
        return None, scores


def swept_score(files: Sequence[NabFile], scores: Sequence[npt.ArrayLike], profile: str
                ) -> tuple[float, float]:
    """NAB's corpus threshold sweep: (normalised score, threshold)."""
    from export.nab import sweep_threshold

    swept = sweep_threshold(list(zip(files, scores, strict=True)), profile)
    return swept.score, swept.threshold


def ranking(files: Sequence[NabFile], scores: Sequence[npt.ArrayLike]) -> dict[str, Any]:
    """How well the continuous score ranks, threshold-free: TSB-AD's VUS-PR (`tests.bench.
    tsbad`: its package, its slidingWindow of the file's values) of the score on the rows
    after the probationary period, the anomaly windows' rows as the labels; the mean per part
    of the split and over the files with a window."""
    from tests.bench.tsbad import sliding_window, tsbad_metrics

    per_file: dict[str, float] = {}
    for f, s in zip(files, scores, strict=True):
        labels = f.labels()[f.probation_rows:]
        if labels.any():
            per_file[f.name] = round(tsbad_metrics(
                np.asarray(s, dtype=np.float64)[f.probation_rows:], labels,
                sliding_window(f.values))["vus_pr"], 4)
    parts = {part: float(np.mean([v for n, v in per_file.items() if part_of(n) == part]))
             for part in PARTS if any(part_of(n) == part for n in per_file)}
    return {"files": per_file, "parts": parts,
            "all": float(np.mean(list(per_file.values()))) if per_file else None}


def summarise(files: Sequence[NabFile], results: Sequence[dict[str, Any]],
              plot: Path | None = None) -> dict[str, Any]:
    """The corpus's figures; with `plot`, a PNG of the files with a missed window or a false
    alarm (`tests.bench.nab_plot`)."""
    from tests.bench.baselines import windowed_gaussian_scores

    by_name = {r["file"]: r for r in results}
    failures = {r["file"]: r["error"] for r in results if "error" in r}
    starts, ensemble = [], []
    for f in files:
        r = by_name[f.name]
        never = np.zeros(f.timestamps.size)
        starts.append(r["starts"] if "error" not in r else never.astype(bool))
        ensemble.append(r["score"] if "error" not in r else never)
    gaussian = [windowed_gaussian_scores(f.values, f.probation_rows) for f in files]
    table: dict[str, dict[str, float | None]] = {OURS: {}, SWEPT: {}, WG: {}}
    thresholds: dict[str, dict[str, float]] = {SWEPT: {}, WG: {}}
    per_file: dict[str, dict[str, Any]] = {}
    for profile in PROFILES:
        table[OURS][profile], scores = detections_score(files, starts, profile)
        table[SWEPT][profile], thresholds[SWEPT][profile] = swept_score(files, ensemble, profile)
        table[WG][profile], thresholds[WG][profile] = swept_score(files, gaussian, profile)
        if profile == "standard":
            per_file = {f.name: {"tp": s.tp, "fp": s.fp, "fn": s.fn, "raw": round(s.raw, 3),
                                 "alerts": by_name[f.name].get("alerts")}
                        for f, s in zip(files, scores, strict=True)}
    ok = [r for r in results if "error" not in r]
    errors: dict[str, Any] = {}
    if plot is not None:
        from tests.bench.nab_plot import plot_errors

        errors = {"plot": plot.name, "files": [e.name for e in plot_errors(files, starts, plot)]}
    split = split_scores(files, starts)
    split["held_out_gaps_standard"] = held_out_gaps(split)
    return {
        "split": split,
        "ranking": ranking(files, ensemble),
        "protocol": "fit on the probationary rows (first 15%, at most 750) of each file, "
                    "replay every row, detections = alert starts; scores normalised over "
                    "the corpus (0 = never detect, 100 = perfect)",
        "files": len(files),
        "scores": table,
        "thresholds": thresholds,
        "per_file_standard": per_file,
        "failures": failures,
        "alerts": int(sum(r["alerts"] for r in ok)),
        "windows": int(sum(len(f.windows) for f in files)),
        "fit_seconds": [round(r["fit_s"], 1) for r in results],
        "replay_rows": int(sum(r["rows"] for r in ok)),
        "replay_seconds": float(sum(r["replay_s"] for r in ok)),
        "errors_plot": errors,
    }


def progress_line(done: int, total: int, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"nab {done:>2}/{total} {r['file']}: FIT FAILED: {r['error'][:160]}"
    stages = r["stages"]
    return (f"nab {done:>2}/{total} {r['file']}: fit {r['fit_s']:.0f} s (LSTM "
            f"{stages.get('lstm_train', 0):.0f} s, int8 {stages.get('tflite_convert', 0):.0f} s)"
            f", replay {r['rows']} "
            f"rows in {r['replay_s']:.2f} s, {r['alerts']} alerts")
