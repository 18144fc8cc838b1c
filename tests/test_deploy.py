"""The Raspberry Pi kit: systemd unit, install script, sd_notify, and the sample agent.toml."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from edge.config import AgentConfig, MqttSource, SerialSource, StdinSource, load_config
from edge.systemd import Notifier
from tests.agent_fixtures import channel_names, normal_rows
from tests.mosquitto import Broker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEPLOY = Path(__file__).resolve().parents[1] / "edge" / "deploy"
UNIT = DEPLOY / "edge-agent.service"
INSTALL = DEPLOY / "install-pi.sh"
EXAMPLE = DEPLOY / "agent.example.toml"


# -- the unit --------------------------------------------------------------------------------
def unit_entries(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_runs_the_agent_hardened_with_the_watchdog() -> None:
    unit = unit_entries(UNIT.read_text())
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) >= 10
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"] == (
        "/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/agent.toml")
    assert service["User"] == "edge-agent" and "dialout" in service["SupplementaryGroups"]
    assert service["StandardOutput"] == "journal" and service["StandardError"] == "journal"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "true"
    assert "/var/lib/edge-agent" in service["ReadWritePaths"].split()
    assert service["WorkingDirectory"] == "/var/lib/edge-agent"
    assert "PrivateDevices" not in service  # would hide /dev/serial0
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0]


def test_unit_verifies_with_systemd_analyze(tmp_path: Path) -> None:
    """Every directive known to systemd (the binary path swapped for one that exists)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the static checks above still ran; CI images without systemd get only those
    unit = tmp_path / "edge-agent.service"
    unit.write_text(re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text(),
                           flags=re.M))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if str(unit) in line or "Unknown" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


# -- the install script ----------------------------------------------------------------------
def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1"}, timeout=60)


