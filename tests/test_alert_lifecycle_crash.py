"""Every alert that starts ends once, across SIGKILLs: the agent as a subprocess, a private
Mosquitto with persistence and a persistent QoS 1 subscriber (what a pager or dashboard is).

The agent is killed twice while an alert is open; each restart must end the alert left open
(`reason: restart`) before it scores again, and the last run ends normally.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.agent_io import (
    PREFIX,
    AgentProcess,
    Collector,
    agent_toml,
    dedupe,
    event_key,
    live_lines,
    persistent_broker,
)

pytestmark = pytest.mark.slow

DEVICE = "pod-c"
SOURCES = f'[[sources]]\ntype = "stdin"\ndevice = "{DEVICE}"\n'
# updates every 0.5 s of sensor time, so the open-alert record is refreshed before the kill;
# no scoring state file, so nothing but the outbox carries the alert across the crash
EXTRA = '[alerts]\nupdate_every_s = 0.5\n\n[state]\npath = ""\n'


class Feeder:
    """Readings on the agent's stdin from a thread, at 20 per second, until stopped."""

    def __init__(self, agent: AgentProcess, pattern: list[tuple[int, int | None]],
                 seed: int) -> None:
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(agent, pattern, seed),
                                        daemon=True)
        self._thread.start()

    def _run(self, agent: AgentProcess, pattern: list[tuple[int, int | None]],
             seed: int) -> None:
        try:
            for line in live_lines(pattern, seed=seed, stop=self.stop):
                agent.send(line)
        except OSError:
            pass  # the agent was killed under us

    def join(self) -> None:
        self.stop.set()
        self._thread.join(10)


def starts(seen: Collector, besides: Sequence[str] = ()) -> list[str]:
    """Ids started, once each (a resent start counts once), other than `besides`."""
    found = [a["id"] for a in seen.alerts(DEVICE) if a["state"] == "start"]
    return [i for i in dict.fromkeys(found) if i not in besides]


def ends(seen: Collector) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alert in seen.alerts(DEVICE):
        if alert["state"] == "end":
            out[alert["id"]].append(alert)
    return out


def run_until_open_then_kill(agent: AgentProcess, seen: Collector, seed: int,
                             known: Sequence[str]) -> str:
    """Feed normal rows then a long fault; SIGKILL once the alert's start (and an update) are
    out, while the fault (so the alert) is still on."""
    feeder = Feeder(agent, [(30, None), (400, 3)], seed)
    seen.wait(lambda: bool(starts(seen, known)), 40, "a new alert to start")
    [opened] = starts(seen, known)
    seen.wait(lambda: any(a["id"] == opened and a["state"] == "update"
                          for a in seen.alerts(DEVICE)), 10, "an update of the open alert")
    assert opened not in ends(seen)
    agent.kill()
    feeder.join()
    return opened


def test_sigkill_with_an_open_alert_then_restart_ends_it_once(
    agent_bundle: Path, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    log = tmp_path / "agent.log"
    with persistent_broker() as broker, Collector(broker, client_id="pager",
                                                  persistent=True) as seen:
        config = agent_toml(tmp_path / "agent.toml", broker, agent_bundle,
                            client_id="agent-crash", sources=SOURCES, extra=EXTRA)
        first = AgentProcess(config, log)
        agents.append(first)
        killed = [run_until_open_then_kill(first, seen, seed=4, known=[])]

        second = AgentProcess(config, log)  # ends the first alert, then opens one and dies too
        agents.append(second)
        seen.wait(lambda: killed[0] in ends(seen), 30, "the end of the alert left open")
        killed.append(run_until_open_then_kill(second, seen, seed=5, known=killed[:]))

        third = AgentProcess(config, log)  # ends the second; a whole alert; end of input
        agents.append(third)
        seen.wait(lambda: killed[1] in ends(seen), 30, "the end of the second alert left open")
        feeder = Feeder(third, [(30, None), (20, 3), (40, None)], seed=6)
        seen.wait(lambda: any(i in ends(seen) for i in starts(seen, killed)), 40,
                  "a whole alert in the last run")
        feeder.join()
        third.close_stdin()
        assert third.wait(30) == 0, third.log()
        seen.wait(lambda: seen.payloads(f"{PREFIX}/agent-crash/status")[-1:] == ["offline"],
                  10, "offline after the clean exit")
        received = seen.alerts(DEVICE)

    unique = dedupe([event_key(a) for a in received])
    by_id: dict[str, list[str]] = defaultdict(list)
    for alert_id, state, _ts in unique:
        by_id[alert_id].append(state)
    print(f"received {len(received)} alert events ({len(received) - len(unique)} repeats) "
          f"for {len(by_id)} alerts: " + ", ".join(
              f"{i}: start {s.count('start')} update {s.count('update')} end {s.count('end')}"
              for i, s in by_id.items()))
    for alert_id, states in by_id.items():  # the consumer's invariant
        assert states[0] == "start" and states.count("start") == 1, (alert_id, states)
        assert states[-1] == "end" and states.count("end") == 1, (alert_id, states)
    restarted = {alert_id: found[0] for alert_id, found in ends(seen).items()
                 if found[0].get("reason") == "restart"}
    assert set(restarted) == set(killed) and len(by_id) >= 3
    for alert_id in killed:
        end = restarted[alert_id]
        assert end["score"] is None and end["severity"] == "info" and end["windows"] >= 2
        assert end["ts_epoch"] >= end["ts_start_epoch"]
    text = log.read_text(errors="replace")
    assert text.count("was open when the agent last stopped without a shutdown") == 2
