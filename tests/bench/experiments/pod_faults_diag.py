"""Which member sees each value fault of a pod, and which drives each false alarm.

For pods already fitted by `tests.bench.pods --work DIR`: replays each bundle on its stream and
prints, per fault, the largest normalised score of every member inside the fault's span (1.0
is its threshold), the largest smoothed ensemble score, and whether an alert overlapped it;
then each false alarm with the member that was highest at its start.

    PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.pod_faults_diag --work DIR \
        --seeds 1,2 --config recipe
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--config", default="recipe")
    args = parser.parse_args()
    from edge.replay import replay_table
    from edge.table import read_table
    from firmware_sim.demo_report import INPUT_FAULTS, epoch
    from tests.bench.pods import alert_runs

    for seed in [int(s) for s in args.seeds.split(",")]:
        pod = args.work / f"pod{seed}"
        bundle = pod / args.config.replace(" ", "_")
        faults = json.loads((pod / "stream.faults.json").read_text())
        faults = faults.get("faults", faults) if isinstance(faults, dict) else faults
        manifest = json.loads((bundle / "manifest.json").read_text())
        table = read_table(pod / "stream.csv", channels=list(manifest["channels"]))
        ts = np.asarray(table.timestamps, dtype=float)
        result = replay_table(bundle, table)
        grace = (manifest["window"]["length"] - 1) * float(manifest["sample_period_s"])
        runs = [(ts[a], ts[b], a) for a, b in alert_runs(result.is_anomaly)]
        print(f"pod {seed}: members {manifest['ensemble']['members']}, "
              f"smoothing {manifest['decision']['smoothing']}")
        spans = []
        for f in faults:
            start, end = epoch(f["start"]), epoch(f["end"]) + grace
            inside = (ts >= start) & (ts <= end)
            kind = f["type"]
            spans.append((start, end))
            if kind in INPUT_FAULTS:
                continue
            caught = any(a <= end and b >= start for a, b, _ in runs)
            tops = {k: float(np.nanmax(v[inside])) if inside.any() else float("nan")
                    for k, v in result.scorers.items()}
            verdict = "CAUGHT" if caught else "missed"
            print(f"  {kind:14s} {','.join(f.get('channels', [])):18s} rows {int(inside.sum()):4d} "
                  f"{verdict} smoothed {np.nanmax(result.score[inside]):5.2f} "
                  + " ".join(f"{k}={v:.2f}" for k, v in tops.items()))
        for a, b, row in runs:
            if any(a <= end and b >= start for start, end in spans):
                continue
            top = max(result.scorers, key=lambda k: np.nan_to_num(result.scorers[k][row]))
            print(f"  FALSE ALARM at row {row} ({(b - a) / 60:.0f} min) driven by {top}; "
                  + " ".join(f"{k}={result.scorers[k][row]:.2f}" for k in result.scorers))


if __name__ == "__main__":
    main()
