"""Trainer-side bundle signing: Ed25519 key pairs and `manifest.sig`.

The device side (`edge/signing.py`) verifies; this module makes keys and signatures:

    edge-train keygen --out keys/bundle-signing        # keys/bundle-signing (private, 0600)
                                                       # keys/bundle-signing.pub (public)
    edge-train sign BUNDLE_DIR --key keys/bundle-signing
    edge-train fit DATA.csv --out BUNDLE_DIR --sign-key keys/bundle-signing

Keys are PEM: the private key PKCS#8 (unencrypted, or encrypted with the passphrase in the
environment variable `EDGE_TRAIN_KEY_PASSPHRASE`), the public key SubjectPublicKeyInfo. The
signature covers the exact bytes of `manifest.json`, which lists the sha256 of every other
file, so the bundle's files are checked before signing and the signature is verified with
the device's own code after writing it.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge.bundle import MANIFEST_NAME, SIGNATURE_NAME, BundleError, load_bundle
from edge.signing import key_id, read_signature
from export.errors import InputError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PASSPHRASE_ENV = "EDGE_TRAIN_KEY_PASSPHRASE"
_HINT = "pip install 'edge-anomaly[sign]' (or [train])"


def _crypto() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError as exc:
        raise InputError(f"signing needs the `cryptography` package: {_HINT}") from exc


def public_key_path(private_key: Path) -> Path:
    return private_key.with_name(private_key.name + ".pub")


def generate_keypair(out: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new private key to `out` (mode 0600) and its public key to `out.pub`;
    returns (private, public, key id)."""
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = public_key_path(out)
    existing = [p for p in (out, public) if p.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]} exists; refusing to overwrite a key (use --force)")
    out.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
        else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8, encryption)
    if out.exists():
        out.unlink()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    os.chmod(out, 0o600)  # whatever the umask
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return out, public, key_id(raw)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the signing key {path}: {exc.strerror or exc}") from exc
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except TypeError as exc:  # encrypted without a passphrase, or the reverse
        raise InputError(f"{path}: {exc} (the passphrase is read from ${PASSPHRASE_ENV})"
                         ) from exc
    except ValueError as exc:
        raise InputError(f"{path} is not a PEM private key, or the passphrase is wrong: "
                         f"{exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key "
                         "(make one with `edge-train keygen`)")
    return key


def sign_bundle(bundle_dir: Path, private_key: Path) -> tuple[Path, str]:
    """Check the bundle's files, sign its manifest, verify the result; (sig path, key id)."""
    if not bundle_dir.is_dir():
        raise InputError(f"{bundle_dir} is not a bundle directory (sign the directory, then "
                         "make the .tar.gz of it)")
    key = load_private_key(private_key)
    try:
        load_bundle(bundle_dir)  # every file matches its sha256 before we vouch for it
    except BundleError as exc:
        raise InputError(f"not signing: {exc}") from exc
    from cryptography.hazmat.primitives import serialization

    manifest = (bundle_dir / MANIFEST_NAME).read_bytes()
    target = bundle_dir / SIGNATURE_NAME
    target.write_bytes(base64.b64encode(key.sign(manifest)) + b"\n")
    public = key.public_key()
    public.verify(read_signature(target), manifest)  # read back as the device reads it
    return target, key_id(public.public_bytes(serialization.Encoding.Raw,
                                              serialization.PublicFormat.Raw))
