"""The agent's sources: stdin JSON lines, a PMS5003 on a (pseudo) serial port, MQTT topics with
the device id in the `+` level, and one agent serving several devices."""

from __future__ import annotations

import contextlib
import os
import pty
import queue
import threading
import time
import tty
from pathlib import Path

import pytest

from edge.agent import run
from edge.config import MqttConfig, SerialSource, load_config
from edge.config import MqttSource as MqttSourceConfig
from edge.mqtt_client import MqttConnection
from edge.pms5003 import Pms5003Frame
from edge.readings import BadInputCounter, Reading
from edge.sources import Item, Payload, SourceDone
from edge.sources.mqtt import MqttSource
from edge.sources.serial_pms5003 import SerialPms5003Source
from edge.sources.stdin import LineSplitter, StdinSource, line_device
from tests.agent_io import PREFIX, Collector, agent_toml, live_lines
from tests.mosquitto import Broker


def drain(items: queue.Queue[Item], n: int, timeout: float = 5.0) -> list[Item]:
    out: list[Item] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            out.append(items.get(timeout=0.1))
    return out


def test_line_splitter_handles_chunks_and_overlong_lines() -> None:
    lines = LineSplitter(max_bytes=10)
    assert lines.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert lines.feed(b":2}\n\n") == [b'{"b":2}']
    assert lines.feed(b"x" * 25) == [b"x" * 11]  # cut: the decoder rejects it as too_large
    assert lines.feed(b"yyy\n{}\n") == [b"{}"]  # the rest of the long line is skipped
    assert lines.feed(b"tail") == [] and lines.flush() == [b"tail"]


def test_line_device() -> None:
    assert line_device(b'{"device": "pump-3", "x": 1}', "d") == "pump-3"
    assert line_device(b'{"x": 1}', "d") == "d"
    assert line_device(b'{"device": "a/b"}', "d") == "d"
    assert line_device(b'{"device": 5', "d") == "d"


def test_stdin_source_reads_lines_until_eof() -> None:
    read_fd, write_fd = os.pipe()
    items: queue.Queue[Item] = queue.Queue()
    source = StdinSource("pod", items, max_bytes=4096, fd=read_fd)
    source.start()
    os.write(write_fd, b'{"ts": 1, "a": 1}\n{"device": "other", "a": 2}\nnot json\n')
    os.close(write_fd)
    got = drain(items, 4)
    source.stop()
    os.close(read_fd)
    assert [(i.device, i.data) for i in got if isinstance(i, Payload)] == [
        ("pod", b'{"ts": 1, "a": 1}'), ("other", b'{"device": "other", "a": 2}'),
        ("pod", b"not json")]
    assert got[-1] == SourceDone("stdin")


def test_serial_source_decodes_pms5003_frames_from_a_pty() -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)
    items: queue.Queue[Item] = queue.Queue()
    counter = BadInputCounter()
    cfg = SerialSource(type="serial", port=os.ttyname(slave), device="pms-1")
    source = SerialPms5003Source(cfg, items, counter)
    source.start()
    try:
        assert source.opened.wait(5)  # opening the port discards bytes already waiting
        frames = [Pms5003Frame(1, 2, 3, 4, 5 + i, 6, 7, 8, 9, 10, 11, 12) for i in range(3)]
        stream = b"\x00\xff" + frames[0].encode() + frames[1].encode()[:20]
        os.write(master, stream)
        time.sleep(0.2)
        os.write(master, frames[1].encode()[20:] + frames[2].encode())
        got = drain(items, 3)
    finally:
        source.stop()
        os.close(master)
        os.close(slave)
    assert all(isinstance(r, Reading) and r.device == "pms-1" for r in got)
    assert [r.values["pm2_5"] for r in got if isinstance(r, Reading)] == [5.0, 6.0, 7.0]
    assert counter.totals("pms-1") == {"garbage_bytes": 2}


def test_serial_source_retries_a_missing_port(caplog: pytest.LogCaptureFixture) -> None:
    cfg = SerialSource(type="serial", port="/dev/nonexistent-tty", device="p",
                       reopen_delay_s=0.1)
    source = SerialPms5003Source(cfg, queue.Queue(), BadInputCounter())
    source.start()
    time.sleep(0.5)
    source.stop()
    assert caplog.text.count("serial port /dev/nonexistent-tty") == 1  # logged once, retried


@pytest.mark.slow
def test_mqtt_source_takes_the_device_from_the_plus_level(broker: Broker) -> None:
    items: queue.Queue[Item] = queue.Queue(maxsize=2)
    counter = BadInputCounter()
    conn = MqttConnection(MqttConfig(host=broker.host, port=broker.port, client_id="src"),
                          will_topic="x/src/status")
    MqttSource(MqttSourceConfig(type="mqtt", topic="site/+/pm/readings"), conn, items, counter)
    conn.start()
    try:
        assert conn.connected.wait(5)
        time.sleep(0.2)  # SUBACK
        info = conn.publish("site/kitchen/pm/readings", b'{"pm2_5": 3}', qos=1)
        assert info is not None
        info.wait_for_publish(2)
        conn.publish("site/a/b/pm/readings", b"{}", qos=1)  # does not match the filter
        got = drain(items, 1)
        assert [(i.device, i.data) for i in got if isinstance(i, Payload)] == [
            ("kitchen", b'{"pm2_5": 3}')]
        for _ in range(4):  # the queue holds 2: the rest is dropped and counted
            conn.publish("site/kitchen/pm/readings", b"{}", qos=1).wait_for_publish(2)
        assert wait_for(lambda: counter.totals().get("queue_full", 0) >= 2, 5)
    finally:
        conn.stop()


def wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_one_agent_serves_several_devices_each_with_its_own_state(
    broker: Broker, tmp_path: Path, agent_bundle: Path
) -> None:
    """In-process `run()`: two devices on one MQTT source, a fault on one of them only."""
    path = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="gw",
                      sources='[[sources]]\ntype = "mqtt"\n')
    config = load_config(path)
    config.stdout.enabled = False
    stop = threading.Event()
    with Collector(broker) as seen:
        agent = threading.Thread(target=run, args=(config, stop), daemon=True)
        agent.start()
        try:
            assert wait_for(lambda: "online" in seen.payloads(f"{PREFIX}/gw/status"), 20)
            sensor = MqttConnection(MqttConfig(host=broker.host, port=broker.port,
                                               client_id="sensors"), will_topic="x/s/status")
            sensor.start()
            assert sensor.connected.wait(5)
            pattern_a = [(40, None), (25, 1), (40, None)]
            pattern_b = [(105, None)]
            for a, b in zip(live_lines(pattern_a, seed=4), live_lines(pattern_b, seed=5,
                                                                      period=0.0), strict=True):
                sensor.publish("sensors/dev-a/readings", a, qos=0)
                sensor.publish("sensors/dev-b/readings", b, qos=0)
            sensor.stop()
            assert wait_for(lambda: [a["state"] for a in seen.alerts("dev-a")][-1:] == ["end"],
                            15)
        finally:
            stop.set()
            agent.join(20)
    assert not agent.is_alive()
    assert seen.alerts("dev-a")[0]["channels"][0]["name"] == "ch1"
    assert seen.alerts("dev-b") == []
    assert seen.payloads(f"{PREFIX}/dev-a/status") == ["online", "offline"]
    assert seen.payloads(f"{PREFIX}/dev-b/status") == ["online", "offline"]
    assert seen.payloads(f"{PREFIX}/gw/status") == ["online", "offline"]
