"""The fleet rollout playbook (edge/deploy/fleet-playbook.yml): valid for ansible-playbook,
and run for real against this machine over a local connection, with install-pi.sh in its
dry-run mode (it prints the commands that would change the system)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.fleet_index import empty_index, write_index

DEPLOY = Path(__file__).resolve().parents[1] / "edge" / "deploy"
PLAYBOOK = DEPLOY / "fleet-playbook.yml"


def ansible_playbook() -> str:
    found = shutil.which("ansible-playbook") or str(Path(sys.executable).parent /
                                                    "ansible-playbook")
    if not Path(found).exists():
        pytest.skip("ansible-playbook is not installed (pip install ansible-core; in [dev])")
    return found


def playbook(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "LC_ALL": "C.UTF-8"}
    return subprocess.run([ansible_playbook(), str(PLAYBOOK), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def fleet(tmp_path: Path, sha: str | None = None) -> Path:
    """A fleet folder: pod-1's bundle (a manifest is all the playbook reads) and the index."""
    folder = tmp_path / "fleet"
    (folder / "pod-1").mkdir(parents=True, exist_ok=True)
    manifest = folder / "pod-1" / "manifest.json"
    manifest.write_text(json.dumps({"name": "pod-1", "version": "1"}))
    (folder / "pod-1" / "lstm_ae.tflite").write_bytes(b"model")
    index = empty_index()
    index["devices"]["pod-1"] = {
        "bundle": "pod-1", "name": "pod-1", "version": "1",
        "manifest_sha256": sha or hashlib.sha256(manifest.read_bytes()).hexdigest()}
    index["failed"]["pod-2"] = {"error": "no data rows (empty device)"}
    write_index(folder / "fleet.json", index)
    return folder


def inventory(tmp_path: Path, *hosts: str) -> Path:
    path = tmp_path / "inventory.ini"
    lines = ["[edge_pis]", *(f"{h} ansible_connection=local "
                             f"ansible_python_interpreter={sys.executable}" for h in hosts)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_local(tmp_path: Path, folder: Path, *hosts: str) -> subprocess.CompletedProcess[str]:
    return playbook(tmp_path, "-i", str(inventory(tmp_path, *hosts)),
                    "-e", f"fleet_dir={folder}", "-e", "edge_dry_run=true",
                    "-e", "edge_become=false", "-e", f"edge_stage={tmp_path / 'stage'}",
                    "-e", f"edge_state_dir={tmp_path / 'installed'}")


def test_the_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    done = playbook(tmp_path, "--syntax-check", "-i", "localhost,")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_local_run_copies_the_index_bundle_and_calls_install_pi(tmp_path: Path) -> None:
    folder = fleet(tmp_path)
    done = run_local(tmp_path, folder, "pod-1")
    assert done.returncode == 0, done.stdout + done.stderr
    stage = tmp_path / "stage"
    assert (stage / "bundle" / "lstm_ae.tflite").read_bytes() == b"model"
    assert os.access(stage / "install-pi.sh", os.X_OK)
    assert f"+ cp -r {stage}/bundle/. /var/lib/edge-agent/bundle.new/" in done.stdout
    assert "+ systemctl restart edge-agent.service" in done.stdout
    assert "failed=0" in done.stdout


def test_a_bundle_that_does_not_match_the_index_is_refused(tmp_path: Path) -> None:
    done = run_local(tmp_path, fleet(tmp_path, sha="0" * 64), "pod-1")
    assert done.returncode != 0
    assert "does not match its sha256 in the fleet index" in done.stdout
    assert "install-pi" not in done.stdout.split("does not match")[-1].split("PLAY RECAP")[0]


def test_a_device_without_a_bundle_fails_with_its_fit_error(tmp_path: Path) -> None:
    done = run_local(tmp_path, fleet(tmp_path), "pod-2")
    assert done.returncode != 0
    assert "pod-2 has no bundle" in done.stdout and "no data rows (empty device)" in done.stdout
