"""A throw-away Mosquitto broker on a free loopback port, for tests and benchmarks: the
simulator's broker (`firmware_sim.broker`) with its listener lines replaceable."""

from __future__ import annotations

from firmware_sim.broker import Broker as _SimBroker
from firmware_sim.broker import free_port, mosquitto_binary

__all__ = ["Broker", "free_port", "mosquitto_binary"]


class Broker(_SimBroker):
    """Start/stop a private Mosquitto. `extra_config` lines are appended to the generated
    config; `listener` replaces the anonymous loopback listener (TLS, passwords, ACLs, more
    ports).

    The port stays the same across stop()/start(), so clients can reconnect to it.
    """

    def __init__(self, extra_config: str = "", port: int | None = None,
                 listener: str | None = None) -> None:
        super().__init__(extra_config, port)
        self.listener = listener

    def listener_config(self) -> str:
        return self.listener or super().listener_config()
