"""Device parity across a refactor: record `edge-agent replay` outputs on fixed bundles, then
compare two recordings (scores bit for bit, alert events exactly).

    python -m tests.bench.replay_parity fit OUT            # bundles: SKAB valve1, NAB, a pod
    python -m tests.bench.replay_parity record OUT REC.npz # replay every bundle in OUT
    python -m tests.bench.replay_parity compare A.npz B.npz

The bundles are fitted once with the trainer's defaults (`fit`); `record` replays each over
its own data with the device code of the tree it runs in, so recordings made by two trees on
the same bundles show whether the device's maths or decisions moved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.harness import data_root, fit_config

POD_SEED = 7


def _jobs(root: Path) -> list[tuple[str, Path, str]]:
    """(name, csv, rows) of every bundle to fit."""
    from export.nab import load_nab_corpus
    from tests.bench.skab import skab_files

    jobs = [(f"skab__{p.stem}", p, ":400") for p in skab_files(root)]
    for f in load_nab_corpus(root / "nab"):
        name = "nab__" + f.name.replace("/", "__").removesuffix(".csv")
        jobs.append((name, root / "nab" / "data" / f.name, f":{f.probation_rows}"))
    return jobs


def _pod_csv(out: Path) -> Path:
    """One simulated air-quality pod, two days, faults labelled."""
    import subprocess

    csv = out / "pod.csv"
    if not csv.exists():
        subprocess.run([sys.executable, "-m", "firmware_sim", "generate", "--device", "airpod",
                        "--seed", str(POD_SEED), "--duration", "2d", "--out", str(csv)],
                       check=True)
    return csv


def cmd_fit(out: Path) -> int:
    from export.errors import FitError, InputError
    from export.fit import fit_bundle

    out.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(data_root())
    jobs.append(("pod", _pod_csv(out), ":500"))  # the clean first fifth is 576 rows
    index: dict[str, dict[str, str]] = {}
    started = time.perf_counter()
    for i, (name, csv, rows) in enumerate(jobs, 1):
        target = out / name
        if not (target / "manifest.json").exists():
            try:
                fit_bundle(csv, target, fit_config(rows=rows))
            except (FitError, InputError) as exc:
                print(f"[{i}/{len(jobs)}] {name}: refused: {exc}", flush=True)
                continue
        index[name] = {"csv": str(csv), "bundle": str(target)}
        print(f"[{i}/{len(jobs)}] {name} ({time.perf_counter() - started:.0f}s)", flush=True)
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return 0


def cmd_record(out: Path, target: Path) -> int:
    from edge.bundle import load_bundle
    from edge.replay import replay_table
    from edge.table import read_table

    index = json.loads((out / "index.json").read_text())
    arrays: dict[str, Any] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    for name, entry in index.items():
        bundle = load_bundle(entry["bundle"])
        table = read_table(Path(entry["csv"]), channels=bundle.manifest.channels)
        result = replay_table(bundle, table)
        arrays[f"{name}/score"] = result.score
        for scorer, values in result.scorers.items():
            arrays[f"{name}/scorer/{scorer}"] = values
        events[name] = [{"id": e.id, "state": e.state, "row": row, "score": e.score,
                         "reason": e.reason, "channels": [c.name for c in e.channels]}
                        for e, row in zip(result.events, result.event_rows, strict=True)]
    np.savez_compressed(target, **arrays, events=np.array(json.dumps(events)))
    print(f"recorded {len(index)} bundles in {time.perf_counter() - started:.1f}s -> {target}")
    return 0


def cmd_compare(a: Path, b: Path) -> int:
    left, right = np.load(a), np.load(b)
    keys = sorted(set(left.files) | set(right.files) - {"events"})
    worst, identical, missing = 0.0, 0, []
    for key in keys:
        if key == "events":
            continue
        if key not in left.files or key not in right.files:
            missing.append(key)
            continue
        x, y = left[key], right[key]
        same_nan = np.array_equal(np.isnan(x), np.isnan(y))
        diff = float(np.nanmax(np.abs(x - y))) if same_nan and np.isfinite(x).any() else 0.0
        if not same_nan:
            diff = float("inf")
        identical += int(same_nan and np.array_equal(x[~np.isnan(x)], y[~np.isnan(y)]))
        worst = max(worst, diff)
    ev_a, ev_b = json.loads(str(left["events"])), json.loads(str(right["events"]))
    differing = [n for n in ev_a if ev_a.get(n) != ev_b.get(n)]
    print(f"{len(keys) - 1 - len(missing)} score series compared: {identical} bit-identical, "
          f"largest difference {worst:.3g}; missing in one: {missing or 'none'}")
    print(f"alert events: {len(ev_a)} bundles, "
          f"{sum(len(v) for v in ev_a.values())} events; differing: {differing or 'none'}")
    return 0 if not differing and not missing and worst < 1e-9 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fit").add_argument("out", type=Path)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("target", type=Path)
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "fit":
        return cmd_fit(args.out)
    if args.command == "record":
        return cmd_record(args.out, args.target)
    return cmd_compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
