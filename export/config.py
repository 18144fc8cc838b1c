"""`FitConfig`: every choice the trainer makes, each one a `edge-train fit` option.

Each field's metadata holds its help text and option group; `export.fit_command` builds the
command line from them, so a new field is a new option without touching the CLI.

Fields whose default is None take the value of the *recipe* (`export.recipes`): the
multivariate one for data with two or more channels, the univariate one for a single channel
(`--recipe` forces one). An option given explicitly always wins over the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

THRESHOLD_METHODS = ("quantile", "iqr", "pot", "bhattacharyya")
RECIPES = ("auto", "multivariate", "univariate")
DISTANCE_MODELS = ("window_features", "lag_kmeans", "pca_kmeans")


def _meta(help: str, group: str, **extra: Any) -> dict[str, Any]:
    return {"help": help, "group": group, **extra}


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in _split(text):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"expected NAME=WEIGHT, got {part!r}")
        out[name.strip()] = float(value)
    return out


def _label(text: str) -> str:
    return "" if text.lower() in ("none", "") else text


def _scales(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in _split(text))


def _names_or_none(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() == "none" else _split(text)


def _scales_or_none(text: str) -> tuple[int, ...]:
    return () if text.strip().lower() == "none" else _scales(text)


@dataclass(frozen=True)
class FitConfig:
    """Options of `fit_bundle`; the defaults are the trainer's recommendation."""

    # data
    time_column: str | None = field(
        default=None,
        metadata=_meta("time column (default: found by name or content)", "data", metavar="NAME"),
    )
    channels: tuple[str, ...] | None = field(
        default=None,
        metadata=_meta(
            "comma-separated channel columns (default: every numeric column that is not the "
            "time, label or an obvious non-channel column such as changepoint or fault)",
            "data",
            parse=_split,
            metavar="A,B,C",
        ),
    )
    label_column: str | None = field(
        default=None,
        metadata=_meta(
            "0/1 label column whose anomalous rows are left out of training and used to "
            "report precision/recall/F1 (default: anomaly, is_anomaly or label if present; "
            "'none' for no labels)",
            "data",
            parse=_label,
            metavar="NAME",
        ),
    )
    rows: str | None = field(
        default=None,
        metadata=_meta(
            "training rows START:END of the file, in file order, "
            "Python slice style (e.g. ':400'); default all rows",
            "data",
            metavar="START:END",
        ),
    )
    forecast_column: str | None = field(
        default=None,
        metadata=_meta(
            "a forecast column; adds the residual measured - forecast as a channel",
            "data",
            metavar="NAME",
        ),
    )
    measured_column: str | None = field(
        default=None,
        metadata=_meta(
            "the measured column the forecast predicts (default: 'value', or the only "
            "other channel)",
            "data",
            metavar="NAME",
        ),
    )
    max_missing: float = field(
        default=0.5,
        metadata=_meta(
            "refuse a channel missing in more than this share of the training rows", "data"
        ),
    )
    gap_factor: float = field(
        default=5.0,
        metadata=_meta(
            "max_gap_s = this x the usual time step (the median sample period, or the 95th "
            "percentile of the training rows' steps where that is longer: a source that "
            "reports irregularly); a longer gap restarts the window", "data"
        ),
    )
    # preprocessing
    transform: str | None = field(
        default=None,
        metadata=_meta(
            "variance-stabilising transform for every channel; auto "
            "picks per channel the least skewed of none/log1p/sqrt (log1p and "
            "sqrt only for non-negative channels) (recipe: multivariate auto, univariate none)",
            "preprocessing",
            choices=("auto", "none", "log1p", "sqrt"),
        ),
    )
    scale_sd_floor: float | None = field(
        default=None,
        metadata=_meta(
            "the robust scale (IQR/1.349) is at least this share of the standard deviation "
            "(recipe: multivariate 0, univariate 0.5: a series that sits on a few values most "
            "of the time is not judged by its tiny IQR)",
            "preprocessing",
            parse=float,
            metavar="X",
        ),
    )
    flat_tolerance: float = field(
        default=1e-3,
        metadata=_meta(
            "a channel constant in the training rows (value v) is kept and scaled by its "
            "tolerance, this x max(|v|, 1) in its own units (0.001: a thousandth of its "
            "magnitude); by default a departure from v by more than the tolerance alerts "
            "(scorer `flat`, an ensemble member), one within it does not",
            "preprocessing",
        ),
    )
    transform_min_gain: float = field(
        default=0.25,
        metadata=_meta(
            "auto keeps 'none' unless a transform lowers |skewness| by at least this much",
            "preprocessing",
        ),
    )
    clip: float = field(
        default=8.0,
        metadata=_meta("model inputs are clipped to +/- this many scaled units", "preprocessing"),
    )
    holdout: float = field(
        default=0.25,
        metadata=_meta(
            "share of the clean training rows (the last ones) held out to "
            "calibrate thresholds and check parity",
            "preprocessing",
        ),
    )
    # models
    recipe: str = field(
        default="auto",
        metadata=_meta(
            "the defaults of the options marked 'recipe': multivariate (2+ channels: "
            "features of the last --lags rows, Mahalanobis distance, smoothed decision) or "
            "univariate (1 channel: lag-vector distances to KMeans centroids at several "
            "scales, each through the device's anomaly-likelihood step; an alert start is a "
            "detection, then a cooldown); auto picks by the number of channels",
            "models",
            choices=RECIPES,
        ),
    )
    distance_model: str | None = field(
        default=None,
        metadata=_meta(
            "the ONNX distance model: window_features (multivariate recipe), lag_kmeans "
            "(univariate recipe) or pca_kmeans (PCA + KMeans with spe/euclidean/mahalanobis "
            "scores of the last --lags rows)",
            "models",
            choices=DISTANCE_MODELS,
        ),
    )
    window: int = field(default=16, metadata=_meta("window length in rows", "models"))
    stride: int = field(
        default=1, metadata=_meta("device scoring stride in rows (manifest)", "models")
    )
    train_stride: int = field(
        default=1, metadata=_meta("stride between training windows", "models")
    )
    units: int = field(
        default=32, metadata=_meta("LSTM units of the encoder and the decoder", "models")
    )
    epochs: int | None = field(
        default=None,
        metadata=_meta(
            "maximum training epochs, early stopping on validation loss (recipe: "
            "multivariate 60; univariate 20: there the autoencoder is reported, not decisive)",
            "models",
            parse=int,
            metavar="N",
        ),
    )
    patience: int = field(default=6, metadata=_meta("early-stopping patience in epochs", "models"))
    batch_size: int = field(default=32, metadata=_meta("training batch size", "models"))
    learning_rate: float = field(default=1e-3, metadata=_meta("Adam learning rate", "models"))
    val_fraction: float = field(
        default=0.15,
        metadata=_meta("last share of the training windows used for early stopping", "models"),
    )
    lstm_reduce: str = field(
        default="mean",
        metadata=_meta(
            "LSTM-AE window error: mean over the window or last row",
            "models",
            choices=("mean", "last"),
        ),
    )
    calib_samples: int = field(
        default=256,
        metadata=_meta("training windows used to calibrate int8 quantisation", "models"),
    )
    seed: int = field(
        default=0, metadata=_meta("random seed (Keras, KMeans, covariance)", "models")
    )
    lags: int = field(
        default=0,
        metadata=_meta(
            "rows per distance-model input (0: 8 for window_features; the largest "
            "--lag-scales for lag_kmeans; for pca_kmeans 1 with several channels, 8 with one)",
            "models",
        ),
    )
    feature_eps: float = field(
        default=0.3,
        metadata=_meta(
            "window_features: the features are ln(standard deviation + this), in scaled units",
            "models",
        ),
    )
    twin_features: bool = field(
        default=False,
        metadata=_meta(
            "window_features: each member of a twin group (co-located sensors named like "
            "o3_1, o3_2, o3_3 whose training values correlate) adds its deviation from its "
            "twins' mean as a feature (off by default: more faults caught, more false alarms; "
            "see export/recipes.py)",
            "models",
        ),
    )
    taught_memory: int = field(
        default=3000,
        metadata=_meta(
            "window_features: windows labelled normal on the device (feedback) each device "
            "keeps; the distance becomes min(distance, distance of the window's whitened "
            "features to a taught window's departure), so a pattern taught as normal stops "
            "alerting on that device (0: off; nothing taught changes nothing)",
            "models",
            metavar="N",
        ),
    )
    taught_level: float = field(
        default=2.0,
        metadata=_meta(
            "window_features taught memory: the whitened components of a taught window "
            "within this many training deviations are left out of its departure (the part "
            "training explains)",
            "models",
        ),
    )
    slow_span: int = field(
        default=32,
        metadata=_meta(
            "window_features: rows of the trailing mean in the slow-channel test", "models"
        ),
    )
    slow_ratio: float | None = field(
        default=None,
        metadata=_meta(
            "window_features: a channel is slow (its level is no feature, only its "
            "variability) when the standard deviation of its trailing mean over the training "
            "rows exceeds this share of its own (recipe: 0.5)",
            "models",
            parse=float,
            metavar="X",
        ),
    )
    lag_scales: tuple[int, ...] = field(
        default=(8, 4),
        metadata=_meta(
            "lag_kmeans: lag-vector lengths in rows, one score lag_distance_<n> each",
            "models",
            parse=_scales,
            metavar="N,N",
        ),
    )
    lag_clusters: int = field(
        default=16, metadata=_meta("lag_kmeans: KMeans centroids per scale", "models")
    )
    lag_n_init: int = field(
        default=3, metadata=_meta("lag_kmeans: KMeans initialisations", "models")
    )
    lag_memory: int | None = field(
        default=None,
        metadata=_meta(
            "lag_kmeans: lag vectors each device remembers of its own recent stream; a lag "
            "distance becomes min(distance to the training centroids, distance to the k-th "
            "nearest remembered vector), so a pattern the device keeps seeing stops alerting "
            "(0: off; default 3000 with lag_kmeans, 0 otherwise)",
            "models",
            metavar="N",
        ),
    )
    lag_memory_gap: int = field(
        default=50,
        metadata=_meta(
            "lag_kmeans memory: the most recent windows left out of the comparison (they "
            "overlap the current one)", "models"),
    )
    lag_memory_k: int = field(
        default=2,
        metadata=_meta(
            "lag_kmeans memory and long shapes: a pattern counts as known once seen about "
            "this many times",
            "models"),
    )
    long_shapes: tuple[int, ...] | None = field(
        default=None,
        metadata=_meta(
            "long shapes: rows per block, one scorer each, long_shape_<rows spanned>, whose "
            "shape is the means of the last --long-shape-blocks blocks; its score is the "
            "distance to the k-th nearest shape the device saw before, through the likelihood "
            "step ('none': no long shapes; recipe: 8,16,32 for one channel, none otherwise)",
            "models",
            parse=_scales_or_none,
            metavar="N,N",
        ),
    )
    long_shape_blocks: int = field(
        default=8, metadata=_meta("long shapes: blocks in one shape", "models")
    )
    long_shape_memory: int = field(
        default=3000,
        metadata=_meta("long shapes: shapes each device remembers of its own stream", "models"),
    )
    pca_variance: float = field(
        default=0.95,
        metadata=_meta(
            "pca_kmeans: PCA keeps the fewest components explaining this share "
            "of variance (at most features - 1)",
            "models",
        ),
    )
    clusters: int = field(
        default=0,
        metadata=_meta(
            "pca_kmeans: KMeans clusters (0: chosen by silhouette, 1 if no clear clusters)",
            "models",
        ),
    )
    max_clusters: int = field(
        default=6,
        metadata=_meta("pca_kmeans: largest cluster count tried when --clusters is 0", "models"),
    )
    covariance: str = field(
        default="ledoit_wolf",
        metadata=_meta(
            "covariance estimator for Mahalanobis distances",
            "models",
            choices=("ledoit_wolf", "mcd", "empirical"),
        ),
    )
    covariance_pooling: str = field(
        default="per_cluster",
        metadata=_meta(
            "one covariance per cluster (small clusters "
            "use the pooled one) or one pooled covariance",
            "models",
            choices=("per_cluster", "pooled"),
        ),
    )
    distance_clip: bool = field(
        default=False,
        metadata=_meta(
            "clip the distance model's inputs to +/- --clip like the autoencoder's (by "
            "default they are not: a distance measures the full size of a deviation)",
            "models",
        ),
    )
    iqr_k: float = field(
        default=1.5, metadata=_meta("Tukey fence width k (fence = quartile +/- k*IQR)", "models")
    )
    # thresholds
    threshold_method: str = field(
        default="quantile",
        metadata=_meta(
            "how scorer thresholds are calibrated on held-out normal windows",
            "thresholds",
            choices=THRESHOLD_METHODS,
        ),
    )
    threshold_quantile: float = field(
        default=1.0,
        metadata=_meta(
            "quantile method: quantile of held-out scores (1.0: their maximum)", "thresholds"
        ),
    )
    threshold_margin: float = field(
        default=0.2,
        metadata=_meta("quantile method: threshold = quantile x (1+margin)", "thresholds"),
    )
    threshold_iqr_k: float = field(
        default=3.0,
        metadata=_meta("iqr method: threshold = Q3 + k*IQR of held-out scores", "thresholds"),
    )
    pot_level: float = field(
        default=0.9,
        metadata=_meta(
            "pot method: quantile of the initial threshold above which "
            "excesses are fitted with a generalised Pareto law",
            "thresholds",
        ),
    )
    pot_risk: float = field(
        default=1e-3, metadata=_meta("pot method: false-alarm probability per window", "thresholds")
    )
    bhattacharyya_bound: float = field(
        default=2.0,
        metadata=_meta(
            "bhattacharyya method: the threshold sits at the smallest shift of the normal "
            "log-score distribution whose Bhattacharyya distance to it reaches this",
            "thresholds",
        ),
    )
    iqr_threshold: str = field(
        default="fence",
        metadata=_meta(
            "iqr scorer: 'fence' (1.0 = on the Tukey fence) or 'calibrated' like the other scorers",
            "thresholds",
            choices=("fence", "calibrated"),
        ),
    )
    likelihood_scorers: tuple[str, ...] | None = field(
        default=None,
        metadata=_meta(
            "scorers whose raw score goes through the device's anomaly-likelihood step, their "
            "threshold then applying to its z ('none': no scorer; recipe: the lag distances "
            "with lag_kmeans, none otherwise)",
            "thresholds",
            parse=_names_or_none,
            metavar="A,B",
        ),
    )
    range_tolerance: float = field(
        default=0.1,
        metadata=_meta(
            "range scorer: threshold on how far a row lies beyond every row seen before it, "
            "in widths of that range (0.1: a tenth of the range beyond the record)", "thresholds"
        ),
    )
    long_shape_threshold: float = field(
        default=3.0,
        metadata=_meta(
            "long shapes: threshold on the likelihood z (3.0 is a likelihood of 0.9987)",
            "thresholds"),
    )
    likelihood_threshold: float = field(
        default=1.75,
        metadata=_meta(
            "likelihood: threshold on z (1.75 is Numenta's likelihood 0.96)", "thresholds"
        ),
    )
    likelihood_short: int = field(
        default=20,
        metadata=_meta("likelihood: windows in the recent mean of log scores", "thresholds"),
    )
    likelihood_history: int = field(
        default=20000,
        metadata=_meta("likelihood: windows of log-score history kept per device", "thresholds"),
    )
    likelihood_min_history: int = field(
        default=150,
        metadata=_meta("likelihood: 0 until the device scored this many windows", "thresholds"),
    )
    # ensemble and decision
    ensemble_rule: str | None = field(
        default=None,
        metadata=_meta(
            "how normalised member scores combine (recipe: multivariate max, univariate "
            "max_or_mean: the largest member over the threshold, the members' mean evidence "
            "under it)",
            "ensemble",
            choices=("max", "max_or_mean", "mean", "weighted_mean", "vote"),
        ),
    )
    scorers: tuple[str, ...] | None = field(
        default=None,
        metadata=_meta(
            "comma-separated scorer kinds added to the bundle as ensemble members, each fitted "
            "by its module in export/scorers ('none': none; seasonal: the usual level and "
            "spread of each channel by hour of the day, or of the week with two weeks of "
            "training rows; twin, variability, twin_reading: each twin sensor against its "
            "twins, left out without twins; stuck: a reading stuck on its value; channel_kmeans: "
            "each channel's shapes; recipe: twin,variability,twin_reading,channel_kmeans,stuck "
            "for several channels, stuck,seasonal for one)",
            "ensemble",
            parse=_names_or_none,
            metavar="KIND,KIND",
        ),
    )
    scorer_options: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "comma-separated options of the added kinds, KIND.NAME=VALUE (seasonal.offset_s: "
            "the site's UTC offset in seconds, 0; seasonal.prior: pseudo-rows of the pooled "
            "level and spread in each hour, 10; seasonal.min_days, 2; seasonal.required, true; "
            "seasonal.min_z: the threshold's floor in spreads, 0; the univariate recipe's kinds: "
            "min_days=7, required=false, min_z=5, the options given here winning)",
            "ensemble",
            parse=_split,
            metavar="K.N=V",
        ),
    )
    ensemble_members: tuple[str, ...] | None = field(
        default=None,
        metadata=_meta(
            "comma-separated scorers: lstm_ae, iqr and the distance model's outputs "
            "(window_features: window_mahalanobis; lag_kmeans: lag_distance_<n>; pca_kmeans: "
            "spe, euclidean, mahalanobis), range, the long shapes, and flat when channels are "
            "constant in training (recipe: window_mahalanobis; every lag distance, range and "
            "the long shapes; lstm_ae,mahalanobis for pca_kmeans; plus flat when channels are "
            "constant, alone when all are)",
            "ensemble",
            parse=_split,
            metavar="A,B",
        ),
    )
    ensemble_weights: dict[str, float] | None = field(
        default=None,
        metadata=_meta(
            "weighted_mean weights, e.g. lstm_ae=2,spe=1 (default 1 each)",
            "ensemble",
            parse=_weights,
            metavar="NAME=W,...",
        ),
    )
    ensemble_votes: int = field(
        default=2, metadata=_meta("vote rule: members over threshold needed", "ensemble")
    )
    smoothing: int | None = field(
        default=None,
        metadata=_meta(
            "decision: moving average of the ensemble score, in windows (recipe: "
            "multivariate 8, univariate 1)",
            "decision",
            parse=int,
            metavar="N",
        ),
    )
    trigger: int | None = field(
        default=None,
        metadata=_meta(
            "decision: consecutive windows over 1.0 to start an alert (recipe: 1)",
            "decision",
            parse=int,
            metavar="N",
        ),
    )
    release: int | None = field(
        default=None,
        metadata=_meta(
            "decision: consecutive windows under --release-level to end it (recipe: "
            "multivariate 10, univariate 1)",
            "decision",
            parse=int,
            metavar="N",
        ),
    )
    release_level: float | None = field(
        default=None,
        metadata=_meta(
            "decision: level that counts as back to normal (recipe: multivariate 0.8, "
            "univariate 1.0)",
            "decision",
            parse=float,
            metavar="X",
        ),
    )
    cooldown_s: float = field(
        default=0.0,
        metadata=_meta("decision: seconds after an alert ends before a new one", "decision"),
    )
    cooldown_windows: int | None = field(
        default=None,
        metadata=_meta(
            "decision: scored windows after an alert ends before a new one (recipe: "
            "multivariate 0, univariate 150)",
            "decision",
            parse=int,
            metavar="N",
        ),
    )
    warmup_windows: int = field(
        default=0, metadata=_meta("decision: windows ignored after start", "decision")
    )
    # checks and output
    min_int8_corr: float = field(
        default=0.9,
        metadata=_meta(
            "bound on the int8-vs-float window-score correlation (held-out windows or all "
            "rows); below it the trainer converts again with more calibration windows, then "
            "16x8, and failing those keeps the autoencoder marked not trusted for decisions "
            "(the fit fails only when it is an ensemble member)",
            "checks",
        ),
    )
    min_int8_agreement: float = field(
        default=0.9,
        metadata=_meta(
            "bound on the share of held-out windows whose int8 and float threshold decisions "
            "agree; below it, as --min-int8-corr", "checks"
        ),
    )
    max_onnx_rel_diff: float = field(
        default=1e-4,
        metadata=_meta("fail if ONNX and its float64 reference differ more (relative)", "checks"),
    )
    convert_timeout_s: float = field(
        default=900.0, metadata=_meta("time limit of the TFLite conversion subprocess", "checks")
    )
    name: str | None = field(
        default=None,
        metadata=_meta(
            "bundle name (default: the output directory's name)", "output", metavar="NAME"
        ),
    )
    bundle_version: str | None = field(
        default=None,
        metadata=_meta(
            "bundle version (default: creation time YYYYMMDD.HHMMSS)", "output", metavar="VERSION"
        ),
    )
    report: bool = field(
        default=True, metadata=_meta("write report/ with plots and report.html", "output")
    )
    force: bool = field(
        default=False, metadata=_meta("replace the output directory if it exists", "output")
    )
    keep_float: bool = field(
        default=False,
        metadata=_meta(
            "also save the float Keras autoencoder before int8 quantisation as "
            "lstm_ae_float.keras in the bundle directory (not in the manifest, not needed on "
            "the device; for measuring what quantisation costs)",
            "output",
        ),
    )

    def summary(self) -> dict[str, Any]:
        """The config as plain JSON values, for the manifest's training section."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
