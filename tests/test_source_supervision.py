"""Supervised sources (issue 20): an exception inside a source is counted (`source_errors`)
and the source restarted with backoff; stdin skips only the line that failed; a source that
keeps failing ends `run()` with a non-zero code; no systemd `WATCHDOG=1` while a source is
down; a deeply nested stdin line neither kills the source nor stops the agent.

A real part cannot be made to raise an arbitrary exception, so failures are injected: a fake
source under the agent's supervisor, or a patched line handler in the real stdin source."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import agent as agent_module
from edge.agent import Agent, run
from edge.config import MqttConfig, load_config
from edge.config import MqttSource as MqttSourceConfig
from edge.mqtt_client import MqttConnection
from edge.readings import BadInputCounter
from edge.sources import Item, ItemQueue, Payload, SourceDone
from edge.sources import stdin as stdin_module
from edge.sources import supervisor as supervisor_module
from edge.sources.mqtt import MqttSource
from edge.sources.stdin import StdinSource
from edge.sources.supervisor import EXIT_SOURCE_FAILED, Supervisor
from tests.agent_io import PREFIX, AgentProcess, Collector, agent_toml, live_lines
from tests.mosquitto import Broker
from tests.test_agent_sources import drain

STDIN_SOURCE = '[[sources]]\ntype = "stdin"\ndevice = "{device}"\n'


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# -- the supervisor on its own --------------------------------------------------------------

def test_a_failing_work_is_restarted_with_backoff_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(backoff_min_s=0.2, backoff_max_s=1.0)
    runs: list[float] = []
    healthy_in_backoff: list[bool] = []
    release = threading.Event()

    def work(stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) <= 2:
            raise ZeroDivisionError(f"injected {len(runs)}")  # any type, not a foreseen one
        release.wait(5)

    runner = supervisor.thread("fake", work, "source-fake")
    assert supervisor.errors() == {"fake": 0} and supervisor.healthy()
    with caplog.at_level(logging.ERROR, logger="edge.sources.supervisor"):
        runner.start()
        assert wait_for(lambda: runner.state == "backoff", 2)
        healthy_in_backoff.append(supervisor.healthy())
        assert wait_for(lambda: len(runs) == 3, 5)
        assert wait_for(supervisor.healthy, 1)  # running again
        release.set()
        runner.join(5)
    assert healthy_in_backoff == [False]
    assert runner.state == "finished" and supervisor.healthy()  # returned: not dead
    assert supervisor.errors() == {"fake": 2} and runner.restarts == 2
    assert runs[1] - runs[0] >= 0.2 and runs[2] - runs[1] >= 0.4  # doubled
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 2  # each failure logged once, with its traceback
    assert all(r.exc_info is not None and r.exc_info[0] is ZeroDivisionError for r in failures)
    assert not supervisor.gave_up.is_set()


def test_a_source_that_keeps_failing_gives_up() -> None:
    supervisor = Supervisor(backoff_min_s=0.01)
    runner = supervisor.thread("bad", lambda stop: [][0], "source-bad")
    runner.start()
    assert supervisor.gave_up.wait(5)
    runner.join(5)
    assert runner.state == "gave_up" and not supervisor.healthy()
    assert supervisor.errors() == {"bad": supervisor_module.MAX_FAILURES}
    assert supervisor.failed is not None and "IndexError" in supervisor.failed


def test_only_failures_within_the_window_add_up() -> None:
    clock = [0.0]
    supervisor = Supervisor(clock=lambda: clock[0])
    error = RuntimeError("x")
    for _ in range(supervisor_module.MAX_FAILURES - 1):
        assert supervisor.failure("s", error) is not None
        clock[0] += supervisor_module.FAILURE_WINDOW_S / 4
    clock[0] += supervisor_module.FAILURE_WINDOW_S  # the old ones are forgotten
    assert supervisor.failure("s", error) == supervisor_module.BACKOFF_MIN_S
    assert not supervisor.gave_up.is_set()
    delays = [supervisor.failure("s", error) for _ in range(supervisor_module.MAX_FAILURES - 1)]
    assert delays[-1] is None and supervisor.gave_up.is_set()
    assert delays[:-1] == sorted(delays[:-1])  # backoff grows
    assert supervisor.errors() == {"s": 2 * supervisor_module.MAX_FAILURES - 1}


def test_a_guarded_callback_counts_instead_of_raising() -> None:
    supervisor = Supervisor()
    seen: list[bytes] = []

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise KeyError(topic)
        seen.append(payload)

    guarded = supervisor.guard("mqtt:t", handler)
    guarded("t", b"boom")
    guarded("t", b"ok")
    assert seen == [b"ok"] and supervisor.errors() == {"mqtt:t": 1}


# -- the real stdin source, a line that raises -------------------------------------------

def test_stdin_skips_the_line_that_raised_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    real = stdin_module.line_device

    def flaky(line: bytes, default: str) -> str:
        if b"boom" in line:
            raise RuntimeError("injected into the stdin thread's work")
        return real(line, default)

    monkeypatch.setattr(stdin_module, "line_device", flaky)
    read_fd, write_fd = os.pipe()
    items: queue.Queue[Item] = queue.Queue()
    supervisor = Supervisor(backoff_min_s=0.05)
    source = StdinSource("pod", items, max_bytes=4096, fd=read_fd, supervisor=supervisor)
    source.start()
    # one write: the lines after the bad one are already read when it fails
    os.write(write_fd, b'{"a": 1}\n{"boom": 1}\n{"a": 2}\n{"device": "p2", "a": 3}\n')
    got = drain(items, 3)
    os.write(write_fd, b'{"a": 4}\n')
    os.close(write_fd)
    got += drain(items, 2)
    source.stop()
    os.close(read_fd)
    assert [(i.device, i.data) for i in got if isinstance(i, Payload)] == [
        ("pod", b'{"a": 1}'), ("pod", b'{"a": 2}'), ("p2", b'{"device": "p2", "a": 3}'),
        ("pod", b'{"a": 4}')]  # nothing lost but the bad line, nothing twice
    assert got[-1] == SourceDone("stdin")
    assert supervisor.errors() == {"stdin": 1} and source.runner.restarts == 1


# -- MQTT: an exception in paho's callback thread ------------------------------------------

@pytest.mark.slow
def test_mqtt_handler_exception_is_counted_and_paho_keeps_delivering(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = MqttSource._handle

    def flaky(self: MqttSource, topic: str, payload: bytes) -> None:
        if payload == b"boom":
            raise ValueError("injected into paho's callback thread")
        real(self, topic, payload)

    monkeypatch.setattr(MqttSource, "_handle", flaky)
    items: queue.Queue[Item] = queue.Queue()
    supervisor = Supervisor()
    conn = MqttConnection(MqttConfig(host=broker.host, port=broker.port, client_id="src"),
                          will_topic="x/src/status")
    source = MqttSource(MqttSourceConfig(type="mqtt"), conn, items, BadInputCounter(),
                        supervisor)
    conn.start()
    try:
        assert conn.connected.wait(5)
        time.sleep(0.3)  # SUBACK
        for payload in (b"boom", b'{"a": 1}', b"boom", b'{"a": 2}'):
            conn.publish("sensors/dev/readings", payload, qos=1)
        got = drain(items, 2)
        assert [i.data for i in got if isinstance(i, Payload)] == [b'{"a": 1}', b'{"a": 2}']
        assert supervisor.errors() == {source.name: 2}
        assert conn.connected.is_set()
    finally:
        conn.stop()


# -- run(): restart, metric, watchdog, give-up -----------------------------------------------

class FakeSource:
    """A source whose work fails `fail` times (after `healthy_s` of running), then puts
    `lines` and stays up like a live source."""

    def __init__(self, supervisor: Supervisor, items: ItemQueue, fail: int, lines: list[bytes],
                 healthy_s: float = 0.0) -> None:
        self.name = "fake"
        self.items = items
        self.fail = fail
        self.lines = lines
        self.healthy_s = healthy_s
        self.started: list[float] = []
        self.failed: list[float] = []
        self.runner = supervisor.thread(self.name, self._work, "source-fake")

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()

    def _work(self, stop: threading.Event) -> None:
        self.started.append(time.monotonic())
        if len(self.started) <= self.fail:
            stop.wait(self.healthy_s)
            self.failed.append(time.monotonic())
            raise OSError(f"injected failure {len(self.started)}")
        for line in self.lines:
            self.items.put(Payload("pod-f", line.strip(), time.monotonic()))
        stop.wait()


@contextlib.contextmanager
def notify_socket(tmp_path: Path) -> Iterator[list[tuple[float, str]]]:
    """A systemd notify socket: yields the (arrival, message) list it fills."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    got: list[tuple[float, str]] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                got.append((time.monotonic(), sock.recv(4096).decode()))

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    try:
        yield got
    finally:
        done.set()
        reader.join(2)
        sock.close()


