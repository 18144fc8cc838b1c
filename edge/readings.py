"""Typed readings and the decode/validate stage: bad input is counted, never fatal.

A source hands raw bytes to `decode_payload`, which returns a `Decoded` (the `Reading` plus the
problems it tolerated) or raises `BadReading` with a `kind` from `BAD_KINDS`. `BadInputCounter`
counts problems by kind (and device) and logs each kind once, then at most once per interval
with the count since the last message, so a flood of bad input cannot flood the log.

Accepted payloads (UTF-8 JSON objects, at most `max_bytes`):

- nested: ``{"ts": 1700000000.5, "values": {"pm2_5": 12, "pm10": 20}}``
- flat: ``{"ts": "2024-01-01T00:00:00Z", "pm2_5": 12, "pm10": 20}``

Policy (what is rejected, what is tolerated and counted):

- the timestamp key is ``ts`` (or ``timestamp`` / ``time``): a number of epoch seconds (a
  number above 1e11 is taken as epoch *milliseconds*, which many firmwares send), a numeric
  string, or an ISO-8601 string (no offset means UTC). Absent -> `now`. Unparseable, bool or
  non-finite -> rejected `bad_timestamp`; more than `max_skew_s` away from `now` -> rejected
  `timestamp_far_off`.
- invalid UTF-8/JSON -> `invalid_json`; not an object -> `not_object`; ``values`` not an
  object -> `wrong_type`; bigger than `max_bytes` -> `too_large`.
- bounded before parsing (`check_bounds`, on the bytes, so a hostile payload costs no
  recursion and little memory): brackets nested deeper than `MAX_DEPTH` -> `too_deep`; more
  than `MAX_KEYS` object keys in all (or more than the bundle's channels plus the metadata
  keys, whichever is larger) -> `too_many_keys`. A reading needs depth 2 and one key per
  channel, so no valid reading is refused. Should the parser still hit its recursion limit
  or run out of memory, that is `too_deep` / `too_large` too, never a crash.
- per value: ``null`` -> missing, counted `null_value`; NaN/inf -> missing, counted
  `non_finite`; a bool, string, list or object -> missing, counted `wrong_type`. The window
  stage forward-fills missing values.
- keys that are not channels of the bundle are ignored and counted once per reading as
  `unknown_channel`; in the flat form the keys ``device``, ``id`` and ``seq`` are metadata,
  not channels.
- channels of the bundle absent from the payload are missing, counted once per reading as
  `missing_channels`; a payload with *no usable value* for any channel is rejected as
  `missing_channels` (it would only repeat the forward-filled past).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge.bundle import Manifest

log = logging.getLogger(__name__)

BAD_KINDS: tuple[str, ...] = (
    # decode: the whole reading is rejected
    "invalid_json", "not_object", "too_large", "too_deep", "too_many_keys", "bad_timestamp",
    "timestamp_far_off",
    # decode: one value (or key) is tolerated and counted
    "wrong_type", "non_finite", "null_value", "unknown_channel", "missing_channels",
    # window: the reading is dropped (or the window restarts, for `gap`)
    "duplicate_ts", "out_of_order", "gap",
    # UART frames (PMS5003)
    "bad_frame_checksum", "bad_frame_length", "truncated_frame", "garbage_bytes",
    # gateway
    "too_many_devices",
)

TS_KEYS = ("ts", "timestamp", "time")
META_KEYS = frozenset({*TS_KEYS, "device", "id", "seq"})
MS_EPOCH_ABOVE = 1e11  # 1e11 s is the year 5138; larger timestamps are epoch milliseconds
MAX_DEPTH = 16  # a reading is {"values": {...}}: depth 2; json recurses once per level
MAX_KEYS = 1024  # object keys in a whole payload (raised to fit a bundle's channels)
# a JSON string, escapes included (unrolled so that long strings cost no backtracking)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# bytes.translate arguments: brackets kept (objects as arrays), everything else deleted
_AS_ARRAYS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


@dataclass(frozen=True)
class Reading:
    """One timestamped sample of a device's channels; None marks a missing value.

    `received` is `time.monotonic()` when the source got the reading (0.0 = unknown); the
    pipeline measures its latency from it.
    """

    device: str
    ts: float
    values: dict[str, float | None]
    received: float = 0.0


class BadReading(Exception):
    """A payload that cannot become a reading; `kind` is one of `BAD_KINDS`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    """A decoded reading and the problems tolerated on the way (kinds, with details)."""

    reading: Reading
    issues: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def input_channels(manifest: Manifest) -> list[str]:
    """The channel names a reading carries: a forecast residual channel is derived on the
    device from its measured and forecast columns, so those are what sensors send."""
    residual = manifest.preprocess.forecast
    if residual is None:
        return list(manifest.channels)
    names: list[str] = []
    for name in manifest.channels:
        extra = [residual.measured, residual.forecast] if name == residual.name else [name]
        names.extend(n for n in extra if n not in names)
    return names


