"""Model update without a restart, in-process: the reloader (load beside, verify, smoke test),
the directory watcher, commands, and the agent's swap (or refusal) of a new bundle."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.agent import Agent
from edge.bundle import checksums, load_bundle, write_manifest
from edge.commands import CommandError, CommandHandler, parse_command
from edge.config import BundleConfig, MqttConfig, parse_config
from edge.mqtt_client import MqttConnection, Topics
from edge.reload import BundleReloader, ReloadResult, identity
from edge.sinks.events import EventPublisher
from edge.sources import Payload
from tests.agent_fixtures import bundle_variant as variant
from tests.agent_fixtures import channel_names, normal_rows, scales


def tampered(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    model = target / "distance.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    return target


def point(link: Path, target: Path) -> None:
    """Atomic symlink swap: ln -s target link.new && mv -T link.new link."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


@pytest.fixture
def bundles(agent_bundle: Path, tmp_path: Path) -> dict[str, Path]:
    v1 = Path(shutil.copytree(agent_bundle, tmp_path / "v1"))
    v2 = variant(agent_bundle, tmp_path / "v2", version="2")
    bad = tampered(agent_bundle, tmp_path / "bad")
    link = tmp_path / "current"
    point(link, v1)
    return {"v1": v1, "v2": v2, "bad": bad, "link": link}


def reload_now(reloader: BundleReloader, trigger: str = "test") -> ReloadResult:
    reloader.request(trigger)
    result = reloader.wait(30)
    assert result is not None, "the reload did not finish"
    return result


def test_reload_loads_the_new_target_and_refuses_a_tampered_one(
        bundles: dict[str, Path]) -> None:
    reloader = BundleReloader(BundleConfig(path=bundles["link"], watch_interval_s=0))
    point(bundles["link"], bundles["v2"])
    ok = reload_now(reloader)
    assert ok.ok and ok.bundle is not None and ok.engine is not None
    assert ok.bundle.manifest.version == "2" and ok.bundle.path == bundles["v2"]
    point(bundles["link"], bundles["bad"])
    failed = reload_now(reloader, "again")
    assert not failed.ok and failed.bundle is None
    assert "distance.onnx does not match its sha256" in str(failed.error)
    assert (reloader.loaded, reloader.failed) == (1, 1)
    assert reloader.last_error == failed.error


def test_a_bundle_whose_models_do_not_run_is_refused(
        agent_bundle: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(agent_bundle, tmp_path / "broken"))
    (broken / "distance.onnx").write_bytes(b"not an onnx model")
    manifest = load_bundle(agent_bundle).manifest
    write_manifest(broken, manifest.model_copy(
        update={"files": checksums(broken, ["distance.onnx", "lstm_ae.tflite"])}))
    result = reload_now(BundleReloader(BundleConfig(path=broken, watch_interval_s=0)))
    assert not result.ok and result.error is not None


