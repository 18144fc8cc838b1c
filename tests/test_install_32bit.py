"""install-pi.sh on 32-bit Raspberry Pi OS (DRY_RUN, userland pretended with EDGE_USERLAND) and
pyproject's platform markers: armv7l/armv8l get tflite-runtime with numpy 1.x and no
onnxruntime; 64-bit keeps the lean wheels. The real install on those architectures is
`make pi-emulated` (tests/pi_emulated/check.sh), not CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "edge" / "deploy" / "install-pi.sh"


def install(userland: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--no-start", *args], capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "DRY_RUN": "1", "EDGE_USERLAND": userland})


def test_a_32_bit_userland_gets_the_system_numpy_and_pip_as_armv7l_or_armv8l() -> None:
    done = install("armhf")
    assert done.returncode == 0, done.stderr
    assert "32-bit userland (armhf" in done.stdout
    commands = [line[2:] for line in done.stdout.splitlines() if line.startswith("+ ")]
    pip = [c for c in commands if "-m pip install" in c]
    # the kernel here says x86_64, not armv7l: pip runs under setarch linux32 (armv8l on a Pi's
    # 64-bit kernel), so that pyproject's markers see a 32-bit ARM machine
    assert pip and all(c.startswith("setarch linux32 /opt/edge-agent/bin/python") for c in pip)
    if not Path("/opt/edge-agent/bin/python").exists():
        assert "python3 -m venv --system-site-packages /opt/edge-agent" in commands


def test_64_bit_keeps_the_lean_venv_and_armv6_is_refused() -> None:
    done = install("amd64")
    assert done.returncode == 0, done.stderr
    assert "setarch" not in done.stdout and "--system-site-packages" not in done.stdout
    refused = install("armel")
    assert refused.returncode == 1 and "ARMv6" in refused.stderr


MARKERS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def device_packages(machine: str) -> dict[str, str]:
    env = {"platform_machine": machine, "python_version": "3.11", "sys_platform": "linux"}
    out = {}
    for line in MARKERS:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            out[req.name] = str(req.specifier)
    return out


@pytest.mark.parametrize("machine", ["armv7l", "armv8l"])
def test_markers_32_bit_arm(machine: str) -> None:
    got = device_packages(machine)
    assert "onnxruntime" not in got and "ai-edge-litert" not in got
    assert got["tflite-runtime"] == "<2.15,>=2.14" and "<2" in got["numpy"]


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
def test_markers_64_bit(machine: str) -> None:
    got = device_packages(machine)
    assert {"onnxruntime", "ai-edge-litert"} <= set(got) and "tflite-runtime" not in got
    assert "<3" in got["numpy"]


def test_the_emulated_check_script_is_valid_bash_and_shellcheck_clean() -> None:
    script = REPO / "tests" / "pi_emulated" / "check.sh"
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    checker = shutil.which("shellcheck")
    if checker is not None:
        done = subprocess.run([checker, str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout
