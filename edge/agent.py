"""`edge-agent run`: sources -> decode -> Gateway (window, score, decide) -> sinks.

`run()` is the whole main loop; `Agent` wires the parts (one MQTT connection, the outbox, the
sinks and the sources) and owns their start and stop order. SIGHUP, a `reload` command or a
replaced bundle directory reload the bundle without a restart (see edge.reload; a bundle that
fails to load is refused and the old one keeps scoring). SIGTERM/SIGINT stop the loop:
open alerts end (`reason: shutdown`), the outbox is flushed for up to `flush_timeout_s`,
`offline` is published on every status topic, and the agent disconnects and exits 0. Killed
(SIGKILL, power loss), it leaves its alerts in the outbox and the broker publishes the will;
the next start ends the alerts that were open then (`reason: restart`, edge.open_alerts).
"""

from __future__ import annotations

import logging
import math
import queue
import signal
import threading
import time
from types import FrameType
from typing import Any

from edge import __version__
from edge.bundle import Bundle, load_bundle
from edge.capture import CaptureStore
from edge.closed_loop import ClosedLoop
from edge.commands import CommandHandler
from edge.config import AgentConfig, SerialSource, StdinSource
from edge.config import MqttSource as MqttSourceConfig
from edge.decide import AlertEvent, AlertOptions, BundleInfo
from edge.engine import ScoringEngine
from edge.feedback import Retention
from edge.health import ChannelHealth, HealthEvent
from edge.homeassistant import HomeAssistantPublisher
from edge.mqtt_client import MqttConnection, Topics
from edge.open_alerts import restart_ends
from edge.outbox import Outbox
from edge.pipeline import Gateway
from edge.readings import BadInputCounter, Reading, decode_counted, input_channels
from edge.reload import BundleReloader, ReloadResult
from edge.sinks.base import (
    AlertSink,
    HomeAssistantSink,
    LogSink,
    OutboxSink,
    StdoutAlertSink,
    encode,
)
from edge.sinks.events import EventPublisher
from edge.sinks.metrics import MetricsPublisher
from edge.sinks.mqtt_alerts import AlertPublisher
from edge.sinks.status import AgentSnapshot, DeviceSnapshot, StatusPublisher
from edge.sinks.stdout import StdoutSink
from edge.sources import Item, ItemQueue, Payload, Source, SourceDone
from edge.sources.mqtt import MqttSource
from edge.sources.serial_pms5003 import SerialPms5003Source
from edge.sources.stdin import StdinSource as StdinReader
from edge.sources.supervisor import EXIT_SOURCE_FAILED, Supervisor
from edge.state_store import StateStore
from edge.systemd import Notifier

log = logging.getLogger("edge.agent")


