"""Make an Ed25519 key pair for signing bundles: the private key goes to KEY (PEM, PKCS#8,
mode 0600; encrypted when $EDGE_TRAIN_KEY_PASSPHRASE is set), the public key to KEY.pub (PEM).
Keep the private key on the training machine; copy KEY.pub to each device and name it in
agent.toml as `[bundle] public_key`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "keygen"
HELP = "make an Ed25519 key pair for signing bundles (KEY and KEY.pub)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="KEY",
                        help="private key file to create; the public key is KEY.pub")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing key files")


def run(args: argparse.Namespace) -> int:
    from export.signing import generate_keypair

    private, public, kid = generate_keypair(args.out, force=args.force)
    print(f"private key {private} (mode 0600): keep it on this machine")
    print(f"public key  {public} (key id {kid}): copy it to the devices, "
          "[bundle] public_key in agent.toml")
    return 0