def parse_timestamp(value: object) -> float:
    """Epoch seconds from a number (ms above 1e11), numeric string or ISO-8601 string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadReading("bad_timestamp", f"timestamp must be a number or string, not {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return _parse_iso(text)
    else:
        number = _float(value)
    if not math.isfinite(number):
        raise BadReading("bad_timestamp", f"timestamp {str(value)[:32]} is not finite")
    return number / 1000.0 if abs(number) > MS_EPOCH_ABOVE else number


def _float(value: int | float) -> float:
    """float(), with integers beyond the float range as infinity instead of OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _parse_iso(text: str) -> float:
    candidate = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError as exc:
        raise BadReading("bad_timestamp", f"cannot parse timestamp {text[:64]!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def check_bounds(payload: bytes, max_depth: int = MAX_DEPTH, max_keys: int = MAX_KEYS) -> None:
    """Raise `too_deep` / `too_many_keys` for JSON nested or keyed beyond the limits.

    Counted on the bytes outside strings, at C speed (no Python loop per byte): a payload
    with few brackets and colons passes on two `bytes.count` calls; otherwise the strings are
    cut out, and the depth is the number of rounds of removing innermost `[]`/`{}` pairs that
    leave brackets over. Exact for valid JSON; invalid JSON may be judged either way (the
    parser rejects what passes).
    """
    brackets = payload.count(b"[") + payload.count(b"{")
    if brackets <= max_depth and payload.count(b":") <= max_keys:
        return
    bare = _outside_strings(payload)
    if bare.count(b":") > max_keys:
        raise BadReading("too_many_keys", f"more than {max_keys} keys")
    nest = bare.translate(_AS_ARRAYS, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not nest:
            return
        nest = nest.replace(b"[]", b"")  # one level: the innermost pairs
    if nest:
        raise BadReading("too_deep", f"nested deeper than {max_depth} levels")


def _outside_strings(payload: bytes) -> bytes:
    """The payload with the contents of its JSON strings removed."""
    if b'\\"' not in payload:  # no escaped quote: every other piece is inside a string
        return b"".join(payload.split(b'"')[::2])
    return _STRING.sub(b"", payload)


def load_json(payload: bytes, max_depth: int = MAX_DEPTH, max_keys: int = MAX_KEYS) -> Any:
    """`json.loads` within the bounds of `check_bounds`; every failure is a `BadReading`."""
    check_bounds(payload, max_depth, max_keys)
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadReading("invalid_json", str(exc)[:120]) from None
    except RecursionError:  # defensive: check_bounds should have caught it
        raise BadReading("too_deep", "nested too deep for the parser") from None
    except MemoryError:
        raise BadReading("too_large", "out of memory while parsing") from None


def _load_object(payload: bytes, max_bytes: int, max_keys: int) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise BadReading("too_large", f"{len(payload)} bytes, the limit is {max_bytes}")
    data = load_json(payload, max_keys=max_keys)
    if not isinstance(data, dict):
        raise BadReading("not_object", f"expected a JSON object, got {type(data).__name__}")
    return data


def _value(raw: object) -> tuple[float | None, str | None]:
    """The float value and, when it cannot be used, the issue kind."""
    if raw is None:
        return None, "null_value"
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None, "wrong_type"
    number = _float(raw)
    if not math.isfinite(number):
        return None, "non_finite"
    return number, None


def decode_payload(
    payload: bytes,
    device: str,
    *,
    now: float,
    channels: Sequence[str],
    max_bytes: int = 65536,
    max_skew_s: float = 86400 * 365,
    received: float = 0.0,
) -> Decoded:
    """Decode one JSON reading (see the module docstring for the policy)."""
    data = _load_object(payload, max_bytes, max(MAX_KEYS, len(channels) + len(META_KEYS)))
    ts_key = next((k for k in TS_KEYS if k in data), None)
    ts = now if ts_key is None else parse_timestamp(data[ts_key])
    if abs(ts - now) > max_skew_s:
        raise BadReading("timestamp_far_off",
                         f"ts {ts:.0f} is {ts - now:+.0f} s from now (limit {max_skew_s:g})")
    if "values" in data:
        source = data["values"]
        if not isinstance(source, dict):
            kind = type(source).__name__
            raise BadReading("wrong_type", f"`values` must be an object, not {kind}")
    else:
        source = {k: v for k, v in data.items() if k not in META_KEYS}
    wanted = set(channels)
    issues: list[str] = []
    details: list[str] = []
    values: dict[str, float | None] = {}
    missing: list[str] = []
    for name in channels:
        if name not in source:
            values[name] = None
            missing.append(name)
            continue
        values[name], problem = _value(source[name])
        if problem is not None:
            issues.append(problem)
            details.append(f"{name}={str(source[name])[:32]}")
    if all(v is None for v in values.values()):
        raise BadReading("missing_channels", "no usable value for any channel of the bundle")
    unknown = [str(k) for k in source if k not in wanted]
    if unknown:
        issues.append("unknown_channel")
        more = " ..." if len(unknown) > 5 else ""
        details.append(", ".join(k[:32] for k in unknown[:5]) + more)
    if missing:
        issues.append("missing_channels")
        details.append(", ".join(missing))
    return Decoded(Reading(device, ts, values, received), issues, details, missing)


class BadInputCounter:
    """Counts bad input by kind and device; logs a kind at once, then at most every
    `log_every_s` seconds with the number seen since. Thread-safe."""

    def __init__(
        self,
        log_every_s: float = 60.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_every_s = log_every_s
        self._log = logger or log
        self._clock = clock
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {}
        self._by_device: dict[str, dict[str, int]] = {}
        self._last_logged: dict[str, float] = {}
        self._since_logged: dict[str, int] = {}

    def add(self, kind: str, detail: str = "", *, device: str = "", n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._totals[kind] = self._totals.get(kind, 0) + n
            per_device = self._by_device.setdefault(device, {})
            per_device[kind] = per_device.get(kind, 0) + n
            self._since_logged[kind] = self._since_logged.get(kind, 0) + n
            now = self._clock()
            last = self._last_logged.get(kind)
            if last is not None and now - last < self.log_every_s:
                return
            count, self._since_logged[kind] = self._since_logged[kind], 0
            self._last_logged[kind] = now
            total = self._totals[kind]
        where = f" from {device}" if device else ""
        if last is None:
            self._log.warning("bad input %s%s: %s (logged once per %gs per kind)",
                              kind, where, detail, self.log_every_s)
        else:
            self._log.warning("bad input %s: %d more since the last report (%d in all); "
                              "latest%s: %s", kind, count, total, where, detail)

    def record(self, error: BadReading, device: str = "") -> None:
        self.add(error.kind, error.detail, device=device)

    def record_issues(self, decoded: Decoded) -> None:
        for kind, detail in zip(decoded.issues, decoded.details, strict=True):
            self.add(kind, detail, device=decoded.reading.device)

    def totals(self, device: str | None = None) -> dict[str, int]:
        with self._lock:
            source = self._totals if device is None else self._by_device.get(device, {})
            return dict(sorted(source.items()))

    def total(self) -> int:
        with self._lock:
            return sum(self._totals.values())


def decode_counted(
    payload: bytes,
    device: str,
    counter: BadInputCounter,
    *,
    now: float,
    channels: Sequence[str],
    **limits: Any,
) -> Reading | None:
    """`decode_payload` for sources: every problem goes to `counter`; None when rejected."""
    try:
        decoded = decode_payload(payload, device, now=now, channels=channels, **limits)
    except BadReading as error:
        counter.record(error, device)
        return None
    counter.record_issues(decoded)
    return decoded.reading

