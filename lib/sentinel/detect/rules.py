"""Alarm rules beside the model's score: a stuck (flat-lined) channel.

A logger that freezes repeats its last value exactly, while the process it measured goes on
moving: its residual stays small while the pressure is near the frozen value (the night hours
of a water network), so a model's score notices only as the real pressure moves away. The rule
does not wait for that: a channel repeating its exact value for ``limit`` readings is stuck.
``limit`` is learned per channel from training: ``factor`` times its longest run of repeated
values there, at least ``floor`` readings (loggers with a coarse resolution repeat values
normally). Pure numpy.
"""
from __future__ import annotations

import numpy as np

FLOOR = 5
FACTOR = 2.0


def repeat_runs(values: np.ndarray) -> np.ndarray:
    """(n, F) -> (n, F) length of the run of exactly equal values ending at each reading
    (1 = differs from the previous reading; NaN never repeats)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n, f = v.shape
    runs = np.ones((n, f), dtype=np.int64)
    if n == 0:
        return runs
    same = np.zeros((n, f), dtype=bool)
    same[1:] = v[1:] == v[:-1]
    # run length = distance to the last reading that differed from its predecessor
    idx = np.arange(n)[:, None]
    start = np.where(~same, idx, 0)
    np.maximum.accumulate(start, axis=0, out=start)
    return (idx - start + 1).astype(np.int64)


def stuck_limit(train_values: np.ndarray, floor: int = FLOOR, factor: float = FACTOR,
                groups: np.ndarray | None = None, quantile: float | None = None) -> np.ndarray:
    """(F,) run length from which a channel counts as stuck: ``factor`` times its longest run
    of repeated values in training (per group, e.g. sensor, when ``groups`` is given; rows in time
    order within a group), at least ``floor`` readings.

    ``quantile``: use this quantile of the completed runs' lengths instead of the longest, so a
    stuck period nobody labelled in the history does not switch the rule off.
    """
    v = np.asarray(train_values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.shape[0] == 0:
        return np.full(v.shape[1], floor, dtype=np.int64)
    g = np.zeros(v.shape[0], dtype=np.int64) if groups is None else np.asarray(groups)
    longest = np.zeros(v.shape[1], dtype=np.float64)
    for key in np.unique(g):
        part = v[g == key]
        runs = repeat_runs(part)
        for j in range(v.shape[1]):
            # a run is complete where the next reading differs (or the series ends)
            ends = np.ones(len(part), dtype=bool)
            ends[:-1] = part[1:, j] != part[:-1, j]
            lengths = runs[ends, j]
            top = lengths.max() if quantile is None else np.quantile(lengths, quantile)
            longest[j] = max(longest[j], float(top))
    return np.maximum(floor, np.ceil(factor * longest)).astype(np.int64)


def newest_runs(windows: np.ndarray) -> np.ndarray:
    """(m, W, F) windows -> (m, F) length of the run of exactly equal values ending at the
    newest step (at most W)."""
    w = np.asarray(windows, dtype=np.float64)
    m, length, f = w.shape
    if length == 0 or m == 0:
        return np.zeros((m, f), dtype=np.int64)
    differs = np.ones((m, length, f), dtype=bool)
    differs[:, 1:] = w[:, 1:] != w[:, :-1]
    # the newest step that differs from its predecessor, counted from the end
    rev = differs[:, ::-1]
    first = rev.argmax(axis=1)                # 0 = the newest differs
    return (first + 1).astype(np.int64)


def stuck(windows: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """(m, W, F) windows and (F,) limits -> (m, F) True where the channel's newest run reaches its limit."""
    return newest_runs(windows) >= np.asarray(limit, dtype=np.int64)[None, :]
