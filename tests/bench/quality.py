"""Detection quality of the trainer's recipes, measured with the real pipeline: per file
`fit_bundle` then `replay_table` (the agent's window -> score -> decide code), nothing else.

    python -m tests.bench.quality skab            # SKAB valve1: before / after / variants
    python -m tests.bench.quality nab             # NAB (35 files): before / after / variants
    python -m tests.bench.quality all --workers 2 --out /tmp/quality
    python -m tests.bench.quality nab --configs after --sweep   # one knob at a time
    python -m tests.bench.quality nab --configs after --epochs 1 --variants "as fitted,self"

Every table is printed for the whole corpus, then for each part of the fixed split (issue 16:
`tests.bench.skab.part_of`, `tests.bench.nab_corpus.part_of`) and, for NAB, each category: a
change is kept only if it wins on the part it was not chosen on. `--variants self` replays the
self-margin experiment (each member's threshold raised so that none reaches it on the fit
rows; not kept: it won on the chosen-on NAB categories and lost on the confirmed-on ones).

SKAB (leaderboard protocol): per file, fit on rows :400, replay the whole file, the agent's
decision (an alert open) on the rows after 400 against `anomaly`; counts pooled over files.
NAB: per file, fit on the probationary rows (15%, at most 750), replay every row; the
detections are alert starts; `export.nab` scores the three profiles over the corpus.

A *config* is one fit per file (`before`: the trainer's defaults until this change; `after`:
today's `FitConfig()`). A *variant* replays the same bundle with its manifest's ensemble or
decision changed (no refit), e.g. the LSTM-AE as an ensemble member, or the LSTM-AE alone
int8 vs float: `float` swaps the TFLite model for the float Keras one (kept by `keep_float`)
with its own threshold calibrated the same way on the same held-out windows, so both go
through the same decision path. Nothing is tuned per file; no label reaches a fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from export.config import FitConfig
from export.metrics import PointMetrics, point_metrics, pool

DATA = Path(os.environ.get("EDGE_BENCH_DATA", Path(__file__).resolve().parents[3] / "shared"
                           / "data"))
SKAB_TRAIN = 400
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
FloatArray = npt.NDArray[np.float64]

# the trainer's defaults before the recipes (PCA/KMeans Mahalanobis + LSTM-AE, POT thresholds)
BEFORE: dict[str, Any] = {
    "epochs": 60,
    "distance_model": "pca_kmeans",
    "distance_clip": True,
    "threshold_method": "pot",
    "threshold_quantile": 0.995,
    "threshold_margin": 0.1,
    "ensemble_members": ("lstm_ae", "mahalanobis"),
    "likelihood_scorers": (),
    "smoothing": 1,
    "trigger": 3,
    "release": 5,
    "release_level": 0.9,
    "cooldown_windows": 0,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "before": BEFORE,
    "after": {},
    # alternatives measured on the way to the recipes (tests/bench/quality.py --configs ...)
    "eps1": {"feature_eps": 1.0},
    "lags16": {"lags": 16},
    "slow0.5": {"slow_ratio": 0.5},
    "no-transform": {"transform": "none"},
    "auto-transform": {"transform": "auto"},  # NAB: the univariate recipe with a transform
    # NAB: the univariate recipe's daily profile without its floor of 5 spreads (the
    # threshold calibrated on the held-out rows alone), and without the profile
    "seasonal-week": {"scorers": ("stuck", "seasonal"),
                      "scorer_options": ("seasonal.min_days=7", "seasonal.required=false")},
    "no-seasonal": {"scorers": ("stuck",)},
    "long-shapes": {"long_shapes": (8, 16, 32), "ensemble_members": (
        "window_mahalanobis", "long_shape_64", "long_shape_128", "long_shape_256")},
    "window32": {"window": 32, "scorer_options": ("channel_kmeans.rows=32",)},
    "window32-only": {"window": 32},
}

# replay variants: manifest changes applied to the bundle of a config (name -> changes)
SKAB_VARIANTS: dict[str, dict[str, Any]] = {
    "as fitted": {},
    "+ lstm_ae member (max)": {"members": ["window_mahalanobis", "lstm_ae"]},
    "+ range member (max)": {"members": ["window_mahalanobis", "range"]},
    "lstm_ae alone, int8": {"members": ["lstm_ae"]},
    "lstm_ae alone, float": {"members": ["lstm_ae"], "float": True},
}
LONG_SHAPES = ["long_shape_64", "long_shape_128", "long_shape_256"]
NAB_VARIANTS: dict[str, dict[str, Any]] = {
    "as fitted": {},
    "without the long shapes": {"members": ["lag_distance_8", "lag_distance_4", "range"]},
    "without the range member": {"members": ["lag_distance_8", "lag_distance_4",
                                             *LONG_SHAPES]},
    "without the device memory": {"no_memory": True},
    "+ lstm_ae member (max)": {
        "members": ["lag_distance_8", "lag_distance_4", "range", *LONG_SHAPES, "lstm_ae"]},
    "+ lstm_ae with likelihood": {"members": ["lag_distance_8", "lag_distance_4", "range",
                                              *LONG_SHAPES, "lstm_ae"],
                                  "lstm_likelihood": True},
}


# ----------------------------------------------------------------------- one bundle, one replay


def _with(scorers: list[Any], part: str, changes: Callable[[Any], dict[str, Any]],
          when: Callable[[Any], bool] = lambda _: True) -> list[Any]:
    """The scorers with `part` (threshold, memory, likelihood) updated by `changes(part)`
    where `when(scorer)` holds and the scorer has that part."""
    out = []
    for s in scorers:
        current = getattr(s, part)
        if current is not None and when(s):
            s = s.model_copy(update={part: current.model_copy(update=changes(current))})
        out.append(s)
    return out


def _variant_engine(bundle_dir: Path, changes: dict[str, Any], csv: Path,
                    config: FitConfig) -> Any:
    """A ScoringEngine over the bundle with its manifest changed as `changes` says."""
    from edge.bundle import Decision, Ensemble, load_bundle
    from edge.engine import ScoringEngine

    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    update: dict[str, Any] = {}
    names = {s.name for s in m.scorers}
    if "members" in changes:
        members = [n for n in changes["members"] if n in names]
        update["ensemble"] = Ensemble(rule="max", members=members)
    if "decision" in changes:
        update["decision"] = Decision(**{**m.decision.model_dump(), **changes["decision"]})
    scorers = list(m.scorers)
    if "threshold_scale" in changes:  # the margin of every ensemble member, as a refit would
        members = set(update.get("ensemble", m.ensemble).members)
        scorers = _with(scorers, "threshold", lambda t: {
            "value": t.value * changes["threshold_scale"]}, lambda s: s.name in members)
    if "threshold_factors" in changes:  # per scorer (the self margin below)
        factors = changes["threshold_factors"]
        scorers = [s.model_copy(update={"threshold": s.threshold.model_copy(update={
            "value": s.threshold.value * factors[s.name]})})
            if s.name in factors and s.threshold is not None else s for s in scorers]
    if changes.get("no_memory"):  # the lag distances without the device's memory
        scorers = [s.model_copy(update={"memory": None}) if s.kind == "distance" else s
                   for s in scorers]
    if "memory" in changes:  # the lag memory's size, gap or k
        scorers = _with(scorers, "memory", lambda _: changes["memory"],
                        lambda s: s.kind == "distance")
    if "likelihood" in changes:  # the likelihood step's short, history or min_history
        scorers = _with(scorers, "likelihood", lambda _: changes["likelihood"])
    if "range_tolerance" in changes:  # the range scorer's threshold
        scorers = _with(scorers, "threshold", lambda _: {"value": changes["range_tolerance"]},
                        lambda s: s.kind == "range")
    if "z" in changes:  # the threshold on the lag distances' likelihood z
        scorers = _with(scorers, "threshold", lambda _: {"value": changes["z"]},
                        lambda s: s.likelihood is not None and s.kind == "distance")
    if "long_shape_z" in changes:  # the threshold on the long shapes' likelihood z
        scorers = _with(scorers, "threshold", lambda _: {"value": changes["long_shape_z"]},
                        lambda s: s.kind == "long_shape")
    if changes.get("lstm_likelihood"):
        step = next(s.likelihood for s in scorers if s.likelihood is not None)
        scorers = [s.model_copy(update={"likelihood": step, "threshold": next(
            t.threshold for t in m.scorers if t.likelihood is not None)})
            if s.name == "lstm_ae" else s for s in scorers]
    model = None
    if changes.get("float"):
        model, threshold = _float_model(bundle_dir, csv, config)
        scorers = _with(scorers, "threshold", lambda _: {"value": threshold},
                        lambda s: s.name == "lstm_ae")
    update["scorers"] = scorers
    manifest = m.model_copy(update=update)
    bundle = dataclasses.replace(bundle, manifest=manifest)
    if model is None:
        return ScoringEngine(bundle)
    return _float_engine(bundle, model, config)


def _float_model(bundle_dir: Path, csv: Path, config: FitConfig) -> tuple[Any, float]:
    """The float Keras autoencoder and its threshold: the int8 model's method on the same
    held-out windows."""
    import keras

    from export import calibrate
    from export.fit import FLOAT_FILE
    from export.lstm_ae import window_errors
    from export.prepare import prepare

    model = keras.models.load_model(bundle_dir / FLOAT_FILE, compile=False)
    prep = prepare(csv, config)
    windows = prep.windows(prep.calib_ends, config.window)
    heldout = window_errors(model, windows, config.clip, config.lstm_reduce).mean(axis=1)
    return model, calibrate.calibrate(heldout, config).value


def _float_engine(bundle: Any, model: Any, config: FitConfig) -> Any:
    """A ScoringEngine with the float Keras model in place of the int8 TFLite one."""
    from edge.engine import ScoringEngine
    from export.lstm_ae import window_errors

    engine = ScoringEngine(bundle)

    def lstm_errors(windows: FloatArray) -> FloatArray:
        return np.asarray(window_errors(model, windows, config.clip, config.lstm_reduce))

    engine.lstm_errors = lstm_errors  # type: ignore[method-assign]
    return engine


# ----------------------------------------------------------------------- workers


def _init_worker() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


REUSE = os.environ.get("EDGE_QUALITY_REUSE") == "1"  # --reuse: keep bundles already fitted


@dataclasses.dataclass
class _Reused:
    out_dir: Path
    manifest: Any


def _fit(csv: Path, out: Path, rows: str, changes: dict[str, Any], epochs: int | None
         ) -> tuple[Any, FitConfig, float]:
    from edge.bundle import BundleError, load_bundle
    from export.fit import fit_bundle
    from export.prepare import prepare

    config = dataclasses.replace(FitConfig(), rows=rows, report=False, force=True,
                                 keep_float=True, **changes)
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    if REUSE:
        try:
            bundle = load_bundle(out)
            resolved = prepare(csv, config).config
            if bundle.manifest.training.get("config") == resolved.summary():
                return _Reused(out, bundle.manifest), resolved, 0.0
        except (BundleError, OSError):
            pass
    started = time.perf_counter()
    result = fit_bundle(csv, out, config)
    return result, config, time.perf_counter() - started


def decision_grid(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Decision and margin variants (for choosing the recipe's decision defaults)."""
    out: dict[str, dict[str, Any]] = {"as fitted": base}
    for smoothing in (4, 8, 16, 32):
        for release, level in ((1, 1.0), (10, 0.8), (30, 0.8)):
            for margin in (1.0, 1.2, 1.4):
                out[f"sm{smoothing} rel{release}/{level} x{margin}/1.2"] = {
                    **base, "threshold_scale": margin / 1.2,
                    "decision": {"smoothing": smoothing, "release": release,
                                 "release_level": level, "trigger": 1}}
    return out


