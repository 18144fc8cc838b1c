"""The fleet view against a real Mosquitto: 3 agent subprocesses serving 10 devices publish
their retained status documents; `edge-train fleet status` reads them, compares them with a
fleet index and exits non-zero on a silent device, a bundle mismatch or a missing device.
Plus the row logic on its own (no broker) and an unreachable broker."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.bundle import MANIFEST_NAME, sha256_file
from edge.fleet_index import empty_index, write_index
from edge.fleet_view import BrokerOptions, FleetSnapshot, collect, fleet_rows
from export.cli import main as train_main
from tests.agent_fixtures import bundle_variant
from tests.agent_io import PREFIX, AgentProcess, Collector, agent_toml, live_lines
from tests.mosquitto import Broker, free_port

AGENTS = {"agent-a": ["pod-01", "pod-02", "pod-03", "pod-04"],
          "agent-b": ["pod-05", "pod-06", "pod-07"],
          "agent-c": ["pod-08", "pod-09", "pod-10"]}
FAULTY = "pod-02"  # its readings end in a fault: an alert stays open


def publish_round(broker: Broker, devices: list[str], rows: int = 45) -> None:
    """`rows` readings per device, interleaved, stamped with the wall clock."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-sensors")
    client.connect(broker.host, broker.port)
    client.loop_start()
    streams = {d: live_lines([(20, None), (25, 3)] if d == FAULTY else [(rows, None)],
                             seed=k, period=0.0)
               for k, d in enumerate(devices)}
    infos = []
    while streams:
        for device in list(streams):
            line = next(streams[device], None)
            if line is None:
                del streams[device]
                continue
            agent = next(a for a, ds in AGENTS.items() if device in ds)
            infos.append(client.publish(f"fleet/{agent}/{device}/readings", line.strip(), qos=1))
        time.sleep(0.01)
    for info in infos:
        info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def status(capsys: pytest.CaptureFixture[str], broker: Broker, *args: str
           ) -> tuple[int, str]:
    code = train_main(["fleet", "status", "--host", broker.host, "--port", str(broker.port),
                       "--wait", "3", *args])
    return code, capsys.readouterr().out


def fleet_json(capsys: pytest.CaptureFixture[str], broker: Broker, *args: str
               ) -> tuple[int, dict[str, Any]]:
    code, out = status(capsys, broker, "--json", *args)
    return code, json.loads(out)


def wait_documents(broker: Broker, predicate: Any, timeout: float, what: str) -> FleetSnapshot:
    deadline = time.monotonic() + timeout
    snap = FleetSnapshot()
    while time.monotonic() < deadline:
        snap = collect(BrokerOptions(broker.host, broker.port), wait_s=3, quiet_s=0.2)
        if predicate(snap):
            return snap
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {snap.documents}")


