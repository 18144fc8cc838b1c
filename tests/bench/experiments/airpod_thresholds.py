"""Air-quality pods: which faults the multivariate recipe catches, and at what false-alarm
cost, as its threshold margin moves (and with `--twin-features`).

Per pod seed: `make demo`'s simulation (7 days to train on with the seeded fault mix, which
the trainer leaves out by its labels; 2 streamed days with new faults), `fit_bundle` with the
trainer's defaults on the training days, then `replay_table` of the streamed days with the
window Mahalanobis threshold scaled from the recipe's 1.2 x largest held-out score. A value
fault is caught when an alert is open on one of its rows (or the window's length after); a
false alarm is an alert overlapping no fault.

Run: PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.airpod_thresholds [--seeds 1,2,3,4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

MARGINS = (1.2, 1.1, 1.0, 0.9, 0.8)  # x the largest held-out score
CONFIGS: dict[str, dict[str, Any]] = {
    "recipe": {}, "twin features": {"twin_features": True},
    # the running range as a second member (its tolerance scales with the margin too)
    "+ range member": {"ensemble_members": ("window_mahalanobis", "range")},
    # the univariate recipe's long shapes as members (their z threshold scales too)
    "+ long shapes": {"long_shapes": (8, 16, 32), "ensemble_members": (
        "window_mahalanobis", "long_shape_64", "long_shape_128", "long_shape_256")}}


def alert_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row of each run of an open alert."""
    edges = np.diff(np.concatenate([[0], active.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def one_pod(seed: int, work: Path) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine
    from edge.replay import replay_table
    from edge.table import read_table
    from export.config import FitConfig
    from export.fit import fit_bundle
    from firmware_sim.demo import DemoConfig, simulate
    from firmware_sim.demo_report import INPUT_FAULTS, epoch

    cfg = DemoConfig(seed=seed, fault_seed=seed + 100, report=False)
    sim = simulate(cfg, work / f"pod{seed}")
    faults = [f for f in sim.stream_faults if f["type"] not in INPUT_FAULTS]
    out: dict[str, Any] = {"seed": seed, "faults": [f["type"] for f in faults], "rows": {}}
    for cname, changes in CONFIGS.items():
        # the LSTM-AE is no ensemble member: a short training keeps the run short
        config = dataclasses.replace(FitConfig(), epochs=8, units=cfg.units,
                                     train_stride=cfg.train_stride, report=False, force=True,
                                     **changes)
        bundle_dir = work / f"pod{seed}" / cname.replace(" ", "_")
        fit_bundle(sim.train_csv, bundle_dir, config)
        bundle = load_bundle(bundle_dir)
        table = read_table(sim.stream_csv, channels=list(bundle.manifest.channels))
        ts = np.asarray(table.timestamps, dtype=float)
        grace = (bundle.manifest.window.length - 1) * cfg.period_s
        spans = [(epoch(f["start"]), epoch(f["end"]) + grace) for f in faults]
        for margin in MARGINS:
            m = bundle.manifest
            scorers = [s.model_copy(update={"threshold": s.threshold.model_copy(update={
                "value": s.threshold.value * margin / 1.2})})
                if s.name in m.ensemble.members else s for s in m.scorers]
            variant = dataclasses.replace(bundle, manifest=m.model_copy(update={
                "scorers": scorers}))
            active = replay_table(ScoringEngine(variant), table).is_anomaly
            runs = [(ts[a], ts[b]) for a, b in alert_runs(active)]
            caught = [any(a <= end and b >= start for a, b in runs) for start, end in spans]
            false = sum(not any(a <= end and b >= start for start, end in spans)
                        for a, b in runs)
            out["rows"][(cname, margin)] = (caught, false)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-airpod"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(one_pod, seeds, [args.work] * len(seeds)))
    by_type: dict[tuple[str, float], dict[str, list[bool]]] = {}
    print(f"{len(seeds)} pods, 2 streamed days each")
    print(f"{'config':<16} {'margin':>6} {'caught':>8} {'false alarms':>13}  by fault type")
    for cname in CONFIGS:
        for margin in MARGINS:
            caught = [c for r in results for c in r["rows"][(cname, margin)][0]]
            false = sum(r["rows"][(cname, margin)][1] for r in results)
            kinds = by_type.setdefault((cname, margin), {})
            for r in results:
                for kind, hit in zip(r["faults"], r["rows"][(cname, margin)][0], strict=True):
                    kinds.setdefault(kind, []).append(hit)
            detail = ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(kinds.items()))
            print(f"{cname:<16} {margin:>6.1f} {sum(caught):>4}/{len(caught):<3} {false:>13}  "
                  f"{detail}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