def test_reload_checks_the_signature_when_a_key_is_configured(
        bundles: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from export.signing import generate_keypair, sign_bundle

    private, public, _ = generate_keypair(tmp_path / "key")
    reloader = BundleReloader(BundleConfig(path=bundles["link"], public_key=public,
                                           watch_interval_s=0))
    point(bundles["link"], bundles["v2"])
    unsigned = reload_now(reloader)
    assert not unsigned.ok and "refusing an unsigned bundle" in str(unsigned.error)
    sign_bundle(bundles["v2"], private)
    signed = reload_now(reloader)
    assert signed.ok and signed.bundle is not None and signed.bundle.signed


def test_watcher_reloads_after_a_swap_has_settled(bundles: dict[str, Path]) -> None:
    clock = [0.0]
    reloader = BundleReloader(BundleConfig(path=bundles["link"], watch_interval_s=1),
                              min_interval_s=0, clock=lambda: clock[0])
    assert reloader.poll() is None and not reloader.busy  # nothing changed
    point(bundles["link"], bundles["v2"])
    clock[0] = 1.0
    assert reloader.poll() is None and not reloader.busy  # changed once: wait for it to settle
    clock[0] = 2.0
    result = reloader.poll()  # stable over two polls: loading (done already, on a slow box)
    assert result is not None or reloader.busy
    result = result or reloader.wait(30)
    assert result is not None and result.ok and result.trigger == "watch"
    for tick in (3.0, 4.0, 5.0):  # no change since: no more loads
        clock[0] = tick
        assert reloader.poll() is None and not reloader.busy


def test_watcher_sees_a_directory_replaced_by_rename(bundles: dict[str, Path]) -> None:
    live = bundles["v1"].parent / "live"
    shutil.copytree(bundles["v1"], live)
    before = identity(live)
    os.rename(live, live.with_name("old"))
    assert identity(live) is None  # mid-swap: missing, which never triggers a load
    os.rename(bundles["v2"], live)
    assert identity(live) not in (None, before)


def test_requests_during_a_load_are_merged(bundles: dict[str, Path]) -> None:
    reloader = BundleReloader(BundleConfig(path=bundles["link"], watch_interval_s=0),
                              min_interval_s=0)
    for trigger in ("SIGHUP", "cmd a", "cmd a", "SIGHUP"):
        reloader.request(trigger)
    result = reloader.wait(30)
    assert result is not None and result.trigger == "SIGHUP + cmd a"
    assert reloader.wait(0.3) is None and reloader.loaded == 1


# -- commands ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("payload", "reason"), [
    (b'{"action": "reload"', "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1]", "expected a JSON object"),
    (b"{}", "missing `action`"),
    (b'{"action": 3}', "missing `action`"),
    (b'{"action": "explode"}',
     "unknown action 'explode' (known: reload, feedback, snooze, unsnooze)"),
    (b'{"action": "reload", "pad": "' + b"x" * 2000 + b'"}', "the limit is 1024"),
])
def test_bad_commands_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(payload)
    assert reason in str(info.value)


def test_good_command_and_its_id() -> None:
    assert parse_command(b'{"action": "reload"}') == ("reload", None)
    assert parse_command(b'{"action": "reload", "id": "r-1"}') == ("reload", "r-1")
    assert parse_command(b'{"action": "reload", "id": true}') == ("reload", None)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["action", "id", "x"]), inner, max_size=3), max_leaves=6,
).map(lambda v: json.dumps(v).encode())))
def test_parse_command_only_raises_command_error(payload: bytes) -> None:
    try:
        action, _ = parse_command(payload)
    except CommandError as error:
        assert str(error)
        return
    assert action == "reload"


class RecordingEvents(EventPublisher):
    def __init__(self, connection: MqttConnection) -> None:
        super().__init__(connection, Topics("p"), "test")
        self.seen: list[dict[str, Any]] = []

    def publish(self, event: str, **fields: Any) -> None:
        self.seen.append({"event": event, **fields})


def test_command_handler_routes_and_limits_replies() -> None:
    connection = MqttConnection(MqttConfig(client_id="agent-1"), will_topic="p/agent-1/status")
    events = RecordingEvents(connection)
    requested: list[str] = []
    clock = [0.0]
    handler = CommandHandler(connection, Topics("p"), events, lambda: ["pod-1"],
                             requested.append, max_replies=3, reply_window_s=10,
                             clock=lambda: clock[0])
    handler.handle("p/agent-1/cmd", b'{"action": "reload", "id": 7}')
    handler.handle("p/pod-1/cmd", b'{"action": "reload"}')
    handler.handle("p/pod-9/cmd", b'{"action": "reload"}')  # another agent's device
    assert requested == ["cmd agent-1 id 7", "cmd pod-1"]
    for _ in range(5):
        handler.handle("p/agent-1/cmd", b'{"action": "nope", "id": "x"}')
    assert [e["event"] for e in events.seen] == ["cmd_error"] * 3  # then rate limited
    assert events.seen[0]["id"] == "x" and "unknown action" in events.seen[0]["reason"]
    clock[0] = 11.0
    handler.handle("p/agent-1/cmd", b"junk")
    assert len(events.seen) == 4
    assert handler.counts == {"reload": 2, "rejected": 6}


