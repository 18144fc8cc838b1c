"""systemd's notify protocol (`sd_notify`) without libsystemd: READY, WATCHDOG, STOPPING.

Under a `Type=notify` unit systemd passes a unix datagram socket in `NOTIFY_SOCKET` (a path, or
an abstract name starting with `@`) and, with `WatchdogSec=`, the interval in `WATCHDOG_USEC`
(for the process in `WATCHDOG_PID`, when set). The agent sends `READY=1` once its sources are
started, `WATCHDOG=1` from the main loop at half the interval (so a stuck loop gets the service
restarted) and `STOPPING=1` when it shuts down. Outside systemd every call is a no-op.

    notifier = Notifier.from_env()
    notifier.ready("serving 2 devices")
    while running:
        notifier.watchdog()          # rate-limited; call it every loop turn
    notifier.stopping()

Sending never raises: a notification that cannot be delivered is logged once and dropped,
because systemd going away must not take the agent down with it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Talks to the socket in `NOTIFY_SOCKET`; inert (every method returns False) without it."""

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_interval_s = watchdog_usec / 1e6 / 2 if watchdog_usec > 0 else 0.0
        self._next_ping = 0.0
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec = 0
        pid = env.get("WATCHDOG_PID")
        if pid is None or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "0"))
            except ValueError:
                usec = 0
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        """Send one datagram of `KEY=value` lines; True when it was delivered."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(state.encode(), target)
        except OSError as error:
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.address, error)
                self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self, now: float | None = None) -> bool:
        """`WATCHDOG=1` when half the watchdog interval has passed since the last one."""
        if self.address is None or self.watchdog_interval_s <= 0:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next_ping:
            return False
        self._next_ping = now + self.watchdog_interval_s
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
