"""Fleet training: one bundle per device, fitted in parallel, summarised, indexed, resumable.

Input is a folder of per-device CSVs (the device id is the file name without `.csv`) or one
long CSV with a device column (`--device-column`, default `device`), split into one table per
device with that column left out. Every device is fitted with the same `FitConfig` options,
plus its own overrides from an optional TOML file (`[devices.<id>]` tables of fit options).

Each fit is one call of `export.fit.fit_bundle` in a fresh process (`export.fleet_worker`),
started by `fit_task`, which also runs as a Dask task: on the local pool (`--workers N` fits at
once) or on a Dask cluster (`--scheduler tcp://host:8786`). `fit_task` takes the CSV's bytes
and returns the bundle as tar bytes, so Dask workers need no shared file system; the client
alone writes the output folder: it signs the bundle (the private key stays on the
workstation), moves it into place and rewrites the fleet index (`edge.fleet_index`) after
every device, so an interrupted run keeps what it finished.

Isolation: a device whose data or options are refused gets its one-line error and the rest go
on. A fit process killed by a signal (or a Dask worker lost under it) is retried once, then
reported failed. A device is skipped when its bundle is there with the same input (sha256 of
its CSV bytes) and the same options (sha256 of the explicit options), unless `--force`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TextIO

from edge.bundle import MANIFEST_NAME, sha256_file
from edge.fleet_index import (
    INDEX_NAME,
    FleetIndexError,
    check_device_id,
    empty_index,
    read_index,
    write_index,
)
from edge.table import detect_delimiter
from export.config import FitConfig
from export.errors import InputError
from export.fleet_worker import LOG_NAME, RESULT_NAME, TASK_NAME

# Options that say how to write, not what to fit: left out of the options hash.
NOT_HASHED = ("force",)
LOG_DIR = "logs"
LOG_TAIL_BYTES = 64 * 1024
RETRIED_KINDS = ("killed", "lost")  # the process died under the fit: worth one more try


@dataclass(frozen=True)
class DeviceInput:
    device: str
    csv_name: str
    data: bytes
    rows: int  # data rows, header excluded

    @property
    def input_sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class FitTask:
    """What a worker needs for one device's fit (picklable, sent to Dask workers)."""

    device: str
    csv_name: str
    data: bytes
    config: FitConfig
    timeout_s: float = 3600.0
    threads: int = 0  # 0: the libraries' default; N: OMP/TF thread pools of N


@dataclass
class DeviceOutcome:
    """One row of the summary."""

    device: str
    status: str  # ok, skipped, failed
    rows: int | None = None
    channels: int | None = None
    recipe: str | None = None
    f1: float | None = None
    bytes: int | None = None
    sha256: str | None = None  # of manifest.json: what the agent reports
    seconds: float | None = None
    error: str | None = None
    attempts: int = 0
    peak_rss_mb: float | None = None
    worker: str | None = None  # host:pid of the fit process

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


# ---------------------------------------------------------------------------------- inputs


def _count_rows(data: bytes) -> int:
    lines = [line for line in data.splitlines() if line.strip()]
    return max(len(lines) - 1, 0)


def _check_ids(devices: Iterable[str], what: str) -> None:
    seen: dict[str, str] = {}
    for device in devices:
        problem = check_device_id(device)
        if problem is not None:
            raise InputError(f"{what}: {problem}")
        other = seen.setdefault(device.lower(), device)
        if other != device:
            raise InputError(f"{what}: duplicate device id {device!r} (also {other!r}; ids "
                             "must differ by more than letter case: they name folders)")


def load_folder(folder: Path) -> list[DeviceInput]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not files:
        raise InputError(f"{folder} holds no .csv file (one per device, named <device>.csv)")
    by_id: dict[str, Path] = {}
    for path in files:
        other = by_id.get(path.stem.lower())
        if other is not None:
            raise InputError(f"{folder}: duplicate device id {path.stem!r}: {other.name} and "
                             f"{path.name} (ids must differ by more than letter case)")
        by_id[path.stem.lower()] = path
    _check_ids((p.stem for p in files), str(folder))
    out = []
    for path in files:
        data = path.read_bytes()
        out.append(DeviceInput(path.stem, path.name, data, _count_rows(data)))
    return out


