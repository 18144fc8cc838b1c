"""Fleet training benchmark: N simulated air-quality pods (edge-sim), a small model, fitted
by `edge-train fleet fit` one at a time (--workers 1), with 2 workers, and through a Dask
`LocalCluster` (2 worker processes) by its scheduler address, in the same run.

Reports bundles per hour of each, the speed-up of 2 workers over one, the peak memory of a
fit process, whether the Dask run gave the same bundles and summary as the local pool, and
whether a fleet bundle has the same bytes as a plain `edge-train fit` of the same device (model
files byte for byte, the manifest but for its creation time and version and the machine's
timings).

    python -m tests.bench.fleet                 # 24 pods (the `make bench` figure)
    python -m tests.bench.fleet --pods 6        # a quicker look

`run_all --only fleet` calls `run_bench`; it needs no benchmark data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SMALL_MODEL = ["--epochs", "2", "--units", "8", "--window", "8", "--no-report"]
DURATION = "12h"  # 720 rows of 17 channels per pod
VOLATILE = ("created", "version")


def simulate_pods(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(1, n + 1):
        out = folder / f"pod-{k:02d}.csv"
        subprocess.run([sys.executable, "-m", "firmware_sim.cli", "generate", "--device",
                        "airpod", "--duration", DURATION, "--seed", str(k), "--out", str(out)],
                       check=True, capture_output=True, cwd=ROOT)
        (folder / f"pod-{k:02d}.faults.json").unlink(missing_ok=True)
        paths.append(out)
    return paths


def fleet_fit(pods: Path, out: Path, *extra: str) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "export.cli", "fleet", "fit", str(pods), "--out", str(out),
         *SMALL_MODEL, *extra], capture_output=True, text=True, cwd=ROOT)
    seconds = time.monotonic() - started
    load = os.getloadavg()[1]  # 5-minute load average: other work on the same cores
    index = json.loads((out / "fleet.json").read_text()) if (out / "fleet.json").is_file() \
        else {"devices": {}, "failed": {}}
    summary = [line for line in done.stdout.splitlines() if line.strip()]
    return {"code": done.returncode, "seconds": round(seconds, 1), "load": round(load, 1),
            "index": index,
            "summary": summary, "stderr_tail": done.stderr[-2000:]}


def _manifest(path: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    for key in VOLATILE:
        manifest.pop(key, None)
    manifest["training"].pop("latency_ms_per_window", None)
    manifest["training"].get("lstm_ae", {}).pop("seconds", None)
    return manifest


def same_bundle(a: Path, b: Path) -> bool:
    for name in ("lstm_ae.tflite", "distance.onnx"):
        if (a / name).read_bytes() != (b / name).read_bytes():
            return False
    return _manifest(a) == _manifest(b)


def _summary_cells(summary: list[str]) -> dict[str, list[str]]:
    """device -> the summary columns that do not depend on the run (not sha256, seconds)."""
    rows = {}
    for line in summary[1:]:
        cells = line.split()
        if cells and cells[0].startswith("pod-"):
            rows[cells[0]] = cells[:7]
    return rows


def run_bench(work: Path, n_pods: int = 24, say: Callable[[str], None] = print,
              dask: bool = True) -> dict[str, Any]:
    pods = simulate_pods(work / "pods", n_pods)
    say(f"fleet: {n_pods} simulated pods ({DURATION} of 17 channels each); small model "
        f"{' '.join(SMALL_MODEL)}")
    runs: dict[str, dict[str, Any]] = {}
    for label, extra in (("1 worker", ["--workers", "1"]), ("2 workers", ["--workers", "2"])):
        runs[label] = fleet_fit(work / "pods", work / label.replace(" ", "-"), *extra)
        say(f"fleet: {label}: {runs[label]['seconds']:.0f} s, exit {runs[label]['code']}")
    if dask:
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster:
            runs["dask 2 workers"] = fleet_fit(work / "pods", work / "dask",
                                               "--scheduler", cluster.scheduler_address)
        say(f"fleet: Dask LocalCluster: {runs['dask 2 workers']['seconds']:.0f} s, exit "
            f"{runs['dask 2 workers']['code']}")
    first = pods[0]
    plain = work / "plain" / first.stem
    subprocess.run([sys.executable, "-m", "export.cli", "fit", str(first), "--out", str(plain),
                    *SMALL_MODEL], check=True, capture_output=True, cwd=ROOT)
    local_dir = work / "2-workers"
    deterministic = same_bundle(plain, local_dir / first.stem)
    dask_same = None
    if dask:
        dask_same = all(same_bundle(local_dir / p.stem, work / "dask" / p.stem) for p in pods) \
            and _summary_cells(runs["2 workers"]["summary"]) == _summary_cells(
                runs["dask 2 workers"]["summary"])
    seq, par = runs["1 worker"]["seconds"], runs["2 workers"]["seconds"]
    entries = runs["2 workers"]["index"]["devices"].values()
    peaks = [e["peak_rss_mb"] for e in entries if e.get("peak_rss_mb") is not None]
    result: dict[str, Any] = {
        "pods": n_pods, "model": " ".join(SMALL_MODEL), "duration": DURATION,
        "runs": {label: {"seconds": r["seconds"], "exit": r["code"], "load_avg": r["load"],
                         "bundles": len(r["index"]["devices"]),
                         "failed": sorted(r["index"].get("failed", {})),
                         "bundles_per_hour": round(len(r["index"]["devices"]) / r["seconds"]
                                                   * 3600, 1)}
                 for label, r in runs.items()},
        "speedup_2_workers": round(seq / par, 2),
        "peak_rss_mb_per_fit": max(peaks) if peaks else None,
        "same_bytes_as_plain_fit": deterministic,
        "dask_same_bundles_and_summary": dask_same,
    }
    say(f"fleet: 2 workers {result['speedup_2_workers']}x one at a time; peak RSS per fit "
        f"{result['peak_rss_mb_per_fit']} MB; same bytes as a plain fit: {deterministic}; "
        f"Dask same bundles and summary: {dask_same}")
    return result


def fleet_section(fleet: dict[str, Any]) -> list[str]:
    """The Markdown section of results.md."""
    rows = [f"| {label} | {r['seconds']:.0f} s | {r['bundles']} | {r['bundles_per_hour']:.0f} "
            f"| {r.get('load_avg', 'n/a')} |" for label, r in fleet["runs"].items()]
    return [
        "## Fleet training", "",
        f"{fleet['pods']} simulated air-quality pods ({fleet['duration']} of 17 channels each), "
        f"one bundle each with a small model (`{fleet['model']}`), through `edge-train fleet "
        "fit` in the same run:", "",
        "| run | wall time | bundles | bundles/hour | load average (5 min) at its end |",
        "|---|---|---|---|---|", *rows, "",
        f"2 workers: {fleet['speedup_2_workers']}x one at a time (close to 2x on idle cores; "
        f"a load average above the core count means other work shared them). Peak memory of "
        f"a fit "
        f"process: {fleet['peak_rss_mb_per_fit']} MB. A fleet bundle has the same bytes as a "
        f"plain `edge-train fit` of the same pod (model files byte for byte; manifest but for "
        f"its creation time and version): {fleet['same_bytes_as_plain_fit']}. The Dask "
        f"LocalCluster gave the same bundles and summary as the local pool: "
        f"{fleet['dask_same_bundles_and_summary']}.", ""]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pods", type=int, default=24)
    p.add_argument("--no-dask", action="store_true")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-fleet-bench-"))
    try:
        result = run_bench(work, args.pods, dask=not args.no_dask)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(fleet_section(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
