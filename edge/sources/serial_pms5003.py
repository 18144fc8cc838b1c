"""A Plantower PMS5003 on a UART (pyserial), decoded with edge.pms5003.

The sensor streams a 32-byte frame about once a second at 9600 baud. Each valid frame becomes
a `Reading` stamped with the agent's clock when the frame completed. A port that fails or
disappears (USB adapter unplugged) is logged once and reopened every `reopen_delay_s`.
Anything else that escapes is the agent's `Supervisor`'s (edge.sources.supervisor): counted,
and the port reopened after a backoff with the decoder's buffered bytes dropped. Decoding is
bounded: at most `MAX_READ` bytes per read, and between reads the decoder holds at most one
frame (32 bytes).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import serial

from edge.config import SerialSource as SerialSourceConfig
from edge.pms5003 import Pms5003Decoder
from edge.readings import BadInputCounter
from edge.sources import ItemQueue
from edge.sources.supervisor import Supervisor

log = logging.getLogger(__name__)


MAX_READ = 4096  # bytes per read: ~4 s of frames at 9600 baud, whatever the port holds


class SerialPms5003Source:
    def __init__(self, cfg: SerialSourceConfig, items: ItemQueue,
                 counter: BadInputCounter, supervisor: Supervisor | None = None) -> None:
        self.name = f"serial:{cfg.port}"
        self.cfg = cfg
        self.items = items
        self.counter = counter
        self.decoder = Pms5003Decoder(counter, device=cfg.device)
        self.frames = 0
        self.opened = threading.Event()  # set while the port is open
        self.runner = (supervisor or Supervisor()).thread(
            self.name, self._work, f"source-{cfg.port}")

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop(timeout=3)

    def _work(self, stop: threading.Event) -> None:
        if self.runner.restarts:  # after a failure: drop the bytes that may have caused it
            self.decoder = Pms5003Decoder(self.counter, device=self.cfg.device)
        failing = False
        while not stop.is_set():
            try:
                with serial.Serial(self.cfg.port, self.cfg.baudrate, timeout=0.5) as port:
                    log.info("reading PMS5003 frames from %s at %d baud as %s",
                             self.cfg.port, self.cfg.baudrate, self.cfg.device)
                    failing = False
                    self.opened.set()
                    try:
                        self._read(port, stop)
                    finally:
                        self.opened.clear()
            except (serial.SerialException, OSError) as exc:
                if not failing:
                    log.warning("serial port %s: %s; retrying every %gs", self.cfg.port, exc,
                                self.cfg.reopen_delay_s)
                failing = True
                stop.wait(self.cfg.reopen_delay_s)

    def _read(self, port: serial.Serial, stop: threading.Event) -> None:
        while not stop.is_set():
            data = port.read(min(max(port.in_waiting, 32), MAX_READ))
            if not data:
                continue
            for frame in self.decoder.feed(data):
                reading = frame.to_reading(self.cfg.device, time.time(), time.monotonic())
                self.frames += 1
                try:
                    self.items.put(reading, timeout=1.0)
                except queue.Full:
                    self.counter.add("queue_full", "the scoring loop is behind; frame dropped",
                                     device=self.cfg.device)
