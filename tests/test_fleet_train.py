"""Fleet training: input checks and overrides (fast), then real fits of a few tiny simulated
pods on the local pool and on a real Dask `LocalCluster`: summary, index, determinism against
a plain `edge-train fit`, resume, signing, a refused device, a fit process killed (retried
once), an unreachable scheduler."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.bundle import MANIFEST_NAME, SIGNATURE_NAME, load_bundle, sha256_file
from edge.fleet_index import FleetIndexError, empty_index, read_index, write_index
from export.cli import main as train_main
from export.errors import InputError
from export.fleet import (
    DeviceOutcome,
    ProgressBar,
    load_folder,
    load_overrides,
    options_sha256,
    split_long_csv,
    summary_table,
)
from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--units", "4", "--window", "8", "--no-report", "--seed", "3"]
# what differs between two fits of the same data and options: the time of the fit
VOLATILE = ("created", "version")


# ------------------------------------------------------------------------ inputs (no fit)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_folder_gives_one_device_per_csv(tmp_path: Path) -> None:
    write(tmp_path / "pod-1.csv", "timestamp,a\n1,2\n2,3\n")
    write(tmp_path / "pod-2.csv", "timestamp,a\n")
    write(tmp_path / "pod-1.faults.json", "{}")
    got = load_folder(tmp_path)
    assert [(d.device, d.csv_name, d.rows) for d in got] == [("pod-1", "pod-1.csv", 2),
                                                             ("pod-2", "pod-2.csv", 0)]
    assert got[0].data == (tmp_path / "pod-1.csv").read_bytes()  # the bytes as they are


@pytest.mark.parametrize("names, message", [
    (["Pod-1.csv", "pod-1.csv"], "duplicate device id"),
    (["pod-1.csv", "pod-1.CSV"], "duplicate device id"),
    (["pod 1.csv"], "not safe"),
    (["-pod.csv"], "not safe"),
])
def test_a_folder_with_bad_ids_is_refused(tmp_path: Path, names: list[str], message: str
                                          ) -> None:
    for name in names:
        write(tmp_path / name, "timestamp,a\n1,2\n")
    if len({n.lower() for n in names}) < len(names) and len(list(tmp_path.iterdir())) < 2:
        pytest.skip("case-insensitive file system")
    with pytest.raises(InputError, match=message):
        load_folder(tmp_path)


def test_a_long_csv_is_split_by_its_device_column(tmp_path: Path) -> None:
    csv = write(tmp_path / "all.csv", "time;device;a;b\n1;p1;1,5;2\n1;p2;3;4\n2;p1;5;\n")
    got = split_long_csv(csv)
    assert [(d.device, d.rows) for d in got] == [("p1", 2), ("p2", 1)]
    assert got[0].data.decode() == "time;a;b\n1;1,5;2\n2;5;\n"
    assert got[1].csv_name == "p2.csv"


@pytest.mark.parametrize("text, message", [
    ("time,a\n1,2\n", "no device column 'device'"),
    ("time,device,a\n1,../x,2\n", "line 2: device id '../x' is not safe"),
    ("time,device,a\n1,,2\n", "line 2: empty device id"),
    ("time,device,a\n1,Pod,2\n2,pod,3\n", "duplicate device id 'pod'"),
    ("time,device,a\n", "a header but no rows"),
])
def test_a_long_csv_with_bad_ids_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        split_long_csv(write(tmp_path / "all.csv", text))


def test_overrides_are_fit_options_per_device(tmp_path: Path) -> None:
    path = write(tmp_path / "o.toml", '[devices.p1]\nepochs = 5\nchannels = ["a", "b"]\n'
                                      'recipe = "univariate"\ntwin-features = true\n')
    assert load_overrides(path, ["p1", "p2"]) == {
        "p1": {"epochs": 5, "channels": ("a", "b"), "recipe": "univariate",
               "twin_features": True}}
    for text, message in [
        ('[devices.p9]\nepochs = 5\n', "device 'p9' is not in the input"),
        ('[devices.p1]\nepoch = 5\n', "'epoch' is not a fit option"),
        ('[devices.p1]\nrecipe = "big"\n', "choose from auto"),
        ('[devices.p1]\nepochs = "many"\n', "epochs = 'many'"),
        ('[devices.p1]\ntwin_features = 1\n', "must be true or false"),
        ('[other]\nx = 1\n', "unknown table 'other'"),
        ('[devices.p1\n', "--overrides"),
    ]:
        with pytest.raises(InputError, match=message):
            load_overrides(write(tmp_path / "bad.toml", text), ["p1"])


def test_the_options_hash_ignores_order_and_force() -> None:
    a = options_sha256({"epochs": 2, "channels": ("a", "b"), "force": True})
    assert a == options_sha256({"channels": ["a", "b"], "epochs": 2})
    assert a != options_sha256({"channels": ["a", "b"], "epochs": 3})


def test_progress_bar_and_summary_table() -> None:
    stream = io.StringIO()
    bar = ProgressBar(4, stream)
    bar.update(DeviceOutcome("p1", "ok", seconds=2.0))
    bar.update(DeviceOutcome("p2", "failed", error="no rows"))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("fleet: p1 ok in 2.0s | [######..................] 1/4 done, "
                               "0 failed")
    assert "p2 failed: no rows" in lines[1] and "2/4 done, 1 failed" in lines[1]
    assert "ETA" in lines[1]
    table = summary_table([DeviceOutcome("p1", "ok", 10, 2, "multivariate", 0.5, 2048,
                                         "ab" * 32, 1.25),
                           DeviceOutcome("p2", "failed", 0, error="no rows", attempts=2)])
    head, ok, failed = table.splitlines()
    assert head.split() == ["device", "status", "rows", "ch", "recipe", "F1", "KB", "sha256",
                            "s", "error"]
    assert ok.split() == ["p1", "ok", "10", "2", "multivariate", "0.500", "2", "ab" * 6, "1.2"]
    assert failed.split()[:4] == ["p2", "failed", "(2", "tries)"] and "no rows" in failed


def test_the_index_is_written_atomically_and_checked(tmp_path: Path) -> None:
    index = empty_index()
    index["devices"]["p1"] = {"bundle": "p1", "manifest_sha256": "ab"}
    path = write_index(tmp_path / "fleet.json", index)
    assert read_index(tmp_path)["devices"] == index["devices"]
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.json"]  # no tmp file left
    write(path, '{"format": "something else"}')
    with pytest.raises(FleetIndexError, match="is not a fleet index"):
        read_index(path)
    with pytest.raises(FleetIndexError, match="does not exist"):
        read_index(tmp_path / "nope.json")


def test_bad_fleet_input_exits_2_before_any_fit(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "pods" / "a b.csv", "timestamp,a\n1,2\n")
    assert train_main(["fleet", "fit", str(tmp_path / "pods"), "--out",
                       str(tmp_path / "out")]) == 2
    assert "'a b' is not safe" in capsys.readouterr().err
    write(tmp_path / "pods2" / "p1.csv", "timestamp,a\n1,2\n")
    assert train_main(["fleet", "fit", str(tmp_path / "pods2"), "--out", str(tmp_path / "o"),
                       "--lags", "20", "--window", "8"]) == 2
    assert "--lags 20 cannot exceed --window 8" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    write(tmp_path / "pods" / "p1.csv", "timestamp,a\n1,2\n")
    started = time.monotonic()
    code = train_main(["fleet", "fit", str(tmp_path / "pods"), "--out", str(tmp_path / "out"),
                       "--scheduler", f"tcp://127.0.0.1:{free_port()}", "--connect-timeout",
                       "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.monotonic() - started < 30
    assert len(err) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:" in err[0]


# --------------------------------------------------------------------- real fits (slow)


def simulate(folder: Path, device: str, seed: int, duration: str = "6h") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{device}.csv"
    subprocess.run([sys.executable, "-m", "firmware_sim.cli", "generate", "--device", "airpod",
                    "--duration", duration, "--seed", str(seed), "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    (folder / f"{device}.faults.json").unlink()
    return out


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pod-a, pod-b (6 h of a simulated air-quality pod each), pod-c refused by the trainer
    (too few rows), pod-d empty."""
    folder = tmp_path_factory.mktemp("pods")
    simulate(folder, "pod-a", 1)
    simulate(folder, "pod-b", 2)
    short = (folder / "pod-a.csv").read_text().splitlines()[:21]
    (folder / "pod-c.csv").write_text("\n".join(short) + "\n")
    (folder / "pod-d.csv").write_text(short[0] + "\n")
    return folder


