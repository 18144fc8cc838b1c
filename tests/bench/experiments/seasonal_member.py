"""The seasonal profile as an ensemble member, on NAB: the same bundles with and without it.

For each NAB bundle fitted by `tests.bench.replay_parity fit` (the trainer's defaults on the
probation rows), the seasonal scorer is fitted by its trainer module on the bundle's own fit
rows (the first `training.fit_rows` rows, scaled by the bundle's preprocessing), its threshold
calibrated on the held-out rows after them, and it is added as a member; both variants are
replayed by the device code and scored by NAB's three profiles. A file whose training rows
span less than two days gets no seasonal scorer (as the trainer refuses it).

    PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.seasonal_member /tmp/p14/bundles
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from edge.bundle import Ensemble, load_bundle
    from edge.engine import ScoringEngine
    from edge.preprocess import forward_fill, scale_rows
    from edge.replay import raw_matrix, replay_table
    from edge.table import read_table
    from export.config import FitConfig
    from export.errors import InputError
    from export.evaluate import alert_starts
    from export.nab import PROFILES, load_nab_corpus, normalized_score
    from export.scorers.base import TrainingData
    from export.scorers.registry import Added, spec_with
    from export.scorers.seasonal import SeasonalTrainer
    from tests.bench.harness import data_root

    args = argv if argv is not None else sys.argv[1:]
    out = Path(args[0])
    index = json.loads((out / "index.json").read_text())
    files = {f.name: f for f in load_nab_corpus(data_root() / "nab")}
    chosen = [f for f in files.values()]
    detections: dict[str, list[np.ndarray]] = {"without": [], "with seasonal": []}
    fitted = 0
    for f in chosen:
        key = "nab__" + f.name.replace("/", "__").removesuffix(".csv")
        if key not in index:  # refused by the trainer of that day: no detection either way
            for found in detections.values():
                found.append(np.zeros(f.timestamps.size, dtype=bool))
            continue
        bundle = load_bundle(index[key]["bundle"])
        m = bundle.manifest
        table = read_table(Path(index[key]["csv"]), channels=list(m.channels))
        fill = np.array([c.fill for c in m.preprocess.channels])
        scaled = scale_rows(forward_fill(raw_matrix(table, m), fill), m.preprocess)
        ts = np.asarray(table.timestamps, dtype=np.float64)
        fit_rows, held = int(m.training["fit_rows"]), int(m.training["holdout_rows"])
        base = replay_table(bundle, table)
        detections["without"].append(alert_starts(base))
        config = FitConfig()
        data = TrainingData(list(m.channels), scaled[:fit_rows], ts[:fit_rows], config)
        try:
            (spec,) = SeasonalTrainer.fit(data, {"offset_s": 0.0, "prior": 10.0})
        except InputError:
            detections["with seasonal"].append(alert_starts(base))
            continue
        fitted += 1
        level, spread = np.array(spec["level"]).T, np.array(spec["spread"]).T
        bins = len(level)
        phase = np.mod(ts + spec["offset_s"], spec["period_s"]) / spec["period_s"]
        where = np.minimum(np.floor(phase * bins), bins - 1).astype(int)
        z = (np.abs(scaled - level[where]) / spread[where]).max(axis=1)
        heldout = z[fit_rows : fit_rows + held]
        added = Added(SeasonalTrainer, {}, spec)
        scorer = spec_with(added, SeasonalTrainer.threshold("seasonal", heldout, data, {}))
        variant = dataclasses.replace(bundle, manifest=m.model_copy(update={
            "scorers": [*m.scorers, scorer],
            "ensemble": Ensemble(rule=m.ensemble.rule, members=[*m.ensemble.members,
                                                                "seasonal"],
                                 weights=m.ensemble.weights, votes=m.ensemble.votes)}))
        detections["with seasonal"].append(alert_starts(replay_table(ScoringEngine(variant),
                                                                     table)))
    print(f"{len(chosen)} NAB files, {fitted} with two days or more of training rows")
    for name, found in detections.items():
        scores = {p: normalized_score([f.score(d, p) for f, d in zip(chosen, found,
                                                                       strict=True)])
                  for p in PROFILES}
        print(f"{name:<14} " + ", ".join(f"{p} {v:.1f}" for p, v in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
