"""One supervisor for every source: a failure is counted and restarted, never silent.

A source's thread runs its `work(stop)` under `Supervisor.thread`; a callback source (MQTT,
on paho's network thread) has its handler wrapped by `Supervisor.guard`. Any exception
escaping either (any type: the foreseen ones are handled inside the source) is

- logged once, with its traceback, and counted by source name (`errors()`, the
  `source_errors` of the agent's metrics);
- followed by a restart of the thread's `work` after a backoff of `BACKOFF_MIN_S` doubled
  per recent failure, at most `BACKOFF_MAX_S` (a callback simply takes the next message);
- after `MAX_FAILURES` failures of one source within `FAILURE_WINDOW_S`, the end: no more
  restarts, `gave_up` is set and the agent exits with `EXIT_SOURCE_FAILED`, so that systemd
  (`Restart=on-failure`) starts it afresh rather than leave it running deaf.

`healthy()` is False while a source that should be reading is not (in backoff, given up,
or a thread that is gone): the agent sends no systemd `WATCHDOG=1` then. A thread whose
`work` returned (stdin at the end of input) is finished, not dead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import ParamSpec

log = logging.getLogger(__name__)

MAX_FAILURES = 5  # failures of one source within FAILURE_WINDOW_S that end the agent
FAILURE_WINDOW_S = 60.0
BACKOFF_MIN_S = 0.5  # first restart delay, doubled per failure still in the window
BACKOFF_MAX_S = 10.0
EXIT_SOURCE_FAILED = 3  # run()'s exit code when a source gave up (2 is a config/bundle error)

P = ParamSpec("P")
Work = Callable[[threading.Event], None]


class Supervisor:
    """Counts source failures, decides restart or give-up; thread-safe. Limits default to
    the module constants (read when the supervisor is made, so tests can shrink them)."""

    def __init__(self, *, max_failures: int | None = None, window_s: float | None = None,
                 backoff_min_s: float | None = None, backoff_max_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = MAX_FAILURES if max_failures is None else max_failures
        self.window_s = FAILURE_WINDOW_S if window_s is None else window_s
        self.backoff_min_s = BACKOFF_MIN_S if backoff_min_s is None else backoff_min_s
        self.backoff_max_s = BACKOFF_MAX_S if backoff_max_s is None else backoff_max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self._threads: list[SupervisedThread] = []
        self.gave_up = threading.Event()
        self.failed: str | None = None  # why the supervisor gave up, once it has

    def thread(self, name: str, work: Work, thread_name: str) -> SupervisedThread:
        """A thread that runs `work(stop)` until it returns or `stop` is set, restarting it
        after a failure; start and stop it with its own `start()` / `stop()`."""
        runner = SupervisedThread(self, name, work, thread_name)
        with self._lock:
            self._errors.setdefault(name, 0)
            self._threads.append(runner)
        return runner

    def guard(self, name: str, handler: Callable[P, None]) -> Callable[P, None]:
        """`handler` with its exceptions counted instead of raised into the caller (paho's
        network loop, which an exception would end)."""
        with self._lock:
            self._errors.setdefault(name, 0)

        def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                handler(*args, **kwargs)
            except Exception as error:  # any type: the point is that nothing escapes
                self.failure(name, error)

        return guarded

    def failure(self, name: str, error: BaseException) -> float | None:
        """Count and log one failure; the delay before the restart, or None: gave up."""
        now = self._clock()
        with self._lock:
            self._errors[name] = self._errors.get(name, 0) + 1
            recent = self._recent.setdefault(name, deque())
            recent.append(now)
            while recent and now - recent[0] > self.window_s:
                recent.popleft()
            count = len(recent)
            give_up = count >= self.max_failures
            if give_up and self.failed is None:
                self.failed = (f"source {name} failed {count} times within "
                               f"{self.window_s:g}s, the last time with "
                               f"{type(error).__name__}: {error}")
        if give_up:
            log.error("source %s failed (%d in %gs): giving up; the agent exits with code %d "
                      "so that its service manager restarts it", name, count, self.window_s,
                      EXIT_SOURCE_FAILED, exc_info=error)
            self.gave_up.set()
            return None
        delay: float = min(self.backoff_min_s * 2.0 ** (count - 1), self.backoff_max_s)
        log.error("source %s failed (%d in %gs; %d give up): restarting it in %gs", name,
                  count, self.window_s, self.max_failures, delay, exc_info=error)
        return delay

    def errors(self) -> dict[str, int]:
        """Failures by source name since the start (0 for a source that never failed)."""
        with self._lock:
            return dict(self._errors)

    def healthy(self) -> bool:
        """No source that should be reading is down (and none gave up)."""
        with self._lock:
            threads = list(self._threads)
        return not self.gave_up.is_set() and all(t.up() for t in threads)


class SupervisedThread:
    """One source thread under a `Supervisor`: `work(stop)` in a loop of restarts."""

    def __init__(self, supervisor: Supervisor, name: str, work: Work, thread_name: str) -> None:
        self.supervisor = supervisor
        self.name = name
        self.work = work
        self.stop_event = threading.Event()
        self.restarts = 0
        self._state = "new"  # new, running, backoff, finished, gave_up
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    @property
    def state(self) -> str:
        return self._state

    def up(self) -> bool:
        """Reading, about to, or finished on purpose; False in backoff or once given up."""
        if self._state == "running":
            return self._thread.is_alive()
        return self._state in ("new", "finished")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        stop = self.stop_event
        while not stop.is_set():
            self._state = "running"
            try:
                self.work(stop)
            except BaseException as error:  # any type (SystemExit too): no quiet deaths
                delay = self.supervisor.failure(self.name, error)
                if delay is None:
                    self._state = "gave_up"
                    return
                self._state = "backoff"
                stop.wait(delay)
                self.restarts += 1
                continue
            break
        self._state = "finished"
