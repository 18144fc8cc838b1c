"""Durations ("90s", "30m", "12h", "7d", "1d12h") and ISO-8601 UTC instants.

Every timestamp the simulator writes is whole-second UTC, `YYYY-MM-DDTHH:MM:SSZ`.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import numpy as np

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")

DEFAULT_START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"`` or ``"1d12h"``.

    A bare number is seconds.

    >>> parse_duration("1d12h"), parse_duration("90s"), parse_duration(5)
    (129600.0, 90.0, 5.0)
    """
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        raw = text.strip().lower()
        try:
            seconds = float(raw)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(raw):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(raw) or not raw:
                raise ValueError(
                    f"invalid duration {text!r}: use a number with a unit, e.g. 90s, 30m, 12h, 7d"
                ) from None
    if seconds < 0 or not np.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: must be a finite non-negative time")
    return seconds


def parse_time(text: str | datetime) -> datetime:
    """A timezone-aware UTC datetime from ISO-8601 (``Z`` or an offset; naive means UTC) or "now".

    >>> parse_time("2026-01-05T00:00:00Z").isoformat()
    '2026-01-05T00:00:00+00:00'
    """
    if isinstance(text, datetime):
        value = text
    elif text.strip().lower() == "now":
        value = datetime.now(timezone.utc).replace(microsecond=0)
    else:
        raw = text.strip()
        if raw.endswith(("Z", "z")):
            raw = raw[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(
                f"invalid time {text!r}: use ISO-8601 such as 2026-01-05T00:00:00Z"
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def to_epoch(value: datetime | str | float | None) -> float:
    """Epoch seconds of a datetime, ISO string or number; None gives `DEFAULT_START`."""
    if value is None:
        return DEFAULT_START.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return parse_time(value).timestamp()


def format_iso(epoch: float) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` for epoch seconds (fractions are truncated).

    >>> format_iso(1767571200.0)
    '2026-01-05T00:00:00Z'
    """
    return datetime.fromtimestamp(int(np.floor(epoch)), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_iso_array(epochs: np.ndarray) -> list[str]:
    """`format_iso` for many timestamps at once (vectorised through numpy datetime64)."""
    stamps = np.floor(np.asarray(epochs, dtype=np.float64)).astype("int64").astype("datetime64[s]")
    return [s + "Z" for s in np.datetime_as_string(stamps, unit="s").tolist()]


def parse_iso_array(texts: list[str]) -> np.ndarray:
    """Epoch seconds (float64) for ``YYYY-MM-DDTHH:MM:SSZ`` strings."""
    stripped = [t[:-1] if t.endswith("Z") else t for t in texts]
    return np.array(stripped, dtype="datetime64[s]").astype("int64").astype(np.float64)
