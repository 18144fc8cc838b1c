"""`edge-agent`: run the agent, check its config, replay a file through the pipeline."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

from edge import __version__
from edge.log_setup import LOG_LEVELS, setup_logging


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
    add_capture_parser(sub)
    return parser


# -- run -------------------------------------------------------------------------------------
def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT",
                       description="Run the agent: read the sources, score, publish alerts. "
                                   "Exit 0 on SIGTERM/SIGINT or at the end of a stdin-only "
                                   "input, 2 when the config or bundle is refused, 3 when a "
                                   "source failed 5 times within 60 s.")
    p.add_argument("--config", "-c", type=Path, required=True, metavar="AGENT_TOML",
                   help="the agent's config file (see edge/deploy/agent.example.toml)")
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                   help="override [log] level from the config")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from edge.agent import run
    from edge.bundle import BundleError
    from edge.config import ConfigError, file_warnings, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        _print_problems(error.source, error.problems)
        return 2
    setup_logging(args.log_level or config.log.level)
    for warning in file_warnings(args.config, config):
        logging.getLogger("edge.agent").warning("%s", warning)
    from edge.capture import CaptureError
    from edge.outbox import OutboxError

    try:
        return run(config)
    except (BundleError, ImportError) as error:
        logging.getLogger("edge.agent").error("bundle refused: %s", error)
        return 2
    except (OutboxError, CaptureError) as error:
        logging.getLogger("edge.agent").error("%s", error)
        return 2


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
    from edge.config import ConfigError, file_warnings, load_config, summary
    from edge.engine import ScoringEngine

    try:
        config = load_config(args.config)
    except ConfigError as error:
        _print_problems(error.source, error.problems, sys.stdout)
        return 2
    try:
        bundle = load_bundle(config.bundle.path, config.bundle.public_key)
        engine = ScoringEngine(bundle, config.bundle.threads,  # the runtimes load the models
                               config.bundle.distance_runtime)
    except (BundleError, ImportError, RuntimeError, ValueError) as error:
        _print_problems(str(args.config),
                        [f"bundle.path = {str(config.bundle.path)!r}: {error}"], sys.stdout)
        return 2
    print(f"{args.config}: OK")
    for line in summary(config, bundle):
        print(f"  {line}")
    for part, how in engine.runtimes.items():
        print(f"  runtime   {part}: {how}")
    for warning in file_warnings(args.config, config):
        print(f"  warning: {warning}")
    return 0


# -- replay ----------------------------------------------------------------------------------
def add_replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`replay --bundle DIR --input DATA.csv --out SCORES.csv`: lives in edge.replay."""
    from edge.replay import add_replay_parser as add

    add(sub)


# -- capture ---------------------------------------------------------------------------------
def add_capture_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`capture export|info`: lives in edge.capture_cli."""
    from edge.capture_cli import add_capture_parser as add

    add(sub)


def _print_problems(source: str, problems: list[str], stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    print(f"{source}: {len(problems)} problem(s)", file=stream)
    for line in problems:
        print(f"  {line}", file=stream)


if __name__ == "__main__":
    sys.exit(main())
