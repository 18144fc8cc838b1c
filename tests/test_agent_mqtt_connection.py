"""The agent's MQTT connection against a real Mosquitto: v5 -> 3.1.1 fallback, TLS with a
password from the environment (never logged), status online/offline, ordered QoS 1 alerts,
TCP_NODELAY on every connection."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.config import MqttConfig
from edge.mqtt_client import MqttConnection, Topics, set_nodelay
from edge.outbox import Outbox
from edge.sinks.mqtt_alerts import AlertPublisher
from edge.sinks.status import StatusPublisher
from tests.agent_io import PREFIX, Collector
from tests.mosquitto import Broker, free_port

pytestmark = pytest.mark.slow


def connection(broker: Broker, **settings: Any) -> MqttConnection:
    cfg = MqttConfig.model_validate({"host": broker.host, "port": broker.port,
                                     "reconnect_max_delay_s": 1, **settings})
    return MqttConnection(cfg, will_topic=Topics(PREFIX).status(cfg.client_id))


def wait_until(predicate: Any, timeout: float, tick: Any = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick is not None:
            tick()
        if predicate():
            return True
        time.sleep(0.05)
    return False


class V3OnlyProxy:
    """A TCP proxy in front of Mosquitto that behaves like a broker without MQTT v5: a v5
    CONNECT gets a 3.1.1-style CONNACK "unacceptable protocol version" and is closed."""

    def __init__(self, upstream: Broker) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.refused = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> V3OnlyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while len(head) < 9:  # fixed header (2 for a short CONNECT) + "\0\4MQTT" + level
            chunk = client.recv(9 - len(head))
            if not chunk:
                client.close()
                return
            head += chunk
        if head[8] == 5:
            self.refused += 1
            client.sendall(b"\x20\x02\x00\x01")
            client.close()
            return
        upstream = socket.create_connection((self.upstream.host, self.upstream.port))
        upstream.sendall(head)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_auto_falls_back_to_311_when_the_broker_refuses_v5(broker: Broker) -> None:
    with V3OnlyProxy(broker) as proxy, Collector(broker) as seen:
        conn = MqttConnection(
            MqttConfig(host="127.0.0.1", port=proxy.port, client_id="agent-v3",
                       reconnect_max_delay_s=1),
            will_topic=f"{PREFIX}/agent-v3/status")
        StatusPublisher(conn, Topics(PREFIX), ["pod-1"])
        conn.start()
        try:
            assert wait_until(conn.connected.is_set, 10, conn.tick), "no connection"
            assert conn.protocol_name == "3.1.1" and proxy.refused == 1
            assert wait_until(lambda: seen.payloads(f"{PREFIX}/agent-v3/status") == ["online"], 5)
            assert seen.payloads(f"{PREFIX}/pod-1/status") == ["online"]
        finally:
            conn.stop()


def test_v5_is_used_when_the_broker_speaks_it(broker: Broker) -> None:
    conn = connection(broker, client_id="agent-v5")
    conn.start()
    try:
        assert conn.connected.wait(10)
        assert conn.protocol_name == "5" and not conn.tick()
    finally:
        conn.stop()


def nodelay(conn: MqttConnection) -> int:
    sock = conn.client.socket() if conn.client is not None else None
    assert isinstance(sock, socket.socket), sock
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_every_connection_sends_without_nagle(broker: Broker) -> None:
    """paho leaves Nagle on: a QoS 1 alert would wait for the broker's delayed ACK."""
    conn = connection(broker, client_id="agent-nodelay")
    conn.start()
    try:
        assert conn.connected.wait(10), broker.log()
        assert nodelay(conn)
        broker.stop()
        assert wait_until(lambda: not conn.connected.is_set(), 5)
        broker.start()
        assert wait_until(lambda: conn.connections == 2, 10), "no reconnect"
        assert nodelay(conn)  # the new socket too
    finally:
        conn.stop()


