"""Bundle signatures: `edge-train keygen` / `sign` / `fit --sign-key` and the device's check."""

from __future__ import annotations

import builtins
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge.bundle import MANIFEST_NAME, SIGNATURE_NAME, BundleError, load_bundle
from export.cli import main as train_main

pytest.importorskip("cryptography")


@pytest.fixture
def bundle(agent_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(agent_bundle, tmp_path / "bundle"))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    assert train_main(["keygen", "--out", str(tmp_path / "keys" / "signing")]) == 0
    return tmp_path / "keys" / "signing", tmp_path / "keys" / "signing.pub"


def test_keygen_writes_a_private_key_only_its_owner_can_read(
        keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert train_main(["keygen", "--out", str(private)]) == 2  # never overwrites silently
    assert "refusing to overwrite" in capsys.readouterr().err


def test_signed_bundle_loads_with_pem_and_raw_keys(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    private, public = keys
    assert train_main(["sign", str(bundle), "--key", str(private)]) == 0
    assert "key id" in capsys.readouterr().out
    loaded = load_bundle(bundle, public_key=public)
    assert loaded.signed
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_public_key,
    )

    raw = tmp_path / "raw.pub"
    raw.write_bytes(load_pem_public_key(public.read_bytes()).public_bytes(
        Encoding.Raw, PublicFormat.Raw))
    assert load_bundle(bundle, public_key=raw).signed
    assert not load_bundle(bundle).signed  # no key configured: the signature is not checked


def test_tampered_manifest_is_refused(bundle: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert train_main(["sign", str(bundle), "--key", str(private)]) == 0
    manifest = bundle / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes().replace(b'"version": "1"', b'"version": "2"'))
    load_bundle(bundle)  # still well-formed and its files match: only the signature catches it
    with pytest.raises(BundleError, match=r"does not verify.*changed after signing"):
        load_bundle(bundle, public_key=public)


def test_tampered_model_is_refused_even_with_a_good_signature(
        bundle: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert train_main(["sign", str(bundle), "--key", str(private)]) == 0
    model = bundle / "distance.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"distance\.onnx does not match its sha256"):
        load_bundle(bundle, public_key=public)


def test_wrong_key_is_refused(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, _ = keys
    assert train_main(["keygen", "--out", str(tmp_path / "other")]) == 0
    assert train_main(["sign", str(bundle), "--key", str(private)]) == 0
    with pytest.raises(BundleError, match=r"does not verify with the public key.*another key"):
        load_bundle(bundle, public_key=tmp_path / "other.pub")


def test_missing_or_garbled_signature_is_refused_when_a_key_is_configured(
        bundle: Path, keys: tuple[Path, Path]) -> None:
    _, public = keys
    with pytest.raises(BundleError, match=r"no manifest\.sig.*refusing an unsigned bundle"):
        load_bundle(bundle, public_key=public)
    (bundle / SIGNATURE_NAME).write_text("not a signature\n")
    with pytest.raises(BundleError, match="is not an Ed25519 signature"):
        load_bundle(bundle, public_key=public)


def test_bad_public_key_files(bundle: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, _ = keys
    assert train_main(["sign", str(bundle), "--key", str(private)]) == 0
    with pytest.raises(BundleError, match="cannot read the bundle public key"):
        load_bundle(bundle, public_key=tmp_path / "absent.pub")
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(BundleError, match="not an Ed25519 public key"):
        load_bundle(bundle, public_key=junk)
    with pytest.raises(BundleError, match="not an Ed25519 public key"):
        load_bundle(bundle, public_key=private)  # the private key by mistake


def test_missing_cryptography_names_the_extra(
        bundle: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, public = keys
    real_import = builtins.__import__

    def no_cryptography(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("cryptography"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cryptography)
    with pytest.raises(BundleError, match=r"pip install 'edge-anomaly\[sign\]'"):
        load_bundle(bundle, public_key=public)


def test_sign_refuses_a_bundle_whose_files_do_not_match(
        bundle: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    private, _ = keys
    (bundle / "lstm_ae.tflite").write_bytes(b"changed")
    assert train_main(["sign", str(bundle), "--key", str(private)]) == 2
    assert "not signing" in capsys.readouterr().err
    assert not (bundle / SIGNATURE_NAME).exists()


def test_encrypted_private_key_needs_its_passphrase(
        bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EDGE_TRAIN_KEY_PASSPHRASE", "correct horse")
    assert train_main(["keygen", "--out", str(tmp_path / "enc")]) == 0
    assert b"ENCRYPTED" in (tmp_path / "enc").read_bytes()
    assert train_main(["sign", str(bundle), "--key", str(tmp_path / "enc")]) == 0
    assert load_bundle(bundle, public_key=tmp_path / "enc.pub").signed
    monkeypatch.delenv("EDGE_TRAIN_KEY_PASSPHRASE")
    assert train_main(["sign", str(bundle), "--key", str(tmp_path / "enc")]) == 2
    assert "EDGE_TRAIN_KEY_PASSPHRASE" in capsys.readouterr().err


def test_check_config_reports_the_signature(
        bundle: Path, keys: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main as agent_main

    private, public = keys
    config = tmp_path / "agent.toml"
    config.write_text(f'[bundle]\npath = "{bundle}"\npublic_key = "{public}"\n')
    assert agent_main(["check-config", str(config)]) == 2
    assert "refusing an unsigned bundle" in capsys.readouterr().out
    assert train_main(["sign", str(bundle), "--key", str(private)]) == 0
    capsys.readouterr()
    assert agent_main(["check-config", str(config)]) == 0
    assert "signature verified" in capsys.readouterr().out


def test_fit_sign_key_signs_the_new_bundle(
        agent_bundle: Path, keys: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`fit --sign-key` wiring, with the training itself stubbed out (it is tested elsewhere)."""
    import export.fit

    private, public = keys
    data = tmp_path / "data.csv"
    data.write_text("timestamp,a\n")
    out = tmp_path / "fitted"
    calls: list[Path] = []

    def fake_fit(_data: Path, target: Path, *_args: Any, **_kw: Any) -> Any:
        calls.append(target)
        shutil.copytree(agent_bundle, target)
        return SimpleNamespace(out_dir=target, report=None, warnings=[])

    monkeypatch.setattr(export.fit, "fit_bundle", fake_fit)
    assert train_main(["fit", str(data), "--out", str(tmp_path / "never"),
                       "--sign-key", str(tmp_path / "absent.pem")]) == 2
    assert "cannot read the signing key" in capsys.readouterr().err
    assert calls == []  # a bad key fails before any training
    assert train_main(["fit", str(data), "--out", str(out), "--sign-key", str(private)]) == 0
    assert "signed:" in capsys.readouterr().out
    assert load_bundle(out, public_key=public).signed
