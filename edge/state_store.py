"""Each device's scoring state on disk, so that a restart or a power cut does not make the
devices forget what they have learned since training: the memories of recent lag vectors,
the likelihood histories and the running ranges (`ScoreState`). Without it a device would
alert again, once, on a level it had long accepted, and judge its scores against a history
of a few windows.

One `.npz` file per agent holds every device's arrays and a digest of what they are valid for
(`score_state.depends_on`: scorers, model files, preprocessing, training range). A file of
another bundle, a damaged one or one that does not fit is skipped with a warning: the devices
start afresh, as they would without a file. A device not heard from since the restart keeps its
saved state in the file until it is. Writes go to a temporary file first and replace the old
one in one step, so a power cut mid-write leaves the previous state.

The agent's periodic saves take the snapshot on its loop (copies of the arrays, so the file
holds one moment of every device) and write it on a worker thread: a univariate device's
state is about 1.7 MB, and writing and syncing tens of them to an SD card would stall the loop.
The save at shutdown writes in the caller's thread, after any write still running.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bundle import Manifest
from edge.score_state import ScoreState, depends_on

log = logging.getLogger("edge.state")
Arrays = dict[str, npt.NDArray[Any]]
KEY = "__fingerprint__"


class StateStore:
    """The state file of one agent."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = Path(path)
        self.key = depends_on(manifest)
        self._writer: threading.Thread | None = None

    def rebind(self, manifest: Manifest) -> None:
        """A reloaded bundle: states saved from now on belong to it."""
        self.key = depends_on(manifest)

    def load(self) -> dict[str, Arrays]:
        """device -> its saved arrays; {} when there is no usable file (logged)."""
        if not self.path.exists():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            log.warning("scoring state %s unreadable (%s): devices start afresh", self.path, exc)
            return {}
        if str(arrays.pop(KEY, "")) != self.key:
            log.warning("scoring state %s belongs to another bundle: devices start afresh",
                        self.path)
            return {}
        devices: dict[str, Arrays] = {}
        for name, value in arrays.items():
            device, _, part = name.partition("/")
            devices.setdefault(device, {})[part] = value
        return devices

    def save(self, states: dict[str, ScoreState],
             unclaimed: dict[str, Arrays] | None = None) -> None:
        """Write every device's state (atomically), and `unclaimed` saved states of devices not
        heard from since the start, as they were; an OSError is logged, not raised."""
        self.wait()
        self._write(self._arrays(states, unclaimed))

    def save_in_background(self, states: dict[str, ScoreState],
                           unclaimed: dict[str, Arrays] | None = None) -> bool:
        """`save`, the snapshot taken now and written on a worker thread; False (nothing taken)
        while the previous write is still running."""
        if self._writer is not None and self._writer.is_alive():
            return False
        arrays = self._arrays(states, unclaimed)
        self._writer = threading.Thread(target=self._write, args=(arrays,),
                                        name="state-writer", daemon=True)
        self._writer.start()
        return True

    def wait(self) -> None:
        """Until the background write, if any, has finished."""
        if self._writer is not None:
            self._writer.join()

    def _arrays(self, states: dict[str, ScoreState],
                unclaimed: dict[str, Arrays] | None) -> Arrays:
        arrays: Arrays = {KEY: np.array(self.key)}
        for device, saved in (unclaimed or {}).items():
            if device not in states:
                arrays.update({f"{device}/{k}": v for k, v in saved.items()})
        for device, state in states.items():
            arrays.update({f"{device}/{k}": v for k, v in state.snapshot().items()})
        return arrays

    def _write(self, arrays: Arrays) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy stub: allow_pickle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("scoring state not saved to %s: %s", self.path, exc)
