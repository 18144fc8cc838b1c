"""Feedback, snooze and their refusals end to end: `edge-agent run` as a subprocess against a
real Mosquitto, readings on its stdin, commands on the command topics, replies read from the
event topic, alerts from the alert topic and the snooze from the retained status document.
Then the agent is killed and started again: what the feedback taught is still there."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge.capture import CaptureStore
from tests.agent_fixtures import channel_names, normal_rows, scales
from tests.agent_io import PREFIX, AgentProcess, Collector, agent_toml
from tests.closed_loop_fixtures import EVENT_CHANNEL, FAULT_CHANNEL, memory_bundle
from tests.mosquitto import Broker

pytestmark = pytest.mark.slow
AGENT = "agent-fb"
DEVICE = "pod"
STDIN = f'[[sources]]\ntype = "stdin"\ndevice = "{DEVICE}"\n'


class Feeder:
    """Readings on the agent's stdin, stamped with the wall clock (strictly increasing)."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.seed = 100
        self.sent = 0
        self.last_ts = 0.0

    def feed(self, n: int, channel: int | None = None) -> None:
        self.seed += 1
        rows = normal_rows(n, seed=self.seed)
        if channel is not None:
            rows[:, channel] += 12.0 * scales()[channel]
        names = channel_names()
        lines = []
        for row in rows:
            ts = max(round(time.time(), 4), round(self.last_ts + 0.001, 4))
            self.last_ts = ts
            lines.append(json.dumps({"ts": ts, **dict(zip(names, np.round(row, 4).tolist(),
                                                          strict=True))}) + "\n")
            time.sleep(0.002)
        self.agent.send("".join(lines).encode())
        self.sent += n

    def burst(self, channel: int, quiet: int = 300, length: int = 30) -> None:
        self.feed(quiet)
        self.feed(length, channel)
        self.feed(40)