def run_with_fake(monkeypatch: pytest.MonkeyPatch, config_path: Path,
                  fake: dict[str, FakeSource], **kw: Any) -> tuple[threading.Thread, list[int],
                                                                   threading.Event]:
    def make(self: Agent, _cfg: object) -> FakeSource:
        fake["source"] = FakeSource(self.supervisor, self.items, **kw)
        return fake["source"]

    monkeypatch.setattr(Agent, "_source", make)
    config = load_config(config_path)
    config.stdout.enabled = False
    stop, result = threading.Event(), []
    thread = threading.Thread(target=lambda: result.append(run(config, stop)), daemon=True)
    thread.start()
    return thread, result, stop


@pytest.mark.slow
def test_run_restarts_a_failed_source_reports_it_and_holds_the_watchdog(
    broker: Broker, agent_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "BACKOFF_MIN_S", 1.5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a WATCHDOG=1 every 0.1 s when healthy
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    path = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="agent-sup",
                      sources=STDIN_SOURCE.format(device="unused"))
    fake: dict[str, FakeSource] = {}
    lines = list(live_lines([(40, None)], seed=3, period=0.01))
    with notify_socket(tmp_path) as notes, Collector(broker) as seen:
        thread, result, stop = run_with_fake(monkeypatch, path, fake, fail=2, lines=lines,
                                             healthy_s=1.0)
        try:
            def agent_metrics() -> list[dict[str, Any]]:
                return [m.json() for m in seen.on(f"{PREFIX}/agent-sup/metrics")]

            seen.wait(lambda: any(m["source_errors"] == {"fake": 2} and m["windows_scored"] > 0
                                  for m in agent_metrics()), 30,
                      "metrics with 2 source errors and scored windows")
            time.sleep(0.5)  # watchdog pings after the last restart
        finally:
            stop.set()
            thread.join(30)
    assert result == [0]
    source = fake["source"]
    assert len(source.started) == 3 and len(source.failed) == 2
    pings = [at for at, text in notes if "WATCHDOG=1" in text]
    assert any(at < source.failed[0] for at in pings)  # sent while the source was up
    for failed_at, restarted_at in zip(source.failed, source.started[1:], strict=True):
        assert restarted_at - failed_at >= 1.4
        down = [at for at in pings if failed_at + 0.3 < at < restarted_at - 0.3]
        assert down == [], "WATCHDOG=1 sent while the source was down"
    assert any(at > source.started[-1] + 0.3 for at in pings)  # and again once it is up


