"""Commands over MQTT: `<prefix>/<client_id>/cmd` and `<prefix>/<device>/cmd`.

The payload is a JSON object with an `action`; the one action is `reload` (re-read the
configured bundle path, verify, swap; the outcome is a `reloaded` or `reload_failed` event).
An optional `id` is echoed in the reply. Anything else gets a `cmd_error` event with the
reason: not JSON, not an object, no/unknown `action`, too large. Bad commands never raise;
error replies are limited to `max_replies` per `reply_window_s` (the rest are counted and
logged once), so a flood of junk cannot turn into a flood of events.

The agent subscribes to `<prefix>/+/cmd` and ignores the commands for devices it does not
serve (another agent on the same broker serves them). Restrict who may publish there with
the broker's ACL (see the deployment notes): a reload only re-reads the local bundle path and
checks its signature, but nobody else should be able to make the agent do it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection

from edge.mqtt_client import MqttConnection, Topics
from edge.sinks.events import EventPublisher

log = logging.getLogger(__name__)

ACTIONS = ("reload",)


class CommandError(Exception):
    def __init__(self, reason: str, request_id: str | int | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


def parse_command(payload: bytes, max_bytes: int = 1024) -> tuple[str, str | int | None]:
    """(action, id) of a command payload, or CommandError saying what is wrong with it."""
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
    return action, request_id


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
    ) -> None:
        self.agent_id = connection.cfg.client_id
        self.events = events
        self.served = served
        self.on_reload = on_reload
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
            action, request_id = parse_command(payload)
        except CommandError as exc:
            self._reject(topic, str(exc), exc.request_id)
            return
        except Exception as exc:  # a bug must not kill paho's network thread
            log.exception("command on %s failed", topic)
            self._reject(topic, f"internal error: {type(exc).__name__}")
            return
        with self._lock:
            self.counts[action] += 1
        log.info("command %s on %s%s", action, topic,
                 f" (id {request_id!r})" if request_id is not None else "")
        self.on_reload(f"cmd {target}" + (f" id {request_id}" if request_id is not None else ""))

    def _reject(self, topic: str, reason: str, request_id: str | int | None = None) -> None:
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
