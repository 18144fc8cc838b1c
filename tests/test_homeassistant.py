"""Home Assistant MQTT discovery: the messages against HA's documented schema, the state topic
logic, and a real broker (retained configs, the state flipping ON then OFF around an alert).

The schema below is written from Home Assistant's documentation (integrations/mqtt "MQTT
Discovery", binary_sensor.mqtt, sensor.mqtt, and the entity developer docs) and checked against
its source (homeassistant/components/mqtt: discovery.py TOPIC_MATCHER, schemas.py device and
origin schemas, abbreviations.py): keys not listed are refused, like HA's voluptuous schemas do
(HA drops unknown keys with a warning; a typo would silently lose a setting).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config import HomeAssistantConfig, MqttConfig
from edge.decide import AlertEvent, BundleInfo, ChannelContribution
from edge.homeassistant import HomeAssistantPublisher, discovery_messages, slug, state_topic
from edge.mqtt_client import Topics
from tests.agent_io import PREFIX, AgentProcess, Collector, agent_toml, live_lines
from tests.mosquitto import Broker

# -- Home Assistant's discovery schema, from its docs ----------------------------------------
# <discovery_prefix>/<component>/[<node_id>/]<object_id>/config: HA strips the prefix, then
# matches the rest with discovery.py's TOPIC_MATCHER
TOPIC = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?"
                   r"(?P<object_id>[a-zA-Z0-9_-]+)/config")
# binary_sensor device classes (developers.home-assistant.io/docs/core/entity/binary-sensor)
BINARY_SENSOR_DEVICE_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
# the abbreviations a discovery payload may use (abbreviations.py), for the keys in play here
ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "avty_tpl": "availability_template", "dev": "device", "dev_cla": "device_class",
    "e": "encoding", "en": "enabled_by_default", "ent_cat": "entity_category",
    "exp_aft": "expire_after", "frc_upd": "force_update", "ic": "icon",
    "json_attr_t": "json_attributes_topic", "json_attr_tpl": "json_attributes_template",
    "o": "origin", "obj_id": "object_id", "off_dly": "off_delay",
    "pl_avail": "payload_available", "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off", "pl_on": "payload_on", "stat_cla": "state_class",
    "stat_t": "state_topic", "sug_dsp_prc": "suggested_display_precision", "t": "topic",
    "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {"cns": "connections", "cu": "configuration_url", "hw": "hw_version",
                        "ids": "identifiers", "mdl": "model", "mdl_id": "model_id",
                        "mf": "manufacturer", "sa": "suggested_area", "sn": "serial_number",
                        "sw": "sw_version"}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HaDevice(_Strict):
    identifiers: str | list[str] | None = None
    connections: list[list[str]] | None = None
    manufacturer: str | None = None
    model: str | None = None
    model_id: str | None = None
    name: str | None = None
    hw_version: str | None = None
    serial_number: str | None = None
    sw_version: str | None = None
    via_device: str | None = None
    suggested_area: str | None = None
    configuration_url: str | None = None

    @model_validator(mode="after")
    def _identified(self) -> HaDevice:
        # "Device must have at least one identifying value in 'identifiers' and/or 'connections'"
        if not self.identifiers and not self.connections:
            raise ValueError("device needs identifiers or connections")
        return self


class HaOrigin(_Strict):
    name: str
    sw_version: str | None = None
    support_url: str | None = None


class HaAvailability(_Strict):
    topic: str
    payload_available: str = "online"
    payload_not_available: str = "offline"
    value_template: str | None = None


class HaEntity(_Strict):
    """Options every MQTT entity takes (MQTT_ENTITY_COMMON_SCHEMA + the read-only schema)."""

    availability: list[HaAvailability] | None = None
    availability_mode: Literal["all", "any", "latest"] = "latest"
    availability_template: str | None = None
    availability_topic: str | None = None
    payload_available: str | None = None
    payload_not_available: str | None = None
    device: HaDevice | None = None
    origin: HaOrigin | None = None
    enabled_by_default: bool = True
    entity_category: Literal["config", "diagnostic"] | None = None
    entity_picture: str | None = None
    icon: str | None = None
    json_attributes_topic: str | None = None
    json_attributes_template: str | None = None
    name: str | None = None
    object_id: str | None = None
    default_entity_id: str | None = None
    unique_id: str | None = None
    encoding: str | None = None
    qos: Literal[0, 1, 2] = 0
    state_topic: str = Field(min_length=1)  # required for sensor and binary_sensor
    value_template: str | None = None
    expire_after: int | None = Field(None, gt=0)
    force_update: bool = False

    @field_validator("state_topic", "json_attributes_topic", "availability_topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and ("+" in value or "#" in value or not value):
            raise ValueError("a state topic has no wildcards")
        return value

    @model_validator(mode="after")
    def _one_availability(self) -> HaEntity:
        if self.availability is not None and self.availability_topic is not None:
            raise ValueError("availability and availability_topic are exclusive")
        return self


class HaBinarySensor(HaEntity):
    device_class: str | None = None
    off_delay: int | None = Field(None, gt=0)
    payload_on: str = "ON"
    payload_off: str = "OFF"

    @field_validator("device_class")
    @classmethod
    def _device_class(cls, value: str | None) -> str | None:
        if value is not None and value not in BINARY_SENSOR_DEVICE_CLASSES:
            raise ValueError(f"not a binary_sensor device class: {value}")
        return value


class HaSensor(HaEntity):
    device_class: str | None = None
    state_class: str | None = None
    unit_of_measurement: str | None = None
    suggested_display_precision: int | None = Field(None, ge=0)
    last_reset_value_template: str | None = None
    options: list[str] | None = None

    @field_validator("state_class")
    @classmethod
    def _state_class(cls, value: str | None) -> str | None:
        if value is not None and value not in STATE_CLASSES:
            raise ValueError(f"not a state class: {value}")
        return value


SCHEMAS: dict[str, type[HaEntity]] = {"binary_sensor": HaBinarySensor, "sensor": HaSensor}


def expand(payload: dict[str, Any]) -> dict[str, Any]:
    """Undo abbreviations the way HA's discovery does (top level, device, origin, avty)."""
    out = {ABBREVIATIONS.get(k, k): v for k, v in payload.items()}
    if isinstance(out.get("device"), dict):
        out["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in out["device"].items()}
    if isinstance(out.get("origin"), dict):
        out["origin"] = {ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in out["origin"].items()}
    if isinstance(out.get("availability"), list):
        out["availability"] = [{ABBREVIATIONS.get(k, k): v for k, v in item.items()}
                               for item in out["availability"]]
    return out


def validate(topic: str, payload: dict[str, Any], discovery_prefix: str) -> HaEntity:
    assert topic.startswith(discovery_prefix + "/"), f"{topic} is not under {discovery_prefix}/"
    match = TOPIC.fullmatch(topic[len(discovery_prefix) + 1:])
    assert match, f"{topic} is not <prefix>/<component>/[<node_id>/]<object_id>/config"
    component = match["component"]
    assert component in SCHEMAS, f"unexpected component {component}"
    return SCHEMAS[component].model_validate(expand(payload))


# -- the agent's messages --------------------------------------------------------------------
BUNDLE = BundleInfo("airpod-demo", "seed1", "ab" * 32)


def messages(device: str = "airpod-01", agent: str = "edge-agent-pi4",
             prefix: str = "homeassistant") -> list[Any]:
    return discovery_messages(device, discovery_prefix=prefix, topics=Topics(PREFIX),
                              agent_id=agent, bundle=BUNDLE, agent_version="0.1.0")


def test_discovery_messages_follow_the_documented_schema() -> None:
    found = messages()
    assert [m.component for m in found] == ["binary_sensor", "binary_sensor", "sensor"]
    anomaly, fault, score = (validate(m.topic, json.loads(m.encode()), "homeassistant")
                             for m in found)
    assert isinstance(anomaly, HaBinarySensor) and isinstance(score, HaSensor)
    assert isinstance(fault, HaBinarySensor) and fault.device_class == "problem"
    assert found[1].topic.endswith("/airpod-01_sensor_fault/config")
    assert anomaly.device_class == "problem" and anomaly.payload_on == "ON"
    assert score.state_class == "measurement"
    assert found[0].topic == "homeassistant/binary_sensor/edge-agent-pi4/airpod-01_anomaly/config"
    for entity in (anomaly, fault, score):
        assert entity.state_topic == f"{PREFIX}/airpod-01/state"
        assert entity.availability_mode == "all"
        assert entity.availability is not None
        assert [a.topic for a in entity.availability] == [
            f"{PREFIX}/edge-agent-pi4/status", f"{PREFIX}/airpod-01/status"]
        assert {(a.payload_available, a.payload_not_available)
                for a in entity.availability} == {("online", "offline")}
        assert entity.device is not None and entity.device.identifiers == [
            "edge-anomaly_airpod-01"]
        assert entity.device.sw_version == "0.1.0" and entity.device.manufacturer
        assert entity.device.model and "airpod-demo" in entity.device.model
        assert entity.origin is not None and entity.origin.name == "edge-agent"
    assert anomaly.unique_id != score.unique_id
    # the templates read keys the state payload has
    assert "value_json.anomaly" in (anomaly.value_template or "")
    assert "value_json.score" in (score.value_template or "")


def test_the_validator_refuses_what_home_assistant_refuses() -> None:
    good = json.loads(messages()[0].encode())
    topic = messages()[0].topic
    for broken in ({**good, "device_class": "anomaly"}, {**good, "stat_topic": "x"},
                   {**good, "device": {"name": "no ids"}}, {**good, "qos": 3},
                   {k: v for k, v in good.items() if k != "state_topic"},
                   {**good, "availability_topic": "a/b"}, {**good, "origin": {"sw": "1"}}):
        with pytest.raises(ValueError):
            validate(topic, broken, "homeassistant")
    with pytest.raises(AssertionError):
        validate("homeassistant/binary_sensor/a b/x/config", good, "homeassistant")
    sensor = json.loads(messages()[1].encode())
    with pytest.raises(ValueError):
        validate(messages()[1].topic, {**sensor, "state_class": "gauge"}, "homeassistant")


def test_abbreviated_form_is_the_same_config() -> None:
    full = json.loads(messages()[0].encode())
    short = {"stat_t": full["state_topic"], "dev_cla": "problem", "uniq_id": full["unique_id"],
             "val_tpl": full["value_template"], "dev": {"ids": ["x"], "mf": "m"},
             "o": {"name": "edge-agent", "sw": "0.1.0"},
             "avty": [{"t": a["topic"]} for a in full["availability"]], "avty_mode": "all"}
    entity = validate(messages()[0].topic, short, "homeassistant")
    assert entity.state_topic == full["state_topic"] and entity.device is not None


def test_ids_are_reduced_to_valid_topic_levels() -> None:
    assert slug("pod.kitchen:1") == "pod_kitchen_1"
    found = messages(device="pod.kitchen:1", agent="gw 2", prefix="ha/discovery")
    for m in found:
        validate(m.topic, json.loads(m.encode()), "ha/discovery")
    assert found[0].topic == "ha/discovery/binary_sensor/gw_2/pod_kitchen_1_anomaly/config"
    # state and status topics keep the real device id (they are the agent's own topics)
    assert json.loads(found[0].encode())["state_topic"] == f"{PREFIX}/pod.kitchen:1/state"


def test_one_device_named_like_the_agent_has_one_availability_topic() -> None:
    payload = json.loads(messages(device="pod-1", agent="pod-1")[1].encode())
    assert [a["topic"] for a in payload["availability"]] == [f"{PREFIX}/pod-1/status"]


# -- the state topic logic -------------------------------------------------------------------
class FakeConnection:
    def __init__(self, client_id: str = "agent") -> None:
        self.cfg = MqttConfig(client_id=client_id)
        self.connected = threading.Event()
        self.connected.set()
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.hooks: list[Any] = []

    def on_connect(self, hook: Any) -> None:
        self.hooks.append(hook)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload, qos, retain))

    def states(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _, _ in self.published if t.endswith("/state")]


