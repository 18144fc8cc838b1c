"""The non-linear scorer: a small LSTM autoencoder over windows of scaled, clipped channels.

Encoder LSTM(units) -> RepeatVector(window) -> decoder LSTM(units, sequences) ->
TimeDistributed(Dense(channels)). Both LSTM layers are built with `unroll=True`: with
TF 2.21 / Keras 3 the int8 converter crashes on the fused LSTM, and the unrolled graph
converts to full-integer int8 and runs in ai-edge-litert. Training is seeded, with early
stopping on the last `val_fraction` of the training windows (chronological).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from export.config import FitConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's reordered float sums make runs differ slightly from machine to machine (and it
# announces itself on stderr); the model is far too small to gain from it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]


@dataclass
class TrainedAe:
    model: Any  # keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float

    @property
    def epochs_run(self) -> int:
        return len(self.history.get("loss", []))


def build_model(window: int, channels: int, units: int) -> Any:
    import keras

    inputs = keras.Input(shape=(window, channels), name="window")
    x = keras.layers.LSTM(units, unroll=True, name="encoder")(inputs)
    x = keras.layers.RepeatVector(window, name="repeat")(x)
    x = keras.layers.LSTM(units, return_sequences=True, unroll=True, name="decoder")(x)
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(channels), name="output")(x)
    return keras.Model(inputs, outputs, name="lstm_ae")


def _epoch_printer(progress: Progress, epochs: int) -> Any:
    import keras

    class EpochLine(keras.callbacks.Callback):  # type: ignore[misc]
        """One line per epoch instead of Keras' progress bar."""

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            parts = [f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "val_loss")]
            progress(
                f"    epoch {epoch + 1:>3}/{epochs}  {'  '.join(parts)}  "
                f"{time.perf_counter() - self.started:.1f}s"
            )

    return EpochLine()


def train(windows: FloatArray, config: FitConfig, progress: Progress) -> TrainedAe:
    """Fit the autoencoder to reproduce its (clipped) input windows."""
    import keras

    keras.utils.set_random_seed(config.seed)
    x = np.clip(windows, -config.clip, config.clip).astype(np.float32)
    model = build_model(x.shape[1], x.shape[2], config.units)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    n_val = max(1, round(config.val_fraction * len(x)))
    x_fit, x_val = x[:-n_val], x[-n_val:]
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    started = time.perf_counter()
    fitted = model.fit(
        x_fit,
        x_fit,
        validation_data=(x_val, x_val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[stop, _epoch_printer(progress, config.epochs)],
    )
    history = {k: [float(v) for v in vals] for k, vals in fitted.history.items()}
    best = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else 0
    return TrainedAe(model, history, best, time.perf_counter() - started)


def reconstruct(model: Any, windows: FloatArray, clip: float) -> FloatArray:
    """Float (reference) reconstructions of clipped windows."""
    x = np.clip(windows, -clip, clip).astype(np.float32)
    return np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float64)


def window_errors(model: Any, windows: FloatArray, clip: float, reduce: str) -> FloatArray:
    """Per-window, per-channel squared error against the unclipped windows, as the engine."""
    sq = np.square(windows - reconstruct(model, windows, clip))
    return sq[:, -1, :] if reduce == "last" else sq.mean(axis=1)
