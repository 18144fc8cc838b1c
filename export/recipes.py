"""The recipes: what the trainer does by default, chosen from the data's number of channels.

`resolve` fills every `FitConfig` field left at None from the recipe; an option given
explicitly is kept. The figures behind each choice are in tests/bench/quality.py's output.

- multivariate (2+ channels): `window_features` (per-channel mean and log standard deviation
  over the last 8 rows, slow channels by their variability only, Mahalanobis distance), a
  threshold at 1.2 x the largest held-out score, a smoothed decision with hysteresis.
- univariate (1 channel): `lag_kmeans` (distances of the last 8 and last 4 values to the
  nearest of 16 KMeans centroids), each through the device's anomaly-likelihood step; an
  alert starts on the first window over threshold and the next one waits 100 windows.

The int8 LSTM autoencoder is in every bundle, scored and reported, and its per-channel errors
attribute an alert to channels; it is no ensemble member by default (see quality.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from export.config import FitConfig
from export.errors import InputError

RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "multivariate": {
        "transform": "auto",
        "scale_sd_floor": 0.0,
        "distance_model": "window_features",
        "epochs": 60,
        "slow_ratio": 0.5,
        "smoothing": 8,
        "trigger": 1,
        "release": 10,
        "release_level": 0.8,
        "cooldown_windows": 0,
    },
    "univariate": {
        "transform": "none",
        "scale_sd_floor": 0.5,
        "distance_model": "lag_kmeans",
        "epochs": 20,
        "slow_ratio": 0.5,
        "smoothing": 1,
        "trigger": 1,
        "release": 1,
        "release_level": 1.0,
        "cooldown_windows": 100,
    },
}
WINDOW_FEATURE_LAGS = 8
PCA_UNIVARIATE_LAGS = 8


def recipe_for(config: FitConfig, n_channels: int) -> str:
    if config.recipe != "auto":
        return config.recipe
    return "univariate" if n_channels == 1 else "multivariate"


def default_lags(n_channels: int, config: FitConfig) -> int:
    """Rows per distance-model input: --lags, else what the distance model needs."""
    model = config.distance_model or RECIPE_DEFAULTS[recipe_for(config, n_channels)][
        "distance_model"
    ]
    if config.lags:
        lags = config.lags
    elif model == "window_features":
        lags = WINDOW_FEATURE_LAGS
    elif model == "lag_kmeans":
        lags = max(config.lag_scales)
    else:
        lags = PCA_UNIVARIATE_LAGS if n_channels == 1 else 1
    return min(lags, config.window)


def distance_outputs(config: FitConfig) -> tuple[str, ...]:
    """The scorer names of the (resolved) distance model, before fitting."""
    if config.distance_model == "window_features":
        return ("window_mahalanobis",)
    if config.distance_model == "lag_kmeans":
        from export.lag_kmeans import output_name

        return tuple(output_name(s) for s in sorted(set(config.lag_scales), reverse=True))
    return ("spe", "euclidean", "mahalanobis")


def resolve(config: FitConfig, n_channels: int) -> FitConfig:
    """The config with every recipe field filled in (and `recipe` no longer `auto`)."""
    recipe = recipe_for(config, n_channels)
    filled: dict[str, Any] = {"recipe": recipe}
    for name, value in RECIPE_DEFAULTS[recipe].items():
        if getattr(config, name) is None:
            filled[name] = value
    config = dataclasses.replace(config, **filled)
    outputs = distance_outputs(config)
    changes: dict[str, Any] = {}
    if config.ensemble_members is None:
        if config.distance_model == "pca_kmeans":
            changes["ensemble_members"] = ("lstm_ae", "mahalanobis")
        elif config.distance_model == "window_features":
            changes["ensemble_members"] = ("window_mahalanobis",)
        else:
            changes["ensemble_members"] = outputs
    if config.likelihood_scorers is None:
        changes["likelihood_scorers"] = outputs if config.distance_model == "lag_kmeans" else ()
    if config.lags == 0:
        changes["lags"] = default_lags(n_channels, config)
    config = dataclasses.replace(config, **changes)
    check_resolved(config, n_channels)
    return config


def scorer_names(config: FitConfig, n_channels: int) -> list[str]:
    outputs = list(distance_outputs(config))
    if config.distance_model == "pca_kmeans" and config.lags * n_channels == 1:
        outputs.remove("spe")  # identically zero with one feature
    return ["lstm_ae", *outputs, "iqr"]


def check_resolved(config: FitConfig, n_channels: int) -> None:
    """Problems that show only once the recipe is known; InputError names the option."""
    names = scorer_names(config, n_channels)
    members = config.ensemble_members or ()
    unknown = [m for m in members if m not in names]
    if unknown or not members:
        raise InputError(
            f"--ensemble-members {','.join(members)}: choose among {', '.join(names)}"
        )
    stray = [m for m in config.ensemble_weights or {} if m not in members]
    if stray:
        raise InputError(f"--ensemble-weights names {stray[0]!r}, not an ensemble member")
    strange = [m for m in config.likelihood_scorers or () if m not in names]
    if strange:
        raise InputError(
            f"--likelihood-scorers {','.join(strange)}: choose among {', '.join(names)}"
        )
    if config.distance_model == "lag_kmeans" and (
        not config.lag_scales or max(config.lag_scales) > config.lags or min(config.lag_scales) < 1
    ):
        raise InputError(
            f"--lag-scales {','.join(map(str, config.lag_scales))}: each between 1 and "
            f"--lags {config.lags}"
        )
    for name in ("smoothing", "trigger", "release", "epochs"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name} must be at least 1")
    if config.cooldown_windows is not None and config.cooldown_windows < 0:
        raise InputError("--cooldown-windows must be at least 0")
