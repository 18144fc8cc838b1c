"""A throw-away Mosquitto on a free loopback port, for the demo (and anything else local).

    with Broker(extra_config="max_queued_messages 100000") as broker:
        print(broker.address)               # 127.0.0.1:<free port>

The config, the log and nothing else live in a temporary directory removed on exit. The
broker keeps no state (`persistence false`) and listens on 127.0.0.1 only, anonymous.
The port stays the same across stop()/start(), so clients can reconnect to it.
`tests/mosquitto.py` subclasses `Broker` for the test suite (TLS and ACL listeners).
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = (
    "mosquitto is not installed: `make setup` installs it with apt-get, or run "
    "`sudo apt-get install mosquitto` (the demo starts its own private broker; the system "
    "service may stay disabled)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    """The broker executable: on PATH, else Debian's /usr/sbin/mosquitto (not on a user PATH)."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError(INSTALL_HINT)
    return found


class Broker:
    """Start/stop a private Mosquitto; `extra_config` lines go at the end of its config."""

    def __init__(self, extra_config: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="edge-demo-mosq-"))
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def listener_config(self) -> str:
        """The config lines that open the port(s) and say who may connect."""
        return f"listener {self.port} 127.0.0.1\nallow_anonymous true"

    def write_config(self) -> Path:
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"{self.listener_config()}\n"
            "persistence false\n"
            # as root Mosquitto would switch to the `mosquitto` user and lose its log file
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"{self.extra_config}\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> Broker:
        conf = self.write_config()
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err.strip()} {self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.address}: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def log(self) -> str:
        path = self.dir / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
