"""The fleet index: which bundle each device should run, written by `edge-train fleet fit`.

It is the contract between fleet training, the fleet view (`edge.fleet_view`, which compares
what each agent reports with it) and rollout tools (the Ansible playbook in `edge/deploy/`
takes a device's bundle folder from it). It lives in `edge` beside the bundle schema so that
the view runs on a lean install; `export` writes it.

    {
      "format": "edge-anomaly-fleet-index",
      "version": 1,
      "updated": "2026-01-05T12:00:00Z",
      "devices": {
        "pod-01": {
          "bundle": "pod-01",                 # folder, relative to the index's folder
          "name": "pod-01", "version": "20260105.120000",
          "manifest_sha256": "...",           # what the agent reports as its bundle sha256
          "signed": false, "key_id": null,
          "input_sha256": "...", "options_sha256": "...",   # for resuming
          "rows": 720, "channels": 17, "recipe": "multivariate", "f1": 0.81,
          "bytes": 102400, "seconds": 25.3
        }
      },
      "failed": {"pod-07": {"error": "...", "input_sha256": "..."}}
    }

The file is replaced atomically (written beside it, fsynced, then `os.replace`), so a reader
sees the old index or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FORMAT = "edge-anomaly-fleet-index"
VERSION = 1
INDEX_NAME = "fleet.json"
# A device id names a bundle folder and an MQTT topic level: letters, digits, '.', '_', '-',
# starting with a letter or digit (so never '.', '..' or a hidden file), at most 64 characters.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class FleetIndexError(Exception):
    """An index file that cannot be read; the message says which file and why."""


def check_device_id(device: str) -> str | None:
    """None when `device` is a safe device id, otherwise why it is not."""
    if DEVICE_ID.fullmatch(device):
        return None
    if not device:
        return "empty device id"
    return (f"device id {device!r} is not safe for a folder name and an MQTT topic: use "
            "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64")


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def empty_index() -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "updated": now_text(), "devices": {},
            "failed": {}}


def read_index(path: Path | str) -> dict[str, Any]:
    """The index at `path` (a file, or a folder holding `fleet.json`)."""
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetIndexError(f"fleet index {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FleetIndexError(f"fleet index {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FleetIndexError(f"{path} is not a fleet index (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise FleetIndexError(f"{path}: index version {data.get('version')!r} is not supported "
                          f"(this release reads {VERSION})")
    devices = data.get("devices")
    if not isinstance(devices, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("manifest_sha256"), str)
            for v in devices.values()):
        raise FleetIndexError(f"{path}: \"devices\" must map each device to an object with "
                          "its manifest_sha256")
    data.setdefault("failed", {})
    return data


def write_index(path: Path | str, index: dict[str, Any]) -> Path:
    """Write `index` to `path` atomically (tmp file in the same folder + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    index = {**index, "updated": now_text()}
    text = json.dumps(index, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
