"""`fit_bundle`: CSV in, verified bundle out. The one entry point for the CLI, benchmarks, demo.

Stages: prepare (read, clean, fit preprocessing; the recipe is resolved from the number of
channels, `export.recipes`) -> distance model (-> distance.onnx) ->
LSTM autoencoder (-> int8 lstm_ae.tflite, converted in a subprocess) -> thresholds on
held-out normal windows scored by the device engine -> parity checks -> manifest ->
verification with `edge.bundle.load_bundle` + `edge.engine.ScoringEngine` -> labelled
metrics -> report. The bundle is built in a temporary directory beside the target and
renamed into place at the end, so a failure leaves nothing behind.

The report (`report/`) is not listed in the manifest's `files`: it is not needed on the
device, and leaving it out of the checksums lets it be stripped from the device's copy.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import Manifest, ModelFile, Threshold, load_bundle, sha256_file, write_manifest
from edge.engine import ScoringEngine
from export import calibrate
from export.assemble import bundle_scorers
from export.config import FitConfig
from export.errors import FitError, InputError
from export.prepare import (
    MIN_CALIB_WINDOWS,
    MIN_FIT_WINDOWS,
    Prepared,
    prepare,
    window_ends,
    windows_at,
)
from export.recipes import default_lags, long_shape_blocks
from export.scorers.base import TrainingData
from export.scorers.registry import Added, fit_added, spec_with, training_data
from export.scoring import ENSEMBLE, WindowScores, labelled_metrics, score_file

__all__ = ["FitConfig", "FitResult", "default_lags", "fit_bundle"]  # default_lags: recipes

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
Progress = Callable[[str], None]
Metrics = dict[str, dict[str, dict[str, float]]]  # rows ("all", "test") -> scorer -> figures
LSTM_FILE, DISTANCE_FILE, REPORT_DIR = "lstm_ae.tflite", "distance.onnx", "report"
FLOAT_FILE = "lstm_ae_float.keras"  # with keep_float; not listed in the manifest
POSITIVE_OPTIONS = (
    "units",
    "batch_size",
    "stride",
    "train_stride",
    "calib_samples",
    "ensemble_votes",
    "slow_span",
    "lag_clusters",
    "lag_n_init",
    "lag_memory_gap",
    "lag_memory_k",
    "long_shape_blocks",
    "long_shape_memory",
    "likelihood_short",
    "likelihood_history",
    "likelihood_min_history",
)


@dataclass(frozen=True)
class FitResult:
    out_dir: Path
    manifest: Manifest
    bundle_bytes: int  # every file of the bundle, report included
    file_bytes: dict[str, int]  # manifest.json and the model files
    parity: dict[str, Any]
    metrics: Metrics  # empty without a label column
    seconds: float
    report: Path | None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    float_model: Path | None = None  # the float Keras autoencoder, with keep_float
    warnings: list[str] = field(default_factory=list)  # also among the progress lines


def check_options(config: FitConfig, out_dir: Path) -> None:
    """Option problems found before any work; InputError names the option."""
    if out_dir.exists() and not config.force:
        raise InputError(f"--out {out_dir} already exists; pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    if config.lags > config.window:
        raise InputError(f"--lags {config.lags} cannot exceed --window {config.window}")
    for name in POSITIVE_OPTIONS:
        if getattr(config, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if config.likelihood_threshold <= 0:
        raise InputError("--likelihood-threshold must be positive")
    if not config.long_shape_threshold > 0:
        raise InputError(f"--long-shape-threshold {config.long_shape_threshold}: must be positive")
    if config.taught_memory < 0 or config.taught_memory > 100_000:
        raise InputError(f"--taught-memory {config.taught_memory}: between 0 and 100000")
    if config.taught_level < 0:
        raise InputError(f"--taught-level {config.taught_level}: must be at least 0")
    if not config.range_tolerance > 0:
        raise InputError(f"--range-tolerance {config.range_tolerance}: must be positive")


@dataclass
class _Build:
    """What the stages hand each other."""

    prep: Prepared
    config: FitConfig
    folder: Path
    lags: int
    say: Progress
    identity: tuple[str, str, str] = ("", "", "")  # name, version, created
    models: dict[str, ModelFile] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    ae: Any = None  # export.lstm_ae.TrainedAe
    distance: Any = None  # export.onnx_export.DistanceModel
    twin: Any = None  # export.tflite_distance.TwinJob: distance.tflite, converting
    stage_seconds: dict[str, float] = field(default_factory=dict)
    lstm_trusted: bool = True  # false: the quantised autoencoder failed its parity bound
    warnings: list[str] = field(default_factory=list)
    added: list[Added] = field(default_factory=list)  # scorers of the kinds --scorers adds
    training_data: TrainingData | None = None  # what the added kinds were fitted on

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.say(f"      warning: {text}")

    @property
    def distance_clip(self) -> float | None:
        return self.config.clip if self.config.distance_clip else None

    def timed(self, key: str, started: float) -> None:
        self.stage_seconds[key] = round(time.perf_counter() - started, 2)

    def write_manifest(self, thresholds: dict[str, Threshold], parity: dict[str, Any]) -> None:
        from export.assemble import assemble_manifest
        from export.window_features import taught_spec

        manifest = assemble_manifest(
            self.prep,
            self.config,
            folder=self.folder,
            identity=self.identity,
            models=self.models,
            lags=self.lags,
            distance_scorers=list(self.distance.scorers),
            thresholds=thresholds,
            parity=parity,
            training=self.training,
            lstm_trusted=self.lstm_trusted,
            added=tuple(spec_with(a, thresholds[a.name]) for a in self.added),
            taught=taught_spec(self.distance, self.config),
        )
        write_manifest(self.folder, manifest)


def _say_data(build: _Build, csv_path: Path) -> None:
    prep, config, s = build.prep, build.config, build.prep.summary
    labels = prep.data.labels
    label_text = (
        f"{s['label_column']!r} ({int(labels.sum())} anomalous rows)"
        if labels is not None
        else "none"
    )
    build.say(
        f"[1/7] data: {csv_path.name}: {s['rows_in_file']} rows, "
        f"{len(prep.data.channels)} channel{'s' if len(prep.data.channels) > 1 else ''} "
        f"({', '.join(prep.data.channels)}), "
        f"delimiter {s['delimiter']!r}, time {s['time_column']!r}, labels {label_text}"
    )
    transforms = ", ".join(f"{c.name}={c.transform}" for c in prep.preprocess.channels)
    build.say(
        f"      training rows {config.rows or ':'}: {s['fit_rows']} fit + "
        f"{s['holdout_rows']} held-out normal rows "
        f"({s['anomalous_training_rows_left_out']} anomalous left out); period "
        f"{prep.sample_period_s:g}s, max gap {prep.preprocess.max_gap_s:g}s; "
        f"transforms {transforms}"
    )
    if s.get("window_shortened_from"):
        build.say(
            f"      few training rows: the window is {config.window} rows instead of "
            f"{s['window_shortened_from']} (the longest that leaves "
            f"{MIN_FIT_WINDOWS} training and {MIN_CALIB_WINDOWS} held-out windows)"
        )
    if prep.flat:
        flat = [c for c in prep.preprocess.channels if c.name in prep.flat]
        by_value: dict[tuple[float, float], list[str]] = {}
        for c in flat:
            by_value.setdefault((c.center, c.scale), []).append(repr(c.name))
        listed = "; ".join(f"{', '.join(names)} at {value:g} (tolerance {tol:g})"
                           for (value, tol), names in by_value.items())
        member = ", an ensemble member" if "flat" in (config.ensemble_members or ()) else ""
        build.warn(
            (f"channel {listed} is" if len(flat) == 1
             else f"{len(flat)} of {len(prep.data.channels)} channels ({listed}) are")
            + " constant in the training rows: kept, scaled by a tolerance of "
            f"{config.flat_tolerance:g} x max(|value|, 1) (--flat-tolerance); a departure "
            f"beyond it is an anomaly (scorer `flat`{member})"
        )


def _fit_distance_model(build: _Build, x: np.ndarray) -> str:
    """Fit the configured distance model on training inputs `x`; the progress line's text."""
    p, c = build.prep, build.config
    if c.distance_model == "window_features":
        from export.window_features import fit_window_features

        build.distance = model = fit_window_features(
            x, build.lags, p.scaled[p.fit_rows], c, list(p.data.channels), p.flat_mask)
        info = model.info
        slow = [p.data.channels[j] for j in info["slow_channels"]]
        twins = sum(len(g) for g in info["twin_groups"])
        moving = len(p.data.channels) - len(p.flat)
        return (
            f"window features over the last {build.lags} rows: {info['features']} "
            f"(means of {moving - len(slow)} channels, log standard deviations "
            f"of {moving}, {twins} twin residuals in "
            f"{len(info['twin_groups'])} groups; slow channels: {', '.join(slow) or 'none'}"
            + (f"; the {len(p.flat)} constant channels have no weight" if p.flat else "")
            + ") "
            f"-> Mahalanobis, {c.covariance} covariance"
        )
    if c.distance_model == "lag_kmeans":
        from export.lag_kmeans import fit_lag_kmeans

        build.distance = model = fit_lag_kmeans(x, build.lags, c)
        scales = ", ".join(f"{s} rows k={k}" for s, k in model.info["clusters"].items())
        return f"lag vectors ({scales}) -> distance to the nearest KMeans centroid"
    from export.linear import fit_linear

    build.distance = model = fit_linear(x, c)
    info = model.info
    plural = "s" if info["pca_components"] > 1 else ""
    return (
        f"{info['features']} features (lags {build.lags}) -> PCA "
        f"{info['pca_components']} component{plural} ({info['explained_variance']:.1%} "
        f"variance), KMeans k={info['clusters']}, {c.covariance} covariance "
        f"({c.covariance_pooling})"
    )


