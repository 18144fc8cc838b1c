"""One device's fit in a process of its own: `python -m export.fleet_worker TASK_DIR`.

`TASK_DIR/task.pickle` holds `{"device", "csv", "config"}` (the CSV's path and a
`FitConfig`); the worker calls `export.fit.fit_bundle` exactly as `edge-train fit` does, into
`TASK_DIR/<device>` (so the bundle is named after the device), writes the stage lines to
`TASK_DIR/fit.log` and a JSON result to `TASK_DIR/result.json`:

    {"ok": true, "rows", "channels", "recipe", "f1", "bytes", "seconds", "peak_rss_mb"}
    {"ok": false, "kind": "input" | "fit" | "crash", "error": "one line"}

Exit code 0 whenever a result was written; a worker killed by a signal (or the OOM killer)
writes none, which the caller tells apart and retries once. A fresh process per fit keeps
fits independent of each other (TensorFlow's global state, memory, a crash) and gives the
same bundle bytes as a plain `edge-train fit` of the same file.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

RESULT_NAME, LOG_NAME, TASK_NAME = "result.json", "fit.log", "task.pickle"


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its finished children (the converter)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)  # KiB on Linux


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def fit_one(task_dir: Path) -> dict[str, Any]:
    from export.errors import FitError, InputError

    started = time.perf_counter()
    task = pickle.loads((task_dir / TASK_NAME).read_bytes())
    log = (task_dir / LOG_NAME).open("w", encoding="utf-8", buffering=1)

    def say(line: str) -> None:
        log.write(line + "\n")

    try:
        from export.fit import fit_bundle

        result = fit_bundle(Path(task["csv"]), task_dir / task["device"], task["config"],
                            progress=say)
    except InputError as exc:
        say(f"error: {exc}")
        return {"ok": False, "kind": "input", "error": _one_line(exc)}
    except FitError as exc:
        say(f"failed: {exc}")
        return {"ok": False, "kind": "fit", "error": _one_line(exc)}
    except Exception as exc:  # a bug or a library failure: the fleet goes on
        log.write(traceback.format_exc())
        return {"ok": False, "kind": "crash", "error": f"{type(exc).__name__}: {_one_line(exc)}"}
    finally:
        log.close()
    training = result.manifest.training
    ensemble = result.metrics.get("all", {}).get("ensemble", {})
    return {
        "ok": True,
        "rows": training.get("rows_in_file"),
        "channels": len(result.manifest.channels),
        "recipe": training.get("config", {}).get("recipe"),
        "f1": ensemble.get("f1"),
        "bytes": result.bundle_bytes,
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if len(argv) != 1:
        print("usage: python -m export.fleet_worker TASK_DIR", file=sys.stderr)
        return 2
    task_dir = Path(argv[0])
    result = fit_one(task_dir)
    tmp = task_dir / (RESULT_NAME + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, task_dir / RESULT_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