def nab_grid(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Memory, likelihood and decision variants around the univariate recipe (each one knob
    away from it, as in `export/recipes.py`), replayed on the same bundles."""
    out: dict[str, dict[str, Any]] = {"as fitted": base, "without the device memory": {
        **base, "no_memory": True}, "without the range member": {
        **base, "members": ["lag_distance_8", "lag_distance_4", *LONG_SHAPES]},
        "without the long shapes": {
        **base, "members": ["lag_distance_8", "lag_distance_4", "range"]}}
    for z in (2.5, 3.5):
        out[f"long-shape z {z}"] = {**base, "long_shape_z": z}
    for shapes in (LONG_SHAPES[:2], LONG_SHAPES[1:]):
        out[f"long shapes {', '.join(n.rsplit('_', 1)[1] for n in shapes)} only"] = {
            **base, "members": ["lag_distance_8", "lag_distance_4", "range", *shapes]}
    for tolerance in (0.05, 0.2):
        out[f"range tolerance {tolerance}"] = {**base, "range_tolerance": tolerance}
    for size, gap, k in ((2000, 50, 2), (4000, 50, 2), (3000, 35, 2), (3000, 75, 2),
                         (3000, 50, 1), (3000, 50, 3)):
        out[f"memory {size}/{gap}/k{k}"] = {**base, "memory": {"size": size, "gap": gap, "k": k}}
    for history, min_history in ((8640, 300), (8640, 150), (20000, 300)):
        out[f"likelihood history {history} from {min_history}"] = {
            **base, "likelihood": {"history": history, "min_history": min_history}}
    for short in (15, 25):
        out[f"likelihood short {short}"] = {**base, "likelihood": {"short": short}}
    for z in (1.7, 1.8):
        out[f"z {z}"] = {**base, "z": z}
    for cooldown in (100, 200):
        out[f"cooldown {cooldown}"] = {**base, "decision": {"cooldown_windows": cooldown}}
    out["release under 0.8"] = {**base, "decision": {"release_level": 0.8}}
    return out


SELF_MARGINS = (1.0, 1.2)  # issue 16's experiment: the margins tried


def self_margin_variants(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 16's experiment: each ensemble member's threshold raised, where needed, so that
    no member reaches it on the fit rows (replayed by the device from the first row, as it
    would on the trainer): threshold x max(1, margin x its largest normalised score there).
    Derived from the training rows alone, no label."""
    return {f"self margin x{m}": {**base, "self_margin": m} for m in SELF_MARGINS}


def _self_factors(fitted: Any, result: Any, fit_rows: int, margin: float) -> dict[str, float]:
    """Per member: max(1, margin x its largest normalised score on rows :fit_rows)."""
    out = {}
    for name in fitted.manifest.ensemble.members:
        seen = result.scorers[name][:fit_rows]
        seen = seen[np.isfinite(seen)]
        top = float(seen.max()) if seen.size else 0.0
        out[name] = max(1.0, margin * top)
    return out


def _replay_variants(fit: Any, config: FitConfig, csv: Path, table: Any,
                     variants: dict[str, dict[str, Any]], fit_rows: int, skip_changes: bool
                     ) -> dict[str, Any]:
    """Each variant's replay of the bundle; a self-margin variant from the as-fitted replay."""
    from edge.replay import replay_table

    out: dict[str, Any] = {}
    fitted: Any = None
    for vname, vchanges in variants.items():
        if skip_changes and vchanges:
            continue
        if "self_margin" in vchanges:
            if fitted is None:
                fitted = replay_table(_variant_engine(fit.out_dir, {}, csv, config), table)
            vchanges = {k: v for k, v in vchanges.items() if k != "self_margin"}
            vchanges["threshold_factors"] = _self_factors(fit, fitted, fit_rows,
                                                          variants[vname]["self_margin"])
        engine = _variant_engine(fit.out_dir, vchanges, csv, config)
        out[vname] = replay_table(engine, table)
        if not vchanges:
            fitted = out[vname]
    return out


def skab_file(csv: Path, work: Path, configs: dict[str, dict[str, Any]],
              variants: dict[str, dict[str, Any]], epochs: int | None) -> dict[str, Any]:
    """Fit each config on rows :400 and replay each variant; counts on rows 400:."""
    from edge.table import read_table

    out: dict[str, Any] = {"file": csv.name, "metrics": {}, "fit_s": {}}
    for cname, changes in configs.items():
        fit, config, seconds = _fit(csv, work / cname / csv.stem, f":{SKAB_TRAIN}", changes,
                                    epochs)
        out["fit_s"][cname] = seconds
        table = read_table(csv, channels=fit.manifest.channels)
        assert table.labels is not None
        truth = table.labels[SKAB_TRAIN:]
        replays = _replay_variants(fit, config, csv, table, variants, SKAB_TRAIN,
                                   cname == "before")
        for vname, result in replays.items():
            out["metrics"][f"{cname} | {vname}"] = point_metrics(
                truth, result.is_anomaly[SKAB_TRAIN:])
    return out


def nab_file(name: str, work: Path, configs: dict[str, dict[str, Any]],
             variants: dict[str, dict[str, Any]], epochs: int | None) -> dict[str, Any]:
    """Fit each config on the probationary rows and replay each variant; alert starts."""
    from edge.table import read_table
    from export.errors import FitError, InputError
    from export.evaluate import alert_starts
    from export.nab import probation_period

    csv = DATA / "nab" / "data" / name
    table = read_table(csv)
    rows = f":{probation_period(len(table))}"
    out: dict[str, Any] = {"file": name, "starts": {}, "fit_s": {}}
    for cname, changes in configs.items():
        stem = name.replace("/", "__").removesuffix(".csv")
        try:
            fit, config, seconds = _fit(csv, work / cname / stem, rows, changes, epochs)
        except (InputError, FitError) as exc:  # e.g. art_flatline: constant in training
            out["fit_s"][cname] = 0.0
            out.setdefault("refused", []).append(f"{cname}: {exc}")
            for vname, vchanges in variants.items():
                if cname != "before" or not vchanges:
                    out["starts"][f"{cname} | {vname}"] = np.zeros(len(table), dtype=bool)
            continue
        out["fit_s"][cname] = seconds
        replays = _replay_variants(fit, config, csv, table, variants,
                                   probation_period(len(table)), cname == "before")
        for vname, result in replays.items():
            out["starts"][f"{cname} | {vname}"] = alert_starts(result)
    return out


# ----------------------------------------------------------------------- tables


def _run(tasks: list[tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]], workers: int,
         say: Callable[[str], None]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker) as executor:
        futures = [executor.submit(fn, *args) for fn, args in tasks]
        for i, future in enumerate(futures, 1):
            r = future.result()
            results.append(r)
            fits = ", ".join(f"{k} {v:.0f} s" for k, v in r["fit_s"].items())
            refused = f"; no bundle ({'; '.join(r['refused'])})" if r.get("refused") else ""
            say(f"  {i}/{len(futures)} {r['file']}: fit {fits}{refused}")
    return results


