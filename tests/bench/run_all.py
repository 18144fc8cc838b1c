"""`make bench`: detection quality on SKAB (valve1, and false alarms on its anomaly-free
recording), NAB and TSB-AD's MSL files, device cost and MQTT end to end.

    python -m tests.bench.run_all                  # everything (needs ../shared/data)
    python -m tests.bench.run_all --only skab,device --workers 1
    python -m tests.bench.run_all --quick          # 3 SKAB + 4 NAB + 2 TSB-AD files, fewer e2e

Reads the benchmark data from --data, $EDGE_BENCH_DATA or ../shared/data (exit 2 when it is
not there); writes `results.json` and `results.md` (printed at the end) and the SKAB comparison
plot into --out (default tests/bench). Every bundle is fitted with the trainer's current
defaults (`FitConfig()`). Not part of `make test`; nothing here is collected by pytest.
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
from collections.abc import Sequence
from concurrent.futures import Future, as_completed
from datetime import date
from pathlib import Path
from typing import Any

from tests.bench import (
    closed_loop,
    device_cost,
    e2e,
    fleet,
    nab_corpus,
    pods,
    skab,
    skab_free,
    tsbad,
)
from tests.bench.harness import (
    BENCH_DIR,
    DATA_ENV,
    ROOT,
    Progress,
    cpu_seconds,
    data_root,
    machine,
    worker_pool,
)
from tests.bench.results_md import render

SECTIONS = ("skab", "nab", "tsbad", "device", "e2e", "loop", "pods", "devices", "fleet")
MEMORY_FILE = "realKnownCause/nyc_taxi.csv"  # a one-channel bundle with the device memory


def missing_data(root: Path, sections: Sequence[str]) -> list[str]:
    """What the chosen sections need and `root` lacks."""
    needs = []
    if "skab" in sections or "device" in sections:
        needs.append(root / "skab" / "valve1")
    if "nab" in sections:
        needs += [root / "nab" / "data", root / "nab" / "labels" / "combined_windows.json"]
    if "tsbad" in sections:
        needs += [root / "tsbad" / "M", root / "tsbad" / "published_vus_pr_M.csv"]
    return [str(p) for p in needs if not p.exists()]


def config_brief() -> str:
    """The trainer's current defaults as each recipe resolves them."""
    from export.config import FitConfig

    try:
        from export.recipes import resolve
    except ImportError:  # a trainer without recipes
        def resolve(config: FitConfig, n_channels: int) -> FitConfig:
            return config

    parts = []
    for label, channels in (("multivariate", 8), ("univariate", 1)):
        c = resolve(FitConfig(), channels)
        members = "+".join(c.ensemble_members or ())
        parts.append(
            f"{label}: {getattr(c, 'distance_model', None) or 'pca_kmeans'} distance, "
            f"LSTM-AE up to {c.epochs} epochs, ensemble {c.ensemble_rule} of {members}, "
            f"thresholds {c.threshold_method}, smoothing {c.smoothing}, trigger {c.trigger}, "
            f"release {c.release}")
    c = FitConfig()
    return (f"window {c.window}, LSTM-AE of {c.units} units in every bundle; "
            + "; ".join(parts))


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _uncommitted() -> list[str]:
    """Tracked trainer/agent files changed in the working tree: the run measured those."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "export", "edge"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line[3:] for line in out.splitlines() if line.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run_all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help=f"benchmark data (default ${DATA_ENV} or "
                                             "../shared/data)")
    p.add_argument("--out", type=Path, default=BENCH_DIR, help="where results go")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections of {', '.join(SECTIONS)}")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="fitting processes (default: 2, or 1 on one core)")
    p.add_argument("--quick", action="store_true", help="a few files only, to try the harness")
    p.add_argument("--keep-work", action="store_true", help="keep the fitted bundles")
    return p


class Run:
    """One benchmark run: the futures, the section timings, the results."""

    def __init__(self, args: argparse.Namespace, root: Path, sections: list[str]) -> None:
        self.args, self.root, self.sections = args, root, sections
        self.say = Progress()
        self.work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
        self.results: dict[str, Any] = {
            "date": date.today().isoformat(), "machine": machine(), "commit": _commit(),
            "uncommitted": _uncommitted(),
            "config_brief": config_brief(), "data": str(root)}
        self.timings: dict[str, float] = {}
        self.fit_seconds: list[float] = []
        self.fit_cpu: list[float] = []

    def fits(self) -> None:
        """Every fit in the pool; SKAB and NAB summarised as their last file comes in."""
        quick = self.args.quick
        with worker_pool(self.args.workers) as pool:
            futures: dict[Future[dict[str, Any]], str] = {}
            if "e2e" in self.sections:
                futures[pool.submit(e2e.fit_pump_bundle, self.work / "e2e")] = "pump"
            files: list[Path] = []
            if "skab" in self.sections or "device" in self.sections:
                files = skab.skab_files(self.root)[: 3 if quick else None]
                if "skab" not in self.sections:
                    files = files[1:2]
                futures.update({pool.submit(skab.fit_and_replay, f, self.work / "skab"): "skab"
                                for f in files})
            if "skab" in self.sections and not quick:
                futures.update({f: "skab-free" for f in skab_free.submit(pool, self.root,
                                                                         self.work)})
            nab_files = []
            if "nab" in self.sections:
                nab_files = nab_corpus.corpus(self.root)
                if quick:
                    nab_files = [f for f in nab_files if f.windows and f.timestamps.size < 5000
                                 ][:4]
                futures.update({f: "nab" for f in nab_corpus.submit(pool, self.root, nab_files,
                                                                     self.work)})
            tsb_files: list[tsbad.TsbFile] = []
            if "tsbad" in self.sections:
                tsb_files = tsbad.tsbad_files(self.root, tsbad.KINDS)
                if quick:
                    tsb_files = tsb_files[:2]
                futures.update({f: "tsbad" for f in tsbad.submit(pool, tsb_files, self.work)})
            self.say(f"fitting {len(futures)} bundles in {self.args.workers} worker processes "
                     f"(trainer defaults); work folder {self.work}")
            base = skab.baselines_by_part(files) if "skab" in self.sections else {}
            self.collect(futures, base, nab_files)
            if "device" in self.sections:
                self.device_runtime(pool)

    def collect(self, futures: dict[Future[dict[str, Any]], str], base: Any,
                nab_files: list[Any]) -> None:
        totals = {k: sum(1 for v in futures.values() if v == k)
                  for k in ("skab", "nab", "tsbad", "skab-free")}
        done: dict[str, list[dict[str, Any]]] = {"skab": [], "nab": [], "pump": [], "tsbad": [],
                                                 "skab-free": []}
        for future in as_completed(futures):
            kind = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a failed fit is reported, the rest goes on
                self.say(f"{kind}: FAILED: {type(exc).__name__}: {exc}")
                self.results.setdefault("failures", []).append(f"{kind}: {exc}")
                continue
            done[kind].append(result)
            self.fit_seconds.append(result["fit_s"])
            self.fit_cpu.append(result.get("fit_cpu_s", 0.0))
            if kind == "pump":
                self.results["e2e_bundle"] = result
                self.say(f"e2e bundle: fitted on {result['rows']} simulated pump rows in "
                         f"{result['fit_s']:.0f} s")
            elif kind == "skab":
                self.say(skab.progress_line(len(done["skab"]), totals["skab"], result))
            elif kind == "skab-free":
                self.say(f"skab anomaly-free {len(done[kind])}/{totals[kind]} {result['file']}: "
                         f"{result['alerts']} alerts")
                if len(done[kind]) == totals[kind]:
                    free = self.results["skab_free"] = skab_free.summarise(
                        done[kind], skab_free.baselines(skab_free.piece_files(self.work)))
                    self.say(f"skab anomaly-free: FAR {free['parts']['all']['far_pct']}% of "
                             "the normal test rows")
            elif kind == "tsbad":
                self.say(tsbad.progress_line(len(done["tsbad"]), totals["tsbad"], result))
                if len(done["tsbad"]) == totals["tsbad"]:
                    self.timings["tsbad (fits in parallel with the rest)"] = self.say.elapsed
                    kinds = sorted({r["kind"] for r in done["tsbad"]})
                    self.results["tsbad"] = tsbad.summarise(
                        done["tsbad"], {k: tsbad.published(self.root, k) for k in kinds})
                    m = self.results["tsbad"]["M"]["means"] if "M" in kinds else None
                    if m:
                        self.say(f"tsbad: M mean VUS-PR {m['all']['vus_pr']:.3f} (choose "
                                 f"{m['choose']['vus_pr']:.3f}, confirm "
                                 f"{m['confirm']['vus_pr']:.3f}); published best per file "
                                 f"{m['all']['published_best']:.3f}")
            else:
                self.say(nab_corpus.progress_line(len(done["nab"]), totals["nab"], result))
            if kind == "skab" and len(done["skab"]) == totals["skab"] and \
                    "skab" in self.sections:
                self.timings["skab (fits in parallel with the rest)"] = self.say.elapsed
                ordered = sorted(done["skab"], key=lambda r: int(Path(r["file"]).stem))
                self.results["skab"] = skab.summarise(
                    ordered, base, self.args.out / "skab_comparison.png", self.say)
                self.results["skab_bundles"] = {r["file"]: r["bundle"] for r in ordered}
            if kind == "nab" and len(done["nab"]) == totals["nab"]:
                self.timings["nab (fits in parallel with the rest)"] = self.say.elapsed
                self.results["nab"] = nab_corpus.summarise(
                    nab_files, done["nab"], self.args.out / "nab_errors.png")
                self.results["nab_bundles"] = {r["file"]: r["bundle"] for r in done["nab"]
                                               if "bundle" in r}
                n = self.results["nab"]
                self.say(f"nab: {n['files']} files scored; standard profile "
                         f"{n['scores'][nab_corpus.OURS]['standard']:.1f} (ours), "
                         f"{n['scores'][nab_corpus.WG]['standard']:.1f} (windowed Gaussian)")
                for name, part in {**n["split"]["parts"], **n["split"]["categories"]}.items():
                    self.say(f"nab {name}: {part['files']} files, standard "
                             f"{part['standard']}, reward low FP {part['reward_low_FP_rate']}, "
                             f"reward low FN {part['reward_low_FN_rate']}, windows "
                             f"{part['tp']}/{part['tp'] + part['fn']}, {part['fp']} false "
                             "alarms")
        self.results["skab_bundles"] = self.results.get("skab_bundles") or {
            r["file"]: r["bundle"] for r in done["skab"]}
        self.timings["all fits"] = self.say.elapsed

    def device_bundle(self) -> tuple[Path, Path]:
        bundles = self.results.get("skab_bundles", {})
        name = "1.csv" if "1.csv" in bundles else next(iter(bundles))
        return Path(bundles[name]), self.root / "skab" / "valve1" / name

    def device_runtime(self, pool: Any) -> None:
        started = time.monotonic()
        bundle, csv = self.device_bundle()
        self.say(f"device: runtime latency on {csv.name}'s bundle (one worker, one thread; "
                 "float32 TFLite converted here)")
        runtime = pool.submit(device_cost.runtime_costs, bundle, csv,
                              bundle / "lstm_ae_float.keras").result()
        device = self.results.setdefault("device", {})
        device["runtime"] = runtime
        lat = runtime["latency"]
        self.say(f"device: int8 TFLite {lat['tflite_int8_run']['p50_ms']:.3f} ms p50, ONNX "
                 f"{lat['onnx_distance_run']['p50_ms']:.3f} ms, float32 TFLite "
                 f"{lat['tflite_float32_run']['p50_ms']:.3f} ms, Keras predict "
                 f"{lat['keras_predict']['p50_ms']:.1f} ms")
        self.timings["device: runtimes"] = time.monotonic() - started

    def device_agent(self) -> None:
        started = time.monotonic()
        bundle, csv = self.device_bundle()
        agent = device_cost.agent_process_costs(bundle, csv, self.work / "agent")
        device = self.results.setdefault("device", {})
        device["agent"] = agent
        nab_bundles = self.results.get("nab_bundles", {})
        if MEMORY_FILE in nab_bundles:
            device["memory"] = device_cost.memory_cost(
                Path(nab_bundles[MEMORY_FILE]), self.root / "nab" / "data" / MEMORY_FILE)
        nab = self.results.get("nab")
        if nab and nab["replay_seconds"] > 0:
            device["nab_replay_rows"] = nab["replay_rows"]
            device["nab_replay_rows_per_s"] = nab["replay_rows"] / nab["replay_seconds"]
        self.say(f"device: agent ready in {agent['ready_s_median']:.2f} s, first window scored "
                 f"at {agent['first_window_s_median']:.2f} s, RSS "
                 f"{agent['rss_first_window_mb_median']:.0f} MB")
        self.timings["device: agent process"] = time.monotonic() - started

    def end_to_end(self) -> None:
        started = time.monotonic()
        bundle = Path(self.results["e2e_bundle"]["bundle"])
        quick = self.args.quick
        self.results["e2e"] = e2e.run_e2e(bundle, self.work / "e2e-run", self.say,
                                          step_s=5.0 if quick else 8.0,
                                          latency_s=20.0 if quick else 40.0)
        self.timings["e2e over MQTT"] = time.monotonic() - started

    def write(self) -> str:
        self.timings["total"] = self.say.elapsed
        self.results["timings"] = {
            "sections": {k: v for k, v in self.timings.items() if k != "total"},
            "total_s": self.timings["total"], "fits": len(self.fit_seconds),
            "fit_mean_s": sum(self.fit_seconds) / max(1, len(self.fit_seconds)),
            "fit_cpu_total_s": sum(self.fit_cpu),
            "run_cpu_s": cpu_seconds(),
            "workers": self.args.workers}
        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        text = render(self.results)
        (out / "results.md").write_text(text + "\n")
        return text


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        print(f"run_all: --only: choose among {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    root = data_root(args.data)
    missing = missing_data(root, sections)
    if missing:
        print(f"make bench: the benchmark data is not there: {', '.join(missing)} missing.\n"
              f"It is not shipped with the project; put SKAB (skab/valve1) and NAB (nab/data, "
              f"nab/labels) under {root}, or point --data or ${DATA_ENV} at them.",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args, root, sections)
    run.say(f"make bench: data {root}, sections {', '.join(sections)}, results into {args.out}")
    try:
        run.fits()
        if "device" in sections:
            run.device_agent()
        if "e2e" in sections and "e2e_bundle" in run.results:
            run.end_to_end()
        if "loop" in sections:  # feedback, capture and retraining on a simulated pod
            started = time.monotonic()
            run.results["loop"] = closed_loop.run_bench(run.work / "loop", args.quick, run.say)
            run.timings["closed loop"] = time.monotonic() - started
        if "pods" in sections:  # per-sensor faults on simulated air-quality pods
            started = time.monotonic()
            run.results["pods"] = pods.run_bench(run.work / "pods",
                                                 [1, 2] if args.quick else list(range(1, 13)),
                                                 run.say, args.out / "pods")
            run.timings["pods"] = time.monotonic() - started
        if "devices" in sections:  # the same on the simulated pump and business metric
            started = time.monotonic()
            run.results["devices"] = pods.run_devices(
                run.work / "devices", [1, 2] if args.quick else list(range(1, 9)), run.say)
            run.timings["pump and metric"] = time.monotonic() - started
        if "fleet" in sections:  # last: it measures 2 workers against 1 on idle cores
            started = time.monotonic()
            run.results["fleet"] = fleet.run_bench(run.work / "fleet", 6 if args.quick else 24,
                                                   run.say)
            run.timings["fleet training"] = time.monotonic() - started
        end_commit = _commit()
        if end_commit != run.results["commit"]:
            run.results["commit_at_end"] = end_commit
            run.say(f"note: HEAD moved from {run.results['commit'][:10]} to {end_commit[:10]} "
                    "during the run; the worker processes had loaded the code at the start")
        text = run.write()
    finally:
        if not args.keep_work:
            shutil.rmtree(run.work, ignore_errors=True)
    print("\n" + text)
    run.say(f"wrote {args.out / 'results.md'} and {args.out / 'results.json'}")
    return 1 if run.results.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
