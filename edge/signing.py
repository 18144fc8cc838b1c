"""Ed25519 bundle signatures: `manifest.sig` signs the exact bytes of `manifest.json`.

The manifest holds the sha256 of every other file of the bundle, so one signature over its
bytes covers the whole bundle; `edge.bundle.load_bundle` checks the signature first and the
files' checksums after. The trainer signs (`edge-train sign` / `edge-train fit --sign-key`,
see `export/signing.py`); the device only verifies, with the public key named by
`[bundle] public_key` in agent.toml.

Formats:
- public key: a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, what `edge-train keygen` writes) or
  the raw 32 key bytes;
- `manifest.sig`: the 64 signature bytes, base64 on one line (what `edge-train sign`
  writes), or the raw 64 bytes.

Verification needs `cryptography`, which the plain device install does not pull in: install
it with ``pip install 'edge-anomaly[sign]'``. Without it, a configured public key is an error
(never a silently unchecked bundle).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from edge.bundle_files import MANIFEST_NAME, SIGNATURE_NAME, BundleError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

INSTALL_HINT = "install it on the device with: pip install 'edge-anomaly[sign]'"
RAW_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def key_id(raw_public_key: bytes) -> str:
    """A short fingerprint of a raw public key (first 16 hex digits of its sha256)."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def _ed25519() -> type[Ed25519PublicKey]:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:
        raise BundleError(
            "a bundle public key is configured ([bundle] public_key) but the `cryptography` "
            f"package needed to verify signatures is not installed; {INSTALL_HINT}") from exc
    return Ed25519PublicKey


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file or a file of its raw 32 bytes."""
    cls = _ed25519()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the bundle public key {path}: "
                          f"{exc.strerror or exc}") from exc
    if len(data) == RAW_KEY_BYTES:
        return cls.from_public_bytes(data)
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path} is not an Ed25519 public key (PEM or raw 32 bytes): "
                          f"{exc}") from exc
    if not isinstance(key, cls):
        raise BundleError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def read_signature(path: Path) -> bytes:
    """The 64 signature bytes of `manifest.sig` (base64 text or raw)."""
    data = path.read_bytes()
    if len(data) == SIGNATURE_BYTES:
        return data
    try:
        decoded = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != SIGNATURE_BYTES:
        raise BundleError(f"{path} is not an Ed25519 signature (64 bytes, raw or base64; "
                          f"found {len(data)} bytes)")
    return decoded


def verify_manifest_signature(bundle_dir: Path, manifest: bytes, public_key: Path) -> str:
    """Check `manifest.sig` over the exact `manifest` bytes; returns the key id.

    Raises BundleError saying why: no signature, unreadable key or signature, or a signature
    that does not verify (manifest changed after signing, or signed with another key).
    """
    key = load_public_key(public_key)
    kid = key_id(raw_public_bytes(key))
    sig_path = bundle_dir / SIGNATURE_NAME
    if not sig_path.is_file():
        raise BundleError(
            f"{bundle_dir} has no {SIGNATURE_NAME}, and a public key is configured "
            f"({public_key}, key id {kid}): refusing an unsigned bundle; sign it with "
            f"`edge-train sign {bundle_dir.name} --key PRIVATE.pem`")
    signature = read_signature(sig_path)
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise BundleError(
            f"{SIGNATURE_NAME} in {bundle_dir} does not verify with the public key "
            f"{public_key} (key id {kid}): {MANIFEST_NAME} was changed after signing, or the "
            f"bundle was signed with another key; refusing the bundle") from None
    return kid
