"""Sign a bundle: write `manifest.sig`, an Ed25519 signature of the exact bytes of
`manifest.json` (which holds the sha256 of every other file). The bundle's files are checked
against the manifest first. An agent whose `[bundle] public_key` is set refuses a bundle
whose signature is missing or does not verify. Re-run after any change to the manifest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "sign"
HELP = "sign a bundle's manifest with an Ed25519 private key (writes manifest.sig)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE_DIR", help="the bundle directory")
    parser.add_argument("--key", type=Path, required=True, metavar="PRIVATE.pem",
                        help="Ed25519 private key from `edge-train keygen` (passphrase, if "
                             "any, from $EDGE_TRAIN_KEY_PASSPHRASE)")


def run(args: argparse.Namespace) -> int:
    from export.signing import sign_bundle

    target, kid = sign_bundle(args.bundle, args.key)
    print(f"signed {args.bundle}: {target.name} (key id {kid})")
    return 0
