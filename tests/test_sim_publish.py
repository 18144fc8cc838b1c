"""edge-sim publish against a real Mosquitto (the `broker` fixture): topics and payloads."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from firmware_sim import generate
from firmware_sim.publish import PublishConfig, parse_broker, run_publish
from tests.mosquitto import Broker, free_port

pytestmark = pytest.mark.slow
START = "2026-01-05T00:00:00Z"


class Collector:
    """Subscribes to `sensors/#` and keeps every message by topic.

    QoS 0 on purpose: at --rate 0 a QoS-1 subscriber that falls 1000 messages
    behind loses messages inside Mosquitto (default max_queued_messages).
    """

    def __init__(self, broker: Broker) -> None:
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-collector")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("sensors/#", qos=0)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.ready.wait(5), "subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages[msg.topic].append(json.loads(msg.payload))

    def wait_for(self, total: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if sum(len(v) for v in self.messages.values()) >= total:
                    return
            time.sleep(0.02)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(broker: Broker) -> Iterator[Collector]:
    c = Collector(broker)
    yield c
    c.stop()


def check_payloads(
    messages: dict[str, list[dict[str, Any]]], counts: dict[str, int], channels: tuple[str, ...]
) -> None:
    """Readings and truth topics for exactly these devices, with the contract's payloads."""
    topics = [f"sensors/{i}/{kind}" for i in counts for kind in ("readings", "truth")]
    assert sorted(messages) == sorted(topics)
    for device_id, count in counts.items():
        readings = messages[f"sensors/{device_id}/readings"]
        truth = messages[f"sensors/{device_id}/truth"]
        assert len(readings) == len(truth) == count
        for r, t in zip(readings, truth, strict=True):
            assert set(r) == {"ts", "values"} and isinstance(r["ts"], float)
            assert tuple(r["values"]) == channels
            assert all(v is None or isinstance(v, float) for v in r["values"].values())
            assert set(t) == {"ts", "anomaly", "fault", "channels"} and t["ts"] == r["ts"]
            assert t["anomaly"] in (0, 1) and (t["anomaly"] == 1) == (t["fault"] != "")
            assert set(t["channels"]) <= set(channels)


def test_publish_n_devices_payload_contract(broker: Broker, collector: Collector,
                                            tmp_path: Path) -> None:  # fmt: skip
    cfg = PublishConfig(
        device="pump", broker=broker.address, devices=3, rate=0, duration_s=600, seed=5,
        start=START, truth_path=tmp_path / "t.jsonl",
    )  # fmt: skip
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        sent = run_publish(cfg, log=fh)
    ids = ["pump-01", "pump-02", "pump-03"]
    expected = [generate("pump", 600, seed=5, start=START, unit=k) for k in range(3)]
    assert sent == sum(len(e) for e in expected)
    collector.wait_for(2 * sent)
    msgs = collector.messages
    check_payloads(
        msgs, {i: len(e) for i, e in zip(ids, expected, strict=True)}, expected[0].channels
    )
    # device k publishes exactly what `generate --seed 5` gives for unit k, in order
    for device_id, result in zip(ids, expected, strict=True):
        assert msgs[f"sensors/{device_id}/readings"] == [r.payload() for r in result.readings()]
        assert msgs[f"sensors/{device_id}/truth"] == [r.truth() for r in result.readings()]
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(lines) == sent and {x["device_id"] for x in lines} == set(ids)
    assert f"published {sent} readings" in log.read_text()
    assert any(x["anomaly"] for x in lines) and any(x["fault"].startswith("ts_") for x in lines)


def test_publish_real_time_pacing(broker: Broker, collector: Collector) -> None:
    cfg = PublishConfig(device="metric", broker=broker.address, rate=20, duration_s="50m",
                        start=START, device_id="shop", faults="none")  # fmt: skip
    tic = time.monotonic()
    assert run_publish(cfg, log=io.StringIO()) == 10
    assert time.monotonic() - tic >= 0.4  # 10 readings at 20/s
    collector.wait_for(20)
    check_payloads(collector.messages, {"shop": 10}, ("value",))


def test_publish_cli_black_box(broker: Broker, collector: Collector, tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "publish", "--device", "airpod", "--devices", "2",
         "--rate", "0", "--duration", "30m", "--seed", "1", "--broker", broker.address,
         "--truth", str(truth), "--start", START],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "published 60 readings" in proc.stderr
    collector.wait_for(120)
    check_payloads(
        collector.messages, {"airpod-01": 30, "airpod-02": 30}, generate("airpod", "1m").channels
    )
    assert len(truth.read_text().splitlines()) == 60


def test_publish_reports_unreachable_broker(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_sim", "publish", "--device", "pump",
         "--duration", "5s", "--broker", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "cannot connect to MQTT broker" in proc.stderr


def test_parse_broker() -> None:
    assert parse_broker("example.org:8883") == ("example.org", 8883)
    assert parse_broker("localhost") == ("localhost", 1883)
    assert parse_broker("[::1]:1884") == ("::1", 1884)
    with pytest.raises(ValueError):
        parse_broker("host:port")


def _self_signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (cryptography is a dev dependency)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name("edge-sim test CA")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(2).not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(san, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))  # fmt: skip
    return paths


def test_publish_tls_and_password_from_env(tmp_path: Path) -> None:
    ca, cert, key = _self_signed(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "sim", "s3cret"], check=True)
    passwd.chmod(0o600)
    port = free_port()
    listener = (
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}"
    )
    base = [sys.executable, "-m", "firmware_sim", "publish", "--device", "metric", "--rate", "0",
            "--duration", "1h", "--broker", f"127.0.0.1:{port}", "--tls-ca", str(ca),
            "--username", "sim"]  # fmt: skip
    with Broker(port=port, listener=listener):
        env = {**os.environ, "EDGE_SIM_PASSWORD": "s3cret"}
        ok = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
        assert ok.returncode == 0 and "published 12 readings" in ok.stderr, ok.stderr
        env["EDGE_SIM_PASSWORD"] = "wrong"
        bad = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
        assert bad.returncode == 2 and "refused" in bad.stderr, bad.stderr
