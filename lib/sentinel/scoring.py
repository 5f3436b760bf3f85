"""Scoring: windows -> scores -> flags. The only scoring code in Pressure Sentinel.

Contract: ``score_windows(bundle, windows, window_times, sensor_ids)`` returns one float per
window, the mean squared reconstruction error of the scaled window (higher means more
anomalous); a reading is an anomaly when its window's score exceeds its sensor's threshold.

Used unchanged by training (calibration), ``sentinel score``/``evaluate`` and the streaming
pandas UDF. Pure numpy + the Keras model; no pyspark.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sentinel.model import Bundle
from sentinel.windows import calendar_features

PREDICT_BATCH = 4096


def model_inputs(bundle: Bundle, windows: np.ndarray, window_times: np.ndarray,
                 sensor_ids: np.ndarray) -> list[np.ndarray]:
    """Raw windows (m, W, F) -> the model's inputs: scaled values (+ calendar context)."""
    scaled = bundle.scaler.transform(windows, sensor_ids).astype(np.float32)
    if bundle.calendar:
        return [scaled, calendar_features(window_times).astype(np.float32)]
    return [scaled]


_COMPILED: dict[int, object] = {}


def _compiled_call(model):
    """The model's forward pass as one traced TensorFlow graph (cached per model).

    Eager Keras calls run the recurrent loop op by op in Python and ``predict`` rebuilds a
    data pipeline per call; a traced function with a relaxed batch dimension is traced once.
    """
    fn = _COMPILED.get(id(model))
    if fn is None:
        import tensorflow as tf
        # A signature with a free batch dimension: traced once, whatever the batch size.
        specs = [tf.TensorSpec([None, *t.shape[1:]], tf.float32) for t in model.inputs]
        fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False),
                         input_signature=specs)
        _COMPILED[id(model)] = fn
    return fn


def reconstruct(model, inputs: list[np.ndarray], batch: int = PREDICT_BATCH) -> np.ndarray:
    """Run the model over large batches through one compiled forward pass."""
    m = inputs[0].shape[0]
    if m == 0:
        return np.empty(inputs[0].shape, dtype=np.float32)
    call = _compiled_call(model)
    out = []
    for i in range(0, m, batch):
        chunk = [x[i:i + batch] for x in inputs]
        out.append(call(*chunk).numpy())
    return np.concatenate(out)


def step_errors(bundle: Bundle, windows: np.ndarray, window_times: np.ndarray,
                sensor_ids: np.ndarray) -> np.ndarray:
    """(m, W) squared reconstruction error per step, averaged over features."""
    inputs = model_inputs(bundle, windows, window_times, sensor_ids)
    recon = reconstruct(bundle.model, inputs)
    return ((recon - inputs[0]) ** 2).mean(axis=-1)


def reduce_errors(errors: np.ndarray, how: str = "mean") -> np.ndarray:
    """(m, W) step errors -> (m,) scores."""
    if errors.shape[0] == 0:
        return np.empty(0)
    if how == "mean":
        return errors.mean(axis=1)
    if how == "last":
        return errors[:, -1]
    if how == "max":
        return errors.max(axis=1)
    raise ValueError(f"unknown score reduction {how!r}: use mean, last or max")


def score_windows(bundle: Bundle, windows: np.ndarray, window_times: np.ndarray,
                  sensor_ids: np.ndarray) -> np.ndarray:
    """(m, W, F) raw windows of the given sensors -> (m,) anomaly scores."""
    how = bundle.manifest.get("score", {}).get("reduce", "mean")
    return reduce_errors(step_errors(bundle, windows, window_times, sensor_ids), how).astype(np.float64)


def flag(bundle: Bundle, scores: np.ndarray, sensor_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores -> (thresholds, is_anomaly) per row."""
    thresholds = bundle.threshold.for_sensors(sensor_ids)
    return thresholds, np.asarray(scores) > thresholds


def score_frame(bundle: Bundle, frame: pd.DataFrame) -> pd.DataFrame:
    """Score a frame with columns ``sensor_id``, ``window`` (flat W*F values) and
    ``window_times`` (W int64 ns); adds ``score``, ``threshold``, ``is_anomaly``.

    This is what the streaming pandas UDF calls on each Arrow batch.
    """
    out = frame.copy()
    if len(frame) == 0:
        out["score"] = pd.Series(dtype="float64")
        out["threshold"] = pd.Series(dtype="float64")
        out["is_anomaly"] = pd.Series(dtype="bool")
        return out
    w, f = bundle.length, len(bundle.features)
    windows = np.stack(frame["window"].to_numpy()).reshape(-1, w, f)
    times = np.stack(frame["window_times"].to_numpy()).astype(np.int64).reshape(-1, w)
    sensors = frame["sensor_id"].to_numpy()
    scores = score_windows(bundle, windows, times, sensors)
    thresholds, is_anom = flag(bundle, scores, sensors)
    out["score"], out["threshold"], out["is_anomaly"] = scores, thresholds, is_anom
    return out
