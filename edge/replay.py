"""Replay a sensor file through the live pipeline, as fast as it goes.

`replay_table` feeds the rows, in file order and in blocks of `batch_rows`, to the same
`DevicePipeline.process_rows` the agent uses for one live reading: the window policy and the
decider run row by row, only the runtimes see batches. Results come back as arrays
(`ReplayResult`) for the evaluator and benchmarks; `write_scores_csv` and `write_alerts_jsonl`
write the CLI's outputs. An alert still open at the end of the file is ended with reason
`end_of_input` (in `events`, not in the per-row columns).

SCORES.csv, one row per input row: the input's time cell as written in the file, `score` (the
smoothed ensemble score, >= 1 means over threshold; empty while warming up, on skipped strides
and on dropped rows), `is_anomaly` (0/1, the decision after trigger count and hysteresis),
`alert_id` (the open or just-ended alert, empty when none), one column per scorer (normalised,
not smoothed) and, when the input has one, its `label` column.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge.bundle import Bundle, Decision, Manifest, load_bundle
from edge.decide import AlertEvent, AlertOptions, BundleInfo, iso_time
from edge.engine import ScoringEngine
from edge.log_setup import LOG_LEVELS, setup_logging
from edge.pipeline import DevicePipeline
from edge.readings import BadInputCounter

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
RESERVED = ("score", "is_anomaly", "alert_id", "label")


class TableLike(Protocol):
    @property
    def timestamps(self) -> FloatArray: ...
    @property
    def values(self) -> FloatArray: ...
    @property
    def channels(self) -> list[str]: ...


@dataclass(frozen=True)
class ReplayResult:
    timestamps: FloatArray  # (n,) epoch seconds
    score: FloatArray  # (n,) smoothed ensemble score, NaN when not scored
    is_anomaly: BoolArray  # (n,)
    alert_ids: list[str]  # (n,)
    scorers: dict[str, FloatArray]  # scorer -> (n,) normalised, NaN when not scored
    status: list[str]  # (n,) see edge.window
    events: list[AlertEvent]
    event_rows: list[int]  # row of each event (n for the end-of-input end)
    bad: dict[str, int]  # bad input by kind
    stats: dict[str, Any]  # the device's DeviceStats snapshot
    elapsed_s: float

    @property
    def rows_per_s(self) -> float:
        return len(self.timestamps) / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    @property
    def alerts(self) -> int:
        return sum(1 for e in self.events if e.state == "start")


def _column(table: TableLike, name: str) -> FloatArray:
    lowered = [c.lower() for c in table.channels]
    if name in table.channels:
        j = table.channels.index(name)
    elif name.lower() in lowered:
        j = lowered.index(name.lower())
    else:
        raise ValueError(f"the input has no column {name!r} that the bundle needs "
                         f"(it has {', '.join(table.channels)})")
    return np.asarray(table.values[:, j], dtype=np.float64)


def raw_matrix(table: TableLike, manifest: Manifest) -> FloatArray:
    """The table's columns in manifest channel order, forecast residual derived."""
    residual = manifest.preprocess.forecast
    columns = []
    for name in manifest.channels:
        if residual is not None and name == residual.name:
            columns.append(_column(table, residual.measured) - _column(table, residual.forecast))
        else:
            columns.append(_column(table, name))
    return np.column_stack(columns) if columns else np.zeros((len(table.timestamps), 0))


def replay_table(
    bundle: Bundle | ScoringEngine | Path | str,
    table: TableLike,
    *,
    device: str = "replay",
    stride: int = 1,
    decision: Decision | None = None,
    options: AlertOptions | None = None,
    batch_rows: int = 4096,
    counter: BadInputCounter | None = None,
) -> ReplayResult:
    """Run the pipeline over every row of `table` (one device, rows in file order)."""
    if isinstance(bundle, ScoringEngine):
        engine = bundle
    else:
        engine = ScoringEngine(bundle if isinstance(bundle, Bundle) else load_bundle(bundle))
    counter = counter or BadInputCounter()
    pipeline = DevicePipeline(engine, device, decision or engine.manifest.decision, counter,
                              stride, options)
    ts = np.asarray(table.timestamps, dtype=np.float64)
    raw = raw_matrix(table, engine.manifest)
    n = len(ts)
    score, anomaly = np.full(n, np.nan), np.zeros(n, dtype=bool)
    scorers = {s.name: np.full(n, np.nan) for s in engine.manifest.scorers}
    alert_ids: list[str] = []
    status: list[str] = []
    events: list[AlertEvent] = []
    rows: list[int] = []
    started = time.perf_counter()
    for lo in range(0, n, max(1, batch_rows)):
        hi = min(n, lo + batch_rows)
        part = pipeline.process_rows(ts[lo:hi], raw[lo:hi])
        score[lo:hi], anomaly[lo:hi] = part.score, part.is_anomaly
        for name, values in part.scorers.items():
            scorers[name][lo:hi] = values
        alert_ids.extend(part.alert_ids)
        status.extend(part.status)
        for i, event in part.events:
            events.append(event)
            rows.append(lo + i)
    final = pipeline.interrupt("end_of_input")
    if final is not None:
        events.append(final)
        rows.append(n)
    elapsed = time.perf_counter() - started
    return ReplayResult(ts, score, anomaly, alert_ids, scorers, status, events, rows,
                        counter.totals(), pipeline.stats.snapshot(), elapsed)