def split_long_csv(path: Path, device_column: str = "device") -> list[DeviceInput]:
    """One table per value of `device_column`, in order of first appearance; the column is
    left out and every other cell is kept as it was (the same delimiter and header)."""
    text = path.read_text(encoding="utf-8-sig")
    header_line = text.split("\n", 1)[0]
    delimiter = detect_delimiter(header_line)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise InputError(f"{path} is empty")
    names = [h.strip() for h in header]
    matches = [i for i, h in enumerate(names) if h.lower() == device_column.lower()]
    if not matches:
        raise InputError(f"{path}: no device column {device_column!r} (columns: "
                         f"{', '.join(names)}); name it with --device-column, or give a folder "
                         "of per-device CSVs")
    col = matches[0]
    keep = [i for i in range(len(header)) if i != col]
    groups: dict[str, io.StringIO] = {}
    counts: dict[str, int] = {}
    writers: dict[str, Any] = {}
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= col:
            raise InputError(f"{path} line {number}: no value in the device column")
        device = row[col]
        if device not in writers:
            problem = check_device_id(device)
            if problem is not None:
                raise InputError(f"{path} line {number}: {problem}")
            groups[device] = buffer = io.StringIO()
            writers[device] = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
            writers[device].writerow([header[i] for i in keep])
            counts[device] = 0
        writers[device].writerow([row[i] for i in keep if i < len(row)])
        counts[device] += 1
    if not groups:
        raise InputError(f"{path} has a header but no rows")
    _check_ids(groups, str(path))
    return [DeviceInput(d, f"{d}.csv", groups[d].getvalue().encode(), counts[d]) for d in groups]


def load_inputs(path: Path, device_column: str = "device") -> list[DeviceInput]:
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        return split_long_csv(path, device_column)
    raise InputError(f"DATA {path} is neither a folder of per-device CSVs nor a CSV file")


# --------------------------------------------------------------------------------- options


def _field_parser(f: Any, hint: Any) -> Callable[[str], Any]:
    if f.metadata.get("parse") is not None:
        return f.metadata["parse"]  # type: ignore[no-any-return]
    default = f.default if f.default is not MISSING else None
    return type(default) if isinstance(default, (int, float, str)) else str


