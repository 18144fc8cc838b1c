"""Commands over MQTT: `<prefix>/<client_id>/cmd` and `<prefix>/<device>/cmd`.

The payload is a JSON object with an `action`:

- `reload`: re-read the configured bundle path, verify, swap; the outcome is a `reloaded` or
  `reload_failed` event. An optional `id` is echoed in the reply.
- `feedback`: `{"action": "feedback", "id": "<alert id>", "label": "normal" | "anomaly",
  "note": "..."}`: `normal` teaches the device's memories the alert's windows, `anomaly`
  confirms it; both are recorded (`edge.closed_loop`). Optional `device` (on the agent's
  topic) must be the alert's device, as must the device of a device topic.
- `snooze` / `unsnooze`: `{"action": "snooze", "device": "...", "for_s": 3600}`: the device
  is scored and its alerts recorded, but not published, for `for_s` seconds (1 to
  `max_snooze_s`); `device` may be left out on the device's own topic.

Anything else gets a `cmd_error` event with the reason: not JSON, not an object, no/unknown
`action`, a missing or bad field, too large. Bad commands never raise; error replies are
limited to `max_replies` per `reply_window_s` (the rest are counted and logged once), so a
flood of junk cannot turn into a flood of events. The actions other than `reload` are checked
here as far as the payload goes and carried out on the agent's main loop (`on_command`),
which answers with an event or a `cmd_error` (`reject`).

The agent subscribes to `<prefix>/+/cmd` and ignores the commands for devices it does not
serve (another agent on the same broker serves them). Restrict who may publish there with
the broker's ACL (see the deployment notes): a reload only re-reads the local bundle path and
checks its signature, feedback changes what a device takes as normal, and a snooze silences
it: nobody else should be able to do either.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from edge.mqtt_client import MqttConnection, Topics
from edge.sinks.events import EventPublisher

log = logging.getLogger(__name__)

ACTIONS = ("reload", "feedback", "snooze", "unsnooze")
LABELS = ("normal", "anomaly")
MAX_NOTE = 500
MAX_SNOOZE_S = 7 * 86400.0


class CommandError(Exception):
    def __init__(self, reason: str, request_id: str | int | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    """A checked command other than `reload`, for the main loop."""

    action: str
    request_id: str | int | None
    topic: str
    target: str  # the topic's level: the agent's client id or a device
    device: str | None = None  # snooze/unsnooze: the device; feedback: the one it must be
    alert_id: str = ""
    label: str = ""
    note: str = ""
    for_s: float = 0.0


def parse_command(payload: bytes, max_bytes: int = 1024) -> tuple[str, str | int | None]:
    """(action, id) of a command payload, or CommandError saying what is wrong with it."""
    action, request_id, _ = parse_fields(payload, max_bytes)
    return action, request_id


def parse_fields(payload: bytes, max_bytes: int = 1024, max_snooze_s: float = MAX_SNOOZE_S
                 ) -> tuple[str, str | int | None, dict[str, Any]]:
    """(action, id, checked fields) of a command payload, or CommandError saying what is
    wrong with it."""
    if len(payload) > max_bytes:
        raise CommandError(f"command of {len(payload)} bytes, the limit is {max_bytes}")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CommandError('not JSON: expected {"action": "reload"}') from None
    if not isinstance(data, dict):
        raise CommandError(f'expected a JSON object like {{"action": "reload"}}, got '
                           f"{type(data).__name__}")
    raw_id = data.get("id")
    request_id = raw_id[:64] if isinstance(raw_id, str) else (
        raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None)
    action = data.get("action")
    if not isinstance(action, str):
        raise CommandError("missing `action` (a string)", request_id)
    if action not in ACTIONS:
        raise CommandError(f"unknown action {action[:40]!r} (known: {', '.join(ACTIONS)})",
                           request_id)
    return action, request_id, _fields(action, data, request_id, max_snooze_s)


def _text(data: dict[str, Any], key: str, request_id: str | int | None, *, required: bool,
          limit: int) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CommandError(f"`{key}` must be a non-empty string", request_id)
    if len(value) > limit:
        raise CommandError(f"`{key}` of {len(value)} characters, the limit is {limit}",
                           request_id)
    return value


def _fields(action: str, data: dict[str, Any], request_id: str | int | None,
            max_snooze_s: float) -> dict[str, Any]:
    if action == "reload":
        return {}
    device = _text(data, "device", request_id, required=False, limit=200)
    if action == "feedback":
        alert = _text(data, "id", request_id, required=True, limit=200)
        label = data.get("label")
        if label not in LABELS:
            shown = repr(label)[:40] if label is not None else "missing"
            raise CommandError(f"`label` must be one of {', '.join(LABELS)} (got {shown})",
                               request_id)
        note = data.get("note", "")
        if not isinstance(note, str):
            raise CommandError("`note` must be a string", request_id)
        if len(note) > MAX_NOTE:
            raise CommandError(f"`note` of {len(note)} characters, the limit is {MAX_NOTE}",
                               request_id)
        return {"alert_id": alert, "label": label, "note": note, "device": device}
    if action == "snooze":
        for_s = data.get("for_s")
        if isinstance(for_s, bool) or not isinstance(for_s, int | float) or not (
                0 < for_s <= max_snooze_s):
            raise CommandError(f"`for_s` must be a number of seconds, more than 0 and at most "
                               f"{max_snooze_s:g} (got {str(for_s)[:40]})", request_id)
        return {"device": device, "for_s": float(for_s)}
    return {"device": device}  # unsnooze


class CommandHandler:
    def __init__(
        self,
        connection: MqttConnection,
        topics: Topics,
        events: EventPublisher,
        served: Callable[[], Collection[str]],
        on_reload: Callable[[str], None],
        max_replies: int = 10,
        reply_window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_command: Callable[[Request], None] | None = None,
        max_snooze_s: float = MAX_SNOOZE_S,
    ) -> None:
        self.agent_id = connection.cfg.client_id
        self.events = events
        self.served = served
        self.on_reload = on_reload
        self.on_command = on_command
        self.max_snooze_s = max_snooze_s
        self.max_replies = max_replies
        self.reply_window_s = reply_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._replies = 0
        self._suppressed = 0
        self.counts = {"reload": 0, "rejected": 0}
        connection.subscribe(topics.cmd("+"), 1, self.handle)

    def handle(self, topic: str, payload: bytes) -> None:
        """paho's network thread: never raises, never blocks."""
        target = topic.split("/")[-2]
        if target != self.agent_id and target not in self.served():
            log.debug("command for %s ignored: not served by this agent", target)
            return
        try:
            action, request_id, fields = parse_fields(payload, max_snooze_s=self.max_snooze_s)
            request = None if action == "reload" else self._request(
                action, request_id, topic, target, fields)
        except CommandError as exc:
            self.reject(topic, str(exc), exc.request_id)
            return
        except Exception as exc:  # a bug must not kill paho's network thread
            log.exception("command on %s failed", topic)
            self.reject(topic, f"internal error: {type(exc).__name__}")
            return
        with self._lock:
            self.counts[action] = self.counts.get(action, 0) + 1
        log.info("command %s on %s%s", action, topic,
                 f" (id {request_id!r})" if request_id is not None else "")
        if request is None:
            self.on_reload(f"cmd {target}" + (f" id {request_id}" if request_id is not None
                                              else ""))
        else:
            assert self.on_command is not None
            self.on_command(request)

    def _request(self, action: str, request_id: str | int | None, topic: str, target: str,
                 fields: dict[str, Any]) -> Request:
        if self.on_command is None:
            raise CommandError(f"action {action!r} is not available on this agent", request_id)
        device = fields.get("device")
        on_device = target != self.agent_id
        if on_device and device is not None and device != target:
            raise CommandError(f"`device` {device[:60]!r} differs from the topic's device "
                               f"{target!r}", request_id)
        device = device if device is not None else (target if on_device else None)
        if action in ("snooze", "unsnooze"):
            if device is None:
                raise CommandError(f"`device` is required for {action} on the agent's topic",
                                   request_id)
            served = self.served()
            if device not in served:
                known = ", ".join(sorted(served)[:20]) or "none yet"
                raise CommandError(f"device {device[:60]!r} is not served by this agent "
                                   f"(serves: {known})", request_id)
        return Request(action, request_id, topic, target, device,
                       fields.get("alert_id", ""), fields.get("label", ""),
                       fields.get("note", ""), fields.get("for_s", 0.0))

    def reject(self, topic: str, reason: str, request_id: str | int | None = None) -> None:
        """A `cmd_error` event (rate limited); thread-safe, also for the main loop's refusals."""
        with self._lock:
            self.counts["rejected"] += 1
            now = self._clock()
            if now - self._window_start >= self.reply_window_s:
                if self._suppressed:
                    log.warning("%d more bad command(s) were not answered", self._suppressed)
                self._window_start, self._replies, self._suppressed = now, 0, 0
            if self._replies >= self.max_replies:
                self._suppressed += 1
                return
            self._replies += 1
        log.warning("bad command on %s: %s", topic, reason)
        extra = {} if request_id is None else {"id": request_id}
        self.events.publish("cmd_error", topic=topic, reason=reason, **extra)