def _fit_distance(build: _Build) -> None:
    from export.linear import lag_features
    from export.onnx_export import export_distance

    started = time.perf_counter()
    p, c = build.prep, build.config
    x = lag_features(p.windows(p.fit_ends, c.window), build.lags, build.distance_clip)
    text = _fit_distance_model(build, x)
    build.models["distance"] = export_distance(build.distance, build.folder / DISTANCE_FILE)
    from export.tflite_distance import start_twin

    start_twin(build)  # its TFLite twin, converted while the autoencoder trains
    build.training["distance_model"] = {"kind": c.distance_model, **build.distance.info}
    build.timed("distance", started)
    scorers = ", ".join(build.distance.scorers)
    build.say(
        f"[2/7] distance model ({c.distance_model}): {text}; scorers {scorers}; "
        f"{DISTANCE_FILE} {(build.folder / DISTANCE_FILE).stat().st_size / 1024:.1f} KB"
    )


def _fit_lstm(build: _Build) -> None:
    from export.lstm_ae import train

    started = time.perf_counter()
    p, c = build.prep, build.config
    windows = p.windows(p.fit_ends, c.window)
    build.say(
        f"[3/7] LSTM autoencoder: {len(windows)} windows of {c.window} x "
        f"{len(p.data.channels)}, {c.units} units, up to {c.epochs} epochs"
    )
    ae = build.ae = train(windows, c, build.say)
    params = int(ae.model.count_params())
    build.say(
        f"      stopped after {ae.epochs_run} epochs (best {ae.best_epoch}), "
        f"{params} parameters, {ae.seconds:.1f}s"
    )
    build.timed("lstm_train", started)
    if c.keep_float:
        ae.model.save(build.folder / FLOAT_FILE)
    build.training["lstm_ae"] = {
        "units": c.units,
        "parameters": params,
        "epochs_run": ae.epochs_run,
        "best_epoch": ae.best_epoch,
        "seconds": round(ae.seconds, 2),
        "best_val_loss": min(ae.history.get("val_loss", [float("nan")])),
    }
    _convert(build, c.calib_samples, "int8", "[4/7]")