def fleet_fit(capsys: pytest.CaptureFixture[str], pods: Path, out: Path, *extra: str
              ) -> tuple[int, str, str]:
    code = train_main(["fleet", "fit", str(pods), "--out", str(out), *TINY, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("device "))
    return {line.split()[0]: line.split() for line in lines[start + 1:]
            if line and not line[0].isdigit()}


def manifest_without(path: Path, keys: tuple[str, ...] = VOLATILE) -> dict[str, Any]:
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    for key in keys:
        manifest.pop(key)
    manifest["training"].pop("latency_ms_per_window", None)  # timed on this machine
    manifest["training"]["lstm_ae"].pop("seconds", None)
    return manifest


@pytest.fixture(scope="module")
def local_fleet(pods: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fleet") / "out"
    proc = subprocess.run(  # the command line itself, as a user runs it
        [sys.executable, "-m", "export.cli", "fleet", "fit", str(pods), "--out", str(out),
         "--workers", "2", *TINY], capture_output=True, text=True, cwd=ROOT, timeout=900)
    return {"out": out, "code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.mark.slow
def test_local_pool_summary_index_and_isolated_failures(local_fleet: dict[str, Any],
                                                         pods: Path) -> None:
    out, stdout, stderr = local_fleet["out"], local_fleet["stdout"], local_fleet["stderr"]
    assert local_fleet["code"] == 1, stderr  # some devices failed
    rows = table_rows(stdout)
    assert [rows[d][1] for d in ("pod-a", "pod-b", "pod-c", "pod-d")] == [
        "ok", "ok", "failed", "failed"]
    assert rows["pod-a"][2:5] == ["360", "17", "multivariate"]
    assert "no data rows (empty device)" in " ".join(rows["pod-d"])
    assert "2 fitted, 0 up to date, 2 failed" in stdout
    assert "fleet: pod-a ok in" in stderr and "4/4 done, 2 failed" in stderr
    index = read_index(out)
    assert sorted(index["devices"]) == ["pod-a", "pod-b"]
    assert sorted(index["failed"]) == ["pod-c", "pod-d"]
    refused = index["failed"]["pod-c"]["error"]
    assert "\n" not in refused and refused.startswith("too few rows for the window")
    assert refused in (out / "logs" / "pod-c.log").read_text()  # the fit's own lines
    assert rows["pod-c"][-1] == "--window"  # the one-line error ends the row
    for device, entry in index["devices"].items():
        bundle = load_bundle(out / entry["bundle"])  # verifies every file's sha256
        assert bundle.manifest.name == device and bundle.manifest_sha256 == entry[
            "manifest_sha256"]
        assert entry["input_sha256"] == sha256_file(pods / f"{device}.csv")
        assert rows[device][7] == entry["manifest_sha256"][:12]
        assert entry["f1"] is not None and entry["recipe"] == "multivariate"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial left


@pytest.mark.slow
def test_same_bundle_bytes_as_a_plain_fit(local_fleet: dict[str, Any], pods: Path,
                                          tmp_path: Path) -> None:
    plain = tmp_path / "pod-a"
    subprocess.run([sys.executable, "-m", "export.cli", "fit", str(pods / "pod-a.csv"),
                    "--out", str(plain), *TINY], check=True, capture_output=True, cwd=ROOT,
                   timeout=600)
    fleet = local_fleet["out"] / "pod-a"
    for name in ("lstm_ae.tflite", "distance.onnx"):
        assert (fleet / name).read_bytes() == (plain / name).read_bytes(), name
    assert manifest_without(fleet) == manifest_without(plain)


@pytest.mark.slow
def test_resume_skips_up_to_date_devices_and_signs_them(
        local_fleet: dict[str, Any], pods: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = local_fleet["out"]
    before = read_index(out)
    key = tmp_path / "key"
    assert train_main(["keygen", "--out", str(key)]) == 0
    capsys.readouterr()
    started = time.monotonic()
    code, stdout, _err = fleet_fit(capsys, pods, out, "--sign-key", str(key))
    assert code == 1 and time.monotonic() - started < 60  # nothing was fitted again
    rows = table_rows(stdout)
    assert rows["pod-a"][1] == rows["pod-b"][1] == "skipped"
    after = read_index(out)
    for device in ("pod-a", "pod-b"):
        assert after["devices"][device]["manifest_sha256"] == before["devices"][device][
            "manifest_sha256"]
        assert after["devices"][device]["signed"] and (out / device / SIGNATURE_NAME).is_file()
        load_bundle(out / device, public_key=key.with_name("key.pub"))
    assert "0 fitted, 2 up to date, 2 failed" in stdout



class FitKiller:
    """Kills the fit processes (`export.fleet_worker`) of chosen devices as they start, like
    the OOM killer would: `kills[device]` times each."""

    def __init__(self, kills: dict[str, int]) -> None:
        import psutil  # a dependency of dask.distributed

        self.psutil = psutil
        self.left = dict(kills)
        self.killed: dict[str, int] = {}
        self.seen: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        me = self.psutil.Process()
        while not self.stop.is_set():
            for child in me.children(recursive=True):
                if child.pid in self.seen:
                    continue
                try:
                    cmd = " ".join(child.cmdline())
                except self.psutil.Error:
                    continue
                if "export.fleet_worker" not in cmd:
                    continue
                self.seen.add(child.pid)
                device = cmd.rsplit("edge-fleet-", 1)[-1].rsplit("-", 1)[0]
                if self.left.get(device, 0) > 0:
                    self.left[device] -= 1
                    self.killed[device] = self.killed.get(device, 0) + 1
                    child.kill()
            time.sleep(0.02)

    def __enter__(self) -> FitKiller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.mark.slow
def test_a_killed_fit_is_retried_once_then_reported(
        pods: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psutil")
    two = tmp_path / "two"
    two.mkdir()
    for device in ("pod-a", "pod-b"):
        (two / f"{device}.csv").write_bytes((pods / f"{device}.csv").read_bytes())
    with FitKiller({"pod-a": 2, "pod-b": 1}) as killer:
        code, stdout, stderr = fleet_fit(capsys, two, tmp_path / "out", "--workers", "2")
    assert killer.killed == {"pod-a": 2, "pod-b": 1}
    assert code == 1
    rows = table_rows(stdout)
    assert rows["pod-a"][1:4] == ["failed", "(2", "tries)"]
    assert "killed by SIGKILL" in " ".join(rows["pod-a"])
    assert rows["pod-b"][1:4] == ["ok", "(2", "tries)"]
    assert stderr.count("retrying once") == 2
    assert sorted(read_index(tmp_path / "out")["devices"]) == ["pod-b"]


@pytest.fixture
def dask_scheduler() -> Iterator[str]:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       protocol="tcp", dashboard_address=None)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.mark.slow
def test_a_dask_cluster_gives_the_same_bundles_and_summary(
        local_fleet: dict[str, Any], pods: Path, dask_scheduler: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = fleet_fit(capsys, pods, tmp_path / "out", "--scheduler",
                                     dask_scheduler)
    assert code == 1, stderr
    assert f"on Dask scheduler {dask_scheduler}, 2 workers" in stderr
    local, dask = table_rows(local_fleet["stdout"]), table_rows(stdout)
    assert sorted(local) == sorted(dask)
    for device in local:  # the same summary but the bundle's creation time
        assert local[device][:7] == dask[device][:7]
    index = read_index(tmp_path / "out")
    assert sorted(index["devices"]) == ["pod-a", "pod-b"]
    for device in index["devices"]:
        ours, theirs = tmp_path / "out" / device, local_fleet["out"] / device
        for name in ("lstm_ae.tflite", "distance.onnx"):
            assert (ours / name).read_bytes() == (theirs / name).read_bytes()
        assert manifest_without(ours) == manifest_without(theirs)


def test_the_fleet_benchmark_section_renders() -> None:
    from tests.bench.fleet import fleet_section
    from tests.bench.results_md import render

    fleet = {"pods": 24, "duration": "12h", "model": "--epochs 2",
             "runs": {"1 worker": {"seconds": 600.0, "bundles": 24, "bundles_per_hour": 144.0},
                      "2 workers": {"seconds": 320.0, "bundles": 24, "bundles_per_hour": 270.0}},
             "speedup_2_workers": 1.88, "peak_rss_mb_per_fit": 700.0,
             "same_bytes_as_plain_fit": True, "dask_same_bundles_and_summary": True}
    text = "\n".join(fleet_section(fleet))
    assert "| 2 workers | 320 s | 24 | 270 | n/a |" in text and "1.88x one at a time" in text
    results = {"date": "2026-12-06", "commit": "abcdef0123", "config_brief": "defaults",
               "machine": {"cores": 2, "machine": "x86_64", "cpu": "cpu", "python": "3.11"},
               "fleet": fleet,
               "timings": {"sections": {"fleet training": 900.0}, "total_s": 900.0, "fits": 0,
                           "fit_mean_s": 0.0, "fit_cpu_total_s": 0.0, "run_cpu_s": 1.0,
                           "workers": 2}}
    assert "## Fleet training" in render(results)