def test_install_script_is_valid_bash_and_shellcheck_clean() -> None:
    assert subprocess.run(["bash", "-n", str(INSTALL)], timeout=30).returncode == 0
    assert os.access(INSTALL, os.X_OK)
    checker = shutil.which("shellcheck")
    if checker is not None:
        done = subprocess.run([checker, str(INSTALL)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout


def test_install_script_dry_run_does_every_step_and_repeats_the_same(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    config = tmp_path / "agent.toml"
    config.write_text('[bundle]\npath = "/var/lib/edge-agent/bundle"\n')
    first = install("--bundle", str(bundle), "--config", str(config), "--no-start")
    assert first.returncode == 0, first.stderr
    commands = [line[2:] for line in first.stdout.splitlines() if line.startswith("+ ")]
    text = "\n".join(commands)
    if "useradd" in text:  # not when the user exists already
        assert "--system" in text and "/usr/sbin/nologin" in text
    assert "-m pip install --quiet --upgrade edge-anomaly" in text
    assert "install -d -m 0750 -o edge-agent -g edge-agent /var/lib/edge-agent" in text
    assert f"install -m 0640 -o root -g edge-agent {config} /etc/edge-agent/agent.toml" in text
    assert f"cp -r {bundle}/. /var/lib/edge-agent/bundle.new/" in text
    assert "mv /var/lib/edge-agent/bundle.new /var/lib/edge-agent/bundle" in text
    assert "systemctl enable edge-agent.service" in text
    assert "systemctl restart" not in text  # --no-start
    again = install("--bundle", str(bundle), "--config", str(config), "--no-start")
    assert again.returncode == 0 and again.stdout == first.stdout
    started = install("--package", "/src/edge-anomaly")
    assert "pip install --quiet --upgrade /src/edge-anomaly" in started.stdout
    assert "check-config /etc/edge-agent/agent.toml" in started.stdout
    assert "systemctl restart edge-agent.service" in started.stdout


def test_install_script_refuses_bad_arguments(tmp_path: Path) -> None:
    assert install("--bundle", str(tmp_path / "nope")).returncode == 1
    assert "does not exist" in install("--bundle", str(tmp_path / "nope")).stderr
    assert install("--frobnicate").returncode == 2
    assert "--bundle" in install("--help").stdout


# -- sd_notify -------------------------------------------------------------------------------
def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    return sock


def received(sock: socket.socket, timeout: float = 0.2) -> list[str]:
    out = []
    sock.settimeout(timeout)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except (TimeoutError, BlockingIOError):
        return out


def test_notifier_sends_ready_watchdog_stopping(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with notify_socket(path) as sock:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert notifier.enabled and notifier.watchdog_interval_s == 1.0
        assert notifier.ready("serving pod-1")
        assert notifier.watchdog(100.0) and not notifier.watchdog(100.5)
        assert notifier.watchdog(101.0)
        assert notifier.stopping()
        assert received(sock) == ["READY=1\nSTATUS=serving pod-1", "WATCHDOG=1", "WATCHDOG=1",
                                  "STOPPING=1"]
        notifier.close()


def test_notifier_abstract_socket_and_inert_cases(tmp_path: Path) -> None:
    name = f"edge-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier(f"@{name}").ready()
        assert received(sock) == ["READY=1"]
    inert = Notifier.from_env({})
    assert not inert.enabled and not inert.ready() and not inert.watchdog() and not inert.stopping()
    other_pid = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000",
                                   "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval_s == 0.0  # the watchdog is another process's
    gone = Notifier(str(tmp_path / "missing.sock"), 1_000_000)
    assert not gone.ready() and not gone.watchdog(5.0)  # logged once, never raised


@pytest.mark.slow
def test_agent_notifies_systemd_from_its_main_loop(broker: Broker, agent_bundle: Path,
                                                   tmp_path: Path) -> None:
    import json

    config = tmp_path / "agent.toml"
    config.write_text(f'[bundle]\npath = "{agent_bundle}"\n[mqtt]\nhost = "{broker.host}"\n'
                      f'port = {broker.port}\nclient_id = "agent-sd"\n'
                      '[[sources]]\ntype = "stdin"\ndevice = "pod"\n')
    path = tmp_path / "notify.sock"
    with notify_socket(path) as sock:
        env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000",
               "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                                 str(config)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env,
                                cwd=Path(__file__).resolve().parents[1])
        try:
            assert sock.recv(4096).decode().startswith("READY=1")
            assert proc.stdin is not None
            now = time.time()
            for i, row in enumerate(normal_rows(40, seed=3)):
                line = {"ts": now - 40 + i, **dict(zip(channel_names(), row.tolist(),
                                                       strict=True))}
                proc.stdin.write((json.dumps(line) + "\n").encode())
            proc.stdin.flush()
            time.sleep(1.0)  # main loop turns: watchdog pings every 0.2 s
            proc.stdin.close()  # end of input: the agent stops
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        messages = received(sock)
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1"


# -- the sample agent.toml -------------------------------------------------------------------
def example_blocks(text: str) -> list[tuple[str, str]]:
    """(header, body) for each `[section]` / `[[sources]]`, commented-out ones included."""
    blocks: list[tuple[str, str]] = [("", "")]
    for line in text.splitlines():
        header = re.match(r"^#?\s*(\[\[?[\w.]+\]\]?)\s*(#.*)?$", line)
        if header:
            blocks.append((header.group(1), ""))
        else:
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + line + "\n")
    return blocks


def documents(body: str, key: str) -> bool:
    return re.search(rf"^#?\s*{re.escape(key)}\s*=", body, re.M) is not None


def sections(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel]]:
    """`[mqtt]` -> MqttConfig, `[mqtt.tls]` -> TlsConfig, ... (the sources separately)."""
    from edge.config import _model_of

    out: dict[str, type[BaseModel]] = {}
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None and name != "sources":
            out[f"[{prefix}{name}]"] = sub
            out.update(sections(sub, f"{prefix}{name}."))
    return out


def test_example_documents_every_field_in_its_own_section() -> None:
    blocks = example_blocks(EXAMPLE.read_text())
    by_header: dict[str, str] = {}
    for header, body in blocks:
        by_header[header] = by_header.get(header, "") + body
    missing = []
    for header, model in sections(AgentConfig).items():
        assert header in by_header, f"{header} is not in the example"
        missing += [f"{header} {name}" for name in model.model_fields
                    if not documents(by_header[header], name)
                    and f"{header[:-1]}.{name}]" not in by_header]  # a [mqtt.tls] table
    source_bodies = [body for header, body in blocks if header == "[[sources]]"]
    for kind in (MqttSource, SerialSource, StdinSource):
        tag = kind.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
        body = next((b for b in source_bodies if re.search(rf'type = "{tag}"', b)), None)
        assert body is not None, f"no [[sources]] example of type {tag}"
        missing += [f"[[sources]] {tag} {name}" for name in kind.model_fields
                    if not documents(body, name)]
    assert not missing, f"not documented in agent.example.toml: {missing}"


def test_example_values_are_the_defaults() -> None:
    """What the example sets (uncommented) is what the agent does without it."""
    data: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
    config = load_config(EXAMPLE, environ={})
    defaults = AgentConfig.model_validate({"bundle": {"path": "bundle"}})
    differ = []
    for section, values in data.items():
        if section in ("bundle", "sources") or not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, dict):
                continue
            got = getattr(getattr(defaults, section), key)
            got = str(got) if isinstance(got, Path) else got
            if got != value:
                differ.append(f"[{section}] {key} = {value!r} (default {got!r})")
    assert not differ, differ
    assert config.sources == defaults.sources
