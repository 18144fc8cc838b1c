"""`edge-sim`: simulated sensor devices with labelled faults.

edge-sim generate --device airpod --duration 7d --seed 1 --out data.csv
edge-sim publish --device pump --devices 3 --rate 10 --broker 127.0.0.1:1883
edge-sim uart --link /tmp/pms5003 --corrupt-every 20 --truncate-every 50
edge-sim plot data.csv --out week.png
edge-sim channels --device airpod
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from firmware_sim.devices import device_names, make_device
from firmware_sim.faults import FAULT_TYPES, UART_FAULTS
from firmware_sim.timeparse import parse_duration


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _faults(args: argparse.Namespace) -> str:
    if args.scenario and args.faults not in (None, "default"):
        raise ValueError("give --scenario or --faults, not both")
    return str(args.scenario or args.faults or "default")


def _add_common(p: argparse.ArgumentParser, duration_help: str) -> None:
    p.add_argument(
        "--device", required=True, choices=device_names(), help="which device to simulate"
    )
    p.add_argument("--duration", type=_duration, default=None, help=duration_help)
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument(
        "--faults",
        default=None,
        metavar="default|none|FILE",
        help="'default' = a seeded random mix after a clean first fifth; 'none' = "
        "clean data; or a TOML scenario file (default: default)",
    )
    p.add_argument(
        "--scenario",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML scenario placing faults at times and channels",
    )
    p.add_argument(
        "--period",
        type=_duration,
        default=None,
        help="sample period, whole seconds (default: airpod 60s, pump 1s, metric 5m)",
    )
    p.add_argument(
        "--forecast",
        action="store_true",
        help="metric only: add a black-box forecast column 'predicted'",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-sim", description="Simulated sensor devices with labelled faults."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate",
        help="write a CSV and its fault schedule (<stem>.faults.json)",
        description="Write a CSV (timestamp,<channels>,anomaly,fault) and the "
        "fault schedule <out stem>.faults.json.",
    )
    _add_common(g, "how much data, e.g. 90s, 30m, 12h, 7d (default: 1d)")
    g.add_argument("--out", required=True, type=Path, help="CSV file to write")
    g.add_argument(
        "--start",
        default=None,
        help="time of the first row, ISO-8601 UTC (default: 2026-01-05T00:00:00Z)",
    )

    p = sub.add_parser(
        "publish",
        help="publish readings and ground truth over MQTT",
        description="Publish readings to <prefix>/<device_id>/readings and ground "
        "truth to <prefix>/<device_id>/truth, QoS 1.",
    )
    _add_common(p, "stop after this much simulated time (default: run until interrupted)")
    p.add_argument("--devices", type=int, default=1, help="how many devices (default: 1)")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="readings per second per device; 0 = as fast as possible (a slow QoS-1 "
        "subscriber may then lose messages at the broker's queue limit) "
        "(default: real time at the device period)",
    )
    p.add_argument("--broker", default="127.0.0.1:1883", help="MQTT broker host:port")
    p.add_argument(
        "--tls-ca", default=None, metavar="FILE", help="CA certificate file; enables TLS"
    )
    p.add_argument("--username", default=None, help="MQTT username")
    p.add_argument(
        "--password",
        default=None,
        help="MQTT password (prefer the EDGE_SIM_PASSWORD environment variable)",
    )
    p.add_argument("--topic-prefix", default="sensors", help="topic prefix (default: sensors)")
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the ground truth, one JSON line per reading",
    )
    p.add_argument(
        "--start",
        default="now",
        help="simulated time of the first reading, ISO-8601 UTC or 'now' (default)",
    )
    p.add_argument(
        "--device-id", default=None, help="device id when --devices 1 (default: <device>-01)"
    )

    u = sub.add_parser(
        "uart",
        help="serve PMS5003 frames on a pseudo-terminal",
        description="Create a pty speaking Plantower PMS5003 frames, driven by "
        "the airpod PM model, and symlink its slave to --link.",
    )
    u.add_argument("--link", required=True, type=Path, help="symlink to create for the pty")
    u.add_argument("--seed", type=int, default=0, help="random seed")
    u.add_argument("--rate", type=float, default=1.0, help="frames per second (default: 1)")
    u.add_argument(
        "--corrupt-every",
        type=int,
        default=0,
        metavar="N",
        help="flip bytes in every N-th frame (default: 0 = never)",
    )
    u.add_argument(
        "--truncate-every",
        type=int,
        default=0,
        metavar="N",
        help="cut every N-th frame short (default: 0 = never)",
    )
    u.add_argument(
        "--count",
        type=int,
        default=None,
        help="stop after this many frames (default: run until interrupted)",
    )
    u.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="FILE",
        help="write one JSON line per frame: index, kind, bytes",
    )
    u.add_argument("--start", default=None, help="simulated time of the first frame")

    pl = sub.add_parser(
        "plot",
        help="draw a generated CSV to PNG with faults shaded",
        description="Plot a CSV (needs matplotlib, in the train extra).",
    )
    pl.add_argument("csv", type=Path, help="CSV written by edge-sim generate")
    pl.add_argument("--out", type=Path, default=None, help="PNG to write (default: <stem>.png)")
    pl.add_argument("--title", default=None, help="figure title")

    c = sub.add_parser("channels", help="list a device's channels, twin groups and fault types")
    c.add_argument("--device", required=True, choices=device_names(), help="device")
    c.add_argument("--forecast", action="store_true", help="metric: include 'predicted'")
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    from firmware_sim.csvio import schedule_path, write_csv
    from firmware_sim.engine import generate

    tic = time.perf_counter()
    result = generate(
        args.device,
        args.duration or parse_duration("1d"),
        args.seed,
        _faults(args),
        args.start,
        args.period,
        forecast=args.forecast,
    )
    write_csv(result, args.out)
    print(
        f"edge-sim: {len(result)} rows x {len(result.channels)} channels, "
        f"{len(result.schedule)} faults, {int(result.anomaly.sum())} anomalous rows -> "
        f"{args.out}, {schedule_path(args.out)} ({time.perf_counter() - tic:.2f} s)",
        file=sys.stderr,
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from firmware_sim.publish import PublishConfig, run_publish

    cfg = PublishConfig(
        device=args.device,
        broker=args.broker,
        devices=args.devices,
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        faults=_faults(args),
        topic_prefix=args.topic_prefix,
        truth_path=args.truth,
        start=args.start,
        period_s=args.period,
        device_id=args.device_id,
        tls_ca=args.tls_ca,
        username=args.username,
        password=args.password,
        forecast=args.forecast,
    )
    run_publish(cfg)
    return 0


def cmd_uart(args: argparse.Namespace) -> int:
    from firmware_sim.uart import run_uart

    if args.corrupt_every < 0 or args.truncate_every < 0:
        raise ValueError("--corrupt-every and --truncate-every must be >= 0")
    run_uart(
        args.link,
        args.seed,
        args.rate,
        args.corrupt_every,
        args.truncate_every,
        args.count,
        args.truth,
        args.start,
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from firmware_sim.plot import plot_csv

    out = plot_csv(args.csv, args.out or args.csv.with_suffix(".png"), args.title)
    print(f"edge-sim: wrote {out}", file=sys.stderr)
    return 0


def cmd_channels(args: argparse.Namespace) -> int:
    import numpy as np

    options = {"forecast": True} if args.forecast else {}
    model = make_device(args.device, np.random.default_rng(0), 60.0, 0.0, **options)
    print(f"device {model.name}: period {type(model).default_period_s:g} s")
    print("channels: " + ", ".join(model.channels))
    for name, members in model.groups.items():
        print(f"twin group {name}: {', '.join(members)}")
    print("fault types: " + ", ".join(FAULT_TYPES) + "; uart: " + ", ".join(UART_FAULTS))
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "publish": cmd_publish,
    "uart": cmd_uart,
    "plot": cmd_plot,
    "channels": cmd_channels,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, ConnectionError, RuntimeError) as exc:
        print(f"edge-sim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