def option_value(name: str, value: Any, where: str) -> Any:
    """A TOML value for the `FitConfig` field `name`, converted as the command line would."""
    by_name = {f.name: f for f in fields(FitConfig)}
    key = name.replace("-", "_")
    f = by_name.get(key)
    if f is None:
        raise InputError(f"{where}: {name!r} is not a fit option (see edge-train fit --help)")
    hints = typing.get_type_hints(FitConfig)
    if hints[key] is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: {name} must be true or false")
        return value
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if isinstance(value, dict):
        text = ",".join(f"{k}={v}" for k, v in value.items())
    try:
        parsed = _field_parser(f, hints[key])(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {name} = {value!r}: {exc}") from None
    choices = f.metadata.get("choices")
    if choices and parsed not in choices:
        raise InputError(f"{where}: {name} = {value!r}: choose from {', '.join(choices)}")
    return parsed


def load_overrides(path: Path, devices: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`[devices.<id>]` tables of fit options -> device -> {field: value}."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"--overrides {path}: {exc}") from None
    unknown_top = [k for k in data if k != "devices"]
    if unknown_top:
        raise InputError(f"--overrides {path}: unknown table {unknown_top[0]!r} (expected "
                         "[devices.<id>] tables)")
    known = set(devices)
    out: dict[str, dict[str, Any]] = {}
    for device, table in data.get("devices", {}).items():
        if device not in known:
            raise InputError(f"--overrides {path}: device {device!r} is not in the input")
        if not isinstance(table, dict):
            raise InputError(f"--overrides {path}: devices.{device} must be a table")
        out[device] = {k.replace("-", "_"): option_value(k, v, f"--overrides {path} "
                                                            f"[devices.{device}]")
                       for k, v in table.items()}
    return out


def options_sha256(options: dict[str, Any]) -> str:
    hashed = {k: (list(v) if isinstance(v, tuple) else v)
              for k, v in sorted(options.items()) if k not in NOT_HASHED}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------- worker

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


def kill_running_fits() -> None:
    """Kill every fit process this process started (on Ctrl-C: they run in sessions of
    their own, out of reach of the terminal's signal)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-LOG_TAIL_BYTES:].decode("utf-8", "replace")


def fit_task(task: FitTask) -> dict[str, Any]:
    """Fit one device in a fresh process; the result dict carries the bundle as tar bytes.

    Runs on the local pool or as a Dask task; never raises for a failed fit."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if task.threads > 0:
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            env[name] = str(task.threads)
    with tempfile.TemporaryDirectory(prefix=f"edge-fleet-{task.device}-") as tmp:
        folder = Path(tmp)
        csv_path = folder / task.csv_name
        csv_path.write_bytes(task.data)
        # the bundle folder is new: no --force, so the manifest's config is a plain fit's
        (folder / TASK_NAME).write_bytes(
            pickle.dumps({"device": task.device, "csv": str(csv_path), "config": task.config}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "export.fleet_worker", str(folder)], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        with _live_lock:
            _live.add(proc)
        worker = f"{socket.gethostname()}:{proc.pid}"
        try:
            _out, err = proc.communicate(timeout=task.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"ok": False, "kind": "timeout", "worker": worker,
                    "error": f"fit timed out after {task.timeout_s:g}s (--fit-timeout)",
                    "log": _tail(folder / LOG_NAME)}
        finally:
            with _live_lock:
                _live.discard(proc)
        log = _tail(folder / LOG_NAME)
        result_path = folder / RESULT_NAME
        if not result_path.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the converter, if still running
            if proc.returncode < 0:
                name = signal.Signals(-proc.returncode).name
                return {"ok": False, "kind": "killed", "worker": worker, "log": log,
                        "error": f"fit process killed by {name} (out of memory?)"}
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            return {"ok": False, "kind": "crash", "worker": worker, "log": log,
                    "error": f"fit process exited with code {proc.returncode}: {last[0]}"}
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
        result.update(worker=worker, log=log)
        if result.get("ok"):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
                tar.add(folder / task.device, arcname=task.device)
            result["bundle_tar"] = buffer.getvalue()
        return result


# --------------------------------------------------------------------------------- backends


class LocalBackend:
    """`workers` fits at once, each in its own process (threads only wait on them)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-fit")

    def describe(self) -> str:
        return f"local pool, {self.workers} worker{'s' if self.workers != 1 else ''}"

    def submit(self, task: FitTask, attempt: int) -> Any:
        return self.pool.submit(fit_task, task)

    def wait_first(self, futures: list[Any]) -> list[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(futures, return_when=FIRST_COMPLETED)
        return list(done)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class DaskBackend:
    """Fits as tasks on a `dask.distributed` cluster."""

    name = "dask"

    def __init__(self, address: str, connect_timeout_s: float = 10.0) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise InputError("--scheduler needs dask.distributed: pip install "
                             "'edge-anomaly[fleet]'") from None
        self.address = address
        try:
            self.client = Client(address, timeout=f"{connect_timeout_s}s",
                                 set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address} within "
                             f"{connect_timeout_s:g}s (--connect-timeout): {exc}") from None
        try:
            self.client.wait_for_workers(1, timeout=connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            self.client.close()
            raise InputError(f"the Dask scheduler at {address} has no worker after "
                             f"{connect_timeout_s:g}s: {exc}") from None

    def describe(self) -> str:
        workers = self.client.scheduler_info().get("workers", {})
        threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
        return f"Dask scheduler {self.address}, {len(workers)} workers, {threads} threads"

    def submit(self, task: FitTask, attempt: int) -> Any:
        key = f"edge-fleet-fit-{task.device}-{attempt}-{os.urandom(4).hex()}"
        return self.client.submit(fit_task, task, key=key, pure=False)

    def wait_first(self, futures: list[Any]) -> list[Any]:
        from distributed import wait

        with self.client.as_current():  # not the process-wide default client
            done, _ = wait(futures, return_when="FIRST_COMPLETED")
        return list(done)

    def close(self, cancel: bool = False) -> None:
        self.client.close()


# -------------------------------------------------------------------------------- progress


def _duration(seconds: float) -> str:
    total = max(round(seconds), 0)
    if total >= 3600:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    if total >= 60:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total}s"


class ProgressBar:
    """`[#####.....] 5/24 done, 1 failed, ETA 3m20s` on stderr: redrawn in place on a
    terminal, one line per finished device otherwise (logs, CI)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self.failed = 0
        self.untimed = 0  # finished without a fit (refused at once): not in the ETA
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self) -> str:
        finished = self.done + self.failed
        filled = int(self.width * finished / self.total) if self.total else self.width
        elapsed = time.monotonic() - self.started
        timed = finished - self.untimed
        eta = (elapsed / timed * (self.total - finished)) if timed > 0 else None
        eta_text = _duration(eta) if eta is not None else "?"
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {finished}/{self.total} "
                f"done, {self.failed} failed, elapsed {_duration(elapsed)}, ETA {eta_text}")

    def start(self) -> None:
        if self.tty and self.total:
            self.stream.write(self.line())
            self.stream.flush()

    def update(self, outcome: DeviceOutcome, timed: bool = True) -> None:
        if outcome.status == "failed":
            self.failed += 1
        else:
            self.done += 1
        self.untimed += not timed
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
        else:
            what = (f"failed: {outcome.error}" if outcome.status == "failed"
                    else f"ok in {outcome.seconds or 0:.1f}s")
            self.stream.write(f"fleet: {outcome.device} {what} | {self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.total:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------------- runner


@dataclass
class FleetPlan:
    inputs: list[DeviceInput]
    options: dict[str, Any]  # explicit fit options common to every device
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeout_s: float = 3600.0
    threads: int = 0

    def device_options(self, device: str) -> dict[str, Any]:
        return {**self.options, **self.overrides.get(device, {})}

    def config(self, device: str) -> FitConfig:
        try:
            return FitConfig(**self.device_options(device))
        except TypeError as exc:
            raise InputError(f"device {device}: {exc}") from None


@dataclass
class FleetReport:
    outcomes: list[DeviceOutcome]
    index_path: Path
    seconds: float
    backend: str

    @property
    def failed(self) -> list[DeviceOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def check_plan(plan: FleetPlan) -> None:
    """Option problems of any device, before any work (InputError names the device)."""
    from export.fit import check_options

    never = Path(tempfile.gettempdir()) / f"edge-fleet-check-{os.getpid()}" / "x"
    for item in plan.inputs:
        config = replace(plan.config(item.device), force=True)
        try:
            check_options(config, never)
        except InputError as exc:
            where = f"device {item.device}: " if item.device in plan.overrides else ""
            raise InputError(f"{where}{exc}") from None


def _up_to_date(index: dict[str, Any], out_dir: Path, item: DeviceInput,
                options_hash: str) -> dict[str, Any] | None:
    entry = index.get("devices", {}).get(item.device)
    if not isinstance(entry, dict):
        return None
    if (entry.get("input_sha256"), entry.get("options_sha256")) != (item.input_sha256,
                                                                     options_hash):
        return None
    manifest = out_dir / str(entry.get("bundle", item.device)) / MANIFEST_NAME
    if not manifest.is_file() or sha256_file(manifest) != entry.get("manifest_sha256"):
        return None
    return entry


def _extract(data: bytes, target: Path, device: str) -> None:
    """The bundle tar of a worker: plain files and folders under `<device>/` only."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if (not (member.isfile() or member.isdir()) or not parts or parts[0] != device
                    or ".." in parts or Path(member.name).is_absolute()):
                raise ValueError(f"unexpected entry {member.name!r} in the bundle of {device}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:  # Python < 3.10.12: the members were checked above
            tar.extractall(target)


def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class FleetRun:
    """Runs a plan on a backend and writes `out_dir`: bundles, logs, the index."""

    def __init__(self, plan: FleetPlan, out_dir: Path, *, sign_key: Path | None = None,
                 force: bool = False, progress: ProgressBar | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.out_dir = out_dir.absolute()
        self.sign_key = sign_key
        self.force = force
        self.progress = progress
        self.say = say or (lambda _line: None)
        self.index_path = self.out_dir / INDEX_NAME
        self.index: dict[str, Any] = empty_index()

    def _load_index(self) -> None:
        if self.index_path.exists():
            try:
                self.index = read_index(self.index_path)
            except FleetIndexError as exc:
                raise InputError(f"{exc}; move it away or pick another --out") from None

    def _sign(self, bundle_dir: Path) -> str | None:
        if self.sign_key is None:
            return None
        from export.signing import sign_bundle

        _target, kid = sign_bundle(bundle_dir, self.sign_key)
        return kid

    def _key_id(self) -> str | None:
        if self.sign_key is None:
            return None
        from cryptography.hazmat.primitives import serialization

        from edge.signing import key_id
        from export.signing import load_private_key

        public = load_private_key(self.sign_key).public_key()
        return key_id(public.public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw))

    def _store(self, item: DeviceInput, options_hash: str, result: dict[str, Any],
               attempts: int) -> DeviceOutcome:
        """Put a fitted bundle in place (signed if asked), update the index."""
        staging = Path(tempfile.mkdtemp(prefix=f".{item.device}.", suffix=".partial",
                                        dir=self.out_dir))
        try:
            _extract(result["bundle_tar"], staging, item.device)
            bundle = staging / item.device
            kid = self._sign(bundle)
            manifest = json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))
            sha = sha256_file(bundle / MANIFEST_NAME)
            size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
            bundle.chmod(0o755)
            _replace_dir(bundle, self.out_dir / item.device)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        outcome = DeviceOutcome(
            item.device, "ok", rows=result.get("rows"), channels=result.get("channels"),
            recipe=result.get("recipe"), f1=result.get("f1"), bytes=size, sha256=sha,
            seconds=result.get("seconds"), attempts=attempts,
            peak_rss_mb=result.get("peak_rss_mb"), worker=result.get("worker"))
        self.index["devices"][item.device] = {
            "bundle": item.device, "name": manifest.get("name"),
            "version": manifest.get("version"), "manifest_sha256": sha,
            "signed": kid is not None, "key_id": kid,
            "input_sha256": item.input_sha256, "options_sha256": options_hash,
            "rows": outcome.rows, "channels": outcome.channels, "recipe": outcome.recipe,
            "f1": outcome.f1, "bytes": size, "seconds": outcome.seconds,
            "peak_rss_mb": outcome.peak_rss_mb, "worker": outcome.worker,
        }
        self.index["failed"].pop(item.device, None)
        return outcome

    def _fail(self, item: DeviceInput, error: str, attempts: int,
              result: dict[str, Any] | None = None) -> DeviceOutcome:
        result = result or {}
        outcome = DeviceOutcome(item.device, "failed", rows=item.rows, error=error,
                                attempts=attempts, seconds=result.get("seconds"),
                                worker=result.get("worker"))
        self.index["failed"][item.device] = {"error": error, "input_sha256": item.input_sha256}
        return outcome

    def _write_log(self, device: str, result: dict[str, Any]) -> None:
        log = result.get("log")
        if log:
            folder = self.out_dir / LOG_DIR
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{device}.log").write_text(log, encoding="utf-8")

    def _skip(self, item: DeviceInput, entry: dict[str, Any]) -> DeviceOutcome:
        bundle = self.out_dir / str(entry.get("bundle", item.device))
        if self.sign_key is not None and entry.get("key_id") != self._key_id():
            entry["key_id"] = self._sign(bundle)  # same bundle, now signed with this key
            entry["signed"] = True
            entry["manifest_sha256"] = sha256_file(bundle / MANIFEST_NAME)
        return DeviceOutcome(
            item.device, "skipped", rows=entry.get("rows"), channels=entry.get("channels"),
            recipe=entry.get("recipe"), f1=entry.get("f1"), bytes=entry.get("bytes"),
            sha256=entry.get("manifest_sha256"), seconds=0.0, error="up to date")

    def run(self, backend: LocalBackend | DaskBackend) -> FleetReport:
        started = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._load_index()
        outcomes: dict[str, DeviceOutcome] = {}
        todo: list[tuple[DeviceInput, str]] = []
        for item in self.plan.inputs:
            options_hash = options_sha256(self.plan.device_options(item.device))
            entry = None if self.force else _up_to_date(self.index, self.out_dir, item,
                                                         options_hash)
            if entry is not None:
                outcomes[item.device] = self._skip(item, entry)
            elif item.rows == 0:
                outcomes[item.device] = self._fail(item, "no data rows (empty device)", 0)
            else:
                todo.append((item, options_hash))
        skipped = sum(o.status == "skipped" for o in outcomes.values())
        self.say(f"edge-train fleet fit: {len(self.plan.inputs)} devices, {len(todo)} to fit"
                 f"{f', {skipped} up to date' if skipped else ''} on {backend.describe()}")
        write_index(self.index_path, self.index)
        progress = self.progress
        if progress is not None:
            progress.total = len(todo) + sum(o.status == "failed" for o in outcomes.values())
            progress.start()
            for o in outcomes.values():
                if o.status == "failed":
                    progress.update(o, timed=False)
        pending: dict[Any, tuple[DeviceInput, str, int]] = {}
        try:
            for item, options_hash in todo:
                task = FitTask(item.device, item.csv_name, item.data,
                               self.plan.config(item.device), self.plan.timeout_s,
                               self.plan.threads)
                pending[backend.submit(task, 1)] = (item, options_hash, 1)
            while pending:
                for future in backend.wait_first(list(pending)):
                    item, options_hash, attempt = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # Dask: the worker was lost, or the task raised
                        result = {"ok": False, "kind": "lost",
                                  "error": f"worker lost: {type(exc).__name__}: {exc}"}
                    if not result.get("ok") and result.get("kind") in RETRIED_KINDS \
                            and attempt == 1:
                        self.say(f"fleet: {item.device}: {result['error']}; retrying once")
                        task = FitTask(item.device, item.csv_name, item.data,
                                       self.plan.config(item.device), self.plan.timeout_s,
                                       self.plan.threads)
                        pending[backend.submit(task, 2)] = (item, options_hash, 2)
                        continue
                    self._write_log(item.device, result)
                    if result.get("ok"):
                        try:
                            outcome = self._store(item, options_hash, result, attempt)
                        except Exception as exc:  # e.g. signing failed: this device only
                            outcome = self._fail(item, f"storing the bundle failed: {exc}",
                                                 attempt, result)
                    else:
                        outcome = self._fail(item, str(result.get("error")), attempt, result)
                    outcomes[item.device] = outcome
                    write_index(self.index_path, self.index)
                    if progress is not None:
                        progress.update(outcome)
        except BaseException:
            kill_running_fits()
            backend.close(cancel=True)
            write_index(self.index_path, self.index)
            raise
        finally:
            if progress is not None:
                progress.close()
        ordered = [outcomes[i.device] for i in self.plan.inputs]
        return FleetReport(ordered, self.index_path, time.monotonic() - started, backend.name)


# --------------------------------------------------------------------------------- summary


def summary_table(outcomes: list[DeviceOutcome]) -> str:
    head = ("device", "status", "rows", "ch", "recipe", "F1", "KB", "sha256", "s", "error")
    rows = []
    for o in outcomes:
        rows.append((
            o.device, o.status + (f" ({o.attempts} tries)" if o.attempts > 1 else ""),
            "-" if o.rows is None else str(o.rows),
            "-" if o.channels is None else str(o.channels),
            o.recipe or "-",
            "-" if o.f1 is None else f"{o.f1:.3f}",
            "-" if o.bytes is None else f"{o.bytes / 1024:.0f}",
            (o.sha256 or "-")[:12],
            "-" if o.seconds is None else f"{o.seconds:.1f}",
            "" if o.error is None or o.status == "skipped" else o.error,
        ))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    right = {2, 3, 5, 6, 8}

    def fmt(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                 for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    return "\n".join([fmt(head), *(fmt(r) for r in rows)])


__all__ = [
    "DaskBackend",
    "DeviceInput",
    "DeviceOutcome",
    "FitTask",
    "FleetPlan",
    "FleetReport",
    "FleetRun",
    "LocalBackend",
    "ProgressBar",
    "check_plan",
    "fit_task",
    "load_inputs",
    "load_overrides",
    "summary_table",
]
