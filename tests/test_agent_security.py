"""`edge-agent run` against a Mosquitto with TLS, a password file and an ACL, started here.

Users (the ACL in `ACL` is the deployment example of the reliability notes):
- `edge-agent`: the agent; writes its topics, reads readings and its cmd topics;
- `sensor`: writes readings; `dashboard`: reads everything under the prefix;
- `operator`: may send commands; `intruder`: a valid account with no rights here.

Two TLS listeners share the users and the ACL: one with passwords only, one that also
requires a client certificate (mutual TLS). Mosquitto 2.0 enforces read rights when it
delivers, not when it answers SUBSCRIBE (the SUBACK grants QoS 1), so the checks are that
nothing arrives; a refused PUBLISH gets PUBACK reason 0x87 "Not authorized" over MQTT v5.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.agent_io import PREFIX, AgentProcess, agent_toml, live_lines
from tests.mosquitto import Broker, free_port
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.slow
pytest.importorskip("cryptography")

PASSWORDS = {"edge-agent": "agent-pw-7", "sensor": "sensor-pw", "dashboard": "dash-pw",
             "operator": "op-pw", "intruder": "intr-pw"}
ACL = f"""# the agent: its own topics out, readings and commands in
user edge-agent
topic write {PREFIX}/+/alert
topic write {PREFIX}/+/status
topic write {PREFIX}/+/metrics
topic write {PREFIX}/+/event
topic write {PREFIX}/+/state
topic write homeassistant/#
topic read {PREFIX}/+/cmd
topic read sensors/+/readings

user sensor
topic write sensors/+/readings

user dashboard
topic read {PREFIX}/#

user operator
topic write {PREFIX}/+/cmd
topic read {PREFIX}/+/event

