"""Replay a labelled sensor file through a bundle, exactly as the agent scores it, and measure
detection quality.

The rows go through `edge.replay.replay_table` (the live pipeline: window, score, decide). The
decisions (`is_anomaly`: an alert is open) are compared with the file's 0/1 label column on the
scored rows (`--rows START:END`, default all; the whole file is replayed either way so the
windows before START are full):

- point metrics: precision, recall, F1 = TP/(TP+(FP+FN)/2), false alarm rate FP/(FP+TN) and
  missed alarm rate FN/(FN+TP) in % (the SKAB leaderboard's figures), for the decision and
  for each scorer alone (its normalised score >= 1, no trigger or hysteresis);
- event metrics: a labelled event is a run of anomalous rows; caught if an alert is open on
  one of its rows, with the delay from its first row; a false alarm is an alert run that
  touches no labelled row (per day of scored data);
- a NAB-style score: each labelled run is a NAB window, each alert start a detection (NAB's
  standard, reward-low-FP and reward-low-FN profiles; 0 = never alert, 100 = an alert at the
  first row of every run, negative = worse than never alerting);
- average precision of the (smoothed) ensemble score and of each scorer's score.

`--report out.html` writes a self-contained HTML page (plots embedded) and the PNGs beside it.
Exit codes: 0 done, 2 bad input (bundle, file, label column, options).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.bundle import BundleError, load_bundle
from edge.decide import AlertEvent, AlertOptions
from edge.replay import ReplayResult, replay_table
from edge.table import Table, TableError, read_table
from export.errors import InputError
from export.evaluate_report import write_report
from export.evaluation import DECISION, OVER, AlertSpan, Evaluation, summary_lines
from export.metrics import (
    average_precision,
    event_metrics,
    events_from_labels,
    point_metrics,
)
from export.nab import PROFILES, FileScore, score_file
from export.prepare import parse_rows

NAME = "evaluate"
HELP = "replay a labelled CSV through a bundle (the agent's pipeline) and report its quality"
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def alert_spans(result: ReplayResult) -> list[AlertSpan]:
    """The alerts of a replay, in order, with their start and end rows."""
    n = len(result.timestamps)
    open_: dict[str, tuple[int, AlertEvent]] = {}
    spans: list[AlertSpan] = []
    for event, row in zip(result.events, result.event_rows, strict=True):
        if event.state == "start":
            open_[event.id] = (row, event)
        elif event.state == "end" and event.id in open_:
            start_row, start = open_.pop(event.id)
            spans.append(AlertSpan(event.id, start_row, row, start, event))
    spans += [AlertSpan(i, row, n, start, None) for i, (row, start) in open_.items()]
    return sorted(spans, key=lambda a: a.start_row)


def alert_starts(result: ReplayResult) -> BoolArray:
    """True on the rows where an alert started (the detections of the NAB-style score)."""
    out = np.zeros(len(result.timestamps), dtype=bool)
    rows = [r for e, r in zip(result.events, result.event_rows, strict=True) if e.state == "start"]
    out[rows] = True
    return out


def nab_scores(starts: BoolArray, labels: BoolArray) -> dict[str, FileScore]:
    """NAB score of alert starts with each labelled run as a window (rows as the time axis,
    no probationary period); {} when there is no labelled run."""
    runs = events_from_labels(labels)
    if not runs:
        return {}
    index = np.arange(labels.size)
    windows = [(a, b - 1) for a, b in runs]
    return {name: score_file(index, starts, windows, profile, probation_rows=0)
            for name, profile in PROFILES.items()}


def evaluate(bundle: Path | str, table: Table, labels: BoolArray, rows: BoolArray | None = None,
             rows_text: str = ":") -> Evaluation:
    """Replay `table` through `bundle` and measure it against `labels` on `rows`."""
    loaded = load_bundle(bundle)
    manifest = loaded.manifest
    options = AlertOptions(top_channels=len(manifest.channels))  # full attribution
    result = replay_table(loaded, table, options=options)
    rows = np.ones(len(table), dtype=bool) if rows is None else rows
    truth = labels[rows]
    decided = {DECISION: result.is_anomaly, OVER: np.nan_to_num(result.score) >= 1.0}
    decided.update({k: np.nan_to_num(v) >= 1.0 for k, v in result.scorers.items()})
    point = {k: point_metrics(truth, v[rows]) for k, v in decided.items()}
    scores = {OVER: result.score, **result.scorers}
    ap = {k: average_precision(truth, np.nan_to_num(v[rows])) for k, v in scores.items()}
    events = event_metrics(truth, result.is_anomaly[rows], result.timestamps[rows])
    nab = nab_scores(alert_starts(result)[rows], truth)
    return Evaluation(Path(table.path), manifest, result, labels, rows, rows_text, point,
                      events, nab, ap, alert_spans(result))


def load_inputs(bundle: Path, data: Path, label_column: str | None,
                time_column: str | None = None) -> tuple[Table, BoolArray]:
    """The data file read for `bundle`'s channels, and its labels; InputError otherwise."""
    from edge.readings import input_channels

    try:
        manifest = load_bundle(bundle).manifest
    except BundleError as exc:
        raise InputError(f"--bundle {bundle}: {exc}") from exc
    if not data.is_file():
        raise InputError(f"DATA.csv {data} does not exist or is not a file")
    try:
        table = read_table(data, time_column, input_channels(manifest), label_column)
    except TableError as exc:
        flag = {"time_column": " (--time-column)", "label_column": " (--label-column)"}
        raise InputError(f"{data.name}: {exc}{flag.get(exc.option or '', '')}") from exc
    if table.labels is None:
        raise InputError(f"{data.name}: no label column (looked for anomaly, is_anomaly, label); "
                         "name it with --label-column")
    return table, table.labels


# -- the `edge-train evaluate` subcommand ----------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, metavar="DATA.csv",
                        help="labelled sensor file: a time column, the bundle's channels and a "
                             "0/1 label column")
    parser.add_argument("--bundle", type=Path, required=True, metavar="BUNDLE_DIR",
                        help="bundle directory or .tar.gz from `edge-train fit`")
    parser.add_argument("--label-column", metavar="NAME",
                        help="0/1 label column (default: anomaly, is_anomaly or label)")
    parser.add_argument("--rows", metavar="START:END",
                        help="rows to score, Python slice style in file order (e.g. '400:' "
                             "after training on ':400'); the whole file is replayed either way "
                             "(default: every row)")
    parser.add_argument("--time-column", metavar="NAME",
                        help="time column (default: found by name or content)")
    parser.add_argument("--report", type=Path, metavar="OUT.html",
                        help="write an HTML report with the plots embedded, and the PNGs "
                             "beside it")
    parser.add_argument("--json", type=Path, metavar="OUT.json",
                        help="write the figures as JSON")


def run(args: argparse.Namespace) -> int:
    if args.report is not None and args.report.is_dir():
        raise InputError(f"--report {args.report} is a directory; name the HTML file")
    table, labels = load_inputs(args.bundle, args.data, args.label_column, args.time_column)
    rows = parse_rows(args.rows, len(table))
    print(f"edge-train evaluate: {args.data} with bundle {args.bundle}", flush=True)
    try:
        ev = evaluate(args.bundle, table, labels, rows, args.rows or ":")
    except (BundleError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    for line in summary_lines(ev):
        print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(ev.as_dict(), indent=2) + "\n")
        print(f"figures: {args.json}")
    if args.report is not None:
        page, images = write_report(ev, args.report)
        print(f"report: {page} ({', '.join(p.name for p in images)} beside it)")
    return 0
