"""The sampling interval from the data, and a training schedule fitted to how much data exists.

``window.interval_s = 0`` means "infer it" (:func:`infer_interval`, the median step between a
sensor's readings) and ``window.max_gap_s = 0`` then means six intervals. The configured window
length, stride, epochs and validation split suit weeks of 5-minute readings; on 400 one-second
readings they give 73 training windows seen in 12 gradient steps in all, and a model that has
learned nothing. :func:`adapt_schedule` fits them to the data, and says in one sentence what the
minimum is when there is too little. Pure numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MIN_LENGTH = 8            # shortest window worth modelling
TRAIN_BLOCKS = 12         # training must hold >= this many non-overlapping windows
VAL_BLOCKS = 3            # validation must hold >= this many non-overlapping windows
TARGET_VAL_WINDOWS = 100  # validation windows wanted per sensor for the threshold fit (stride 1)
MIN_UPDATES = 600         # gradient steps wanted in a full training run
MAX_EPOCHS = 300
STRIDE_1_BELOW = 8000     # every window (stride 1) while fewer training windows than this exist
GAP_INTERVALS = 6         # window.max_gap_s = 0: a gap longer than this many intervals restarts a window


class TrainingDataError(ValueError):
    """Not enough usable history to train; the message says how much more is needed."""


def infer_interval(times, groups=None) -> float:
    """The sampling interval in seconds: the median positive step between consecutive readings
    (per group, e.g. sensor, when ``groups`` is given), rounded to the millisecond.

    Robust to gaps (a few long steps do not move the median), jitter (+-30 ms around 1 s gives
    1.0) and duplicates (zero steps are ignored). ``times``: datetime64, pandas timestamps or
    int64 nanoseconds.

    Raises:
        TrainingDataError: fewer than two distinct times (of one sensor).
    """
    t = np.asarray(times)
    if np.issubdtype(t.dtype, np.datetime64):
        t = t.astype("datetime64[ns]").astype(np.int64)
    elif t.dtype == object:  # pandas Timestamps with a time zone
        import pandas as pd
        t = pd.to_datetime(t, utc=True).as_unit("ns").asi8
    t = t.astype(np.int64)
    g = np.zeros(t.size, dtype=np.int64) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    order = np.lexsort((t, g))
    t, g = t[order], g[order]
    step = np.diff(t)
    step = step[(g[1:] == g[:-1]) & (step > 0)]
    if step.size == 0:
        raise TrainingDataError("cannot infer the sampling interval: need at least two readings with distinct "
                                "times (of one sensor); give more history or set window.interval_s")
    return round(float(np.median(step)) / 1e9, 3)


@dataclass(frozen=True)
class Schedule:
    """What :func:`adapt_schedule` chose; ``notes`` say what changed and why (for the manifest)."""

    length: int
    stride: int
    validation_fraction: float
    batch_size: int
    epochs: int
    patience: int
    train_windows: int          # stride-1 windows before the validation cut, all sensors
    validation_windows: int     # stride-1 windows after it, all sensors
    notes: tuple[str, ...] = field(default_factory=tuple)


def min_readings(length: int = MIN_LENGTH) -> int:
    """Fewest readings of one sensor :func:`adapt_schedule` accepts for windows of ``length``."""
    return (TRAIN_BLOCKS + VAL_BLOCKS) * length


def adapt_schedule(n_readings: int, length: int = 32, stride: int = 4, epochs: int = 12,
                   validation_fraction: float = 0.2, batch_size: int = 256, patience: int = 3,
                   interval_s: float | None = None, n_sensors: int = 1) -> Schedule:
    """Fit the training schedule to ``n_readings`` normal readings of the (largest) sensor.

    It adapts only when the history is short for the configured window: fewer than
    ``TRAIN_BLOCKS`` non-overlapping windows to train on, or fewer than ``TARGET_VAL_WINDOWS``
    validation windows per sensor. Then the configured values are upper bounds for length, stride
    and batch size and lower bounds for epochs, patience and the validation fraction:

    * length: at most ``n_train / TRAIN_BLOCKS`` so that training holds 12 non-overlapping
      windows (400 readings: 32 -> 25), never below 8;
    * validation fraction: raised (to at most 0.4) until the validation part holds
      ``TARGET_VAL_WINDOWS`` windows of a sensor for the threshold fit;
    * stride: 1 while all sensors together give fewer than 8,000 training windows (every window
      is a gradient example there), else the configured stride;
    * batch size: at most 1/8 of the training windows (>= 16), so an epoch has >= 8 steps;
    * epochs: enough for ``MIN_UPDATES`` gradient steps (at most 300), patience 10 % of them.

    Otherwise (weeks of 5-minute readings) the configured schedule is returned unchanged.

    Args:
        n_readings: readings of the sensor with the most normal history.
        length, stride, epochs, validation_fraction, batch_size, patience: the configured schedule.
        interval_s: the sampling interval, to say the minimum in seconds too.
        n_sensors: sensors contributing windows (for the stride, batch and epochs rules).

    Raises:
        TrainingDataError: fewer than ``(12 + 3) * 8 = 120`` readings; the sentence says the minimum and why.
    """
    per = f" ({n_readings * interval_s:g} s)" if interval_s else ""
    need = min_readings(MIN_LENGTH)
    if n_readings < need:
        raise TrainingDataError(
            f"too little normal history: {n_readings} readings{per}; training needs at least {need} "
            f"(windows of at least {MIN_LENGTH} readings, {TRAIN_BLOCKS} non-overlapping ones to learn from "
            f"and {VAL_BLOCKS} more to calibrate the threshold on): record longer, or merge recordings")
    notes = []
    vf = float(validation_fraction)
    n_val0 = int(n_readings * vf)
    short = ((n_readings - n_val0) // int(length) < TRAIN_BLOCKS
             or n_val0 - int(length) + 1 < TARGET_VAL_WINDOWS)
    if not short:
        tw = max(n_readings - n_val0 - int(length) + 1, 0) * max(int(n_sensors), 1)
        vw = max(n_val0 - int(length) + 1, 0) * max(int(n_sensors), 1)
        return Schedule(int(length), int(stride), vf, int(batch_size), int(epochs), int(patience), tw, vw, ())
    cap = max(MIN_LENGTH, int((n_readings * (1 - max(vf, 0.25))) // TRAIN_BLOCKS))
    new_len = min(int(length), cap)
    if new_len < length:
        notes.append(f"window.length {length} -> {new_len}: {n_readings} readings hold too few "
                     f"non-overlapping windows of {length}")
    want = max(TARGET_VAL_WINDOWS + new_len - 1, VAL_BLOCKS * new_len)
    new_vf = min(0.4, max(vf, want / n_readings))
    if new_vf > vf + 1e-9:
        notes.append(f"model.validation_fraction {vf:g} -> {new_vf:.2f}: the threshold needs about "
                     f"{TARGET_VAL_WINDOWS} validation windows")
    n_val_read = int(n_readings * new_vf)
    n_tr_read = n_readings - n_val_read
    tw = max(n_tr_read - new_len + 1, 0) * max(int(n_sensors), 1)
    vw = max(n_val_read - new_len + 1, 0) * max(int(n_sensors), 1)
    new_stride = 1 if tw < STRIDE_1_BELOW else int(stride)
    if new_stride != stride:
        notes.append(f"window.stride {stride} -> 1: only {tw} training windows")
    n_fit = math.ceil(tw / new_stride)
    new_batch = int(min(batch_size, max(16, n_fit // 8)))
    steps = math.ceil(n_fit / new_batch)
    new_epochs = int(min(MAX_EPOCHS, max(epochs, math.ceil(MIN_UPDATES / max(steps, 1)))))
    new_patience = int(max(patience, new_epochs // 10))
    if new_batch != batch_size or new_epochs != epochs:
        notes.append(f"model.batch_size {batch_size} -> {new_batch}, model.epochs {epochs} -> {new_epochs} "
                     f"(patience {new_patience}): about {MIN_UPDATES} gradient steps on {n_fit} windows")
    return Schedule(new_len, new_stride, round(new_vf, 3), new_batch, new_epochs, new_patience, tw, vw, tuple(notes))