def _convert(build: _Build, samples: int, mode: str, step: str) -> None:
    """Quantise the autoencoder (`mode` int8 or 16x8) calibrated on up to `samples` training
    windows, evenly spaced, into the bundle's LSTM_FILE."""
    from export.tflite_export import export_int8

    started = time.perf_counter()
    p, c = build.prep, build.config
    windows = p.windows(p.fit_ends, c.window)
    count = min(samples, len(windows))
    pick = np.unique(np.linspace(0, len(windows) - 1, count).round().astype(int))
    build.models["lstm_ae"] = export_int8(
        build.ae.model, windows[pick], c.clip, build.folder / LSTM_FILE, c.convert_timeout_s,
        mode,
    )
    build.timed("tflite_convert", started)
    build.say(
        f"{step} {mode} TFLite (converted in a subprocess, {len(pick)} calibration windows): "
        f"{LSTM_FILE} {(build.folder / LSTM_FILE).stat().st_size / 1024:.1f} KB, "
        f"{time.perf_counter() - started:.1f}s"
    )
    build.training["lstm_ae"].update({"calibration_windows": len(pick), "quantization": mode})


def _fit_added(build: _Build) -> None:
    """The scorers of the kinds `--scorers` adds, fitted on the training rows."""
    if not build.config.scorers:  # resolved by the recipe: () when none
        return
    p = build.prep
    build.training_data = training_data(
        p.data.channels, p.scaled, p.data.timestamps, p.fit_rows, build.config,
        p.windows(p.fit_ends, build.config.window),
        windows_at(p.missing, p.fit_ends, build.config.window), p.preprocess.channels)
    build.added = fit_added(build.training_data)
    names = ", ".join(f"{a.name} ({a.trainer.kind})" for a in build.added)
    build.say(f"      added scorers: {names or 'none'}")
    fitted = {a.trainer.kind for a in build.added}
    idle = [kind for kind in build.config.scorers if kind not in fitted]
    if idle:  # e.g. no twins by name, or a univariate device's profile without a week of rows
        build.say(f"      no scorer from: {', '.join(idle)} (these rows do not meet their needs)")


