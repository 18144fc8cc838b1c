"""`edge-agent run` as a subprocess against a real Mosquitto: alerts, status, outages, crashes.

Readings are 8-channel rows of the fixture bundle's normal data at 20 per second, stamped with
the wall clock; a fault shifts one channel by 12 of its standard deviations.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.agent_io import (
    PREFIX,
    AgentProcess,
    Collector,
    agent_toml,
    dedupe,
    event_key,
    live_lines,
    persistent_broker,
)
from tests.mosquitto import Broker

pytestmark = pytest.mark.slow

MQTT_SOURCE = '[[sources]]\ntype = "mqtt"\ntopic = "sensors/+/readings"\n'
STDIN_SOURCE = '[[sources]]\ntype = "stdin"\ndevice = "{device}"\n'
# one alert cycle: 20 faulty rows then 40 normal ones (window 16 + release 5 fit in)
CYCLE = [(20, 3), (40, None)]


def start_agent(agents: list[AgentProcess], config: Path) -> AgentProcess:
    agent = AgentProcess(config, config.parent / "agent.log")
    agents.append(agent)
    return agent


def test_fault_over_mqtt_start_end_status_and_lwt(
    broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    config = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="agent-bb",
                        sources=MQTT_SOURCE)
    with Collector(broker) as seen:
        agent = start_agent(agents, config)
        seen.wait(lambda: "online" in seen.payloads(f"{PREFIX}/agent-bb/status"), 30,
                  "the agent's status to go online")
        sensor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor-pod-1")
        sensor.connect(broker.host, broker.port)
        sensor.loop_start()
        for line in live_lines([(40, None), (25, 3), (45, None)], seed=1):
            sensor.publish("sensors/pod-1/readings", line.strip(), qos=0)
        sensor.disconnect()
        sensor.loop_stop()

        seen.wait(lambda: [a["state"] for a in seen.alerts("pod-1")][-1:] == ["end"], 15,
                  "an end alert for pod-1")
        alerts = seen.alerts("pod-1")
        assert [a["state"] for a in alerts if a["state"] != "update"] == ["start", "end"]
        start, end = alerts[0], alerts[-1]
        assert start["channels"][0]["name"] == "ch3"
        assert start["channels"][0]["contribution"] > 0.5
        assert start["severity"] in {"warning", "critical"} and start["score"] >= 1.0
        assert end["id"] == start["id"] and end["reason"] == "released"
        assert start["bundle"]["name"] == "agent-fixture" and len(start["bundle"]["sha256"]) == 64
        assert start["agent_version"] == "0.1.0"
        assert seen.payloads(f"{PREFIX}/pod-1/status") == ["online"]
        # metrics are periodic: wait for one taken after the last reading was handled
        seen.wait(lambda: any(m.json()["readings"] >= 100
                              for m in seen.on(f"{PREFIX}/pod-1/metrics")), 10,
                  "pod-1 metrics after every reading")
        metrics = seen.on(f"{PREFIX}/pod-1/metrics")[-1].json()
        assert metrics["readings"] >= 100 and metrics["windows_scored"] > 50
        assert metrics["alerts"] == 1 and metrics["outbox_depth"] == 0
        assert metrics["latency_p99_ms"] is not None

        agent.kill()  # SIGKILL: no clean disconnect, so the broker publishes the will
        seen.wait(lambda: seen.payloads(f"{PREFIX}/agent-bb/status")[-1:] == ["offline"], 10,
                  "the last will (offline)")
    assert seen.payloads(f"{PREFIX}/agent-bb/status") == ["online", "offline"]
    assert [a["id"] for a in agent.stdout_alerts] == [a["id"] for a in alerts]


def test_sigterm_ends_alerts_publishes_offline_and_exits_0(
    broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    config = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="agent-term",
                        sources=STDIN_SOURCE.format(device="pod-t"))
    with Collector(broker) as seen:
        agent = start_agent(agents, config)
        seen.wait(lambda: "online" in seen.payloads(f"{PREFIX}/pod-t/status"), 30, "online")
        for line in live_lines([(30, None), (25, 5)]):  # still faulty at SIGTERM
            agent.send(line)
        seen.wait(lambda: bool(seen.alerts("pod-t")), 10, "a start alert")
        agent.signal(signal.SIGTERM)
        assert agent.wait(15) == 0, agent.log()
        seen.wait(lambda: seen.payloads(f"{PREFIX}/agent-term/status")[-1:] == ["offline"], 5,
                  "offline")
    states = [a["state"] for a in seen.alerts("pod-t")]
    assert states[0] == "start" and states[-1] == "end"
    assert seen.alerts("pod-t")[-1]["reason"] == "shutdown"
    assert seen.payloads(f"{PREFIX}/pod-t/status") == ["online", "offline"]
    assert "received SIGTERM" in agent.log()


def test_broker_outage_loses_no_alert_and_keeps_order(
    agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    """The broker is stopped for 12 s while alerts are produced, then restarted."""
    with persistent_broker() as broker, Collector(broker, client_id="pager",
                                                  persistent=True) as seen:
        config = agent_toml(tmp_path / "agent.toml", broker, agent_bundle,
                            client_id="agent-out", sources=STDIN_SOURCE.format(device="pod-o"),
                            extra="[alerts]\nupdate_every_s = 0.4\n")
        agent = start_agent(agents, config)
        seen.wait(lambda: "online" in seen.payloads(f"{PREFIX}/agent-out/status"), 30, "online")
        stop_feed = threading.Event()

        def feed() -> None:
            for line in live_lines([(20, None)] + CYCLE * 12, seed=2, stop=stop_feed):
                agent.send(line)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        seen.wait(lambda: len(seen.alerts("pod-o")) >= 2, 15, "alerts before the outage")
        before_outage = len(agent.stdout_alerts)
        broker.stop()
        outage_started = time.monotonic()
        time.sleep(12)
        during_outage = len(agent.stdout_alerts) - before_outage
        back_at = time.monotonic()  # before start(): the agent may connect at once
        broker.start()
        outage_s = back_at - outage_started
        time.sleep(4)  # more alerts after the broker is back
        stop_feed.set()
        feeder.join(10)
        agent.close_stdin()  # end of input: the agent flushes its outbox and exits
        assert agent.wait(30) == 0, agent.log()
        produced = [event_key(a) for a in agent.stdout_alerts]
        seen.wait(lambda: len(dedupe([event_key(a) for a in seen.alerts("pod-o")]))
                  >= len(produced), 15, "every alert")
        received = [event_key(a) for a in seen.alerts("pod-o")]
        status = seen.on(f"{PREFIX}/agent-out/status")
    # `online` again after the reconnect (a live publish, not the broker's retained copy)
    assert any(m.payload == b"online" and not m.retain and m.at > back_at for m in status), [
        (m.payload, m.retain, round(m.at - back_at, 2)) for m in status]
    assert status[-1].payload == b"offline"  # the clean exit at the end of input
    print(f"broker down {outage_s:.1f}s: produced {len(produced)} alerts "
          f"({during_outage} while the broker was down), received {len(received)} "
          f"({len(received) - len(dedupe(received))} duplicates)")
    assert during_outage >= 4, "the test must produce alerts while the broker is down"
    assert dedupe(received) == produced  # none lost, same order
    assert "reconnect" in agent.log()


def test_sigkill_with_alerts_in_the_outbox_then_restart_delivers_them(
    broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    config = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="agent-kill",
                        sources=STDIN_SOURCE.format(device="pod-k"))
    broker.stop()  # the agent starts without a broker: alerts can only go to the outbox
    first = start_agent(agents, config)
    for line in live_lines([(20, None)] + CYCLE * 3, seed=3):
        first.send(line)
    deadline = time.monotonic() + 10
    while len(first.stdout_alerts) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    produced = [event_key(a) for a in first.stdout_alerts]
    assert len(produced) >= 6
    first.kill()
    broker.start()
    with Collector(broker) as seen:
        second = start_agent(agents, config)
        seen.wait(lambda: len(dedupe([event_key(a) for a in seen.alerts("pod-k")]))
                  >= len(produced), 30, "the alerts left in the outbox")
        received = [event_key(a) for a in seen.alerts("pod-k")]
        second.signal(signal.SIGTERM)
        assert second.wait(15) == 0
    print(f"killed with {len(produced)} alerts in the outbox; after restart received "
          f"{len(received)}")
    assert dedupe(received) == produced
    assert "outbox holds" in second.log()
