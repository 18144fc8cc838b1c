"""SKAB valve1 with the `channel_kmeans` member (issue 16): per file, one fit with the kind
added (`scorers` twin,variability,channel_kmeans), replayed as fitted and with the ensemble
members of today's defaults (the same bundle without the new member: the other scorers do not
depend on it), the agent's decision on rows 400: pooled over the chosen (even) and confirmed
(odd) files and all 16.

    PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.channel_kmeans_skab
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tests.bench.harness import data_root, fit_config
from tests.bench.skab import TRAIN_ROWS, skab_files

SCORERS = ("twin", "variability", "channel_kmeans")


def main() -> int:
    from edge.bundle import load_bundle
    from edge.engine import ScoringEngine
    from edge.replay import replay_table
    from edge.table import read_table
    from export.fit import fit_bundle
    from export.metrics import point_metrics, pool
    from tests.bench.quality import _variant_engine

    work = Path("/tmp/ck-skab")
    per: dict[str, dict[str, list]] = {"with": {}, "without": {}}
    for csv in skab_files(data_root()):
        config = fit_config(rows=f":{TRAIN_ROWS}", scorers=SCORERS)
        fit = fit_bundle(csv, work / csv.stem, config)
        table = read_table(csv, channels=fit.manifest.channels)
        members = [m for m in fit.manifest.ensemble.members if m != "channel_kmeans"]
        engines = {"with": ScoringEngine(load_bundle(fit.out_dir)),
                   "without": _variant_engine(fit.out_dir, {"members": members}, csv, config)}
        truth = np.asarray(table.labels).astype(bool)[TRAIN_ROWS:]
        for name, engine in engines.items():
            r = replay_table(engine, table)
            per[name][csv.name] = point_metrics(truth, r.is_anomaly[TRAIN_ROWS:])
        w, wo = per["with"][csv.name], per["without"][csv.name]
        print(f"{csv.name}: members {'+'.join(fit.manifest.ensemble.members)}; with F1 "
              f"{w.f1:.3f} FAR {w.far_pct:.1f}%; without F1 {wo.f1:.3f} FAR {wo.far_pct:.1f}%",
              flush=True)
    for part, keep in (("chosen (even)", 0), ("confirmed (odd)", 1), ("all", None)):
        for name in ("without", "with"):
            sel = [m for f, m in per[name].items()
                   if keep is None or (Path(f).stem.isdigit() and int(Path(f).stem) % 2 == keep)]
            p = pool(sel)
            print(f"{part:16} {name:8}: F1 {p.f1:.3f} FAR {p.far_pct:.1f}% MAR {p.mar_pct:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