def skab_table(results: list[dict[str, Any]], part: str | None = None
               ) -> dict[str, PointMetrics]:
    """Pooled over the files, or over one part of the fixed split (`tests.bench.skab`)."""
    from tests.bench.skab import part_of

    names = list(results[0]["metrics"])
    mine = [r for r in results if part is None or part_of(r["file"]) == part]
    return {n: pool(r["metrics"][n] for r in mine) for n in names}


def nab_table(results: list[dict[str, Any]], group: Callable[[str], str] | None = None,
              which: str | None = None) -> dict[str, dict[str, float]]:
    """Normalised over the files, or over those whose `group(name)` is `which` (a part of the
    fixed split, a category: `tests.bench.nab_corpus`); NaN where they hold no window."""
    from export.nab import load_nab_corpus, normalized_score

    files = {f.name: f for f in load_nab_corpus(DATA / "nab")}
    names = list(results[0]["starts"])
    mine = [r for r in results if group is None or group(r["file"]) == which]
    out = {}
    for n in names:
        scores = {}
        for p in PROFILES:
            try:
                scores[p] = normalized_score([files[r["file"]].score(r["starts"][n], p)
                                              for r in mine])
            except ValueError:  # no window in these files
                scores[p] = float("nan")
        out[n] = scores
    return out