@pytest.mark.slow
def test_three_agents_ten_devices_table_mismatch_silence_and_a_killed_agent(
    broker: Broker, agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = bundle_variant(agent_bundle, tmp_path / "other-bundle", version="2.0-other")
    bundles = {"agent-a": agent_bundle, "agent-b": agent_bundle, "agent-c": other}
    for agent, bundle in bundles.items():
        folder = tmp_path / agent
        folder.mkdir()
        config = agent_toml(folder / "agent.toml", broker, bundle, client_id=agent,
                            sources=f'[[sources]]\ntype = "mqtt"\ntopic = "fleet/{agent}/+/'
                                    'readings"\n',
                            extra="[status]\nevery_s = 1\n")
        agents.append(AgentProcess(config, folder / "agent.log"))
    with Collector(broker) as seen:
        seen.wait(lambda: all("online" in seen.payloads(f"{PREFIX}/{a}/status") for a in AGENTS),
                  30, "three agents online")
        publish_round(broker, [d for ds in AGENTS.values() for d in ds])
        snap = wait_documents(
            broker, lambda s: all(
                s.agents().get(a, {}).get("devices", {}).get(d, {}).get("readings") == 45
                and s.documents.get(d, {}).get("readings") == 45
                for a, ds in AGENTS.items() for d in ds)
            and s.agents()["agent-a"]["devices"][FAULTY]["open_alerts"] == 1, 20,
            "documents with every device's readings and the open alert")
    docs = snap.agents()
    assert docs["agent-a"]["bundle"]["sha256"] == sha256_file(agent_bundle / MANIFEST_NAME)
    assert docs["agent-c"]["bundle"]["version"] == "2.0-other"
    assert docs["agent-a"]["open_alerts"] == 1 and docs["agent-b"]["open_alerts"] == 0
    device_doc = snap.documents["pod-05"]
    assert (device_doc["kind"], device_doc["agent"], device_doc["online"]) == (
        "device", "agent-b", True)
    assert device_doc["readings"] == 45 and device_doc["agent_version"]

    # an index that names the fixture bundle for every device: agent-c runs another one
    index = empty_index()
    good = sha256_file(agent_bundle / MANIFEST_NAME)
    index["devices"] = {d: {"bundle": d, "name": "fixture", "version": "1", "manifest_sha256":
                            good} for ds in AGENTS.values() for d in ds}
    write_index(tmp_path / "fleet" / "fleet.json", index)
    code, report = fleet_json(capsys, broker, "--index", str(tmp_path / "fleet"),
                              "--max-age", "120")
    assert code == 1
    rows = {r["device"]: r for r in report["devices"]}
    assert sorted(rows) == sorted(d for ds in AGENTS.values() for d in ds)
    assert all(r["online"] for r in rows.values())
    assert {d for d, r in rows.items() if r["index_match"] is False} == set(AGENTS["agent-c"])
    assert all("bundle mismatch" in p for p in report["problems"]) and len(
        report["problems"]) == 3
    assert rows[FAULTY]["open_alerts"] == 1 and rows["pod-01"]["agent"] == "agent-a"

    # agent-c's devices now expect its bundle: healthy, exit 0, and the table says so
    for d in AGENTS["agent-c"]:
        index["devices"][d]["manifest_sha256"] = sha256_file(other / MANIFEST_NAME)
    write_index(tmp_path / "fleet" / "fleet.json", index)
    code, out = status(capsys, broker, "--index", str(tmp_path / "fleet"), "--max-age", "120")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["agent", "device", "online", "bundle", "index"]
    assert len(lines) == 11 and all(" yes " in line for line in lines[1:])

    # a device the index names but no agent reports is missing
    index["devices"]["pod-11"] = {"bundle": "pod-11", "manifest_sha256": good}
    write_index(tmp_path / "fleet" / "fleet.json", index)
    code, report = fleet_json(capsys, broker, "--index", str(tmp_path / "fleet"),
                              "--max-age", "120")
    assert code == 1 and report["problems"] == ["pod-11 (-): missing: no agent reports this "
                                                "device"]
    del index["devices"]["pod-11"]
    write_index(tmp_path / "fleet" / "fleet.json", index)

    # silence: every device but pod-03 keeps sending; with --max-age 3, pod-03 is silent
    time.sleep(4)
    published = time.time()
    publish_round(broker, [d for ds in AGENTS.values() for d in ds if d != "pod-03"], rows=5)
    wait_documents(broker, lambda s: (s.agents()["agent-c"]["devices"]["pod-10"]
                                      ["last_reading"] or 0) >= published, 10, "fresh documents")
    code, report = fleet_json(capsys, broker, "--index", str(tmp_path / "fleet"),
                              "--max-age", "3")
    assert code == 1
    assert [p.split(":")[0] for p in report["problems"]] == ["pod-03 (agent-a)"], report
    assert "silent for" in report["problems"][0]

    # agent-b killed: the broker's last will makes its devices offline (documents unchanged)
    agents[1].kill()
    code, report = wait_offline(capsys, broker, tmp_path, "agent-b")
    rows = {r["device"]: r for r in report["devices"]}
    assert not any(rows[d]["online"] for d in AGENTS["agent-b"])
    assert all(rows[d]["online"] for d in AGENTS["agent-a"] + AGENTS["agent-c"])

    # agent-c stopped cleanly: its documents say offline
    agents[2].signal(signal.SIGTERM)
    assert agents[2].wait(30) == 0
    snap = collect(BrokerOptions(broker.host, broker.port), wait_s=3)
    assert snap.agents()["agent-c"]["online"] is False
    assert snap.documents["pod-09"]["online"] is False
    assert snap.status["agent-c"] == "offline"


def wait_offline(capsys: pytest.CaptureFixture[str], broker: Broker, tmp_path: Path,
                 agent: str) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + 30  # keepalive 10 s x 1.5 at most
    while True:
        code, report = fleet_json(capsys, broker, "--index", str(tmp_path / "fleet"),
                                  "--max-age", "120")
        if not all(r["online"] for r in report["devices"] if r["agent"] == agent):
            return code, report
        assert time.monotonic() < deadline, "the killed agent's devices stayed online"
        time.sleep(0.5)


def test_rows_superseded_missing_silent_and_status_topics() -> None:
    now = 1_000_000.0

    def doc(agent: str, online: bool, devices: dict[str, float | None]) -> dict[str, Any]:
        return {"kind": "agent", "agent": agent, "online": online,
                "bundle": {"name": "b", "version": "1", "sha256": "aa"},
                "devices": {d: {"online": online, "last_reading": t, "open_alerts": 0}
                            for d, t in devices.items()}}

    snap = FleetSnapshot(
        status={"old": "offline", "new": "online", "pod-3": "offline"},
        documents={"old": doc("old", True, {"pod-1": now - 5000}),
                   "new": doc("new", True, {"pod-1": now - 1, "pod-2": None, "pod-3": now}),
                   "pod-1": {"kind": "device", "device": "pod-1", "agent": "new"}})
    index = empty_index()
    index["devices"] = {"pod-1": {"manifest_sha256": "aa"}, "pod-2": {"manifest_sha256": "bb"},
                        "pod-4": {"manifest_sha256": "aa", "version": "1"}}
    rows = fleet_rows(snap, index, max_age_s=60, now=now)
    by = {(r.agent, r.device): r for r in rows}
    assert not by["old", "pod-1"].online  # the will said offline though the document did not
    assert by["old", "pod-1"].superseded and by["old", "pod-1"].problems == []
    assert by["new", "pod-1"].online and by["new", "pod-1"].index == "yes"
    assert by["new", "pod-1"].problems == []
    assert by["new", "pod-2"].problems == ["bundle mismatch: runs 1, the index says bb",
                                           "silent: no reading yet"]
    assert not by["new", "pod-3"].online  # its own status topic is offline
    assert by["-", "pod-4"].problems == ["missing: no agent reports this device"]
    assert fleet_rows(snap, None, max_age_s=None, now=now)[0].index == "-"


def test_an_unreachable_broker_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = train_main(["fleet", "status", "--host", "127.0.0.1", "--port", str(free_port()),
                       "--wait", "2"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 10
    assert "cannot reach the broker at 127.0.0.1" in err and err.count("\n") == 1


def test_a_status_document_never_blocks_on_a_failing_snapshot() -> None:
    """The publisher survives a snapshot that raises (the agent must keep scoring)."""
    from edge.config import MqttConfig
    from edge.mqtt_client import MqttConnection, Topics
    from edge.sinks.status import StatusPublisher

    def broken() -> Any:
        raise RuntimeError("boom")

    conn = MqttConnection(MqttConfig(host="127.0.0.1", port=free_port(), client_id="a"),
                          will_topic="x/a/status")
    publisher = StatusPublisher(conn, Topics("x"), ["d"], broken, every_s=1)
    assert publisher.publish_documents() == []
    conn.connected.set()  # as if connected: maybe_publish takes the snapshot
    publisher.documents_due()
    assert publisher.maybe_publish(time.monotonic()) is False