def _thresholds(build: _Build, heldout: WindowScores) -> dict[str, Threshold]:
    config = build.config
    out: dict[str, Threshold] = {}
    added = {a.name: a for a in build.added}
    for name, scores in heldout.raw.items():
        if name in added:
            a = added[name]
            assert build.training_data is not None
            out[name] = a.trainer.threshold(name, scores, build.training_data, a.options)
        elif name in (config.likelihood_scorers or ()):
            out[name] = calibrate.likelihood(config.likelihood_threshold)
        elif name == "iqr" and config.iqr_threshold == "fence":
            out[name] = calibrate.fence(scores)
        elif name == "range":
            out[name] = calibrate.tolerance(config.range_tolerance)
        elif name == "flat":
            out[name] = calibrate.flat(config.flat_tolerance)
        elif name in long_shape_blocks(config):
            out[name] = calibrate.likelihood(config.long_shape_threshold)
        else:
            out[name] = calibrate.calibrate(scores, config)
    methods = ", ".join(
        f"{n} {t.value:.4g}"
        + ("" if t.method == config.threshold_method else f" ({t.method})")
        for n, t in out.items()
    )
    build.say(
        f"[5/7] thresholds ({config.threshold_method} on {len(heldout.ends)} held-out "
        f"normal windows): {methods}"
    )
    return out


