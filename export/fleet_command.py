"""Fleets: train one bundle per device, and see which device runs what.

  edge-train fleet fit DATA --out FLEET_DIR [fit options] [--workers N | --scheduler ADDR]
  edge-train fleet status --host BROKER [--index FLEET_DIR] [--max-age S] [--json]

`fleet fit` takes a folder of per-device CSVs (<device>.csv) or one CSV with a device column,
fits a bundle per device (the same options as `edge-train fit`, plus per-device overrides from
--overrides FILE.toml) on a local process pool or a Dask cluster, prints a progress bar on
stderr and a summary table, and writes FLEET_DIR/<device>/ and the index FLEET_DIR/fleet.json.
Exit codes: 0 every device fitted (or up to date), 1 some failed, 2 bad input or options
(nothing fitted).

`fleet status` reads the agents' retained status documents from the broker and prints one row
per device (agent, online, bundle version, whether it matches the index, last seen, open
alerts). Exit codes: 0 healthy, 1 a device is silent longer than --max-age, runs another
bundle than the index says or is missing, 2 the broker or the index cannot be read.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from export.errors import InputError

NAME = "fleet"
HELP = "train a bundle per device (local pool or Dask) and view the fleet from the broker"
PASSWORD_ENV = "EDGE_FLEET_MQTT_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.fit_command import add_config_arguments

    sub = parser.add_subparsers(dest="fleet_command", required=True, metavar="SUBCOMMAND")
    fit = sub.add_parser(
        "fit", help="fit one bundle per device", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("data", type=Path, metavar="DATA",
                     help="a folder of per-device CSVs (<device>.csv) or one CSV with a "
                          "device column")
    fit.add_argument("--out", type=Path, required=True, metavar="FLEET_DIR",
                     help="folder of the bundles (FLEET_DIR/<device>), their logs and the "
                          "index fleet.json")
    fleet = fit.add_argument_group("fleet")
    fleet.add_argument("--device-column", default="device", metavar="NAME",
                       help="the device column of a single CSV (default: device)")
    fleet.add_argument("--overrides", type=Path, metavar="FILE.toml",
                       help="per-device fit options: [devices.<id>] tables, e.g. "
                            "[devices.pod-07] epochs = 30")
    fleet.add_argument("--workers", type=int, default=max(os.cpu_count() or 1, 1), metavar="N",
                       help="fits at once on the local pool, each in a process of its own "
                            "(default: the number of CPUs)")
    fleet.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the fits on a Dask cluster (dask.distributed, pip install "
                            "'edge-anomaly[fleet]'), e.g. tcp://10.0.0.5:8786")
    fleet.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                       help="give up on the scheduler (or a cluster without workers) after "
                            "this long (default: 10)")
    fleet.add_argument("--fit-timeout", type=float, default=3600.0, metavar="S",
                       help="a fit running longer is killed and reported failed "
                            "(default: 3600)")
    fleet.add_argument("--fit-threads", type=int, default=0, metavar="N",
                       help="thread pools of each fit process (TensorFlow, OpenMP); 0: their "
                            "default (default: 0)")
    fleet.add_argument("--refit", action="store_true",
                       help="fit every device, even those whose bundle is up to date "
                            "(--force does the same)")
    fleet.add_argument("--sign-key", type=Path, metavar="PRIVATE.pem",
                       help="sign every bundle with this Ed25519 key (on this machine; the "
                            "key is never sent to workers)")
    add_config_arguments(fit)

    status = sub.add_parser(
        "status", help="the fleet as the broker sees it; non-zero exit on a problem",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--host", default="localhost", help="broker host (default: localhost)")
    status.add_argument("--port", type=int, default=None,
                        help="broker port (default: 1883, 8883 with TLS)")
    status.add_argument("--prefix", default="edge-anomaly",
                        help="the agents' [mqtt] topic_prefix (default: edge-anomaly)")
    status.add_argument("--username", help="broker user name")
    status.add_argument("--password-env", default=PASSWORD_ENV, metavar="NAME",
                        help=f"environment variable holding the password (default: "
                             f"{PASSWORD_ENV})")
    status.add_argument("--tls", action="store_true", help="connect with TLS")
    status.add_argument("--ca", type=Path, help="CA file for TLS (implies --tls)")
    status.add_argument("--cert", type=Path, help="client certificate for mutual TLS")
    status.add_argument("--key", type=Path, help="client key for mutual TLS")
    status.add_argument("--index", type=Path, metavar="FLEET_DIR|fleet.json",
                        help="compare each device's bundle with this fleet index")
    status.add_argument("--max-age", type=float, default=300.0, metavar="S",
                        help="a device whose last reading is older is silent (default: 300)")
    status.add_argument("--wait", type=float, default=5.0, metavar="S",
                        help="longest wait for the broker's retained messages (default: 5)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.fleet_command == "fit":
        return run_fit(args)
    return run_status(args)


def run_fit(args: argparse.Namespace) -> int:
    from export.fit_command import config_from_args
    from export.fleet import (
        DaskBackend,
        FleetPlan,
        FleetRun,
        LocalBackend,
        ProgressBar,
        check_plan,
        load_inputs,
        load_overrides,
        summary_table,
    )

    config_from_args(args)  # the common options make a valid FitConfig
    from dataclasses import fields

    from export.config import FitConfig

    options = {f.name: getattr(args, f.name) for f in fields(FitConfig) if hasattr(args, f.name)}
    options.pop("force", None)
    if args.workers < 1:
        raise InputError("--workers must be at least 1")
    if args.fit_timeout <= 0 or args.connect_timeout <= 0:
        raise InputError("--fit-timeout and --connect-timeout must be positive")
    inputs = load_inputs(args.data, args.device_column)
    overrides = load_overrides(args.overrides, [i.device for i in inputs]) \
        if args.overrides is not None else {}
    plan = FleetPlan(inputs, options, overrides, args.fit_timeout, args.fit_threads)
    check_plan(plan)
    if args.sign_key is not None:
        from export.signing import load_private_key

        load_private_key(args.sign_key)  # a bad key fails before training, not after
    backend = (DaskBackend(args.scheduler, args.connect_timeout) if args.scheduler
               else LocalBackend(min(args.workers, len(inputs))))
    fleet = FleetRun(plan, args.out, sign_key=args.sign_key,
                     force=args.refit or getattr(args, "force", False),
                     progress=ProgressBar(len(inputs)),
                     say=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        report = fleet.run(backend)
    except KeyboardInterrupt:
        print(f"edge-train fleet fit: interrupted; the fits that ended are in "
              f"{fleet.index_path} (run again to resume)", file=sys.stderr)
        return 130
    finally:
        backend.close()
    print(summary_table(report.outcomes), flush=True)
    ok = sum(o.status == "ok" for o in report.outcomes)
    skipped = sum(o.status == "skipped" for o in report.outcomes)
    print(f"{ok} fitted, {skipped} up to date, {len(report.failed)} failed in "
          f"{report.seconds:.1f}s; index: {report.index_path}", flush=True)
    return 1 if report.failed else 0


def run_status(args: argparse.Namespace) -> int:
    from edge.fleet_index import FleetIndexError, read_index
    from edge.fleet_view import (
        BrokerOptions,
        FleetViewError,
        collect,
        fleet_rows,
        problems,
        render_json,
        render_table,
    )

    index = None
    if args.index is not None:
        try:
            index = read_index(args.index)
        except FleetIndexError as exc:
            raise InputError(str(exc)) from None
    tls = bool(args.tls or args.ca or args.cert)
    options = BrokerOptions(
        host=args.host, port=args.port or (8883 if tls else 1883), prefix=args.prefix,
        username=args.username, password=os.environ.get(args.password_env),
        ca=args.ca, cert=args.cert, key=args.key, tls=tls)
    try:
        snapshot = collect(options, wait_s=args.wait)
    except FleetViewError as exc:
        raise InputError(str(exc)) from None
    rows = fleet_rows(snapshot, index, args.max_age)
    if args.json:
        print(render_json(rows))
    else:
        print(render_table(rows) if rows else "no agent has published a status document")
        for line in problems(rows):
            print(f"problem: {line}")
    return 1 if problems(rows) else 0