# -- the agent's swap --------------------------------------------------------------------------
def make_agent(bundle: Path, tmp_path: Path) -> Agent:
    config = parse_config({"bundle": {"path": str(bundle), "watch_interval_s": 0},
                           "sources": [{"type": "stdin", "device": "pod"}],
                           "outbox": {"path": str(tmp_path / "o.sqlite3")}}, environ={})
    agent = Agent(config, load_bundle(config.bundle.path))
    agent.events = RecordingEvents(agent.connection)
    agent.outbox.open()
    return agent


def feed(agent: Agent, n: int, ts0: float, fault: bool = False, seed: int = 3) -> None:
    rows = normal_rows(n, seed=seed)
    if fault:
        rows[:, 2] += 12 * scales()[2]
    names = channel_names()
    for i, row in enumerate(rows):
        line = json.dumps({"ts": ts0 + i, **dict(zip(names, row.tolist(), strict=True))})
        agent.handle(Payload("pod", line.encode(), time.monotonic()))


def test_agent_swaps_keeps_windows_and_refuses_a_bad_bundle(
        bundles: dict[str, Path], tmp_path: Path) -> None:
    agent = make_agent(bundles["link"], tmp_path)
    events: list[dict[str, Any]] = agent.events.seen  # type: ignore[attr-defined]
    v1_sha = agent.info.sha256
    ts0 = time.time() - 200
    feed(agent, 30, ts0)
    scored = agent.gateway.pipelines["pod"].stats.windows_scored
    point(bundles["link"], bundles["v2"])
    agent.apply_reload(reload_now(agent.reloader, "SIGHUP"))
    assert agent.info.sha256 != v1_sha and agent.bundle.manifest.version == "2"
    assert events[-1]["event"] == "reloaded" and events[-1]["trigger"] == "SIGHUP"
    assert events[-1]["previous"]["sha256"] == v1_sha
    assert events[-1]["bundle"]["sha256"] == agent.info.sha256
    feed(agent, 1, ts0 + 30)  # same shape: the window was kept, so this one is scored at once
    assert agent.gateway.pipelines["pod"].stats.windows_scored == scored + 1
    metrics = agent.collect_metrics()[agent.config.mqtt.client_id]
    assert metrics["bundle"]["sha256"] == agent.info.sha256
    assert metrics["reloads"] == {"ok": 1, "failed": 0, "last_error": None}

    v2_sha = agent.info.sha256
    point(bundles["link"], bundles["bad"])
    agent.apply_reload(reload_now(agent.reloader, "cmd pod"))
    assert agent.info.sha256 == v2_sha  # kept
    assert events[-1]["event"] == "reload_failed"
    assert "does not match its sha256" in events[-1]["reason"]
    assert events[-1]["bundle"]["sha256"] == v2_sha
    metrics = agent.collect_metrics()[agent.config.mqtt.client_id]
    assert metrics["reloads"]["failed"] == 1 and "sha256" in metrics["reloads"]["last_error"]
    feed(agent, 5, ts0 + 31)  # still scoring with the kept bundle
    assert agent.gateway.pipelines["pod"].stats.windows_scored == scored + 6
    agent.outbox.close()


def test_a_reload_that_changes_the_window_ends_the_open_alert(
        bundles: dict[str, Path], agent_bundle: Path, tmp_path: Path) -> None:
    agent = make_agent(bundles["link"], tmp_path)
    ts0 = time.time() - 200
    feed(agent, 20, ts0)
    feed(agent, 10, ts0 + 20, fault=True)
    assert agent.gateway.pipelines["pod"].decider.alert is not None
    manifest = load_bundle(agent_bundle).manifest
    other = variant(agent_bundle, tmp_path / "v3", version="3",
                    preprocess=manifest.preprocess.model_copy(update={"clip": 6.0}))
    point(bundles["link"], other)
    agent.apply_reload(reload_now(agent.reloader))
    states = [(i.state, json.loads(i.payload).get("reason")) for i in agent.outbox.pending()]
    assert states[-1] == ("end", "reload")
    assert agent.gateway.pipelines["pod"].decider.alert is None
    agent.outbox.close()