def event(state: Literal["start", "update", "end"], ts: float, score: float) -> AlertEvent:
    return AlertEvent("pod-1000-x", "pod", state, 1000.0, ts, score, 1.0,
                      "info" if state == "end" else "warning", {"lstm": score},
                      [ChannelContribution("ch1", 0.7, 3.0, "high")], score, 3, "")


def test_a_sensor_trouble_turns_the_sensor_fault_entity_on() -> None:
    import dataclasses

    conn = FakeConnection()
    ha = HomeAssistantPublisher(conn, Topics(PREFIX), HomeAssistantConfig(enabled=True),
                                BUNDLE, "0.1.0", [])  # type: ignore[arg-type]
    ha.add_device("pod")
    ha.event(event("start", 1000.0, 1.8), now=1.0)
    assert conn.states()[-1]["sensor_fault"] == "OFF"
    ha.event(dataclasses.replace(event("update", 1001.0, 1.9), trouble="sensor"), now=2.0)
    assert conn.states()[-1]["sensor_fault"] == "ON"  # a change of trouble goes out at once
    assert conn.states()[-1]["trouble"] == "sensor"
    ha.event(event("end", 1010.0, 0.3), now=3.0)
    assert conn.states()[-1]["sensor_fault"] == "OFF" and conn.states()[-1]["trouble"] is None


