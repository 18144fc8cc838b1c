"""`fit_bundle`: CSV in, verified bundle out. The one entry point for the CLI, benchmarks, demo.

Stages: prepare (read, clean, fit preprocessing) -> linear scorers (-> distance.onnx) ->
LSTM autoencoder (-> int8 lstm_ae.tflite in a subprocess) -> thresholds on held-out normal
windows scored by the device engine -> parity checks -> manifest -> verification with
`edge.bundle.load_bundle` + `edge.engine.ScoringEngine` -> labelled metrics -> report.
The bundle is built in a temporary directory beside the target and renamed into place at
the end, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import (
    SCHEMA_VERSION,
    Decision,
    DistanceSpec,
    Ensemble,
    LstmAeSpec,
    Manifest,
    ModelFile,
    ScorerSpec,
    Threshold,
    WindowSpec,
    checksums,
    load_bundle,
    sha256_file,
    write_manifest,
)
from edge.engine import ScoringEngine
from export import calibrate
from export.config import SCORERS, FitConfig
from export.errors import FitError, InputError
from export.prepare import Prepared, prepare, window_ends
from export.scoring import ENSEMBLE, WindowScores, labelled_metrics, score_file

__all__ = ["FitConfig", "FitResult", "fit_bundle"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
Progress = Callable[[str], None]
LSTM_FILE, DISTANCE_FILE = "lstm_ae.tflite", "distance.onnx"
UNIVARIATE_LAGS = 8
PACKAGES = (
    "numpy",
    "tensorflow-cpu",
    "keras",
    "scikit-learn",
    "skl2onnx",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "scipy",
    "edge-anomaly",
)


@dataclass(frozen=True)
class FitResult:
    out_dir: Path
    manifest: Manifest
    bundle_bytes: int  # every file of the bundle, report included
    file_bytes: dict[str, int]  # manifest and model files
    parity: dict[str, Any]
    metrics: dict[str, dict[str, dict[str, float]]]  # rows ("all", "test") -> scorer -> metrics
    seconds: float
    report: Path | None
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _check_options(config: FitConfig, out_dir: Path) -> None:
    if out_dir.exists() and not config.force:
        raise InputError(f"--out {out_dir} already exists; pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    if config.sign_key is not None:
        raise InputError("--sign-key: manifest signing is not implemented in this release")
    unknown = [m for m in config.ensemble_members if m not in SCORERS]
    if unknown or not config.ensemble_members:
        raise InputError(
            f"--ensemble-members {','.join(config.ensemble_members)}: "
            f"choose among {', '.join(SCORERS)}"
        )
    if config.ensemble_weights:
        stray = [m for m in config.ensemble_weights if m not in config.ensemble_members]
        if stray:
            raise InputError(f"--ensemble-weights names {stray[0]!r}, not an ensemble member")
    if config.lags > config.window:
        raise InputError(f"--lags {config.lags} cannot exceed --window {config.window}")
    for name in (
        "units",
        "epochs",
        "batch_size",
        "stride",
        "train_stride",
        "calib_samples",
        "trigger",
        "release",
        "smoothing",
        "ensemble_votes",
    ):
        if getattr(config, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")


def default_lags(n_channels: int, config: FitConfig) -> int:
    """Rows per distance-model input: --lags, else 1 for multivariate and 8 for univariate."""
    lags = config.lags or (UNIVARIATE_LAGS if n_channels == 1 else 1)
    return min(lags, config.window)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def _scorers(thresholds: dict[str, Threshold], spe: bool) -> list[ScorerSpec]:
    specs = [ScorerSpec(name="lstm_ae", kind="lstm_ae", threshold=thresholds["lstm_ae"])]
    for output in ("spe", "euclidean", "mahalanobis"):
        if output != "spe" or spe:
            specs.append(
                ScorerSpec(
                    name=output, kind="distance", output=output, threshold=thresholds[output]
                )
            )
    specs.append(ScorerSpec(name="iqr", kind="iqr", threshold=thresholds["iqr"]))
    return specs


@dataclass
class _Build:
    """What the stages hand each other."""

    prep: Prepared
    config: FitConfig
    folder: Path
    lags: int
    say: Progress
    models: dict[str, ModelFile] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    ae: Any = None
    linear: Any = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def manifest(
        self,
        name: str,
        version: str,
        created: str,
        thresholds: dict[str, Threshold],
        parity: dict[str, Any],
    ) -> Manifest:
        c, p = self.config, self.prep
        spe = self.linear.n_features > 1
        members = [m for m in c.ensemble_members if spe or m != "spe"]
        return Manifest(
            schema_version=SCHEMA_VERSION,
            name=name,
            version=version,
            created=created,
            channels=p.data.channels,
            sample_period_s=p.sample_period_s,
            window=WindowSpec(length=c.window, stride=c.stride),
            preprocess=p.preprocess,
            models=self.models,
            lstm_ae=LstmAeSpec(reduce=c.lstm_reduce),  # type: ignore[arg-type]
            distance=DistanceSpec(lags=self.lags, clip_inputs=c.distance_clip),
            iqr=p.iqr,
            scorers=_scorers(thresholds, spe),
            ensemble=Ensemble(
                rule=c.ensemble_rule,
                members=members,  # type: ignore[arg-type]
                weights=dict(c.ensemble_weights or {}),
                votes=min(c.ensemble_votes, len(members)),
            ),
            decision=Decision(
                smoothing=c.smoothing,
                trigger=c.trigger,
                release=c.release,
                release_level=c.release_level,
                cooldown_s=c.cooldown_s,
                warmup_windows=c.warmup_windows,
            ),
            files=checksums(self.folder, [LSTM_FILE, DISTANCE_FILE]),
            parity=parity,
            training=self.training,
            versions=_versions(),
        )


def _stage(build: _Build, key: str, started: float) -> None:
    build.stage_seconds[key] = round(time.perf_counter() - started, 2)


def _distance_clip(config: FitConfig) -> float | None:
    return config.clip if config.distance_clip else None


def _fit_linear(build: _Build) -> None:
    from export.linear import fit_linear, lag_features
    from export.onnx_export import export_distance

    started = time.perf_counter()
    p, c = build.prep, build.config
    x = lag_features(p.windows(p.fit_ends, c.window), build.lags, _distance_clip(c))
    build.linear = fit_linear(x, c)
    build.models["distance"] = export_distance(build.linear, build.folder / DISTANCE_FILE)
    info = build.linear.info
    _stage(build, "linear", started)
    build.say(
        f"[2/7] linear scorers: {info['features']} features (lags {build.lags}) -> PCA "
        f"{info['pca_components']} component{'s' if info['pca_components'] > 1 else ''} "
        f"({info['explained_variance']:.1%} "
        f"variance), KMeans k={info['clusters']}, {c.covariance} covariance "
        f"({c.covariance_pooling}); {DISTANCE_FILE} "
        f"{(build.folder / DISTANCE_FILE).stat().st_size / 1024:.1f} KB"
    )


def _fit_lstm(build: _Build) -> None:
    from export.lstm_ae import train
    from export.tflite_export import export_int8

    started = time.perf_counter()
    p, c = build.prep, build.config
    windows = p.windows(p.fit_ends, c.window)
    build.say(
        f"[3/7] LSTM autoencoder: {len(windows)} windows of {c.window} x "
        f"{len(p.data.channels)}, {c.units} units, up to {c.epochs} epochs"
    )
    build.ae = train(windows, c, build.say)
    params = int(build.ae.model.count_params())
    build.say(
        f"      stopped after {build.ae.epochs_run} epochs (best {build.ae.best_epoch}), "
        f"{params} parameters, {build.ae.seconds:.1f}s"
    )
    _stage(build, "lstm_train", started)
    started = time.perf_counter()
    pick = np.unique(
        np.linspace(0, len(windows) - 1, min(c.calib_samples, len(windows))).round().astype(int)
    )
    build.models["lstm_ae"] = export_int8(
        build.ae.model, windows[pick], c.clip, build.folder / LSTM_FILE, c.convert_timeout_s
    )
    _stage(build, "tflite_convert", started)
    build.say(
        f"[4/7] int8 TFLite (converted in a subprocess): {LSTM_FILE} "
        f"{(build.folder / LSTM_FILE).stat().st_size / 1024:.1f} KB, "
        f"{time.perf_counter() - started:.1f}s"
    )
    build.training["lstm_ae"] = {
        "units": c.units,
        "parameters": params,
        "epochs_run": build.ae.epochs_run,
        "best_epoch": build.ae.best_epoch,
        "seconds": round(build.ae.seconds, 2),
        "best_val_loss": min(build.ae.history.get("val_loss", [float("nan")])),
        "calibration_windows": len(pick),
    }


def _thresholds(build: _Build, heldout: WindowScores) -> dict[str, Threshold]:
    c = build.config
    out: dict[str, Threshold] = {}
    for name, scores in heldout.raw.items():
        if name == "iqr" and c.iqr_threshold == "fence":
            out[name] = calibrate.fence(scores)
        else:
            out[name] = calibrate.calibrate(scores, c)
    return out


def _latency(engine: ScoringEngine, prep: Prepared, runs: int = 200) -> dict[str, Any]:
    """Median time to score one window here (one thread), whole engine and TFLite alone."""
    window = prep.windows(prep.calib_ends[:1], engine.manifest.window.length)
    clipped = np.clip(window, -engine.clip, engine.clip).astype(np.float32)
    assert engine.tflite is not None
    timings: dict[str, list[float]] = {"engine": [], "tflite": []}
    for i in range(runs + 10):
        t0 = time.perf_counter()
        engine.score_windows(window)
        t1 = time.perf_counter()
        engine.tflite.run(clipped)
        t2 = time.perf_counter()
        if i >= 10:  # warm-up
            timings["engine"].append(t1 - t0)
            timings["tflite"].append(t2 - t1)
    out: dict[str, Any] = {k: round(1000 * float(np.median(v)), 4) for k, v in timings.items()}
    out["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _parity(
    build: _Build, heldout: WindowScores, every: WindowScores, threshold: float
) -> dict[str, Any]:
    from export.linear import lag_features
    from export.lstm_ae import window_errors
    from export.onnx_export import onnx_parity

    p, c = build.prep, build.config
    out: dict[str, Any] = {}
    for label, scores in (("heldout", heldout), ("all_rows", every)):
        windows = p.windows(scores.ends, c.window)
        per_output = onnx_parity(
            build.folder / DISTANCE_FILE,
            build.linear,
            lag_features(windows, build.lags, _distance_clip(c)),
        )
        ref = window_errors(build.ae.model, windows, c.clip, c.lstm_reduce).mean(axis=1)
        got = scores.raw["lstm_ae"]
        out[label] = {
            "windows": len(scores.ends),
            "onnx_max_rel_diff": max(per_output.values()),
            "onnx_max_rel_diff_by_output": per_output,
            "int8_float_corr": round(_corr(got, ref), 6),
            "int8_float_agreement": round(
                float(np.mean((got >= threshold) == (ref >= threshold))), 6
            ),
            "int8_float_max_abs_diff": float(np.max(np.abs(got - ref))),
        }
    out["onnx_max_rel_diff"] = max(out[k]["onnx_max_rel_diff"] for k in ("heldout", "all_rows"))
    out["int8_float_corr"] = out["heldout"]["int8_float_corr"]
    out["int8_float_agreement"] = out["heldout"]["int8_float_agreement"]
    out["int8_float_corr_all_rows"] = out["all_rows"]["int8_float_corr"]
    out["int8_float_agreement_all_rows"] = out["all_rows"]["int8_float_agreement"]
    out["reference"] = "float Keras model and scikit-learn/numpy float64, on the same inputs"
    return out


def _check_parity(parity: dict[str, Any], config: FitConfig) -> None:
    if parity["onnx_max_rel_diff"] > config.max_onnx_rel_diff:
        raise FitError(
            f"distance.onnx differs from scikit-learn by {parity['onnx_max_rel_diff']:.2g}"
            f" (relative; bound {config.max_onnx_rel_diff:g}, --max-onnx-rel-diff)"
        )
    corr, agree = parity["int8_float_corr"], parity["int8_float_agreement"]
    if corr < config.min_int8_corr or agree < config.min_int8_agreement:
        raise FitError(
            f"the int8 LSTM autoencoder strays from the float model on held-out windows: "
            f"score correlation {corr:.3f} (bound {config.min_int8_corr}, --min-int8-corr), "
            f"decision agreement {agree:.1%} (bound {config.min_int8_agreement:.0%}, "
            "--min-int8-agreement); try more --calib-samples or a smaller --clip"
        )


def _verify(folder: Path) -> tuple[ScoringEngine, dict[str, int]]:
    """Load the bundle as the device does and check that the TFLite tensors are int8."""
    engine = ScoringEngine(load_bundle(folder))
    assert engine.tflite is not None
    counts: dict[str, int] = {}
    for dtype in engine.tflite.tensor_dtypes():
        counts[dtype] = counts.get(dtype, 0) + 1
    if counts.get("int8", 0) == 0 or "float32" in counts:
        raise FitError(f"{LSTM_FILE} is not a full-integer int8 model: tensor dtypes {counts}")
    return engine, counts


def _print_metrics(say: Progress, metrics: dict[str, dict[str, dict[str, float]]]) -> None:
    for split, by_scorer in metrics.items():
        first = next(iter(by_scorer.values()))
        positives = int(first["tp"] + first["fn"])
        total = int(first["tp"] + first["fn"] + first["fp"] + first["tn"])
        say(f"      {split} rows: {total} windows, {positives} labelled anomalous")
        say(f"      {'scorer':<12} {'precision':>9} {'recall':>7} {'F1':>6} {'FAR%':>6}")
        for name, m in by_scorer.items():
            say(
                f"      {name:<12} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} "
                f"{m['far_pct']:>6.1f}"
            )


def _replace(build_dir: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    build_dir.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sizes(folder: Path) -> tuple[int, dict[str, int]]:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    names = ("manifest.json", LSTM_FILE, DISTANCE_FILE)
    return total, {n: (folder / n).stat().st_size for n in names}


def fit_bundle(
    csv_path: Path | str,
    out_dir: Path | str,
    config: FitConfig | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Train on `csv_path` and write a verified bundle to `out_dir`.

    Raises InputError for bad input or options (nothing written), FitError when training or
    export fails or a parity check falls under its bound (nothing left behind either).
    """
    started = time.perf_counter()
    config = config or FitConfig()
    csv_path, out_dir = Path(csv_path), Path(out_dir).absolute()
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if progress is not None:
            progress(line)

    _check_options(config, out_dir)
    t0 = time.perf_counter()
    prep = prepare(csv_path, config)
    summary = prep.summary
    channels = prep.data.channels
    labels = prep.data.labels
    say(
        f"[1/7] data: {csv_path.name}: {summary['rows_in_file']} rows, {len(channels)} channels"
        f" ({', '.join(channels)}), delimiter {summary['delimiter']!r}, time "
        f"{summary['time_column']!r}, labels "
        + (
            f"{summary['label_column']!r} ({int(labels.sum())} anomalous rows)"
            if labels is not None
            else "none"
        )
    )
    say(
        f"      training rows {config.rows or ':'}: {summary['fit_rows']} fit + "
        f"{summary['holdout_rows']} held-out normal rows "
        f"({summary['anomalous_training_rows_left_out']} anomalous left out); "
        f"period {prep.sample_period_s:g}s, max gap "
        f"{prep.preprocess.max_gap_s:g}s; transforms "
        + ", ".join(f"{c.name}={c.transform}" for c in prep.preprocess.channels)
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    try:
        build = _Build(prep, config, folder, default_lags(len(channels), config), say)
        build.stage_seconds["prepare"] = round(time.perf_counter() - t0, 2)
        result = _run(build, csv_path, out_dir, lines, started)
        _replace(folder, out_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    load_bundle(out_dir)  # the renamed bundle still verifies
    total, sizes = _sizes(out_dir)
    report = out_dir / "report" / "report.html" if result.report else None
    say(
        f"bundle: {out_dir} ({total / 1024:.0f} KB: "
        + ", ".join(f"{n} {b / 1024:.1f} KB" for n, b in sizes.items())
        + f") in "
        f"{time.perf_counter() - started:.1f}s"
    )
    return FitResult(
        out_dir,
        result.manifest,
        total,
        sizes,
        result.parity,
        result.metrics,
        time.perf_counter() - started,
        report,
        build.stage_seconds,
    )


def _run(
    build: _Build, csv_path: Path, out_dir: Path, lines: list[str], started: float
) -> FitResult:
    prep, config, folder, say = build.prep, build.config, build.folder, build.say
    build.training.update(prep.summary)
    build.training.update(
        {
            "source": csv_path.name,
            "source_sha256": sha256_file(csv_path),
            "rows": config.rows or ":",
            "config": config.summary(),
        }
    )
    _fit_linear(build)
    build.training["linear"] = build.linear.info
    _fit_lstm(build)

    t0 = time.perf_counter()
    name = config.name or out_dir.name
    now = datetime.now(timezone.utc)
    created = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    version = config.bundle_version or now.strftime("%Y%m%d.%H%M%S")
    provisional = {s: Threshold(value=1.0, method="provisional") for s in SCORERS}
    write_manifest(folder, build.manifest(name, version, created, provisional, {}))
    engine = ScoringEngine(load_bundle(folder))
    heldout = score_file(engine, prep.scaled, prep.calib_ends)
    all_ends = window_ends(
        np.ones(len(prep.scaled), dtype=bool), prep.gap_before, config.window, config.stride
    )
    every = score_file(engine, prep.scaled, all_ends)
    build.training["latency_ms_per_window"] = _latency(engine, prep)
    thresholds = _thresholds(build, heldout)
    say(
        f"[5/7] thresholds ({config.threshold_method} on {len(prep.calib_ends)} held-out "
        "normal windows): "
        + ", ".join(
            f"{n} {t.value:.4g}"
            + ("" if t.method in (config.threshold_method, "fence") else f" ({t.method})")
            for n, t in thresholds.items()
        )
    )
    parity = _parity(build, heldout, every, thresholds["lstm_ae"].value)
    _stage(build, "calibrate_and_parity", t0)
    _check_parity(parity, config)

    t0 = time.perf_counter()
    write_manifest(folder, build.manifest(name, version, created, thresholds, parity))
    engine, dtypes = _verify(folder)
    say(
        f"[6/7] verified with the device code (load_bundle + ScoringEngine): TFLite tensors "
        f"{dtypes}; ONNX vs scikit-learn max rel diff {parity['onnx_max_rel_diff']:.2g}; "
        f"int8 vs float on held-out windows: corr {parity['int8_float_corr']:.4f}, "
        f"agreement {parity['int8_float_agreement']:.1%}"
        + (
            f"; on all rows: corr {parity['int8_float_corr_all_rows']:.4f}, agreement "
            f"{parity['int8_float_agreement_all_rows']:.1%}"
            if prep.data.labels is not None
            else ""
        )
    )
    every = score_file(engine, prep.scaled, all_ends)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    labels = prep.data.labels
    if labels is not None:
        metrics["all"] = labelled_metrics(every, labels)
        if not prep.data.train.all():
            metrics["test"] = labelled_metrics(every, labels, ~prep.data.train)
        say(
            f"[7/7] labelled rows ('{prep.data.table.label_column}'; a window's label is its "
            f"last row's; {ENSEMBLE} = {config.ensemble_rule} of "
            f"{', '.join(engine.manifest.ensemble.members)}; test = rows outside --rows):"
        )
        _print_metrics(say, metrics)
    else:
        say("[7/7] no label column: no precision/recall")
    _stage(build, "verify_and_evaluate", t0)
    report = None
    if config.report:
        from export.report import REPORT_DIR, ReportData, write_report

        t0 = time.perf_counter()
        data = ReportData(
            engine.manifest,
            build.ae.history,
            heldout,
            every,
            prep.data.timestamps,
            labels,
            prep.data.train,
            metrics,
            lines,
        )
        report = write_report(folder / REPORT_DIR, data)
        _stage(build, "report", t0)
    return FitResult(
        out_dir, engine.manifest, 0, {}, parity, metrics, time.perf_counter() - started, report
    )
