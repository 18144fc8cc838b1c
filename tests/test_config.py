"""The agent config: unknown keys, key-path errors, check-config's exit code, secrets."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge import config as cfg
from edge.bundle import Decision
from edge.cli import main
from edge.config import AgentConfig, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[1] / "edge" / "deploy" / "agent.example.toml"
BASE = {"bundle": {"path": "bundle"}}


def problems(data: dict[str, object], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ=environ or {})
    return caught.value.problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_minimal_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[bundle]\npath = "b"\n'), environ={})
    assert config.bundle.path == tmp_path / "b"
    assert config.outbox.path == tmp_path / "outbox.sqlite3"
    assert config.mqtt.port == 1883 and config.mqtt.protocol == "auto"
    assert config.mqtt.topic_prefix == "edge-anomaly"
    assert [s.type for s in config.sources] == ["mqtt"]
    assert config.sources[0].topic == "sensors/+/readings"  # type: ignore[union-attr]


def test_unknown_key_is_rejected_and_named() -> None:
    lines = problems({**BASE, "mqtt": {"hots": "broker"}})
    assert len(lines) == 1
    assert lines[0].startswith("mqtt.hots = 'broker': unknown key")
    assert "host" in lines[0]  # the allowed keys are listed
    assert problems({**BASE, "zzz": 1})[0].startswith("zzz = 1: unknown key")
    nested = problems({**BASE, "sources": [{"type": "serial", "port": "/dev/x", "device": "a",
                                            "baud": 9600}]})
    assert nested[0].startswith("sources[0].baud = 9600: unknown key (allowed: baudrate,")


def test_bad_value_prints_key_path_value_and_reason() -> None:
    assert problems({**BASE, "mqtt": {"port": 70000}}) == [
        "mqtt.port = 70000: Input should be less than or equal to 65535"]
    lines = problems({**BASE, "decision": {"trigger": 0}, "log": {"level": "LOUD"},
                      "sources": [{"type": "mqtt", "topic": "sensors/#"}, {"type": "modbus"}]})
    assert "decision.trigger = 0: Input should be greater than or equal to 1" in lines
    assert any(line.startswith("log.level = 'LOUD': Input should be") for line in lines)
    assert any(line.startswith("sources[0].topic = 'sensors/#': needs exactly one `+`")
               for line in lines)
    assert "sources[1].type = 'modbus': must be one of 'mqtt', 'serial', 'stdin'" in lines
    assert problems({"mqtt": {}}) == ["bundle: required key is missing"]


def test_device_names_must_be_one_topic_level() -> None:
    lines = problems({**BASE, "sources": [{"type": "stdin", "device": "a/b"}]})
    assert lines[0].startswith("sources[0].device = 'a/b': must be one MQTT topic level")
    assert problems({**BASE, "mqtt": {"topic_prefix": "x/#"}})[0].startswith(
        "mqtt.topic_prefix = 'x/#'")


def test_password_without_tls_is_refused_unless_allowed() -> None:
    refused = problems({**BASE, "mqtt": {"username": "u", "password": "hunter2"}})
    assert refused == ["mqtt: refusing to send a password without TLS: configure [mqtt.tls] "
                       "or set allow_plaintext_password = true"]
    # the same for a password from the environment
    env = {"EDGE_AGENT_MQTT_PASSWORD": "hunter2"}
    assert problems({**BASE, "mqtt": {"username": "u"}}, env) == refused
    allowed = parse_config({**BASE, "mqtt": {"username": "u", "allow_plaintext_password": True}},
                           environ=env)
    assert allowed.mqtt.resolved_password(env) == "hunter2"
    with_tls = parse_config({**BASE, "mqtt": {"username": "u", "password": "p", "tls": {}}},
                            environ={})
    assert with_tls.mqtt.resolved_password({}) == "p"
    named_env = parse_config(
        {**BASE, "mqtt": {"username": "u", "password_env": "MY_PW", "tls": {"insecure": True}}},
        environ={})
    assert named_env.mqtt.resolved_password({"MY_PW": "x"}) == "x"
    assert problems({**BASE, "mqtt": {"password": "p", "tls": {}}}) == [
        "mqtt: a password needs a username"]


def test_secrets_are_never_printed() -> None:
    lines = problems({**BASE, "mqtt": {"username": "u", "password": ["hunter2"], "tls": {}}})
    assert lines and all("hunter2" not in line for line in lines)
    assert lines[0].startswith("mqtt.password = '***'")
    config = parse_config({**BASE, "mqtt": {"username": "u", "password": "hunter2",
                                            "tls": {}}}, environ={})
    assert "hunter2" not in repr(config) and "hunter2" not in "\n".join(cfg.summary(config))


def test_tls_cert_and_key_go_together() -> None:
    lines = problems({**BASE, "mqtt": {"tls": {"cert": "c.pem"}}})
    assert lines == ["mqtt.tls: `cert` and `key` go together (mutual TLS needs both)"]


def test_decision_overrides_apply_over_the_manifest() -> None:
    config = parse_config({**BASE, "decision": {"trigger": 7, "cooldown_s": 30, "stride": 2}},
                          environ={})
    merged = config.decision.apply(Decision(release=9))
    assert (merged.trigger, merged.cooldown_s, merged.release) == (7, 30.0, 9)
    assert config.decision.stride == 2


def test_sources_discriminated_and_fixed_devices() -> None:
    config = parse_config({**BASE, "sources": [
        {"type": "mqtt", "topic": "site/+/pm"},
        {"type": "serial", "port": "/dev/ttyUSB0", "device": "pms-1"},
        {"type": "stdin"},
    ]}, environ={})
    kinds = [type(s).__name__ for s in config.sources]
    assert kinds == ["MqttSource", "SerialSource", "StdinSource"]
    assert config.sources[0].device_level == 1  # type: ignore[union-attr]
    assert config.sources[1].baudrate == 9600  # type: ignore[union-attr]
    assert config.fixed_devices == ["pms-1", "stdin"]
    assert problems({**BASE, "sources": [{"type": "stdin"}, {"type": "stdin"}]}) == [
        "(top level): at most one stdin source"]


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        sub = cfg._model_of(field.annotation)
        if sub is not None and sub not in found and sub is not model:
            found.extend(m for m in _models(sub) if m not in found)
    return found


def test_every_field_is_described_and_in_the_example() -> None:
    models = {*_models(AgentConfig), cfg.MqttSource, cfg.SerialSource, cfg.StdinSource}
    example = EXAMPLE.read_text()
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            if model is not AgentConfig:
                pattern = rf"^#? ?({name} = |\[[\w.]*\.{name}\])"
                assert re.search(pattern, example, re.M), f"{name} not in the example"


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.bundle.path == EXAMPLE.parent / "bundle"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, '[bundle]\npath = "b"\n[mqtt]\nport = 70000\nhots = "x"\n')
    assert main(["check-config", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "mqtt.port = 70000: Input should be less than or equal to 65535" in out
    assert "mqtt.hots = 'x': unknown key" in out
    broken = write(tmp_path, "[bundle\npath = 1\n")
    assert main(["check-config", str(broken)]) == 2
    assert "not valid TOML" in capsys.readouterr().out
    missing = write(tmp_path, f'[bundle]\npath = "{tmp_path / "nope"}"\n')
    assert main(["check-config", str(missing)]) == 2
    assert "bundle.path" in capsys.readouterr().out


def test_check_config_ok_loads_the_bundle(tmp_path: Path, agent_bundle: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, f'[bundle]\npath = "{agent_bundle}"\n[[sources]]\ntype = "stdin"\n')
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: OK")
    assert "agent-fixture" in out and "stdin" in out


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib error text differs")
def test_run_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, '[bundle]\npath = "b"\n[outbox]\nmax_alerts = 1\n')
    assert main(["run", "--config", str(bad)]) == 2
    assert "outbox.max_alerts = 1: Input should be greater than or equal to 10" in (
        capsys.readouterr().err)