def test_state_goes_out_at_once_on_a_change_and_rate_limited_otherwise() -> None:
    conn = FakeConnection()
    ha = HomeAssistantPublisher(conn, Topics(PREFIX), HomeAssistantConfig(enabled=True,
                                score_every_s=30), BUNDLE, "0.1.0", [])  # type: ignore[arg-type]
    ha.add_device("pod")  # announced on the monotonic clock
    t0 = time.monotonic() + 1000.0
    assert [t for t, *_ in conn.published] == [
        "homeassistant/binary_sensor/agent/pod_anomaly/config",
        "homeassistant/binary_sensor/agent/pod_sensor_fault/config",
        "homeassistant/sensor/agent/pod_score/config", f"{PREFIX}/pod/state"]
    assert all(qos == 1 and retain for _, _, qos, retain in conn.published)
    assert conn.states()[-1]["anomaly"] == "OFF" and conn.states()[-1]["score"] is None
    ha.observe("pod", 0.4, 990.0, now=t0 + 0)  # first score: published
    ha.observe("pod", 0.5, 991.0, now=t0 + 10)  # within 30 s: held back
    assert [s["score"] for s in conn.states()] == [None, 0.4]
    ha.event(event("start", 1000.0, 1.8), now=t0 + 11)  # a change: at once
    ha.observe("pod", 1.9, 1001.0, now=t0 + 12)
    ha.event(event("update", 1002.0, 2.5), now=t0 + 13)  # no change of the decision
    assert conn.states()[-1] == {"anomaly": "ON", "sensor_fault": "OFF", "trouble": None,
                                 "score": 1.8, "severity": "warning",
                                 "alert_id": "pod-1000-x", "ts": "1970-01-01T00:16:40.000+00:00",
                                 "channels": ["ch1"]}
    ha.observe("pod", 2.2, 1003.0, now=t0 + 45)  # 30 s after the last publish
    assert conn.states()[-1]["score"] == 2.2 and conn.states()[-1]["anomaly"] == "ON"
    ha.event(event("end", 1010.0, 0.3), now=t0 + 46)
    assert conn.states()[-1]["anomaly"] == "OFF" and conn.states()[-1]["severity"] is None
    assert state_topic(Topics(PREFIX), "pod") == f"{PREFIX}/pod/state"
    before = len(conn.published)
    conn.hooks[0]()  # a reconnect announces every device again
    assert len(conn.published) == before + 4  # three configs and the state