user intruder
topic read somewhere-else/#
"""
MQTT_SOURCE = '[[sources]]\ntype = "mqtt"\ntopic = "sensors/+/readings"\nqos = 1\n'


@dataclass
class SecureBroker:
    broker: Broker
    mtls_port: int
    pki: Pki

    def client(self, user: str, *, client_id: str | None = None, cert: bool = False,
               password: str | None = None) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or user,
                             protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(self.pki.ca),
                       certfile=str(self.pki.client_cert) if cert else None,
                       keyfile=str(self.pki.client_key) if cert else None)
        client.username_pw_set(user, password or PASSWORDS[user])
        return client


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureBroker]:
    directory = Path(tempfile.mkdtemp(prefix="mosq-sec-"))
    directory.chmod(0o755)
    pki = make_pki(directory)
    pki.server_key.chmod(0o644)  # read by mosquitto, which may run as another user
    passwords = directory / "passwords"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwords),
                        user, password], check=True, capture_output=True)
    passwords.chmod(0o644)
    acl = directory / "acl"
    acl.write_text(ACL)
    acl.chmod(0o644)
    port, mtls_port = free_port(), free_port()
    tls = f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
    listener = (f"listener {port} 127.0.0.1\n{tls}"
                f"listener {mtls_port} 127.0.0.1\n{tls}require_certificate true\n"
                f"allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"
                "set_tcp_nodelay true\n")
    with Broker(port=port, listener=listener) as broker:
        yield SecureBroker(broker, mtls_port, pki)


class Recorder:
    """A connected MQTT v5 client recording messages, SUBACK and PUBACK reason codes."""

    def __init__(self, client: mqtt.Client, host: str, port: int) -> None:
        self.client = client
        self.messages: list[tuple[str, bytes]] = []
        self.subacks: list[list[int]] = []
        self.pubacks: dict[int, int] = {}
        self._lock = threading.Lock()
        client.on_message = self._message
        client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.append(
            [c.value for c in codes])
        client.on_publish = self._puback
        connected = threading.Event()
        client.on_connect = lambda _c, _u, _f, reason, _p: (
            None if reason.is_failure else connected.set())
        client.connect(host, port, keepalive=10)
        client.loop_start()
        assert connected.wait(10), "test client did not connect"

    def _message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _puback(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self.pubacks[mid] = reason.value

    def subscribe(self, topic: str) -> list[int]:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.subacks) > before, 5, f"SUBACK for {topic}")
        return self.subacks[-1]

    def publish(self, topic: str, payload: bytes | str) -> int:
        """QoS 1; returns the PUBACK reason code (0x87 = not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, 5, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def events(self, agent: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on(f"{PREFIX}/{agent}/event")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def secure_toml(path: Path, secure: SecureBroker, bundle: Path, client_id: str, *,
                port: int | None = None, ca: Path | None = None, cert: bool = False,
                password_line: str = "") -> Path:
    tls = f'\n[mqtt.tls]\nca = "{ca or secure.pki.ca}"\n'
    if cert:
        tls += f'cert = "{secure.pki.client_cert}"\nkey = "{secure.pki.client_key}"\n'
    config = agent_toml(path, secure.broker, bundle, client_id=client_id, sources=MQTT_SOURCE,
                        mqtt=f'username = "edge-agent"\n{password_line}', extra=tls)
    if port is not None:
        config.write_text(config.read_text().replace(f"port = {secure.broker.port}",
                                                     f"port = {port}"))
    return config


def start(agents: list[AgentProcess], config: Path, env: dict[str, str] | None = None
          ) -> AgentProcess:
    agent = AgentProcess(config, config.parent / f"{config.stem}.log", env=env)
    agents.append(agent)
    return agent


def test_acl_lets_the_agent_work_and_keeps_an_intruder_out(
        secure: SecureBroker, agent_bundle: Path, tmp_path: Path,
        agents: list[AgentProcess]) -> None:
    host, port = "localhost", secure.broker.port
    dashboard = Recorder(secure.client("dashboard"), host, port)
    intruder = Recorder(secure.client("intruder"), host, port)
    operator = Recorder(secure.client("operator"), host, port)
    try:
        assert dashboard.subscribe(f"{PREFIX}/#") == [1]
        assert operator.subscribe(f"{PREFIX}/+/event") == [1]
        # granted at SUBACK time by Mosquitto 2.0 (0x80 or 0x87 would be fine too) ...
        for topic in (f"{PREFIX}/+/alert", f"{PREFIX}/#", "sensors/#"):
            assert intruder.subscribe(topic)[0] in (1, 0x80, 0x87)
        config = secure_toml(tmp_path / "agent.toml", secure, agent_bundle, "agent-sec")
        config.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = "localhost"'))
        agent = start(agents, config, env={"EDGE_AGENT_MQTT_PASSWORD": PASSWORDS["edge-agent"]})
        wait_for(lambda: b"online" in dashboard.on(f"{PREFIX}/agent-sec/status"), 30,
                 "the agent online over TLS with its password")

        sensor = Recorder(secure.client("sensor"), host, port)
        for line in live_lines([(20, None), (25, 3), (5, None)], seed=4, period=0.01):
            assert sensor.publish("sensors/pod-s/readings", line.strip()) == 0
        sensor.close()
        wait_for(lambda: dashboard.on(f"{PREFIX}/pod-s/alert"), 15, "an alert for pod-s")
        assert json.loads(dashboard.on(f"{PREFIX}/pod-s/alert")[0])["state"] == "start"

        # ... but nothing is delivered to the intruder, and its publishes are refused
        assert intruder.publish(f"{PREFIX}/agent-sec/cmd", '{"action": "reload"}') == 0x87
        assert intruder.publish(f"{PREFIX}/pod-s/cmd", '{"action": "reload"}') == 0x87
        assert intruder.publish("sensors/pod-s/readings", '{"ch0": 1e9}') == 0x87
        assert intruder.publish(f"{PREFIX}/pod-s/alert", '{"state": "end"}') == 0x87
        time.sleep(2.5)  # two metrics intervals: a reload would have happened by now
        assert intruder.messages == []
        assert dashboard.events("agent-sec") == []
        metrics = json.loads(dashboard.on(f"{PREFIX}/agent-sec/metrics")[-1])
        assert metrics["commands"] == {"reload": 0, "rejected": 0}
        assert metrics["reloads"] == {"ok": 0, "failed": 0, "last_error": None}

        # the operator may: the same command reloads, and the outcome comes back as an event
        assert operator.publish(f"{PREFIX}/agent-sec/cmd",
                                '{"action": "reload", "id": "op-1"}') == 0
        wait_for(lambda: operator.events("agent-sec"), 15, "the reload event")
        event = operator.events("agent-sec")[0]
        assert event["event"] == "reloaded" and event["trigger"] == "cmd agent-sec id op-1"
        assert intruder.messages == []

        agent.signal(signal.SIGTERM)
        assert agent.wait(20) == 0
        log = agent.log()
        assert PASSWORDS["edge-agent"] not in log
        assert "refused the subscription" not in log  # the agent's own rights suffice
    finally:
        for client in (dashboard, intruder, operator):
            client.close()


def test_wrong_password_wrong_ca_and_missing_client_cert_fail_clearly(
        secure: SecureBroker, agent_bundle: Path, tmp_path: Path,
        agents: list[AgentProcess]) -> None:
    """Four agents at once; each must say what is wrong on stderr (and keep retrying)."""
    env = {"EDGE_AGENT_MQTT_PASSWORD": PASSWORDS["edge-agent"]}
    cases: dict[str, tuple[Path, dict[str, str]]] = {}
    wrong_pw = secure_toml(tmp_path / "wrong-pw.toml", secure, agent_bundle, "a-pw",
                           password_line='password = "not-the-password"')
    wrong_pw.chmod(0o644)  # a password in a world-readable file: warned about
    cases["wrong-pw"] = (wrong_pw, {})
    cases["wrong-ca"] = (secure_toml(tmp_path / "wrong-ca.toml", secure, agent_bundle, "a-ca",
                                     ca=secure.pki.other_ca), env)
    cases["no-cert"] = (secure_toml(tmp_path / "no-cert.toml", secure, agent_bundle, "a-nc",
                                    port=secure.mtls_port), env)
    cases["mtls"] = (secure_toml(tmp_path / "mtls.toml", secure, agent_bundle, "a-mtls",
                                 port=secure.mtls_port, cert=True), env)
    running = {name: start(agents, config, env=e) for name, (config, e) in cases.items()}

    log = running["wrong-pw"].wait_log("broker refused the connection", 40)
    assert "check mqtt.username and the password" in log and "not-the-password" not in log
    assert (f"{wrong_pw} holds the MQTT password and is readable by group/others (mode 0644): "
            f"run `chmod 600 {wrong_pw}`") in log
    log = running["wrong-ca"].wait_log("did not verify", 40)
    assert f"did not verify against mqtt.tls.ca = {secure.pki.other_ca}" in log
    log = running["no-cert"].wait_log("closed the connection before accepting it", 40)
    assert "set mqtt.tls.cert and mqtt.tls.key" in log
    running["mtls"].wait_log("connected to 127.0.0.1", 40)  # mutual TLS with a client cert
    for name, agent in running.items():
        assert agent.proc.poll() is None, f"{name} exited: {agent.log()[-2000:]}"
        agent.signal(signal.SIGTERM)
    for name, agent in running.items():
        assert agent.wait(20) == 0, name
        assert PASSWORDS["edge-agent"] not in agent.log()


def test_check_config_warns_about_a_readable_password_file(
        agent_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    config = tmp_path / "agent.toml"
    config.write_text(f'[bundle]\npath = "{agent_bundle}"\n[mqtt]\nusername = "u"\n'
                      f'password = "p"\nallow_plaintext_password = true\n')
    config.chmod(0o640)
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {config} holds the MQTT password" in out and "(mode 0640)" in out
    config.chmod(0o600)
    assert main(["check-config", str(config)]) == 0
    assert "warning" not in capsys.readouterr().out
