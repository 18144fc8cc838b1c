"""A throw-away Mosquitto broker on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from firmware_sim.broker import free_port, mosquitto_binary

__all__ = ["Broker", "free_port", "mosquitto_binary"]


class Broker:
    """Start/stop a private Mosquitto. `extra_config` lines are appended to the generated config.

    The port stays the same across stop()/start(), so clients can reconnect to it.
    """

    def __init__(self, extra_config: str = "", port: int | None = None,
                 listener: str | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="mosq-"))
        self.extra_config = extra_config
        self.listener = listener or f"listener {self.port} 127.0.0.1\nallow_anonymous true"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def write_config(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"{self.listener}\n"
            f"persistence false\n"
            # as root Mosquitto would switch to the `mosquitto` user and lose its log file
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\n"
            f"log_type error\nlog_type warning\nlog_type notice\n"
            f"{self.extra_config}\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> Broker:
        conf = self.write_config()
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err} {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.address}: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
