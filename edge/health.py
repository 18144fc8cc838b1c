"""Sensor health that is not an anomaly of values: a channel that stops reporting.

A channel missing from every reading of its device (null, absent, non-finite) for longer than
`silent_periods` of the bundle's sample period is silent: the window forward-fills it, so no
scorer can see it, yet the sensor is down. `ChannelHealth` reports it once as a
`channel_silent` event, and `channel_back` when a value arrives again; the agent publishes
them on its event topic. A device that stops sending altogether ends its alert (`stale`) and
shows in the status documents' last reading time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HealthEvent:
    event: str  # channel_silent | channel_back
    device: str
    channel: str
    since: float  # epoch seconds (sensor time) of the channel's last value, NaN if never
    ts: float  # the reading that showed it


@dataclass
class _Device:
    last_value: dict[str, float] = field(default_factory=dict)  # channel -> ts of its value
    first_seen: float = math.nan
    silent: set[str] = field(default_factory=set)


class ChannelHealth:
    """Per device and channel: when its last value came, and whether it is reported silent."""

    def __init__(self, channels: list[str], sample_period_s: float,
                 silent_periods: float) -> None:
        self.channels = list(channels)
        self.limit_s = sample_period_s * silent_periods
        self._devices: dict[str, _Device] = {}

    def observe(self, device: str, ts: float, values: dict[str, float | None]
                ) -> list[HealthEvent]:
        """One accepted reading: the health events it brings (often none)."""
        state = self._devices.setdefault(device, _Device(first_seen=ts))
        events = []
        for channel in self.channels:
            value = values.get(channel)
            if value is not None and math.isfinite(value):
                state.last_value[channel] = ts
                if channel in state.silent:
                    state.silent.discard(channel)
                    events.append(HealthEvent("channel_back", device, channel, ts, ts))
                continue
            since = state.last_value.get(channel, state.first_seen)
            if channel not in state.silent and ts - since > self.limit_s:
                state.silent.add(channel)
                events.append(HealthEvent("channel_silent", device, channel,
                                          state.last_value.get(channel, math.nan), ts))
        return events

    def silent(self, device: str) -> list[str]:
        state = self._devices.get(device)
        return sorted(state.silent) if state is not None else []
