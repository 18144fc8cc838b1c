"""NAB files made hourly, as a stand-in for NAB's hourly files we do not have (realAdExchange).

Each long visible NAB file is averaged per clock hour (its windows kept in time), NAB's
probationary period taken on the hourly rows (the first 15%); a file whose probation holds
fewer than 60 hourly rows is left out (the trainer needs about that many). Per file: the
trainer's defaults (1 LSTM epoch: no member) and the same without the univariate recipe's
daily profile, fitted on the probation rows and replayed; NAB's standard profile normalised
over these files.

    PYTHONPATH=. .venv/bin/python -m tests.bench.experiments.hourly_nab [WORK]
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from export.nab import NabFile, load_nab_corpus, normalized_score, score_file

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
CONFIGS = {"recipe": {}, "no-seasonal": {"scorers": ("stuck",)}}
MIN_PROBATION = 60


def hourly(f: NabFile) -> NabFile:
    hours, which = np.unique(f.timestamps.astype("datetime64[h]"), return_inverse=True)
    means = np.bincount(which, f.values) / np.bincount(which)
    return NabFile(f.name, hours.astype("datetime64[s]"), means, f.windows)


def fit_and_replay(task: tuple[str, str, Path]) -> tuple[str, str, np.ndarray, bool]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edge.replay import replay_table
    from edge.table import read_table
    from export.evaluate import alert_starts
    from export.fit import fit_bundle
    from tests.bench.harness import fit_config

    name, config, work = task
    f = hourly(next(f for f in load_nab_corpus(DATA / "nab") if f.name == name))
    stem = name.replace("/", "__").removesuffix(".csv")
    csv = work / f"{stem}.csv"
    with csv.open("w") as fh:
        fh.write("timestamp,value\n")
        fh.writelines(f"{str(t).replace('T', ' ')},{v:.6g}\n"
                      for t, v in zip(f.timestamps, f.values, strict=True))
    fit = fit_bundle(csv, work / config / stem,
                     fit_config(rows=f":{f.probation_rows}", epochs=1, **CONFIGS[config]))
    starts = alert_starts(replay_table(fit.out_dir, read_table(csv)))
    return name, config, starts, "seasonal" in fit.manifest.ensemble.members


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    work = Path(args[0]) if args else Path("/tmp/hourly-nab")
    work.mkdir(parents=True, exist_ok=True)
    files = {f.name: hourly(f) for f in load_nab_corpus(DATA / "nab")}
    names = [n for n, f in files.items() if f.probation_rows >= MIN_PROBATION]
    scores: dict[str, list[object]] = {c: [] for c in CONFIGS}
    with ProcessPoolExecutor(2) as pool:
        tasks = [(n, c, work) for n in names for c in CONFIGS]
        for name, config, starts, seasonal in pool.map(fit_and_replay, tasks):
            f = files[name]
            s = score_file(f.timestamps, starts, f.windows, probation_rows=f.probation_rows)
            scores[config].append(s)
            per_hour = round(0.75 * f.probation_rows / 24, 1)
            print(f"{config:12s} {name}: {len(f.values)} hourly rows, probation "
                  f"{f.probation_rows} (~{per_hour} fit rows an hour), profile {seasonal}; "
                  f"windows {s.tp}/{s.tp + s.fn}, false alarms {s.fp}", flush=True)
    for config, per_file in scores.items():
        print(f"{config}: NAB standard over {len(per_file)} files "
              f"{normalized_score(per_file):.1f}")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
