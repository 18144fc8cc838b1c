"""Model update without a restart, end to end: `edge-agent run` as a subprocess against a real
Mosquitto; the bundle is swapped by SIGHUP, by an MQTT command, and by replacing the bundle
directory on disk (watched), with a signing key configured. Outcomes are read from the
agent's event topic and its metrics (`bundle.sha256`)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.bundle import load_bundle
from tests.agent_io import PREFIX, AgentProcess, Collector, agent_toml, live_lines
from tests.mosquitto import Broker
from tests.test_agent_reload import point, tampered, variant

pytestmark = pytest.mark.slow
MQTT_SOURCE = '[[sources]]\ntype = "mqtt"\ntopic = "sensors/+/readings"\n'


def sha(bundle: Path) -> str:
    return load_bundle(bundle).manifest_sha256


def events(seen: Collector, agent: str) -> list[dict[str, Any]]:
    return [m.json() for m in seen.on(f"{PREFIX}/{agent}/event")]


def metrics(seen: Collector, agent: str) -> dict[str, Any]:
    found = seen.on(f"{PREFIX}/{agent}/metrics")
    return found[-1].json() if found else {}


def wait_event(seen: Collector, agent: str, n: int) -> dict[str, Any]:
    seen.wait(lambda: len(events(seen, agent)) >= n, 20, f"event #{n} from {agent}")
    return events(seen, agent)[n - 1]


def wait_metrics_sha(seen: Collector, agent: str, expected: str) -> dict[str, Any]:
    seen.wait(lambda: metrics(seen, agent).get("bundle", {}).get("sha256") == expected, 10,
              f"metrics with bundle sha {expected[:12]}")
    return metrics(seen, agent)


def send(broker: Broker, topic: str, payloads: list[bytes]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    for payload in payloads:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_sighup_and_cmd_reload_keep_scoring_and_refuse_a_tampered_bundle(
        broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]) -> None:
    v1 = Path(shutil.copytree(agent_bundle, tmp_path / "v1"))
    v2 = variant(agent_bundle, tmp_path / "v2", version="2")
    v3 = variant(agent_bundle, tmp_path / "v3", version="3")
    bad = tampered(agent_bundle, tmp_path / "bad")
    link = tmp_path / "bundle"
    point(link, v1)
    config = agent_toml(tmp_path / "agent.toml", broker, link, client_id="agent-rl",
                        sources=MQTT_SOURCE, bundle_extra="watch_interval_s = 0")
    with Collector(broker) as seen:
        agent = AgentProcess(config, tmp_path / "agent.log")
        agents.append(agent)
        seen.wait(lambda: "online" in seen.payloads(f"{PREFIX}/agent-rl/status"), 30, "online")
        wait_metrics_sha(seen, "agent-rl", sha(v1))
        readings = list(live_lines([(40, None)], seed=2, period=0.01))
        send(broker, "sensors/pod-r/readings", [r.strip() for r in readings[:20]])

        point(link, v2)
        agent.signal(signal.SIGHUP)
        event = wait_event(seen, "agent-rl", 1)
        assert event["event"] == "reloaded" and event["trigger"] == "SIGHUP"
        assert event["bundle"]["sha256"] == sha(v2) and event["previous"]["sha256"] == sha(v1)
        assert event["bundle"]["version"] == "2" and event["path"] == str(v2)
        wait_metrics_sha(seen, "agent-rl", sha(v2))

        point(link, bad)
        agent.signal(signal.SIGHUP)
        event = wait_event(seen, "agent-rl", 2)
        assert event["event"] == "reload_failed" and event["trigger"] == "SIGHUP"
        assert "distance.onnx does not match its sha256" in event["reason"]
        assert event["bundle"]["sha256"] == sha(v2)  # what keeps scoring
        seen.wait(lambda: metrics(seen, "agent-rl").get("reloads", {}).get("failed") == 1, 10,
                  "the failure in the metrics")
        assert metrics(seen, "agent-rl")["bundle"]["sha256"] == sha(v2)
        assert "reload (SIGHUP) failed; keeping bundle agent-fixture 2" in agent.log()

        # the device keeps scoring with the kept bundle: the window survived both reloads
        send(broker, "sensors/pod-r/readings", [r.strip() for r in readings[20:]])
        seen.wait(lambda: metrics(seen, "agent-rl").get("windows_scored") == 40 - 15, 10,
                  "all windows scored")

        point(link, v3)
        cmd = f"{PREFIX}/agent-rl/cmd"
        send(broker, cmd, [b"{not json", b'{"action": "format-disk", "id": 9}', b"[]",
                           b'{"action": "reload", "id": "r-7"}'])
        errors = [wait_event(seen, "agent-rl", n) for n in (3, 4, 5)]
        assert [e["event"] for e in errors] == ["cmd_error"] * 3
        assert "not JSON" in errors[0]["reason"]
        assert errors[1]["reason"] == ("unknown action 'format-disk' "
                                       "(known: reload, feedback, snooze, unsnooze)")
        assert errors[1]["id"] == 9
        event = wait_event(seen, "agent-rl", 6)
        assert event["event"] == "reloaded" and event["trigger"] == "cmd agent-rl id r-7"
        assert event["bundle"]["sha256"] == sha(v3)
        send(broker, f"{PREFIX}/pod-r/cmd", [b'{"action": "reload"}'])  # a device's topic
        event = wait_event(seen, "agent-rl", 7)
        assert event["event"] == "reloaded" and event["trigger"] == "cmd pod-r"
        send(broker, f"{PREFIX}/someone-else/cmd", [b'{"action": "reload"}'])
        wait_metrics_sha(seen, "agent-rl", sha(v3))
        seen.wait(lambda: metrics(seen, "agent-rl")["reloads"]["ok"] == 3, 5, "reload counts")
        m = metrics(seen, "agent-rl")
        assert m["reloads"]["failed"] == 1 and "sha256" in m["reloads"]["last_error"]
        assert m["commands"] == {"reload": 2, "rejected": 3}
        assert len(events(seen, "agent-rl")) == 7  # the other agent's device was ignored

        agent.signal(signal.SIGTERM)
        assert agent.wait(20) == 0


def test_replaced_directory_is_reloaded_and_an_unsigned_one_refused(
        broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]) -> None:
    pytest.importorskip("cryptography")
    from export.signing import generate_keypair, sign_bundle

    private, public, _ = generate_keypair(tmp_path / "keys" / "signing")
    live = Path(shutil.copytree(agent_bundle, tmp_path / "bundle"))
    sign_bundle(live, private)
    v2 = variant(agent_bundle, tmp_path / "staging" / "v2", version="2")
    sign_bundle(v2, private)
    unsigned = variant(agent_bundle, tmp_path / "staging" / "v3", version="3")
    config = agent_toml(tmp_path / "agent.toml", broker, live, client_id="agent-watch",
                        sources=MQTT_SOURCE,
                        bundle_extra=f'public_key = "{public}"\nwatch_interval_s = 0.3')
    with Collector(broker) as seen:
        agent = AgentProcess(config, tmp_path / "agent.log")
        agents.append(agent)
        seen.wait(lambda: "online" in seen.payloads(f"{PREFIX}/agent-watch/status"), 30,
                  "online")
        first = sha(live)
        # mv bundle bundle.old && mv staging/v2 bundle
        os.rename(live, tmp_path / "bundle.old")
        time.sleep(0.8)  # the watcher sees the path missing meanwhile, and waits
        os.rename(v2, live)
        event = wait_event(seen, "agent-watch", 1)
        assert event["event"] == "reloaded" and event["trigger"] == "watch"
        assert event["signed"] is True and event["previous"]["sha256"] == first
        assert event["bundle"]["sha256"] == sha(live) and event["bundle"]["version"] == "2"

        shutil.rmtree(tmp_path / "bundle.old")
        os.rename(live, tmp_path / "bundle.old")
        os.rename(unsigned, live)
        event = wait_event(seen, "agent-watch", 2)
        assert event["event"] == "reload_failed" and event["trigger"] == "watch"
        assert "refusing an unsigned bundle" in event["reason"]
        assert event["bundle"]["version"] == "2"
        time.sleep(1.5)  # an unchanged (still unsigned) directory is not retried in a loop
        assert len(events(seen, "agent-watch")) == 2
        assert "bundle path" in agent.log() and "is missing" in agent.log()

        sign_bundle(live, private)  # writes manifest.sig in place: a change, reloaded
        event = wait_event(seen, "agent-watch", 3)
        assert event["event"] == "reloaded" and event["bundle"]["version"] == "3"
        wait_metrics_sha(seen, "agent-watch", sha(live))
        agent.signal(signal.SIGTERM)
        assert agent.wait(20) == 0