def run(config: AgentConfig, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop`, or the end of a stdin-only input); returns 0,
    or `EXIT_SOURCE_FAILED` when a source kept failing (edge.sources.supervisor)."""
    stop = stop or _stop_on_signals()
    agent = Agent(config, load_bundle(config.bundle.path, config.bundle.public_key))
    _reload_on_sighup(agent.reloader)
    systemd = Notifier.from_env()  # inert outside a systemd Type=notify unit
    with agent:
        systemd.ready(f"sources: {', '.join(s.name for s in agent.sources)}")
        next_expire = 0.0
        supervisor = agent.supervisor
        while not stop.is_set() and not agent.input_ended and not supervisor.gave_up.is_set():
            item = _next(agent.items, timeout=0.25)
            if item is not None:
                agent.handle(item)
            now = time.monotonic()
            if now >= next_expire:  # end the alerts of devices gone silent
                agent.publish(agent.expire_silent(now))
                next_expire = now + 1.0
            agent.tick(now)
            if supervisor.healthy():  # no WATCHDOG=1 while a source is down
                systemd.watchdog(now)
        log.info("stopping: %s", supervisor.failed or (
            "input ended" if agent.input_ended else "signal"))
        systemd.stopping()
        agent.publish(agent.gateway.close("shutdown"))
    return EXIT_SOURCE_FAILED if supervisor.gave_up.is_set() else 0


def _next(items: ItemQueue, timeout: float) -> Item | None:
    try:
        return items.get(timeout=timeout)
    except queue.Empty:
        return None


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _reload_on_sighup(reloader: BundleReloader) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda _signum, _frame: reloader.request("SIGHUP"))


class Agent:
    """Everything `run` needs, built without I/O; `__enter__` starts it, `__exit__` stops it."""

    def __init__(self, config: AgentConfig, bundle: Bundle) -> None:
        self.config = config
        self.bundle = bundle
        self.info = BundleInfo.from_bundle(bundle)
        self.started = time.monotonic()
        manifest = bundle.manifest
        self.channels = input_channels(manifest)
        self.counter = BadInputCounter(config.log.bad_input_every_s)
        self.state = (StateStore(config.state.path, manifest)
                      if config.state.path is not None else None)
        self._state_saved = time.monotonic()
        self.gateway = Gateway(
            ScoringEngine(bundle, config.bundle.threads, config.bundle.distance_runtime),
            config.decision.apply(manifest.decision),
            self.counter,
            config.decision.stride or manifest.window.stride,
            AlertOptions(update_every_s=config.alerts.update_every_s,
                         top_channels=config.alerts.top_channels),
            max_devices=config.limits.max_devices,
            saved=self.state.load() if self.state is not None else None,
        )
        self._last_seen: dict[str, float] = {}  # device -> monotonic time of its last reading
        mqtt = config.mqtt
        self.topics = Topics(mqtt.topic_prefix)
        self.connection = MqttConnection(mqtt, will_topic=self.topics.status(mqtt.client_id))
        self.outbox = Outbox(config.outbox.path, config.outbox.max_alerts)
        self.alerts = AlertPublisher(self.connection, self.outbox, mqtt.max_inflight)
        self.status = StatusPublisher(self.connection, self.topics, config.fixed_devices,
                                      self.status_snapshot, config.status.every_s)
        self.metrics = MetricsPublisher(
            self.connection, self.topics, self.collect_metrics, config.metrics.interval_s)
        self.stdout = StdoutSink() if config.stdout.enabled else None
        self.homeassistant = HomeAssistantPublisher(
            self.connection, self.topics, config.homeassistant, self.info, __version__,
            config.fixed_devices) if config.homeassistant.enabled else None
        self.health = ChannelHealth(self.channels, manifest.sample_period_s,
                                    config.alerts.silent_channel_periods)
        self.sinks: list[AlertSink] = [OutboxSink(self.alerts, self.topics)]
        if self.homeassistant is not None:
            self.sinks.append(HomeAssistantSink(self.homeassistant))
        if self.stdout is not None:
            self.sinks.append(StdoutAlertSink(self.stdout))
        self.sinks.append(LogSink(log))
        self.events = EventPublisher(self.connection, self.topics, __version__)
        self.reloader = BundleReloader(config.bundle)
        cap, fb = config.capture, config.feedback
        self.loop = ClosedLoop(  # feedback, snooze, capture (edge.closed_loop)
            CaptureStore(cap.path, readings=cap.readings, max_days=cap.max_days,
                         max_bytes=int(cap.max_mb * 1e6)),
            Retention(fb.lead_windows, fb.max_windows, fb.keep_alerts, fb.keep_s,
                      int(fb.max_mb * 1e6)),
            manifest, self.gateway, reply=self.events.publish, reject=self._reject,
            changed=lambda: self.status.documents_due(),
            taught=lambda: self.save_state(background=True))
        self.commands = CommandHandler(
            self.connection, self.topics, self.events, lambda: self.status.devices,
            self.reloader.request, on_command=self.loop.submit,
            max_snooze_s=config.alerts.max_snooze_s) if mqtt.commands else None
        self.items: ItemQueue = queue.Queue(maxsize=config.limits.queue_size)
        self.supervisor = Supervisor()  # restarts failed sources; gives up -> exit code 3
        self.sources = [self._source(cfg) for cfg in config.sources]
        self._finite = {s.name for s in self.sources if isinstance(s, StdinReader)}
        self._done: set[str] = set()
        self.alert_counts = {"start": 0, "update": 0, "end": 0}

    def _source(self, cfg: MqttSourceConfig | SerialSource | StdinSource) -> Source:
        if isinstance(cfg, MqttSourceConfig):
            return MqttSource(cfg, self.connection, self.items, self.counter, self.supervisor)
        if isinstance(cfg, SerialSource):
            return SerialPms5003Source(cfg, self.items, self.counter, self.supervisor)
        return StdinReader(cfg.device, self.items, self.config.limits.max_payload_bytes,
                           supervisor=self.supervisor)

    @property
    def input_ended(self) -> bool:
        """Every source is a finite one (stdin) and all of them have ended."""
        return len(self._finite) == len(self.sources) and self._done >= self._finite

    def __enter__(self) -> Agent:
        m = self.bundle.manifest
        log.info("edge-agent %s: bundle %s %s (sha256 %s...), %d channels, window %d, "
                 "sources: %s", __version__, m.name, m.version, self.info.sha256[:12],
                 len(m.channels), m.window.length, ", ".join(s.name for s in self.sources))
        self.outbox.open()
        self.loop.open()
        self.publish(restart_ends(self.outbox))  # ends of alerts a crash left open, first
        self.alerts.start()
        self.connection.start()
        for source in self.sources:
            source.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for source in self.sources:
            source.stop()
        if self.connection.connected.is_set():
            flushed = self.alerts.flush(self.config.outbox.flush_timeout_s)
            if not flushed:
                log.warning("outbox not flushed in %gs: %d alert(s) kept for the next start",
                            self.config.outbox.flush_timeout_s, self.outbox.depth())
            self.status.offline_all()
        else:
            log.warning("broker unreachable at shutdown: %d alert(s) kept in the outbox",
                        self.outbox.depth())
        self.save_state()
        self.alerts.stop()
        self.connection.stop()
        log.info("stopped: alerts %s, outbox depth %d", self.alert_counts, self.outbox.depth())
        self.outbox.close()
        self.loop.close()
        self.bundle.close()

    def handle(self, item: Item) -> None:
        """One item from a source: decode, score, decide, publish."""
        if isinstance(item, SourceDone):
            log.info("source %s ended", item.name)
            self._done.add(item.name)
            return
        reading = item if isinstance(item, Reading) else self.decode(item)
        if reading is None:
            return
        outcome = self.gateway.process(reading)
        if self.gateway.serves(reading.device):
            self.report_health(self.health.observe(reading.device, reading.ts, reading.values))
            self._last_seen[reading.device] = time.monotonic()
            self.status.add_device(reading.device)
            if self.homeassistant is not None:
                self.homeassistant.add_device(reading.device)
        if outcome is not None:
            self.loop.observe(reading, outcome)
            self.publish(outcome.events)
            if self.homeassistant is not None and outcome.scored:
                self.homeassistant.observe(outcome.device, outcome.score, outcome.ts)

    def report_health(self, events: list[HealthEvent]) -> None:
        """A channel gone silent or back: logged and published on the event topic."""
        for h in events:
            since = None if math.isnan(h.since) else h.since
            log.warning("%s: channel %s of %s (last value at %s)", h.event.replace("_", " "),
                        h.channel, h.device, since)
            self.events.publish(h.event, device=h.device, channel=h.channel, since=since,
                                reading_ts=h.ts)

    def expire_silent(self, now: float) -> list[AlertEvent]:
        """End the open alert of a device silent for longer than the bundle's `max_gap_s`
        (silence on the agent's clock; see `Gateway.expire_silent`)."""
        def silence(device: str) -> float | None:
            seen = self._last_seen.get(device)
            return None if seen is None else now - seen

        return self.gateway.expire_silent(silence)

    def decode(self, item: Payload) -> Reading | None:
        limits = self.config.limits
        return decode_counted(
            item.data, item.device, self.counter, now=time.time(), channels=self.channels,
            max_bytes=limits.max_payload_bytes, max_skew_s=limits.max_skew_s,
            received=item.received)

    def publish(self, events: list[AlertEvent] | tuple[AlertEvent, ...]) -> None:
        for event in self.loop.gate(events):  # recorded; a snoozed device's not published
            encoded = encode(event, self.info, __version__)
            for sink in self.sinks:
                sink.alert(encoded)
            self.alert_counts[event.state] = self.alert_counts.get(event.state, 0) + 1

    def tick(self, now: float) -> None:
        if self.connection.tick():
            self.alerts.reset()
        reloaded = self.reloader.poll(now)
        if reloaded is not None:
            self.apply_reload(reloaded)
        self.publish(self.loop.tick(now))
        if self.config.metrics.enabled:
            self.metrics.maybe_publish(now)
        self.status.maybe_publish(now)
        if now - self._state_saved >= self.config.state.save_every_s:
            self.save_state(background=True)

    def save_state(self, background: bool = False) -> None:
        """Write every device's scoring state (`[state] path`), if kept; `background`: the
        snapshot now, the writing on a worker thread (`StateStore.save_in_background`)."""
        self._state_saved = time.monotonic()
        if self.state is None:
            return
        if background:
            self.state.save_in_background(self.gateway.states(), self.gateway.saved)
        else:
            self.state.save(self.gateway.states(), self.gateway.saved)

    def apply_reload(self, result: ReloadResult) -> None:
        """Swap in a bundle loaded by the reloader, or report why it was refused."""
        old = self.info
        current = {"name": old.name, "version": old.version, "sha256": old.sha256}
        if result.bundle is None or result.engine is None:
            log.error("reload (%s) failed; keeping bundle %s %s (sha256 %s...): %s",
                      result.trigger, old.name, old.version, old.sha256[:12], result.error)
            self.events.publish("reload_failed", trigger=result.trigger, reason=result.error,
                                bundle=current)
            return
        bundle, manifest, previous = result.bundle, result.bundle.manifest, self.bundle
        self.bundle, self.info = bundle, BundleInfo.from_bundle(bundle)
        self.channels = input_channels(manifest)
        self.health = ChannelHealth(self.channels, manifest.sample_period_s,
                                    self.config.alerts.silent_channel_periods)
        self.gateway.stride = self.config.decision.stride or manifest.window.stride
        self.publish(self.gateway.swap_engine(
            result.engine, self.config.decision.apply(manifest.decision)))
        if self.state is not None:
            self.state.rebind(manifest)
        self.loop.rebind(manifest)
        previous.close()  # its engine is out of use: remove its extracted archive
        new = {"name": self.info.name, "version": self.info.version, "sha256": self.info.sha256}
        log.info("reloaded (%s) in %.2fs: bundle %s %s (sha256 %s...) from %s, was %s %s "
                 "(sha256 %s...); signature %s", result.trigger, result.seconds, new["name"],
                 new["version"], new["sha256"][:12], bundle.path, old.name, old.version,
                 old.sha256[:12], "verified" if bundle.signed else "not checked")
        self.events.publish("reloaded", trigger=result.trigger, bundle=new, previous=current,
                            path=str(bundle.path), signed=bundle.signed)
        self.status.documents_due()

    def status_snapshot(self) -> AgentSnapshot:
        """For the retained status documents (edge.sinks.status), on the main loop."""
        wall, mono = time.time(), time.monotonic()
        devices = {
            device: DeviceSnapshot(
                readings=readings,
                last_reading=(round(wall - (mono - self._last_seen[device]), 3)
                              if device in self._last_seen else None),
                open_alerts=open_alerts,
                snoozed_until=self.loop.snoozed_until(device))
            for device, (readings, open_alerts) in self.gateway.device_counts().items()}
        for device, until in self.loop.snoozed.items():  # snoozed before its first reading
            devices.setdefault(device, DeviceSnapshot(snoozed_until=until))
        bundle = {"name": self.info.name, "version": self.info.version,
                  "sha256": self.info.sha256}
        return AgentSnapshot(__version__, bundle, wall - (mono - self.started), devices)

    def collect_metrics(self) -> dict[str, dict[str, Any]]:
        """Per-device counters on each device topic, the totals on the agent's topic."""
        snapshot = self.gateway.metrics()
        common = {"ts": time.time(), "agent_version": __version__,
                  "bundle": {"name": self.info.name, "version": self.info.version,
                             "sha256": self.info.sha256},
                  "outbox_depth": self.outbox.depth()}
        out: dict[str, dict[str, Any]] = {}
        for device, stats in snapshot["devices"].items():
            out[device] = _finite({**common, "device": device, **stats})
        devices = snapshot["devices"].values()
        out[self.config.mqtt.client_id] = _finite({
            **common,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "devices": len(snapshot["devices"]),
            "readings": sum(d["readings"] for d in devices),
            "windows_scored": sum(d["windows_scored"] for d in devices),
            "bad": snapshot["bad_total"],
            "alerts": dict(self.alert_counts),
            "outbox_dropped": self.outbox.dropped(),
            "alerts_inflight": self.alerts.inflight,
            "queue_depth": self.items.qsize(),
            "source_errors": self.supervisor.errors(),
            "mqtt_connections": self.connection.connections,
            "reloads": {"ok": self.reloader.loaded, "failed": self.reloader.failed,
                        "last_error": self.reloader.last_error},
            "commands": dict(self.commands.counts) if self.commands is not None else None,
            "closed_loop": self.loop.metrics(),
        })
        return out

    def _reject(self, topic: str, reason: str, request_id: str | int | None) -> None:
        if self.commands is not None:
            self.commands.reject(topic, reason, request_id)


def _finite(data: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf (e.g. a latency percentile before the first reading) become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in data.items()}
