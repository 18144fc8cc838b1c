"""`edge-agent`: run the agent, check its config, replay a file through the pipeline."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edge import __version__

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Score local sensor streams with a trained bundle and publish MQTT alerts.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_parser(sub)
    add_check_config_parser(sub)
    add_replay_parser(sub)
    return parser


# -- run -------------------------------------------------------------------------------------
def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT",
                       description="Run the agent: read the sources, score, publish alerts.")
    p.add_argument("--config", "-c", type=Path, required=True, metavar="AGENT_TOML",
                   help="the agent's config file (see edge/deploy/agent.example.toml)")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                   help="override [log] level from the config")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.agent import run
    from edge.bundle import BundleError
    from edge.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        _print_problems(error.source, error.problems)
        return 2
    setup_logging(args.log_level or config.log.level)
    try:
        return run(config)
    except BundleError as error:
        logging.getLogger("edge.agent").error("bundle refused: %s", error)
        return 2


def setup_logging(level: str) -> None:
    """Logs on stderr (stdout carries the JSON lines sink), one line per event."""
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", force=True)
    logging.getLogger("edge.mqtt.paho").setLevel(max(logging.getLogger().level, logging.INFO))


# -- check-config ----------------------------------------------------------------------------
def add_check_config_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config", help="validate a config and load its bundle; exit 2 on any problem",
        description="Print every problem as `key.path = value: reason` and exit 2, or a "
                    "summary of the effective settings and exit 0. Also loads the bundle "
                    "and its models.")
    p.add_argument("config", type=Path, metavar="AGENT_TOML", help="the config file to check")
    p.set_defaults(func=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    from edge.bundle import BundleError, load_bundle
    from edge.config import ConfigError, load_config, summary
    from edge.engine import ScoringEngine

    try:
        config = load_config(args.config)
    except ConfigError as error:
        _print_problems(error.source, error.problems)
        return 2
    try:
        bundle = load_bundle(config.bundle.path, config.bundle.public_key)
        ScoringEngine(bundle, config.bundle.threads)  # the runtimes load the models
    except (BundleError, ImportError, RuntimeError, ValueError) as error:
        _print_problems(str(args.config), [f"bundle.path = {str(config.bundle.path)!r}: {error}"])
        return 2
    print(f"{args.config}: OK")
    for line in summary(config, bundle):
        print(f"  {line}")
    return 0


# -- replay ----------------------------------------------------------------------------------
# NOTE: rebuilt from edge/replay.py's API after this file was overwritten by accident during
# concurrent work; the agent-core owner of `replay` should review and replace it as needed.
def add_replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay", help="run the live pipeline over a CSV file as fast as it goes",
        description="Score every row of a sensor CSV with the bundle, exactly as the agent "
                    "would live, and write per-row scores and the alert events.")
    p.add_argument("bundle", type=Path, help="bundle directory or .tar.gz")
    p.add_argument("input", type=Path, help="sensor CSV (time column + channel columns)")
    p.add_argument("--scores", type=Path, metavar="SCORES_CSV",
                   help="write per-row scores and decisions here")
    p.add_argument("--alerts", type=Path, metavar="ALERTS_JSONL",
                   help="write the alert events as JSON lines here")
    p.add_argument("--time-column", help="name of the time column (found automatically)")
    p.add_argument("--device", default="replay", help="device id used in alert ids")
    p.add_argument("--stride", type=int, default=None,
                   help="score every n-th window (the manifest's stride by default)")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from edge.bundle import BundleError, load_bundle
    from edge.decide import BundleInfo
    from edge.replay import replay_table, time_cells, write_alerts_jsonl, write_scores_csv
    from edge.table import TableError, read_table

    try:
        bundle = load_bundle(args.bundle)
        table = read_table(args.input, time_column=args.time_column)
        result = replay_table(bundle, table, device=args.device,
                              stride=args.stride or bundle.manifest.window.stride)
    except (BundleError, TableError, ValueError) as error:
        print(f"edge-agent replay: {error}", file=sys.stderr)
        return 2
    if args.scores is not None:
        write_scores_csv(args.scores, result, time_cells(table), table.time_column,
                         table.labels)
    if args.alerts is not None:
        write_alerts_jsonl(args.alerts, result.events, BundleInfo.from_bundle(bundle),
                           __version__)
    print(f"{len(result.timestamps)} rows in {result.elapsed_s:.2f} s "
          f"({result.rows_per_s:.0f} rows/s), {result.alerts} alert(s), bad input "
          f"{sum(result.bad.values())}", file=sys.stderr)
    return 0


def _print_problems(source: str, problems: list[str]) -> None:
    print(f"{source}: {len(problems)} problem(s)", file=sys.stderr)
    for line in problems:
        print(f"  {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
