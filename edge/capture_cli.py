"""`edge-agent capture export|info`: what the device recorded (`edge.capture`), for retraining.

    edge-agent capture export --config agent.toml --device pod-01 [--since 7d] [--until ...]
                              --out pod-01.csv [--keep-unlabelled]
    edge-agent capture info --config agent.toml [--device pod-01]

The CSV is what `edge-train fit` reads as it is: `timestamp` (ISO-8601 UTC), one column per
channel the device sent (raw sensor units, empty when missing), `anomaly` (1: left out of
training), and, for people, `alert_id` and `feedback` (text, skipped by the trainer). A row
is `anomaly` 1 inside the span of an alert labelled `anomaly` by feedback, or of an alert
nobody labelled (unless `--keep-unlabelled`); the rows of an alert labelled `normal` are kept
as training data. The span runs from one window (plus the smoothing) before the alert's start
to its end. It reads the capture file while the agent runs (SQLite WAL: readers do not block
the writer); the last second of readings may not be in it yet.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edge.log_setup import LOG_LEVELS

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class UsageError(Exception):
    pass


def add_capture_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("capture", help="export what the device recorded, for retraining",
                       description="Read the agent's capture file ([capture] path).")
    inner = p.add_subparsers(dest="capture_command", required=True, metavar="SUBCOMMAND")
    ex = inner.add_parser(
        "export", help="write a device's readings as a CSV for `edge-train fit`",
        description="Write a device's recorded readings as a CSV that `edge-train fit` reads "
                    "as it is: alerts labelled anomaly by feedback (and alerts nobody "
                    "labelled, unless --keep-unlabelled) are marked anomaly=1 and left out "
                    "of training; alerts labelled normal are kept as training data. Exit 2 "
                    "on an unknown device or an empty range.")
    _where(ex)
    ex.add_argument("--device", required=True, help="the device id")
    ex.add_argument("--since", help="from this time: ISO-8601 (UTC without an offset), epoch "
                                    "seconds, or a span ago such as 36h or 7d")
    ex.add_argument("--until", help="up to this time (same forms)")
    ex.add_argument("--out", "-o", type=Path, required=True, metavar="CSV")
    ex.add_argument("--keep-unlabelled", action="store_true",
                    help="keep the rows of alerts nobody gave feedback on as training data")
    ex.set_defaults(func=cmd_export)
    info = inner.add_parser("info", help="devices, time spans, alerts and feedback recorded")
    _where(info)
    info.add_argument("--device", help="only this device")
    info.set_defaults(func=cmd_info)


def _where(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", "-c", type=Path, metavar="AGENT_TOML",
                       help="the agent's config (its [capture] path is read)")
    group.add_argument("--db", type=Path, metavar="CAPTURE_SQLITE",
                       help="the capture file itself")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper, help=argparse.SUPPRESS)


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds from ISO-8601 (UTC without an offset), epoch seconds, or `<n><s|m|h|d|w>`
    meaning that long ago."""
    ago = _AGO.match(text)
    if ago:
        now = time.time() if now is None else now
        return now - float(ago.group(1)) * _UNIT_S[ago.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read {text!r} as a time: use ISO-8601 (2026-01-05T08:00), "
                         "epoch seconds, or a span ago such as 36h or 7d") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def _path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        path = Path(args.db)
    else:
        from edge.config import ConfigError, load_config

        try:
            path = load_config(args.config).capture.path
        except ConfigError as error:
            raise UsageError(f"{error.source}: " + "; ".join(error.problems)) from None
    if not path.is_file():
        raise UsageError(f"no capture file at {path} (the agent writes it once it runs; "
                         "[capture] path)")
    return path


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(value)  # the shortest exact form


def cmd_export(args: argparse.Namespace) -> int:
    from edge.capture import CaptureError, CaptureStore

    try:
        since = parse_time(args.since) if args.since else -math.inf
        until = parse_time(args.until) if args.until else math.inf
        if since > until:
            raise UsageError(f"--since {args.since} is after --until {args.until}")
        with CaptureStore(_path(args)) as store:
            devices = store.devices()
            if args.device not in devices:
                raise UsageError(f"no device {args.device!r} in {store.path} (devices: "
                                 f"{', '.join(devices) or 'none yet'})")
            rows = store.export_rows(args.device, since, until, args.keep_unlabelled)
    except (UsageError, CaptureError) as error:
        print(f"edge-agent capture export: {error}", file=sys.stderr)
        return 2
    if not len(rows.ts):
        shown = (f"between {_iso(since) if math.isfinite(since) else 'the start'} and "
                 f"{_iso(until) if math.isfinite(until) else 'now'}")
        print(f"edge-agent capture export: no readings of {args.device} {shown}",
              file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", *rows.channels, "anomaly", "alert_id", "feedback"])
        for i in range(len(rows.ts)):
            writer.writerow([_iso(float(rows.ts[i])), *map(_cell, rows.values[i].tolist()),
                             int(rows.anomaly[i]), rows.alert_ids[i], rows.labels[i]])
    tmp.replace(args.out)
    alerts = {a: lab for a, lab in zip(rows.alert_ids, rows.labels, strict=True) if a}
    normal = sum(1 for lab in alerts.values() if lab == "normal")
    print(f"wrote {args.out}: {len(rows.ts)} rows of {args.device} from "
          f"{_iso(float(rows.ts[0]))} to {_iso(float(rows.ts[-1]))}, "
          f"{len(rows.channels)} channels; {int(rows.anomaly.sum())} rows left out of training "
          f"(anomaly=1) from {len(alerts) - normal} alert(s), {normal} alert(s) labelled normal "
          "kept as training data")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from edge.capture import CaptureError, CaptureStore

    try:
        with CaptureStore(_path(args)) as store:
            devices = [args.device] if args.device else store.devices()
            print(f"{store.path}: {store.used_bytes() / 1e6:.1f} MB in use")
            for device in devices:
                span = store.db.execute(
                    "SELECT COUNT(*), MIN(ts), MAX(ts) FROM readings WHERE device = ?",
                    (device,)).fetchone()
                alerts = store.alerts(device)
                labels = [a.label for a in alerts]
                when = (f"{_iso(span[1])} .. {_iso(span[2])}" if span[0] else "no readings")
                print(f"  {device}: {span[0]} readings ({when}); {len(alerts)} alerts "
                      f"({sum(not a.published for a in alerts)} not published), feedback: "
                      f"{labels.count('normal')} normal, {labels.count('anomaly')} anomaly")
            snoozes = store.snoozes()
            for device, until in sorted(snoozes.items()):
                print(f"  {device}: snoozed until {_iso(until)}")
    except (UsageError, CaptureError) as error:
        print(f"edge-agent capture info: {error}", file=sys.stderr)
        return 2
    return 0
