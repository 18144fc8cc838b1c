"""`edge-train`: the workstation trainer's command line.

Each subcommand lives in its own module exposing `NAME`, `HELP`, `add_arguments(parser)` and
`run(args) -> int`; adding one is adding its module name to `COMMANDS`. Bad input or options
exit with code 2 and a one-line message, a failed fit with code 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from export.errors import FitError, InputError

COMMANDS = (
    "export.fit_command",
    "export.sign_command",
    "export.keygen_command",
    "export.evaluate",
    "export.fleet_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-train",
        description="Train an anomaly detector on sensor data and export a bundle for "
        "edge-agent (int8 TFLite LSTM autoencoder, ONNX distance scorers, manifest).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(module_name)
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the message
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args))
    except InputError as exc:
        print(f"edge-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FitError as exc:
        print(f"edge-train {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"edge-train {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
