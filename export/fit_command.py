"""Train on a CSV of normal operation (labelled anomalies are left out) and write a bundle.

The options mirror `export.config.FitConfig` field for field.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from export.config import FitConfig
from export.errors import InputError

NAME = "fit"
HELP = "train on a CSV and write a bundle"
GROUPS = {
    "data": "data",
    "preprocessing": "preprocessing",
    "models": "models",
    "thresholds": "thresholds",
    "ensemble": "ensemble and decision defaults",
    "decision": "ensemble and decision defaults",
    "checks": "checks",
    "output": "output",
}


METAVARS = {int: "N", float: "X", str: "TEXT"}


def _type_of(default: object) -> type:
    return type(default) if isinstance(default, (int, float, str)) else str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        type=Path,
        metavar="DATA.csv",
        help="training data: a time column and numeric channels",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="BUNDLE_DIR", help="bundle directory to create"
    )
    parser.add_argument(
        "--sign-key", type=Path, metavar="PRIVATE.pem",
        help="sign the bundle (manifest.sig) with this Ed25519 key from `edge-train keygen`",
    )
    add_config_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per `FitConfig` field (also used by `edge-train fleet fit`)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    hints = typing.get_type_hints(FitConfig)
    for f in fields(FitConfig):
        title = GROUPS[f.metadata["group"]]
        group = groups.setdefault(title, parser.add_argument_group(title))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        kwargs: dict[str, object] = {
            "dest": f.name,
            "help": f.metadata["help"],
            "default": argparse.SUPPRESS,
        }
        if hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kind = _type_of(default)
            kwargs["type"] = f.metadata.get("parse") or kind
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = f.metadata.get("metavar") or METAVARS.get(kind, "VALUE")
        if default is not None and not isinstance(default, bool):
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kwargs["help"] = f"{kwargs['help']} (default: {shown})"
        group.add_argument(flag, **kwargs)  # type: ignore[arg-type]


def config_from_args(args: argparse.Namespace) -> FitConfig:
    values = {f.name: getattr(args, f.name) for f in fields(FitConfig) if hasattr(args, f.name)}
    return FitConfig(**values)


def run(args: argparse.Namespace) -> int:
    from export.fit import fit_bundle

    config = config_from_args(args)
    if not args.data.is_file():
        raise InputError(f"DATA.csv {args.data} does not exist or is not a file")

    def show(line: str) -> None:
        print(line, flush=True)

    sign_key = getattr(args, "sign_key", None)
    if sign_key is not None:
        from export.signing import load_private_key

        load_private_key(sign_key)  # a bad key fails before training, not after
    print(f"edge-train fit: {args.data} -> {args.out}", flush=True)
    result = fit_bundle(args.data, args.out, config, progress=show)
    if sign_key is not None:
        from export.signing import sign_bundle

        target, kid = sign_bundle(result.out_dir, sign_key)
        print(f"signed: {target} (key id {kid})", flush=True)
    if result.report is not None:
        print(f"report: {result.report}", flush=True)
    sys.stdout.flush()
    for text in result.warnings:
        print(f"edge-train fit: warning: {text}", file=sys.stderr, flush=True)
    return 0