@pytest.mark.slow
def test_run_exits_non_zero_when_a_source_keeps_failing(
    broker: Broker, agent_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(supervisor_module, "BACKOFF_MIN_S", 0.01)
    path = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="agent-dead",
                      sources=STDIN_SOURCE.format(device="unused"))
    fake: dict[str, FakeSource] = {}
    # a handler on the `edge` logger itself: another test's logging.basicConfig(force=True)
    # may replace the root's handlers (caplog's among them) while this one runs
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    edge_logger = logging.getLogger("edge")
    level = edge_logger.level
    edge_logger.addHandler(handler)
    edge_logger.setLevel(logging.INFO)
    try:
        thread, result, stop = run_with_fake(monkeypatch, path, fake, fail=10**6, lines=[])
        thread.join(60)
        stop.set()
    finally:
        edge_logger.removeHandler(handler)
        edge_logger.setLevel(level)
    text = "\n".join(r.getMessage() for r in records)
    assert result == [EXIT_SOURCE_FAILED] and EXIT_SOURCE_FAILED != 0
    assert len(fake["source"].started) == supervisor_module.MAX_FAILURES  # then no restart
    assert "giving up" in text, text
    assert "stopping: source fake failed 5 times" in text, text
    assert agent_module.EXIT_SOURCE_FAILED == EXIT_SOURCE_FAILED


# -- the reproduction, the agent as a subprocess ------------------------------------

@pytest.mark.slow
def test_deep_nesting_on_stdin_then_scoring_goes_on_and_exit_0(
    broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    deep = ('{"device":"pump-1","values":' + "[" * 1990 + "]" * 1990 + "}\n").encode()
    wide = ("{" + ", ".join(f'"k{i}": {i}' for i in range(1100)) + "}\n").encode()
    config = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="agent-deep",
                        sources=STDIN_SOURCE.format(device="pump-1"),
                        extra="[limits]\nmax_payload_bytes = 16384\n")
    with Collector(broker) as seen:
        agent = AgentProcess(config, tmp_path / "agent.log")
        agents.append(agent)
        seen.wait(lambda: "online" in seen.payloads(f"{PREFIX}/agent-deep/status"), 30,
                  "the agent online")
        agent.send(deep + b"not json\n" + wide)
        for line in live_lines([(30, None), (20, 3), (40, None)], seed=5):
            agent.send(line)
        seen.wait(lambda: [a["state"] for a in seen.alerts("pump-1")][-1:] == ["end"], 15,
                  "an alert that starts and ends after the deep line")
        seen.wait(lambda: any(m.json().get("bad", {}).get("too_deep") == 1
                              for m in seen.on(f"{PREFIX}/agent-deep/metrics")), 5,
                  "too_deep in the metrics")
        agent.close_stdin()
        assert agent.wait(30) == 0, agent.log()
    metrics = [m.json() for m in seen.on(f"{PREFIX}/agent-deep/metrics")][-1]
    assert metrics["bad"]["too_deep"] == 1 and metrics["bad"]["too_many_keys"] == 1
    assert metrics["bad"]["invalid_json"] == 1
    assert metrics["source_errors"] == {"stdin": 0}
    assert metrics["windows_scored"] > 50
    log = agent.log()
    assert "RecursionError" not in log and "Traceback" not in log
    assert "stopping: input ended" in log
    assert json.loads(json.dumps(agent.stdout_alerts))[0]["state"] == "start"
