"""Where readings come from. Each source feeds one queue that the agent's main loop drains.

A source puts `Payload` (raw bytes still to decode: MQTT, stdin), `Reading` (already decoded:
the PMS5003 UART) or `SourceDone` (the input ended) items. Sources run on their own threads
(or paho's network thread) and never score: the main loop is the only consumer.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Protocol

from edge.readings import Reading


@dataclass(frozen=True)
class Payload:
    """Raw bytes of one reading from `device`; `received` is `time.monotonic()`."""

    device: str
    data: bytes
    received: float


@dataclass(frozen=True)
class SourceDone:
    """The source has no more input (stdin closed)."""

    name: str


Item = Payload | Reading | SourceDone
ItemQueue = queue.Queue[Item]


class Source(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...
