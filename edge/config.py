"""The agent's configuration: one TOML file validated into one pydantic tree.

Every section forbids unknown keys and every field carries a description (the sample
`edge/deploy/agent.example.toml` documents them all). Relative paths are resolved against the
directory of the config file. `load_config` raises `ConfigError` whose `problems` are one line
each, `key.path = value: reason`, which is what `edge-agent check-config` prints.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.bundle import Decision

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PASSWORD_ENV = "EDGE_AGENT_MQTT_PASSWORD"
_SECRET_KEYS = {"password"}


class ConfigError(Exception):
    """A config that must not be used; `problems` holds one `key = value: reason` line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _topic_level(value: str) -> str:
    """A name used as one MQTT topic level: no separators, no wildcards, not empty."""
    if not value or any(c in value for c in "/+#\x00"):
        raise ValueError("must be one MQTT topic level: not empty, without '/', '+', '#'")
    return value


DeviceName = Annotated[str, Field(max_length=128), AfterValidator(_topic_level)]


def _default_client_id() -> str:
    return "edge-agent-" + (socket.gethostname().split(".")[0] or "host")


class BundleConfig(_Section):
    path: Path = Field(description="bundle directory or .tar.gz from `edge-train fit`")
    public_key: Path | None = Field(
        None, description="Ed25519 public key; when set, the bundle's manifest.sig must verify")
    threads: int = Field(1, ge=1, le=64, description="inference threads per runtime")
    distance_runtime: Literal["auto", "onnx", "tflite"] = Field(
        "auto", description="runtime of the distance scorers: onnx (distance.onnx on "
        "onnxruntime), tflite (the bundle's TFLite twin distance.tflite, for devices without "
        "onnxruntime such as 32-bit Raspberry Pi OS) or auto (onnx when onnxruntime is "
        "installed, else tflite); a missing choice is an error, never a silent switch")
    watch_interval_s: float = Field(
        2.0, ge=0, description="check the bundle path this often and reload it when it was "
        "replaced (symlink swap, renamed directory); 0 turns watching off")


class TlsConfig(_Section):
    ca: Path | None = Field(None, description="CA certificate (PEM); system CAs when unset")
    cert: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key: Path | None = Field(None, description="client private key (PEM) for mutual TLS")
    insecure: bool = Field(
        False, description="skip the broker hostname check (tests only; encryption stays on)")

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("`cert` and `key` go together (mutual TLS needs both)")
        return self


