"""Model update without a restart: load a new bundle beside the running one, then swap.

Triggers (all end in `BundleReloader.request`, which is safe from a signal handler or paho's
network thread):
- SIGHUP (`systemctl reload edge-agent` with `ExecReload=kill -HUP $MAINPID`);
- `{"action": "reload"}` on `<prefix>/<client_id>/cmd` or `<prefix>/<device>/cmd`;
- the bundle path changing on disk: every `[bundle] watch_interval_s` the watcher stats the
  path, follows symlinks, and compares the target directory and the inode, size and mtime of
  each file in it. A change must look the same on two polls in a row (a copy still being
  written keeps changing) before it triggers a reload.

Replace a bundle atomically, so that the agent never sees half of it:
- symlink swap: `ln -s bundles/v2 bundle.new && mv -T bundle.new bundle` (a rename; plain
  `ln -sfn` unlinks then creates, which also works since a missing path is just retried);
- directory swap: copy into `bundles/v2` first, then `mv bundle bundle.old && mv bundles/v2
  bundle` (or `mv --exchange` with coreutils >= 9.5).

The load runs on a worker thread while the old engine keeps scoring: `load_bundle` (the
signature too when `[bundle] public_key` is set, then every file's sha256), a new
`ScoringEngine`, and one test window scored (finite scores, one per scorer). The main loop
collects the `ReloadResult` from `poll()` and swaps it in (`Gateway.swap_engine`), or keeps
the old bundle and reports the reason. Requests that arrive during a load are merged into
one more load after it; loads start at most once per `min_interval_s`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import Bundle, BundleError, load_bundle
from edge.config import BundleConfig
from edge.engine import ScoringEngine

log = logging.getLogger(__name__)

Identity = tuple[object, ...]


@dataclass(frozen=True)
class ReloadResult:
    """A finished load: `bundle` and `engine` on success, else `error` says why."""

    trigger: str
    bundle: Bundle | None
    engine: ScoringEngine | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def identity(path: Path) -> Identity | None:
    """What the watcher compares; None while the path does not exist (mid-swap)."""
    try:
        real = path.resolve(strict=True)
        st = real.stat()
        files: list[tuple[str, int, int, int]] = []
        if real.is_dir():
            with os.scandir(real) as entries:
                for entry in entries:
                    if entry.is_file():
                        est = entry.stat()
                        files.append((entry.name, est.st_ino, est.st_size, est.st_mtime_ns))
        return (str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, tuple(sorted(files)))
    except OSError:
        return None


def smoke_test(engine: ScoringEngine) -> None:
    """Score one window of training medians: every scorer must give one finite score."""
    m = engine.manifest
    window = np.zeros((1, m.window.length, len(m.channels)))
    scores = engine.score_windows(window)
    names = {s.name for s in m.scorers}
    if set(scores.normalized) != names:
        raise ValueError(f"the engine scored {sorted(scores.normalized)}, the manifest names "
                         f"{sorted(names)}")
    values = [float(v[0]) for v in scores.normalized.values()] + [float(scores.ensemble[0])]
    if len(scores) != 1 or not np.all(np.isfinite(values)):
        raise ValueError(f"a test window scored {values}: the models do not run as the "
                         "manifest describes")


class BundleReloader:
    """Loads bundles on a worker thread; `poll()` on the main loop returns finished loads."""

    def __init__(self, cfg: BundleConfig, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[ReloadResult] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._pending = False  # a load started whose result poll() has not yet returned
        self._baseline = identity(cfg.path)
        self._candidate: Identity | None = None
        self._next_watch = 0.0
        self._last_start = -float("inf")
        self._missing_logged = False
        self.loaded = 0
        self.failed = 0
        self.last_error: str | None = None

    def request(self, trigger: str) -> None:
        """Ask for a reload; callable from any thread and from a signal handler."""
        self._requests.put(trigger)

    @property
    def busy(self) -> bool:
        """A load is running or its result is not taken yet (the worker thread may still be
        alive a moment after putting its result: that is not a running load)."""
        return self._pending

    def poll(self, now: float | None = None) -> ReloadResult | None:
        """Call often from the main loop: watches the path, starts loads, returns results."""
        now = self._clock() if now is None else now
        if self.cfg.watch_interval_s > 0 and now >= self._next_watch:
            self._next_watch = now + self.cfg.watch_interval_s
            self._watch()
        if not self.busy and now - self._last_start >= self.min_interval_s:
            triggers = self._drain()
            if triggers:
                self._start(" + ".join(dict.fromkeys(triggers)), now)
        try:
            result = self._results.get_nowait()
        except queue.Empty:
            return None
        self._pending = False
        if result.ok:
            self.loaded += 1
        else:
            self.failed += 1
            self.last_error = result.error
        return result

    def wait(self, timeout: float) -> ReloadResult | None:
        """Block until the running load finishes (tests, shutdown); None on timeout."""
        deadline = time.monotonic() + timeout  # real time, whatever clock polls use
        while time.monotonic() < deadline:
            result = self.poll()
            if result is not None:
                return result
            time.sleep(0.02)
        return None

    def _drain(self) -> list[str]:
        triggers = []
        while True:
            try:
                triggers.append(self._requests.get_nowait())
            except queue.Empty:
                return triggers

    def _watch(self) -> None:
        current = identity(self.cfg.path)
        if current is None:
            if not self._missing_logged:
                self._missing_logged = True
                log.warning("bundle path %s is missing; keeping the loaded bundle and "
                            "watching for it to come back", self.cfg.path)
            return
        self._missing_logged = False
        if current == self._baseline:
            self._candidate = None
        elif current == self._candidate:  # changed, and stable over two polls
            self._candidate = None
            self.request("watch")
        else:
            self._candidate = current

    def _start(self, trigger: str, now: float) -> None:
        self._last_start = now
        self._baseline = identity(self.cfg.path) or self._baseline  # a later change reloads
        self._candidate = None
        log.info("reloading the bundle from %s (%s)", self.cfg.path, trigger)
        self._pending = True
        self._worker = threading.Thread(target=self._load, args=(trigger,),
                                        name="bundle-reload", daemon=True)
        self._worker.start()

    def _load(self, trigger: str) -> None:
        started = time.monotonic()
        bundle: Bundle | None = None
        engine: ScoringEngine | None = None
        error: str | None = None
        try:
            # the resolved target, so that a swap during the load cannot mix two bundles
            path = self.cfg.path.resolve()
            bundle = load_bundle(path, self.cfg.public_key)
            engine = ScoringEngine(bundle, self.cfg.threads, self.cfg.distance_runtime)
            smoke_test(engine)
        except Exception as exc:  # anything: the old bundle stays, the reason is reported
            if bundle is not None:
                bundle.close()  # loaded but refused: its extracted archive goes now
            bundle, engine = None, None
            error = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
        self._results.put(ReloadResult(trigger, bundle, engine, error,
                                       round(time.monotonic() - started, 3)))
