"""SKAB's anomaly-free recording as false-alarm test files: how often the trainer's defaults
flag a pump that runs normally.

    PYTHONPATH=. .venv/bin/python -m tests.bench.skab_free --workers 2

`../shared/data/skab/anomaly-free/anomaly-free.csv` (9405 rows, one a second, no fault) is cut
into pieces of `PIECE_ROWS` rows, about the length of a valve1 file, each labelled normal
throughout; each piece goes through SKAB's protocol exactly as a valve1 file does
(`tests.bench.skab.fit_and_replay`: fit on rows :400 with the trainer's defaults, replay the
whole piece, the agent's decision on rows 400:). Every row flagged is a false alarm, so the
figure is the share of rows flagged (FAR), per piece, per half (pieces 0-3, 4-7) and pooled.
Nothing is chosen on these pieces; they tell whether valve1's false-alarm rate holds on a
pump that wanders over a longer run (the recording's accelerometers and flow drift over its
2.6 hours by several times their spread within 400 rows).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from export.metrics import PointMetrics, pool
from tests.bench import skab
from tests.bench.harness import Progress, data_root, worker_pool

PIECE_ROWS = 1150  # about a valve1 file (1075-1154 rows)
SOURCE = Path("skab") / "anomaly-free" / "anomaly-free.csv"


def cut_pieces(source: Path, out: Path, rows: int = PIECE_ROWS) -> list[Path]:
    """Write `source`'s whole pieces of `rows` data rows as SKAB files (`piece-<k>.csv`, the
    header and `;` kept, `anomaly` and `changepoint` columns 0 added); the rest is dropped."""
    lines = source.read_text().splitlines()
    if not lines or ";" not in lines[0]:
        raise ValueError(f"{source}: not a ';'-separated SKAB file with a header")
    header, data = lines[0], [line for line in lines[1:] if line.strip()]
    if "anomaly" in header.split(";"):
        raise ValueError(f"{source}: already labelled; expected the anomaly-free recording")
    out.mkdir(parents=True, exist_ok=True)
    pieces = []
    for k in range(len(data) // rows):
        path = out / f"piece-{k}.csv"
        body = "\n".join(f"{line};0;0" for line in data[k * rows:(k + 1) * rows])
        path.write_text(f"{header};anomaly;changepoint\n{body}\n")
        pieces.append(path)
    return pieces


def submit(pool_: ProcessPoolExecutor, root: Path, work: Path) -> list[Future[dict[str, Any]]]:
    """One SKAB-protocol fit and replay per piece (empty when the recording is absent)."""
    source = root / SOURCE
    if not source.exists():
        return []
    return [pool_.submit(skab.fit_and_replay, piece, work / "skab-free")
            for piece in cut_pieces(source, work / "skab-free-pieces")]


def piece_number(name: str) -> int:
    """k of `piece-<k>.csv`."""
    return int(Path(name).stem.rsplit("-", 1)[1])


def piece_files(work: Path) -> list[Path]:
    """The pieces `submit` cut into `work`, in order."""
    return sorted((work / "skab-free-pieces").glob("piece-*.csv"),
                  key=lambda p: piece_number(p.name))


def baselines(pieces: Sequence[Path]) -> dict[str, PointMetrics]:
    """The scikit-learn baselines of valve1's table on the same pieces, the same protocol."""
    from tests.bench.baselines import load_skab_csv, run_skab_baselines

    return run_skab_baselines([load_skab_csv(p) for p in pieces], skab.TRAIN_ROWS)


def summarise(results: Sequence[dict[str, Any]],
              others: dict[str, PointMetrics] | None = None) -> dict[str, Any]:
    """Per piece (in order), per half and pooled: the share of test rows flagged, alerts;
    `others`' pooled FAR beside them (the baselines)."""
    ordered = sorted(results, key=lambda r: piece_number(r["file"]))
    half = (len(ordered) + 1) // 2
    parts = {f"pieces 0-{half - 1}": ordered[:half],
             f"pieces {half}-{len(ordered) - 1}": ordered[half:], "all": ordered}

    def figures(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        ms: list[PointMetrics] = [r["metrics"][skab.DECISION] for r in rs]
        return {"far_pct": round(pool(ms).far_pct, 1), "rows": sum(m.fp + m.tn for m in ms),
                "alerts": sum(int(r["alerts"]) for r in rs)}

    return {"piece_rows": PIECE_ROWS,
            "pieces": [{"file": r["file"], **figures([r])} for r in ordered],
            "parts": {name: figures(rs) for name, rs in parts.items() if rs},
            "baselines": {name: round(m.far_pct, 1) for name, m in (others or {}).items()}}


def section(free: dict[str, Any]) -> list[str]:
    """The results.md lines."""
    lines = [f"SKAB's anomaly-free recording cut into {len(free['pieces'])} pieces of "
             f"{free['piece_rows']} rows, each fitted and replayed as a valve1 file (fit on "
             ":400, the agent's decision on 400:); every flagged row is a false alarm.", "",
             "| pieces | test rows | FAR % | alerts |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {p['rows']} | {p['far_pct']:.1f} | {p['alerts']} |"
              for name, p in free["parts"].items()]
    lines += ["", "Per piece (FAR %): " + ", ".join(
        f"{Path(p['file']).stem} {p['far_pct']:.1f}" for p in free["pieces"]) + ".", ""]
    if free.get("baselines"):
        lines += ["The baselines on the same pieces (FAR %): " + ", ".join(
            f"{name} {far:.1f}" for name, far in free["baselines"].items()) + ".", ""]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.skab_free", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="benchmark data (default $EDGE_BENCH_DATA or "
                                                  "../shared/data)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/skab-free"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args(argv)
    args.data = data_root(args.data)
    if not (args.data / SOURCE).exists():
        print(f"no {args.data / SOURCE}: nothing to measure")
        return 2
    say = Progress()
    with worker_pool(args.workers) as pool_:
        futures = submit(pool_, args.data, args.work)
        say(f"skab-free: {len(futures)} pieces, {args.workers} worker(s)")
        results = []
        for future in futures:
            results.append(future.result())
            say(f"  {results[-1]['file']}: {results[-1]['alerts']} alerts")
    free = summarise(results, baselines(piece_files(args.work)))
    print("\n".join(section(free)))
    if args.json:
        args.json.write_text(json.dumps(free, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