class MqttConfig(_Section):
    host: str = Field("localhost", min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 is usual with TLS)")
    client_id: DeviceName = Field(
        default_factory=_default_client_id,
        description="MQTT client id; also names the agent's own status topic (the last will)")
    username: str | None = Field(None, description="user name for the broker")
    password: SecretStr | None = Field(
        None, description=f"password; prefer the environment variable named by password_env "
                          f"(default {PASSWORD_ENV}). Never logged.")
    password_env: str = Field(
        PASSWORD_ENV, min_length=1, description="environment variable read for the password")
    tls: TlsConfig | None = Field(
        None, description="TLS settings; the connection is plain TCP when unset")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="`auto`: MQTT v5, falling back to 3.1.1 if the broker refuses v5")
    keepalive: int = Field(30, ge=5, le=65535, description="keepalive interval in seconds")
    topic_prefix: str = Field(
        "edge-anomaly", description="first topic levels of everything the agent publishes")
    allow_plaintext_password: bool = Field(
        False, description="allow sending a password over a connection without TLS")
    reconnect_min_delay_s: int = Field(
        1, ge=1, le=3600, description="first reconnect delay in seconds; doubles per failure")
    reconnect_max_delay_s: int = Field(
        60, ge=1, le=3600, description="longest delay between reconnect attempts, in seconds")
    max_inflight: int = Field(
        20, ge=1, le=1000, description="alerts sent but not yet acknowledged by the broker")
    commands: bool = Field(
        True, description='accept {"action": "reload"} on <prefix>/<client_id>/cmd and '
        "<prefix>/<device>/cmd (restrict who may publish there with the broker's ACL)")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError("must be non-empty topic levels without leading/trailing '/'")
        if any(c in value for c in "+#\x00"):
            raise ValueError("must not hold the wildcards '+' or '#'")
        return value

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> MqttConfig:
        if self.reconnect_min_delay_s > self.reconnect_max_delay_s:
            raise ValueError("reconnect_min_delay_s must not exceed reconnect_max_delay_s")
        environ = _environ(info)
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        has_password = self.password is not None or bool(environ.get(self.password_env))
        if has_password and self.username is not None and self.tls is None \
                and not self.allow_plaintext_password:
            raise ValueError(
                "refusing to send a password without TLS: configure [mqtt.tls] "
                "or set allow_plaintext_password = true")
        return self

    def resolved_password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The password from the config, else from the environment; None without a username."""
        if self.username is None:
            return None
        if self.password is not None:
            return self.password.get_secret_value()
        return (os.environ if environ is None else environ).get(self.password_env) or None


class MqttSource(_Section):
    type: Literal["mqtt"] = Field(description="readings published on the local broker")
    topic: str = Field(
        "sensors/+/readings",
        description="topic filter with exactly one `+` level: that level is the device id")
    qos: Literal[0, 1] = Field(0, description="subscription QoS")

    @field_validator("topic")
    @classmethod
    def _one_plus(cls, value: str) -> str:
        levels = value.split("/")
        if levels.count("+") != 1 or "#" in value or any(
                ("+" in level and level != "+") for level in levels):
            raise ValueError("needs exactly one `+` level (the device id) and no `#`")
        return value

    @property
    def device_level(self) -> int:
        return self.topic.split("/").index("+")


class SerialSource(_Section):
    type: Literal["serial"] = Field(description="a Plantower PMS5003 on a UART")
    port: str = Field(min_length=1, description="serial device, e.g. /dev/serial0 or /dev/ttyUSB0")
    baudrate: int = Field(9600, gt=0, description="line speed; the PMS5003 uses 9600")
    device: DeviceName = Field(description="device id used in topics for this sensor")
    reopen_delay_s: float = Field(
        5.0, gt=0, description="wait before reopening the port after it fails or disappears")


class StdinSource(_Section):
    type: Literal["stdin"] = Field(description="JSON lines on standard input")
    device: DeviceName = Field(
        "stdin", description="device id for lines that carry no `device` field")


SourceConfig = Annotated[MqttSource | SerialSource | StdinSource, Field(discriminator="type")]


def _default_sources() -> list[SourceConfig]:
    return [MqttSource(type="mqtt")]


class DecisionConfig(_Section):
    """Overrides of the bundle manifest's decision policy; unset keys keep the manifest's."""

    smoothing: int | None = Field(
        None, ge=1, description="moving average of the ensemble score, in windows")
    trigger: int | None = Field(
        None, ge=1, description="consecutive windows over 1.0 that start an alert")
    release: int | None = Field(
        None, ge=1, description="consecutive windows under release_level that end an alert")
    release_level: float | None = Field(
        None, gt=0, description="score under which a window counts towards release")
    cooldown_s: float | None = Field(
        None, ge=0, description="quiet seconds after an end before a new start")
    cooldown_windows: int | None = Field(
        None, ge=0, description="scored windows after an end before a new start")
    warmup_windows: int | None = Field(
        None, ge=0, description="windows not alerted on after start or after a gap")
    stride: int | None = Field(
        None, ge=1, description="score every n-th window (the manifest's stride when unset)")

    def apply(self, base: Decision) -> Decision:
        updates = self.model_dump(exclude_none=True, exclude={"stride"})
        return Decision.model_validate({**base.model_dump(), **updates})


class AlertsConfig(_Section):
    update_every_s: float = Field(
        60.0, ge=0, description="publish an `update` of an open alert at most this often; 0: never")
    top_channels: int = Field(
        3, ge=1, le=64, description="channels named in an alert's attribution")
    silent_channel_periods: float = Field(
        30.0, gt=0, description="a channel missing from every reading for longer than this many "
        "sample periods is reported silent (event channel_silent, then channel_back)")
    max_snooze_s: float = Field(
        7 * 86400.0, ge=1, le=366 * 86400.0,
        description="the longest `snooze` command accepted (`for_s`), in seconds")


class MetricsConfig(_Section):
    enabled: bool = Field(True, description="publish `<prefix>/<device>/metrics` periodically")
    interval_s: float = Field(60.0, ge=1, description="seconds between metrics messages")


class StatusConfig(_Section):
    every_s: float = Field(
        30.0, ge=1, description="seconds between the retained status documents on "
                                "<prefix>/<id>/info (also sent at once on a change)")


class OutboxConfig(_Section):
    path: Path = Field(
        Path("outbox.sqlite3"), description="SQLite file holding alerts until the broker acks them")
    max_alerts: int = Field(
        10000, ge=10, description="bound; when full the oldest `update` events are dropped first")
    flush_timeout_s: float = Field(
        5.0, ge=0, description="at shutdown, wait this long for the broker to ack the backlog")


class StateConfig(_Section):
    path: Path | None = Field(
        Path("scoring-state.npz"), description="each device's memories, likelihood histories "
        "and running ranges, kept across restarts (empty string: not kept)")
    save_every_s: float = Field(
        300.0, gt=0, description="write the state this often, and at shutdown")

    @field_validator("path", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if value == "" else value


class CaptureConfig(_Section):
    path: Path = Field(
        Path("capture.sqlite3"), description="SQLite file of the device-side record: readings, "
        "alerts (published or snoozed), feedback labels, snoozes")
    readings: bool = Field(
        True, description="record every accepted reading (for `edge-agent capture export` and "
        "retraining); false keeps only alerts, feedback and snoozes")
    max_days: float = Field(
        7.0, gt=0, le=3660, description="readings (and alerts) older than this before the "
        "newest reading are deleted")
    max_mb: float = Field(
        256.0, ge=1, description="the readings' pages in the file stay under this many MB "
        "(the oldest go first)")


class FeedbackConfig(_Section):
    lead_windows: int = Field(
        32, ge=0, le=10000, description="windows before an alert's start kept with it (their "
        "vectors are taught too on `feedback normal`)")
    max_windows: int = Field(
        1024, ge=8, le=100000, description="windows kept per memory and alert (a longer alert "
        "keeps an evenly spread subset)")
    keep_alerts: int = Field(
        8, ge=1, le=1000, description="ended alerts per device whose windows are kept for "
        "`feedback normal`")
    keep_s: float = Field(
        7 * 86400.0, gt=0, description="seconds after its end an alert can still be taught")
    max_mb: float = Field(
        64.0, gt=0, description="memory for the kept alerts of all devices (the oldest go "
        "first)")


class StdoutConfig(_Section):
    enabled: bool = Field(False, description="also write every alert as a JSON line on stdout")


class HomeAssistantConfig(_Section):
    enabled: bool = Field(False, description="publish Home Assistant MQTT discovery messages")
    discovery_prefix: str = Field("homeassistant", min_length=1, description="HA discovery prefix")
    score_every_s: float = Field(
        30.0, ge=1, description="publish the score on <prefix>/<device>/state at most this often "
                                "(alert start and end go out at once)")

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery_prefix(cls, value: str) -> str:
        if value.startswith("/") or value.endswith("/") or "//" in value or any(
                c in value for c in "+#\x00"):
            raise ValueError("must be topic levels without wildcards or leading/trailing '/'")
        return value


class LimitsConfig(_Section):
    max_payload_bytes: int = Field(
        4096, ge=64, le=1 << 20, description="larger reading payloads are rejected as bad input")
    max_skew_s: float = Field(
        300.0, gt=0, description="readings stamped further than this from the agent clock are bad")
    max_devices: int = Field(
        64, ge=1, le=100000, description="devices one agent serves; readings of more are dropped")
    queue_size: int = Field(
        10000, ge=10, description="readings waiting to be scored; MQTT readings beyond are dropped")


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    bad_input_every_s: float = Field(
        60.0, ge=0, description="log each kind of bad input at most once per this many seconds")


class AgentConfig(_Section):
    """The whole `agent.toml`."""

    bundle: BundleConfig = Field(description="the model bundle to score with")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="broker connection")
    sources: list[SourceConfig] = Field(
        default_factory=_default_sources, min_length=1,
        description="where readings come from ([[sources]] tables, `type` selects)")
    decision: DecisionConfig = Field(default_factory=DecisionConfig, description="alert policy")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="alert messages")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="metrics messages")
    status: StatusConfig = Field(default_factory=StatusConfig,
                                 description="status documents for the fleet view")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="durable alert queue")
    state: StateConfig = Field(default_factory=StateConfig,
                               description="scoring state kept across restarts")
    capture: CaptureConfig = Field(default_factory=CaptureConfig,
                                   description="device-side record for feedback and retraining")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig,
                                     description="what is kept for `feedback normal`")
    stdout: StdoutConfig = Field(default_factory=StdoutConfig, description="JSON lines sink")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="Home Assistant discovery")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="input limits")
    log: LogConfig = Field(default_factory=LogConfig, description="logging")

    @model_validator(mode="after")
    def _sources(self, info: ValidationInfo) -> AgentConfig:
        if sum(1 for s in self.sources if s.type == "stdin") > 1:
            raise ValueError("at most one stdin source")
        ports = [s.port for s in self.sources if isinstance(s, SerialSource)]
        if len(ports) != len(set(ports)):
            raise ValueError("two serial sources on one port")
        base = (info.context or {}).get("base_dir")
        if base is not None:
            self.bundle.path = _resolve(base, self.bundle.path)
            self.outbox.path = _resolve(base, self.outbox.path)
            self.capture.path = _resolve(base, self.capture.path)
            if self.state.path is not None:
                self.state.path = _resolve(base, self.state.path)
            if self.bundle.public_key is not None:
                self.bundle.public_key = _resolve(base, self.bundle.public_key)
            tls = self.mqtt.tls
            if tls is not None:
                for name in ("ca", "cert", "key"):
                    value = getattr(tls, name)
                    if value is not None:
                        setattr(tls, name, _resolve(base, value))
        return self

    @property
    def fixed_devices(self) -> list[str]:
        """Device ids known before any reading: serial and stdin sources."""
        return [s.device for s in self.sources if isinstance(s, SerialSource | StdinSource)]


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context or {}
    environ = context.get("environ")
    return os.environ if environ is None else environ


def _resolve(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path)


def _show(loc: tuple[int | str, ...], value: Any) -> str:
    if any(str(p) in _SECRET_KEYS for p in loc):
        return "'***'"
    if isinstance(value, dict):
        return "{...}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and loc[0] == "sources" and i == 2 and part in {"mqtt", "serial", "stdin"}:
            continue  # the discriminator tag pydantic inserts: sources[0].mqtt.topic
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


_SOURCE_TYPES: dict[str, type[BaseModel]] = {
    "mqtt": MqttSource, "serial": SerialSource, "stdin": StdinSource}


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys a section accepts, for the message about an unknown key at `loc`."""
    model: type[BaseModel] | None = AgentConfig
    parents = loc[:-1]
    if parents[:1] == ("sources",):
        if len(parents) < 3 or not isinstance(parents[2], str):
            return []
        model, parents = _SOURCE_TYPES.get(parents[2]), parents[3:]
    for part in parents:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def format_errors(error: ValidationError) -> list[str]:
    """One `key.path = value: reason` line per problem, secrets masked."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = _path(loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{where} = {_show(loc, item['input'])}: unknown key{hint}")
        elif item["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        elif item["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            tag = (item.get("ctx") or {}).get("tag")
            shown = f" = {tag!r}" if tag is not None else ""
            lines.append(f"{where}.type{shown}: must be one of 'mqtt', 'serial', 'stdin'")
        elif isinstance(item["input"], dict):
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{where} = {_show(loc, item['input'])}: {message}")
    return lines


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None, source: str = "config",
) -> AgentConfig:
    try:
        return AgentConfig.model_validate(
            data, context={"base_dir": base_dir, "environ": environ})
    except ValidationError as exc:
        raise ConfigError(source, format_errors(exc)) from exc


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate `agent.toml`; raises ConfigError with every problem found."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from exc
    return parse_config(data, base_dir=path.resolve().parent, environ=environ, source=str(path))


def file_warnings(path: Path | str, config: AgentConfig) -> list[str]:
    """Secrets in files others can read: the config file holding the MQTT password, the
    TLS client key. One line each, naming the file and the fix."""
    found = []
    secrets: list[tuple[Path, str, str]] = []
    if config.mqtt.password is not None:
        secrets.append((Path(path), "holds the MQTT password",
                        f" (or pass the password in ${config.mqtt.password_env} instead)"))
    if config.mqtt.tls is not None and config.mqtt.tls.key is not None:
        secrets.append((config.mqtt.tls.key, "is the TLS client private key", ""))
    for file, what, alternative in secrets:
        try:
            mode = file.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & 0o044:
            found.append(f"{file} {what} and is readable by group/others (mode {mode:04o}): "
                         f"run `chmod 600 {file}`{alternative}")
    return found


def summary(config: AgentConfig, bundle: Any = None) -> list[str]:
    """Human-readable effective settings, for `check-config` (no secrets)."""
    m = config.mqtt
    auth = "none"
    if m.username is not None:
        origin = "config" if m.password is not None else f"${m.password_env}"
        auth = f"user {m.username!r}, password from {origin}"
    lines = []
    if bundle is not None:
        man = bundle.manifest
        lines.append(
            f"bundle    {config.bundle.path}: {man.name} {man.version}, sha256 "
            f"{bundle.manifest_sha256[:12]}..., {len(man.channels)} channels, window "
            f"{man.window.length}, scorers {', '.join(s.name for s in man.scorers)}, "
            f"signature {'verified' if bundle.signed else 'not checked'}")
    lines.append(
        f"mqtt      {'mqtts' if m.tls else 'mqtt'}://{m.host}:{m.port} as {m.client_id!r}, "
        f"protocol {m.protocol}, prefix {m.topic_prefix!r}, auth {auth}, "
        f"reconnect {m.reconnect_min_delay_s}-{m.reconnect_max_delay_s} s")
    for i, s in enumerate(config.sources):
        if isinstance(s, MqttSource):
            what = f"mqtt {s.topic!r} (qos {s.qos}, device = level {s.device_level + 1})"
        elif isinstance(s, SerialSource):
            what = f"serial {s.port} at {s.baudrate} baud (PMS5003) as {s.device!r}"
        else:
            what = f"stdin JSON lines, default device {s.device!r}"
        lines.append(f"source[{i}] {what}")
    overrides = config.decision.model_dump(exclude_none=True)
    lines.append(f"decision  overrides {overrides or 'none'} (else the manifest's)")
    lines.append(
        f"alerts    {m.topic_prefix}/<device>/alert QoS 1, update every "
        f"{config.alerts.update_every_s:g} s, top {config.alerts.top_channels} channels; "
        f"stdout {'on' if config.stdout.enabled else 'off'}")
    lines.append(
        f"outbox    {config.outbox.path} (max {config.outbox.max_alerts} alerts)")
    cap = config.capture
    lines.append(f"capture   {cap.path}: " + (
        f"readings for {cap.max_days:g} days, at most {cap.max_mb:g} MB" if cap.readings
        else "alerts, feedback and snoozes only"))
    state = config.state
    lines.append(f"state     {state.path} (saved every {state.save_every_s:g} s and at shutdown)"
                 if state.path is not None else "state     not kept across restarts")
    every = f"every {config.metrics.interval_s:g} s" if config.metrics.enabled else "off"
    lines.append(
        f"metrics   {every}; homeassistant {'on' if config.homeassistant.enabled else 'off'}; "
        f"log {config.log.level}")
    return lines