def _calibrate(build: _Build, all_ends: np.ndarray) -> tuple[dict[str, Threshold], dict]:
    """Score held-out and all windows with a provisional bundle (thresholds 1.0), calibrate,
    and measure parity; the raw scores do not depend on the thresholds."""
    from export import verify

    started = time.perf_counter()
    prep, config = build.prep, build.config
    names = [name for name, _, _ in bundle_scorers(build.distance.scorers, config, prep.flat)]
    names += [a.name for a in build.added]
    provisional = {s: Threshold(value=1.0, method="provisional") for s in names}
    build.write_manifest(provisional, {})
    engine = ScoringEngine(load_bundle(build.folder))
    heldout = score_file(engine, prep.scaled, prep.calib_ends, timestamps=prep.data.timestamps,
                         missing=prep.missing)
    every = score_file(engine, prep.scaled, all_ends, timestamps=prep.data.timestamps,
                         missing=prep.missing)
    window = prep.windows(prep.calib_ends[:1], config.window)
    build.training["latency_ms_per_window"] = verify.latency(engine, window)
    if build.training_data is not None:  # the added kinds may calibrate on these too
        fitted = np.isin(every.ends, prep.fit_ends)
        build.training_data = dataclasses.replace(
            build.training_data, scored={n: v[fitted] for n, v in every.raw.items()})
    thresholds = _thresholds(build, heldout)
    figures = verify.parity(
        prep,
        config,
        distance_path=build.folder / DISTANCE_FILE,
        linear=build.distance,
        ae_model=build.ae.model,
        lags=build.lags,
        distance_clip=build.distance_clip,
        scored={"heldout": heldout, "all_rows": every},
        threshold=thresholds["lstm_ae"].value,
    )
    parity = verify.summarise(figures)
    from export.tflite_distance import check_twin

    check_twin(build, every, thresholds, parity)
    build.timed("calibrate_and_parity", started)
    verify.check_onnx(parity, config)
    return thresholds, parity


def _attempt(parity: dict[str, Any], build: _Build) -> dict[str, Any]:
    keys = ("int8_float_corr", "int8_float_corr_all_rows", "int8_float_agreement")
    return {"quantization": build.training["lstm_ae"]["quantization"],
            "calibration_windows": build.training["lstm_ae"]["calibration_windows"],
            **{k: parity[k] for k in keys}}