def test_set_nodelay_leaves_other_transports_alone() -> None:
    set_nodelay(None)  # not connected yet
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        set_nodelay(unix)  # no TCP options: ignored, not raised


def test_alerts_are_published_in_order_and_removed_on_ack(broker: Broker, tmp_path: Path) -> None:
    with Collector(broker, topic=f"{PREFIX}/+/alert") as seen, \
            Outbox(tmp_path / "o.sqlite3") as box:
        conn = connection(broker, client_id="agent-order")
        publisher = AlertPublisher(conn, box, max_inflight=3)
        for i in range(60):  # stored before the connection exists: sent once it does
            publisher.submit(device="pod", topic=f"{PREFIX}/pod/alert", state="update",
                             alert_id="A", payload=json.dumps({"n": i}).encode())
        publisher.start()
        conn.start()
        try:
            assert publisher.flush(15), f"outbox still holds {box.depth()}"
            assert wait_until(lambda: len(seen.messages) >= 60, 5)
            assert [m.json()["n"] for m in seen.messages] == list(range(60))
            assert publisher.acked == 60 and publisher.inflight == 0
        finally:
            publisher.stop()
            conn.stop()


# -- TLS and password --------------------------------------------------------------------------
def _tls_files(directory: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": directory / "ca.pem", "cert": directory / "server.pem",
             "key": directory / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return files


@pytest.fixture
def tls_broker() -> Iterator[tuple[Broker, dict[str, Path]]]:
    pytest.importorskip("cryptography")
    directory = Path(tempfile.mkdtemp(prefix="mosq-tls-"))
    directory.chmod(0o755)  # mosquitto drops root privileges to its own user
    files = _tls_files(directory)
    passwords = directory / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "edge", "s3cret-pw"],
                   check=True, capture_output=True)
    for path in [*files.values(), passwords]:
        path.chmod(0o644)
    port = free_port()
    listener = (f"listener {port} 127.0.0.1\ncafile {files['ca']}\ncertfile {files['cert']}\n"
                f"keyfile {files['key']}\nallow_anonymous false\npassword_file {passwords}")
    with Broker(port=port, listener=listener) as broker:
        yield broker, files


def test_tls_with_password_from_the_environment(
    tls_broker: tuple[Broker, dict[str, Path]], caplog: pytest.LogCaptureFixture
) -> None:
    broker, files = tls_broker
    caplog.set_level(logging.DEBUG)
    settings = {"host": "localhost", "port": broker.port, "client_id": "agent-tls",
                "username": "edge", "tls": {"ca": str(files["ca"])}, "reconnect_max_delay_s": 1}
    cfg = MqttConfig.model_validate(settings)
    conn = MqttConnection(cfg, will_topic=f"{PREFIX}/agent-tls/status",
                          environ={"EDGE_AGENT_MQTT_PASSWORD": "s3cret-pw"})
    StatusPublisher(conn, Topics(PREFIX), [])
    got: list[str] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-sub")
    sub.tls_set(ca_certs=str(files["ca"]), cert_reqs=ssl.CERT_REQUIRED)
    sub.username_pw_set("edge", "s3cret-pw")
    sub.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/#", 1)
    sub.on_message = lambda _c, _u, m: got.append(m.payload.decode())
    sub.connect("localhost", broker.port)
    sub.loop_start()
    conn.start()
    try:
        assert conn.connected.wait(10), broker.log()
        assert wait_until(lambda: "online" in got, 5)
        assert nodelay(conn)  # through the TLS socket
    finally:
        conn.stop()
        sub.disconnect()
        sub.loop_stop()
    assert "s3cret-pw" not in caplog.text

    wrong = MqttConnection(cfg, will_topic="x/y", environ={"EDGE_AGENT_MQTT_PASSWORD": "nope"})
    wrong.start()
    try:
        assert not wrong.connected.wait(2)
    finally:
        wrong.stop()
    assert "refused the connection" in caplog.text and "nope" not in caplog.text
