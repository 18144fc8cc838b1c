"""A Plantower PMS5003 on a UART (pyserial), decoded with edge.pms5003.

The sensor streams a 32-byte frame about once a second at 9600 baud. Each valid frame becomes
a `Reading` stamped with the agent's clock when the frame completed. A port that fails or
disappears (USB adapter unplugged) is logged once and reopened every `reopen_delay_s`.
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

log = logging.getLogger(__name__)


class SerialPms5003Source:
    def __init__(self, cfg: SerialSourceConfig, items: ItemQueue,
                 counter: BadInputCounter) -> None:
        self.name = f"serial:{cfg.port}"
        self.cfg = cfg
        self.items = items
        self.counter = counter
        self.decoder = Pms5003Decoder(counter, device=cfg.device)
        self.frames = 0
        self.opened = threading.Event()  # set while the port is open
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{cfg.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                with serial.Serial(self.cfg.port, self.cfg.baudrate, timeout=0.5) as port:
                    log.info("reading PMS5003 frames from %s at %d baud as %s",
                             self.cfg.port, self.cfg.baudrate, self.cfg.device)
                    failing = False
                    self.opened.set()
                    try:
                        self._read(port)
                    finally:
                        self.opened.clear()
            except (serial.SerialException, OSError) as exc:
                if not failing:
                    log.warning("serial port %s: %s; retrying every %gs", self.cfg.port, exc,
                                self.cfg.reopen_delay_s)
                failing = True
                self._stop.wait(self.cfg.reopen_delay_s)

    def _read(self, port: serial.Serial) -> None:
        while not self._stop.is_set():
            data = port.read(max(port.in_waiting, 32))
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