def _calibrate_with_parity(build: _Build, all_ends: np.ndarray
                           ) -> tuple[dict[str, Threshold], dict]:
    """`_calibrate`, and when the quantised autoencoder strays from the float model beyond the
    bounds: convert again with more calibration windows, then with 16x8 activations; failing
    that, keep the int8 model that came closest, marked not trusted for decisions (a warning),
    or, when it is an ensemble member, a FitError with the figures and what to try."""
    from export import verify
    from export.tflite_distance import attach_twin

    attach_twin(build)
    config = build.config
    thresholds, parity = _calibrate(build, all_ends)
    problem = verify.int8_problem(parity, config)
    if problem is None:
        return thresholds, parity
    windows = len(build.prep.fit_ends)
    kept = Path(tempfile.mkdtemp(prefix=".lstm-attempts-", dir=build.folder.parent))
    try:
        tried = [(_attempt(parity, build), thresholds, parity, dict(build.training["lstm_ae"]),
                  build.models["lstm_ae"])]
        shutil.copy2(build.folder / LSTM_FILE, kept / "0.tflite")
        more = min(windows, max(4 * config.calib_samples, 1024))
        retries = ([(more, "int8")] if more > tried[0][0]["calibration_windows"] else [])
        retries.append((more, "16x8"))
        for samples, mode in retries:
            build.say(f"      the {tried[-1][0]['quantization']} model strays from the float "
                      f"model ({problem}): converting again, {mode} with {min(samples, windows)}"
                      " calibration windows")
            try:
                _convert(build, samples, mode, "     ")
            except FitError as exc:
                build.say(f"      {mode}: {exc}")
                continue
            thresholds, parity = _calibrate(build, all_ends)
            problem = verify.int8_problem(parity, config)
            if problem is None:
                parity["quantization_attempts"] = [t[0] for t in tried] + [_attempt(parity, build)]
                return thresholds, parity
            tried.append((_attempt(parity, build), thresholds, parity,
                          dict(build.training["lstm_ae"]), build.models["lstm_ae"]))
            shutil.copy2(build.folder / LSTM_FILE, kept / f"{len(tried) - 1}.tflite")
        summary = "; ".join(
            f"{t[0]['quantization']} with {t[0]['calibration_windows']} calibration windows: "
            f"corr {t[0]['int8_float_corr']:.3f} held-out, {t[0]['int8_float_corr_all_rows']:.3f}"
            f" all rows, agreement {t[0]['int8_float_agreement']:.1%}" for t in tried)
        if "lstm_ae" in (config.ensemble_members or ()):
            raise FitError(
                f"the quantised LSTM autoencoder strays from the float model ({summary}; bounds "
                f"--min-int8-corr {config.min_int8_corr}, --min-int8-agreement "
                f"{config.min_int8_agreement:.0%}) and it is an ensemble member, so it would "
                "decide with scores the float model does not give: try more --epochs or "
                "--units, a smaller --clip, another --seed, or leave lstm_ae out of "
                "--ensemble-members (the bundle then keeps it, marked not trusted)"
            )
        index = max((i for i, t in enumerate(tried) if t[0]["quantization"] == "int8"),
                    key=lambda i: max(tried[i][0]["int8_float_corr"],
                                      tried[i][0]["int8_float_corr_all_rows"]))
        best, thresholds, parity, info, model = tried[index]
        shutil.copy2(kept / f"{index}.tflite", build.folder / LSTM_FILE)
        build.training["lstm_ae"], build.models["lstm_ae"] = info, model
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    build.lstm_trusted = False
    parity["quantization_attempts"] = [t[0] for t in tried]
    parity["lstm_ae_trusted"] = False
    build.warn(
        f"the quantised LSTM autoencoder strays from the float model ({summary}; bounds "
        f"--min-int8-corr {config.min_int8_corr}, --min-int8-agreement "
        f"{config.min_int8_agreement:.0%}); it is no ensemble member, so the bundle keeps the "
        f"{best['quantization']} model with {best['calibration_windows']} calibration windows "
        "marked not trusted for decisions (manifest lstm_ae.trusted false): scored and "
        "reported, never a member, and alerts are attributed to channels by the size of their "
        "newest scaled value instead of its errors"
    )
    return thresholds, parity


def _print_metrics(say: Progress, metrics: Metrics) -> None:
    for split, by_scorer in metrics.items():
        first = next(iter(by_scorer.values()))
        positives = int(first["tp"] + first["fn"])
        total = int(first["tp"] + first["fn"] + first["fp"] + first["tn"])
        width = max(12, *(len(name) for name in by_scorer))
        say(f"      {split} rows: {total} windows, {positives} labelled anomalous")
        say(f"      {'scorer':<{width}} {'precision':>9} {'recall':>7} {'F1':>6} {'FAR%':>6}")
        for name, m in by_scorer.items():
            say(
                f"      {name:<{width}} {m['precision']:>9.3f} {m['recall']:>7.3f} "
                f"{m['f1']:>6.3f} {m['far_pct']:>6.1f}"
            )


def _evaluate(build: _Build, engine: ScoringEngine, every: WindowScores) -> Metrics:
    """Point metrics of each scorer and the ensemble on the labelled rows."""
    data = build.prep.data
    if data.labels is None:
        build.say("[7/7] no label column: no precision/recall")
        return {}
    metrics = {"all": labelled_metrics(every, data.labels)}
    if not data.train.all():
        metrics["test"] = labelled_metrics(every, data.labels, ~data.train)
    members = ", ".join(engine.manifest.ensemble.members)
    build.say(
        f"[7/7] labelled rows ('{data.table.label_column}'; a window's label is its "
        f"last row's; {ENSEMBLE} = {build.config.ensemble_rule} of {members}; "
        "test = rows outside --rows):"
    )
    _print_metrics(build.say, metrics)
    return metrics


