"""Shared bits of the stress runs: the fixture bundle, RSS sampling."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.agent_fixtures import session_bundle

ROOT = Path(__file__).resolve().parents[2]


def fixture_bundle() -> Path:
    """The tests' tiny real bundle (TFLite + ONNX), cached where pytest caches it."""
    return session_bundle(ROOT / ".pytest_cache" / "d" / "edge-agent-bundle")


def rss_kib(pid: int | str = "self") -> int:
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class RssSampler:
    """Samples a process's RSS every `every_s` on a thread: (seconds since start, KiB)."""

    pid: int | str
    every_s: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((round(time.monotonic() - self._start, 1), rss_kib(self.pid)))
            self._stop.wait(self.every_s)

    @property
    def peak(self) -> int:
        return max((kib for _, kib in self.samples), default=0)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"