def time_cells(table: Any) -> list[str]:
    """The time column's cells as written in the file (ISO-8601 if they cannot be read back)."""
    path, column = getattr(table, "path", None), getattr(table, "time_column", None)
    delimiter = getattr(table, "delimiter", ",")
    fallback = [iso_time(t) for t in np.asarray(table.timestamps).tolist()]
    if path is None or column is None:
        return fallback
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [h.strip() for h in next(reader)]
            j = header.index(column)
            cells = [row[j] if j < len(row) else "" for row in reader
                     if row and (len(row) > 1 or row[0].strip())]
    except (OSError, ValueError, StopIteration, csv.Error):
        return fallback
    return cells if len(cells) == len(fallback) else fallback


def _cell(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


def write_scores_csv(path: Path, result: ReplayResult, times: Sequence[str],
                     time_column: str = "timestamp",
                     labels: npt.NDArray[np.bool_] | None = None) -> None:
    names = list(result.scorers)
    headers = [n if n not in RESERVED and n != time_column else f"scorer_{n}" for n in names]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([time_column, "score", "is_anomaly", "alert_id", *headers,
                         *(["label"] if labels is not None else [])])
        columns = [result.scorers[n].tolist() for n in names]
        score = result.score.tolist()
        anomaly = result.is_anomaly.tolist()
        label_list = labels.tolist() if labels is not None else None
        for i in range(len(score)):
            row = [times[i], _cell(score[i]), int(anomaly[i]), result.alert_ids[i],
                   *(_cell(c[i]) for c in columns)]
            if label_list is not None:
                row.append(int(label_list[i]))
            writer.writerow(row)


def write_alerts_jsonl(path: Path, events: Sequence[AlertEvent], bundle: BundleInfo,
                       agent_version: str) -> None:
    with path.open("w") as handle:
        for event in events:
            payload = event.to_payload(bundle=bundle, agent_version=agent_version)
            handle.write(json.dumps(payload, allow_nan=False) + "\n")


# -- the `edge-agent replay` subcommand ------------------------------------------------------
def add_replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay", help="run the pipeline over a CSV file and write per-row scores",
        description="Score a sensor file with a bundle through the same window/score/decide "
                    "pipeline as the live agent, as fast as it goes; print a summary.")
    p.add_argument("--bundle", required=True, type=Path,
                   help="bundle directory or .tar.gz exported by edge-train")
    p.add_argument("--input", required=True, type=Path, help="the sensor CSV to replay")
    p.add_argument("--out", required=True, type=Path,
                   help="SCORES.csv to write, one row per input row")
    p.add_argument("--alerts", type=Path, help="also write the alert events as JSON lines")
    p.add_argument("--device", default="replay", help="device id for alerts (default replay)")
    p.add_argument("--stride", type=int, default=1,
                   help="score every N-th full window (default 1: every row)")
    p.add_argument("--time-column", help="the time column (default: found automatically)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    p.add_argument("--distance-runtime", choices=("auto", "onnx", "tflite"), default="auto",
                   help="the distance scorers' runtime: onnx (distance.onnx), tflite (its "
                        "TFLite twin) or auto (onnx when onnxruntime is installed; default)")
    p.add_argument("--public-key", type=Path,
                   help="require and verify the bundle's Ed25519 signature with this key")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                   default="WARNING", help="log verbosity on stderr (default WARNING)")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    """Exit 0 when done, 2 on a problem with the arguments, the bundle or the input."""
    from edge import __version__
    from edge.bundle import BundleError
    from edge.readings import input_channels
    from edge.runtimes.tflite import RuntimeMissing
    from edge.table import read_table

    setup_logging(args.log_level)
    try:
        if args.stride < 1:
            raise ValueError(f"--stride must be >= 1, got {args.stride}")
        bundle = load_bundle(args.bundle, args.public_key)
        engine = ScoringEngine(bundle, threads=args.threads,
                               distance_runtime=args.distance_runtime)
        table = read_table(args.input, time_column=args.time_column,
                           channels=input_channels(bundle.manifest))
        result = replay_table(engine, table, device=args.device, stride=args.stride)
        write_scores_csv(args.out, result, time_cells(table), table.time_column, table.labels)
        if args.alerts is not None:
            write_alerts_jsonl(args.alerts, result.events, BundleInfo.from_bundle(bundle),
                               __version__)
    except (BundleError, RuntimeMissing, ValueError, OSError) as error:
        print(f"edge-agent replay: error: {error}", file=sys.stderr)
        return 2
    print(summary(result, args.stride))
    print("runtimes: " + "; ".join(f"{k} {v}" for k, v in engine.runtimes.items()))
    return 0


def summary(result: ReplayResult, stride: int) -> str:
    stats = result.stats
    bad = ", ".join(f"{k}={v}" for k, v in result.bad.items()) or "none"
    return "\n".join([
        f"rows: {len(result.timestamps)} in {result.elapsed_s:.2f} s "
        f"({result.rows_per_s:,.0f} rows/s); windows scored: {stats['windows_scored']} "
        f"(stride {stride})",
        f"bad readings: {bad}; forward-filled readings: {stats['filled']}",
        f"alerts: {result.alerts} ({len(result.events)} events); "
        f"anomalous rows: {int(result.is_anomaly.sum())}",
    ])