def print_skab(table: dict[str, PointMetrics], say: Callable[[str], None],
               title: str = "SKAB valve1 (16 files, pooled)") -> None:
    say(f"{title:<52} {'F1':>6} {'FAR%':>6} {'MAR%':>6}")
    for name, m in table.items():
        say(f"{name:<52} {m.f1:>6.3f} {m.far_pct:>6.1f} {m.mar_pct:>6.1f}")


def print_nab(table: dict[str, dict[str, float]], say: Callable[[str], None],
              title: str = "NAB (35 files, alert starts)") -> None:
    say(f"{title:<52} {'std':>6} {'lowFP':>6} {'lowFN':>6}")
    for name, s in table.items():
        say(f"{name:<52} {s['standard']:>6.1f} {s['reward_low_FP_rate']:>6.1f} "
            f"{s['reward_low_FN_rate']:>6.1f}")


def _pick(variants: dict[str, dict[str, Any]], names: str | None
          ) -> dict[str, dict[str, Any]]:
    """The variants named in `names` ("self": the self-margin ones), all when None."""
    if not names:
        return variants
    every = {**variants, **self_margin_variants({})}
    out: dict[str, dict[str, Any]] = {}
    for name in names.split(","):
        if name == "self":
            out.update(self_margin_variants({}))
        else:
            out[name] = every[name]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", choices=("skab", "nab", "all"))
    parser.add_argument("--workers", type=int, default=2, help="fit processes (default 2)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/edge-quality"),
                        help="bundles and results.json (default /tmp/edge-quality)")
    parser.add_argument("--configs", default="before,after",
                        help="comma-separated configs to fit (default before,after)")
    parser.add_argument("--epochs", type=int, help="override LSTM-AE epochs (faster runs)")
    parser.add_argument("--files", type=int, help="only the first N files (smoke runs)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a bundle already in --out whose recipe matches (re-run the "
                             "tables without refitting)")
    parser.add_argument("--variants", help="comma-separated replay variants (default: the "
                        "bench's own list; 'self' adds issue 16's self-margin variants)")
    parser.add_argument("--sweep", action="store_true",
                        help="replay a grid of variants instead of the default ones (SKAB: "
                             "decision and margin, prints the best with FAR <= 10%%; NAB: "
                             "memory, likelihood and decision, one knob at a time)")
    args = parser.parse_args(argv)
    if args.reuse:
        os.environ["EDGE_QUALITY_REUSE"] = "1"  # for the spawned workers
        global REUSE
        REUSE = True
    configs = {k: CONFIGS[k] for k in args.configs.split(",")}
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {line}", flush=True)

    report: dict[str, Any] = {}
    if args.bench in ("skab", "all"):
        files = sorted((DATA / "skab" / "valve1").glob("*.csv"), key=lambda p: int(p.stem))
        files = files[: args.files] if args.files else files
        say(f"SKAB: {len(files)} files, configs {', '.join(configs)}")
        variants = _pick(decision_grid({}) if args.sweep else SKAB_VARIANTS, args.variants)
        tasks: list[tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]] = [
            (skab_file, (f, args.out / "skab", configs, variants, args.epochs))
            for f in files]
        skab_results = _run(tasks, args.workers, say)
        table = skab_table(skab_results)
        if args.sweep:
            table = dict(sorted(((k, v) for k, v in table.items() if v.far_pct <= 10),
                                key=lambda kv: -kv[1].f1)[:40])
        print_skab(table, say)
        report["skab"] = {k: v.as_dict() for k, v in table.items()}
        from tests.bench.skab import PARTS as SKAB_PARTS

        for part in SKAB_PARTS:
            part_table = {k: v for k, v in skab_table(skab_results, part).items()
                          if k in table}
            print_skab(part_table, say, f"SKAB valve1, {part} files")
            report[f"skab {part}"] = {k: v.as_dict() for k, v in part_table.items()}
    if args.bench in ("nab", "all"):
        from export.nab import load_nab_corpus

        names = [f.name for f in load_nab_corpus(DATA / "nab")]
        names = names[: args.files] if args.files else names
        say(f"NAB: {len(names)} files, configs {', '.join(configs)}")
        nab_variants = _pick(nab_grid({}) if args.sweep else NAB_VARIANTS, args.variants)
        tasks = [(nab_file, (n, args.out / "nab", configs, nab_variants, args.epochs))
                 for n in names]
        nab_results = _run(tasks, args.workers, say)
        nab = nab_table(nab_results)
        print_nab(nab, say)
        report["nab"] = nab
        from tests.bench.nab_corpus import PARTS as NAB_PARTS
        from tests.bench.nab_corpus import category_of
        from tests.bench.nab_corpus import part_of as nab_part

        groups: list[tuple[Callable[[str], str], str]] = [(nab_part, p) for p in NAB_PARTS]
        groups += [(category_of, c) for c in sorted({category_of(n) for n in names})]
        for group, which in groups:
            part_nab = nab_table(nab_results, group, which)
            print_nab(part_nab, say, f"NAB {which}")
            report[f"nab {which}"] = part_nab
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