def _build(build: _Build, csv_path: Path, lines: list[str]) -> tuple[Manifest, dict, Metrics]:
    """Every stage after prepare, in `build.folder`."""
    from export import verify

    prep, config = build.prep, build.config
    build.training.update(prep.summary)
    build.training.update(
        {
            "source": csv_path.name,
            "source_sha256": sha256_file(csv_path),
            "rows": config.rows or ":",
            "config": config.summary(),
        }
    )
    _fit_added(build)
    _fit_distance(build)
    _fit_lstm(build)
    ok = np.ones(len(prep.scaled), dtype=bool)
    all_ends = window_ends(ok, prep.gap_before, config.window, config.stride)
    thresholds, parity = _calibrate_with_parity(build, all_ends)

    started = time.perf_counter()
    build.write_manifest(thresholds, parity)
    engine, dtypes = verify.verify_bundle(build.folder)
    on_all = (
        f"; on all rows: corr {parity['int8_float_corr_all_rows']:.4f}, agreement "
        f"{parity['int8_float_agreement_all_rows']:.1%}"
    )
    build.say(
        f"[6/7] verified with the device code (load_bundle + ScoringEngine): TFLite "
        f"tensors {dtypes}; ONNX vs its float64 reference max rel diff "
        f"{parity['onnx_max_rel_diff']:.2g}; {build.training['lstm_ae']['quantization']} vs "
        "float on held-out windows: corr "
        f"{parity['int8_float_corr']:.4f}, agreement "
        f"{parity['int8_float_agreement']:.1%}{on_all}"
    )
    every = score_file(engine, prep.scaled, all_ends, timestamps=prep.data.timestamps,
                         missing=prep.missing)
    metrics = _evaluate(build, engine, every)
    build.timed("verify_and_evaluate", started)
    if config.report:
        from export.report import ReportData, write_report

        started = time.perf_counter()
        heldout = score_file(engine, prep.scaled, prep.calib_ends, timestamps=prep.data.timestamps,
                         missing=prep.missing)
        write_report(
            build.folder / REPORT_DIR,
            ReportData(
                engine.manifest,
                build.ae.history,
                heldout,
                every,
                prep.data.timestamps,
                prep.data.labels,
                prep.data.train,
                metrics,
                lines,
            ),
        )
        build.timed("report", started)
    return engine.manifest, parity, metrics


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

    `progress` receives the stage lines as they happen. Raises InputError for bad input or
    options (nothing written), FitError when training or export fails or a parity check falls
    outside its bound (nothing left behind either).
    """
    started = time.perf_counter()
    config = config or FitConfig()
    csv_path, out_dir = Path(csv_path), Path(out_dir).absolute()
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if progress is not None:
            progress(line)

    check_options(config, out_dir)
    prep = prepare(csv_path, config)
    config = prep.config  # the recipe resolved from the number of channels
    now = datetime.now(timezone.utc)
    identity = (
        config.name or out_dir.name,
        config.bundle_version or now.strftime("%Y%m%d.%H%M%S"),
        now.isoformat(timespec="seconds").replace("+00:00", "Z"),
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    folder.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be copied around
    build = _Build(prep, config, folder, config.lags, say, identity)
    build.timed("prepare", started)
    try:
        _say_data(build, csv_path)
        manifest, parity, metrics = _build(build, csv_path, lines)
        _replace(folder, out_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    load_bundle(out_dir)  # the renamed bundle still verifies
    total, sizes = _sizes(out_dir)
    report = out_dir / REPORT_DIR / "report.html" if config.report else None
    listed = ", ".join(f"{n} {b / 1024:.1f} KB" for n, b in sizes.items())
    say(
        f"bundle: {out_dir} ({total / 1024:.0f} KB: {listed}) in "
        f"{time.perf_counter() - started:.1f}s"
    )
    return FitResult(
        out_dir,
        manifest,
        total,
        sizes,
        parity,
        metrics,
        time.perf_counter() - started,
        report,
        build.stage_seconds,
        out_dir / FLOAT_FILE if config.keep_float else None,
        build.warnings,
    )