def command(broker: Broker, topic: str, body: dict[str, Any]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cmd-{time.monotonic()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def events(seen: Collector, kind: str | None = None) -> list[dict[str, Any]]:
    found = [m.json() for m in seen.on(f"{PREFIX}/{AGENT}/event")]
    return [e for e in found if kind is None or e["event"] == kind]


def wait_event(seen: Collector, kind: str, n: int) -> dict[str, Any]:
    seen.wait(lambda: len(events(seen, kind)) >= n, 20, f"{kind} event #{n}")
    return events(seen, kind)[n - 1]


def starts(seen: Collector) -> list[str]:
    return [a["id"] for a in seen.alerts(DEVICE) if a["state"] == "start"]


def scored(seen: Collector, readings: int, since: int = 0) -> None:
    """Wait until the device's metrics count `readings` (all fed readings were handled), in a
    metrics message after the first `since`."""
    def done() -> bool:
        found = seen.on(f"{PREFIX}/{DEVICE}/metrics")[since:]
        return bool(found) and found[-1].json()["readings"] >= readings
    seen.wait(done, 30, f"{readings} readings handled")


def info(seen: Collector) -> dict[str, Any]:
    found = seen.on(f"{PREFIX}/{DEVICE}/info")
    return found[-1].json() if found else {}


def start_agent(config: Path, log: Path, seen: Collector, agents: list[AgentProcess]
                ) -> AgentProcess:
    agent = AgentProcess(config, log)
    agents.append(agent)
    seen.wait(lambda: seen.payloads(f"{PREFIX}/{AGENT}/status")[-1:] == ["online"], 40,
              "agent online")
    return agent


def test_feedback_and_snooze_over_mqtt_and_what_was_taught_survives_a_kill(
        broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]) -> None:
    bundle = memory_bundle(agent_bundle, tmp_path / "bundle")
    config = agent_toml(tmp_path / "agent.toml", broker, bundle, client_id=AGENT, sources=STDIN,
                        extra=f'[state]\npath = "{tmp_path / "state.npz"}"\n'
                              f'[capture]\npath = "{tmp_path / "capture.sqlite3"}"\n'
                              "[status]\nevery_s = 1\n")
    agent_cmd, device_cmd = f"{PREFIX}/{AGENT}/cmd", f"{PREFIX}/{DEVICE}/cmd"
    with Collector(broker) as seen:
        agent = start_agent(config, tmp_path / "agent.log", seen, agents)
        feeder = Feeder(agent)
        feeder.feed(300)
        feeder.burst(EVENT_CHANNEL)
        scored(seen, feeder.sent)
        assert len(starts(seen)) == 1
        first = starts(seen)[0]

        # refusals, each a cmd_error with the reason; nothing recorded
        command(broker, agent_cmd, {"action": "feedback", "id": first, "label": "fine"})
        command(broker, agent_cmd, {"action": "feedback", "id": "pod-1-nope", "label": "normal"})
        command(broker, agent_cmd, {"action": "feedback", "id": first, "label": "normal",
                                    "device": "pod-2"})
        command(broker, agent_cmd, {"action": "snooze", "device": "pump", "for_s": 60})
        command(broker, device_cmd, {"action": "snooze", "for_s": 10 ** 9})
        # (checked in paho's thread, or on the main loop: in any order)
        reasons = sorted(wait_event(seen, "cmd_error", n)["reason"] for n in range(1, 6))
        expected = ["`label` must be one of normal, anomaly (got 'fine')",
                    "unknown alert id 'pod-1-nope'",
                    f"alert {first} is of device 'pod', not 'pod-2'",
                    "device 'pump' is not served by this agent (serves: pod)",
                    "`for_s` must be a number of seconds"]
        for want in expected:
            assert sum(want in reason for reason in reasons) == 1, (want, reasons)

        # feedback normal: the event no longer alerts, a fault still does
        command(broker, agent_cmd, {"action": "feedback", "id": first, "label": "normal",
                                    "note": "cooking"})
        reply = wait_event(seen, "feedback", 1)
        assert reply["id"] == first and reply["label"] == "normal" and reply["learned"]
        assert reply["taught"]["memory.euclidean"] > 30 and reply["note"] == "cooking"
        assert reply["ts_start"] < reply["ts_end"] and reply["channels"][0] == "ch3"
        feeder.burst(EVENT_CHANNEL)
        feeder.burst(EVENT_CHANNEL)
        scored(seen, feeder.sent)
        assert starts(seen) == [first]

        # snooze while a fault alert is open: it ends ("snoozed"); the next one is not sent
        feeder.feed(300)
        feeder.feed(10, FAULT_CHANNEL)
        seen.wait(lambda: len(starts(seen)) == 2, 20, "the fault's alert")
        fault = starts(seen)[1]
        command(broker, device_cmd, {"action": "snooze", "for_s": 3600, "id": "s-1"})
        snoozed = wait_event(seen, "snoozed", 1)
        assert snoozed["device"] == DEVICE and snoozed["ended"] == fault
        assert snoozed["id"] == "s-1" and snoozed["until"] > time.time() + 3500
        seen.wait(lambda: any(a["state"] == "end" and a["id"] == fault
                              for a in seen.alerts(DEVICE)), 10, "the snoozed end")
        end = next(a for a in seen.alerts(DEVICE) if a["state"] == "end" and a["id"] == fault)
        assert end["reason"] == "snoozed"
        seen.wait(lambda: info(seen).get("snoozed") is True, 10, "snoozed in the status")
        assert info(seen)["snoozed_until"] == snoozed["until"]
        feeder.feed(20, FAULT_CHANNEL)
        feeder.burst(FAULT_CHANNEL)
        scored(seen, feeder.sent)
        assert starts(seen) == [first, fault]  # recorded, not published
        command(broker, agent_cmd, {"action": "unsnooze", "device": DEVICE})
        unsnoozed = wait_event(seen, "unsnoozed", 1)
        assert unsnoozed["was_snoozed"] is True and unsnoozed["published"] == []
        seen.wait(lambda: info(seen).get("snoozed") is False, 10, "not snoozed in the status")

        # killed: what was taught is in the saved state; a restart does not forget it
        agent.signal(signal.SIGKILL)
        agent.wait(10)
        mark = len(seen.on(f"{PREFIX}/{DEVICE}/metrics"))
        agent = start_agent(config, tmp_path / "agent2.log", seen, agents)
        feeder = Feeder(agent)
        feeder.feed(300)
        feeder.burst(EVENT_CHANNEL)
        feeder.burst(FAULT_CHANNEL)
        scored(seen, feeder.sent, since=mark)
        after = starts(seen)[2:]
        assert len(after) == 1  # the fault; the cooking event stays quiet
        assert next(a for a in seen.alerts(DEVICE) if a["id"] == after[0])["channels"][0][
            "name"] == f"ch{FAULT_CHANNEL}"
        agent.signal(signal.SIGTERM)
        assert agent.wait(20) == 0
    assert "taken back from the last run" in agent.log()
    with CaptureStore(tmp_path / "capture.sqlite3") as store:  # the refusals recorded nothing
        assert [(f["alert_id"], f["label"]) for f in store.feedback()] == [(first, "normal")]
        silent = [a for a in store.alerts(DEVICE) if not a.published]
        assert silent and all(a.ts_end is not None for a in silent)  # the snoozed device's
