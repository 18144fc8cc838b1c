"""Alerts as JSON lines on stdout (logs go to stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO


class StdoutSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def write(self, payload: dict[str, Any]) -> None:
        try:
            self.stream.write(json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            pass  # the reader went away; MQTT still carries the alerts
