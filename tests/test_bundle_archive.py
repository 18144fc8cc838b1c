"""A bundle given as `.tar.gz`: extracted to a temporary directory that goes away when the
bundle is closed, when it is refused, when a reload replaces it and when the agent stops."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import run
from edge.bundle import Bundle, BundleError, checksums, load_bundle, write_manifest
from edge.config import BundleConfig, load_config
from edge.reload import BundleReloader
from tests.agent_io import agent_toml
from tests.mosquitto import Broker
from tests.test_agent_reload import make_agent, point, reload_now, tampered, variant


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            recwarn: pytest.WarningsRecorder) -> Iterator[Path]:
    """Where load_bundle extracts archives during the test. An extraction left to garbage
    collection (a bundle dropped unclosed) warns, and fails the test."""
    where = tmp_path / "scratch"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    yield where
    implicit = [str(w.message) for w in recwarn if issubclass(w.category, ResourceWarning)
                and "Implicitly cleaning up" in str(w.message)]
    assert implicit == [], "a bundle was dropped without close()"


def extractions(scratch: Path) -> list[Path]:
    return sorted(scratch.glob("edge-bundle-*"))


def extraction_of(bundle: Bundle) -> Path:
    assert bundle.extracted is not None
    return Path(bundle.extracted.name)


def archive(bundle: Path, target: Path, *, flat: bool = False) -> Path:
    """`bundle` as a .tar.gz, in one top directory (as `tar czf x.tar.gz dir` makes it) or
    flat."""
    with tarfile.open(target, "w:gz") as tar:
        tar.add(bundle, arcname="." if flat else bundle.name)
    return target


@pytest.mark.parametrize("flat", [False, True])
def test_close_removes_the_extracted_archive(agent_bundle: Path, tmp_path: Path,
                                             scratch: Path, flat: bool) -> None:
    bundle = load_bundle(archive(agent_bundle, tmp_path / "b.tar.gz", flat=flat))
    assert extractions(scratch) and (bundle.path / "manifest.json").is_file()
    bundle.close()
    assert extractions(scratch) == []
    bundle.close()  # twice is harmless
    with load_bundle(archive(agent_bundle, tmp_path / "c.tgz", flat=flat)) as again:
        assert again.path.is_dir()
    assert extractions(scratch) == []
    load_bundle(agent_bundle).close()  # a directory is left alone
    assert (agent_bundle / "manifest.json").is_file()


def test_a_refused_archive_leaves_nothing(agent_bundle: Path, tmp_path: Path,
                                          scratch: Path) -> None:
    bad = archive(tampered(agent_bundle, tmp_path / "bad"), tmp_path / "bad.tar.gz")
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(bad)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not gzip")
    with pytest.raises(BundleError, match="cannot read bundle archive"):
        load_bundle(junk)
    assert extractions(scratch) == []


def test_a_reload_removes_the_replaced_and_the_refused_extractions(
        agent_bundle: Path, tmp_path: Path, scratch: Path) -> None:
    v1 = archive(agent_bundle, tmp_path / "v1.tar.gz")
    v2 = archive(variant(agent_bundle, tmp_path / "v2", version="2"), tmp_path / "v2.tar.gz")
    bad = archive(tampered(agent_bundle, tmp_path / "bad"), tmp_path / "bad.tar.gz")
    link = tmp_path / "current.tar.gz"
    point(link, v1)
    agent = make_agent(link, tmp_path)
    first = extraction_of(agent.bundle)
    assert extractions(scratch) == [first]

    point(link, v2)
    agent.apply_reload(reload_now(agent.reloader))
    assert agent.bundle.manifest.version == "2"
    assert extractions(scratch) == [extraction_of(agent.bundle)] != [first]

    point(link, bad)
    agent.apply_reload(reload_now(agent.reloader))
    assert agent.bundle.manifest.version == "2"  # kept, and the refused one is gone
    assert extractions(scratch) == [extraction_of(agent.bundle)]
    agent.outbox.close()
    agent.bundle.close()


def test_a_loaded_archive_whose_models_do_not_run_is_removed(
        agent_bundle: Path, tmp_path: Path, scratch: Path) -> None:
    broken = Path(shutil.copytree(agent_bundle, tmp_path / "broken"))
    (broken / "distance.onnx").write_bytes(b"not an onnx model")
    write_manifest(broken, load_bundle(agent_bundle).manifest.model_copy(
        update={"files": checksums(broken, ["distance.onnx", "lstm_ae.tflite"])}))
    path = archive(broken, tmp_path / "broken.tar.gz")
    result = reload_now(BundleReloader(BundleConfig(path=path, watch_interval_s=0)))
    assert not result.ok
    assert extractions(scratch) == []


@pytest.mark.slow
def test_the_agent_removes_its_extraction_when_it_stops(
        agent_bundle: Path, tmp_path: Path, scratch: Path, broker: Broker) -> None:
    path = agent_toml(tmp_path / "agent.toml", broker,
                      archive(agent_bundle, tmp_path / "b.tar.gz"), client_id="tgz",
                      sources='[[sources]]\ntype = "mqtt"\n')
    config = load_config(path)
    config.stdout.enabled = False
    stop = threading.Event()
    agent = threading.Thread(target=run, args=(config, stop), daemon=True)
    agent.start()
    deadline = time.monotonic() + 20
    while not extractions(scratch) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert extractions(scratch), "the agent did not load the archive"
    stop.set()
    agent.join(20)
    assert not agent.is_alive()
    assert extractions(scratch) == []
