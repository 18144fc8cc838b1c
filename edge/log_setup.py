"""Logging for the `edge-agent` commands: the levels they accept and the stderr handler.

Used by `edge.cli` (run, check-config) and `edge.replay` (replay).
"""

from __future__ import annotations

import logging
import sys

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str) -> None:
    """Logs on stderr (stdout carries the JSON lines sink), one line per event."""
    logging.basicConfig(
        stream=sys.stderr, level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", force=True)
    logging.getLogger("edge.mqtt.paho").setLevel(max(logging.getLogger().level, logging.INFO))