# -- against a real broker -------------------------------------------------------------------
def retained(broker: Broker, pattern: str, wait_s: float = 1.0) -> dict[str, bytes]:
    """What a client subscribing now gets with the retain flag set."""
    got: dict[str, bytes] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late-subscriber")
    client.on_message = lambda _c, _u, m: got.__setitem__(m.topic, bytes(m.payload)) \
        if m.retain else None
    client.connect(broker.host, broker.port)
    client.subscribe(pattern, qos=1)
    client.loop_start()
    time.sleep(wait_s)
    client.disconnect()
    client.loop_stop()
    return got


@pytest.mark.slow
def test_agent_publishes_retained_discovery_and_flips_the_state(
    broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    config = agent_toml(tmp_path / "agent.toml", broker, agent_bundle, client_id="agent-ha",
                        sources='[[sources]]\ntype = "mqtt"\ntopic = "sensors/+/readings"\n',
                        extra="[homeassistant]\nenabled = true\nscore_every_s = 1\n")
    with Collector(broker, topic="#") as seen:
        agent = AgentProcess(config, tmp_path / "agent.log")
        agents.append(agent)
        seen.wait(lambda: "online" in seen.payloads(f"{PREFIX}/agent-ha/status"), 30,
                  "the agent to go online")
        sensor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor-pod-ha")
        sensor.connect(broker.host, broker.port)
        sensor.loop_start()
        for line in live_lines([(40, None), (25, 3), (45, None)], seed=2):
            sensor.publish("sensors/pod-ha/readings", line.strip(), qos=0)
        sensor.disconnect()
        sensor.loop_stop()
        state = f"{PREFIX}/pod-ha/state"
        seen.wait(lambda: [json.loads(p)["anomaly"] for p in seen.payloads(state)][-1:]
                  == ["OFF"] and "ON" in [json.loads(p)["anomaly"]
                                          for p in seen.payloads(state)], 20,
                  "the state to go ON and back OFF")
        flips = [json.loads(p)["anomaly"] for p in seen.payloads(state)]
        changes = [s for i, s in enumerate(flips) if i == 0 or s != flips[i - 1]]
        assert changes == ["OFF", "ON", "OFF"]
        start = next(a for a in seen.alerts("pod-ha") if a["state"] == "start")
        on = next(json.loads(p) for p in seen.payloads(state) if json.loads(p)["anomaly"] == "ON")
        assert on["alert_id"] == start["id"] and on["score"] > 1.0 and on["channels"]
        configs = {m.topic: m for m in seen.messages if m.topic.startswith("homeassistant/")}
        assert sorted(configs) == [
            "homeassistant/binary_sensor/agent-ha/pod-ha_anomaly/config",
            "homeassistant/binary_sensor/agent-ha/pod-ha_sensor_fault/config",
            "homeassistant/sensor/agent-ha/pod-ha_score/config"]

    later = retained(broker, "#")
    for topic in configs:
        assert topic in later, f"{topic} is not retained"
        validate(topic, json.loads(later[topic]), "homeassistant")
    assert json.loads(later[state])["anomaly"] == "OFF"
    assert later[f"{PREFIX}/agent-ha/status"] == b"online"
    agent.signal(15)
    assert agent.wait(30) == 0
    after = retained(broker, f"{PREFIX}/#")
    assert after[f"{PREFIX}/agent-ha/status"] == b"offline"  # the entities go unavailable
    assert after[f"{PREFIX}/pod-ha/status"] == b"offline"
