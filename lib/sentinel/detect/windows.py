"""Windowing and scaling, shared by training, batch scoring and streaming.

The unit of work is one sensor's readings. :func:`assemble` takes new readings plus the
sensor's carried-over :class:`WindowState` and returns a window for every new reading that
has ``length - 1`` predecessors without a gap longer than ``max_gap``. The batch path calls
it once with an empty state; the streaming path calls it per micro-batch with the state kept
by Spark. Same function, so the windows are equal by construction (and tested to be).

Readings are ordered by event time here, not by arrival: a reading older than the newest one
already accepted for its sensor is *late*, one with the same time is a *duplicate*.
No pyspark import: this module is pure numpy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

NS_PER_S = 1_000_000_000

# Per-reading status codes returned by assemble().
WINDOW, WARMUP, LATE, DUPLICATE = 0, 1, 2, 3
STATUS_NAMES = {WINDOW: "window", WARMUP: "warmup", LATE: "late", DUPLICATE: "duplicate"}


@dataclass
class WindowState:
    """What one sensor carries between micro-batches: its newest ``length - 1`` readings."""

    times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # ns, ascending
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float64))
    last_time: int = np.iinfo(np.int64).min  # newest accepted reading (ns)

    @property
    def empty(self) -> bool:
        return self.times.size == 0


@dataclass
class Assembled:
    """Result of :func:`assemble` for one sensor.

    ``status[i]`` is the fate of input row ``i`` (input order); rows with status WINDOW have
    their window at ``windows[window_row[i]]`` (-1 otherwise). Windows are in event-time order.
    """

    status: np.ndarray        # (n,) int8
    window_row: np.ndarray    # (n,) int64
    windows: np.ndarray       # (m, length, n_features) float64
    window_times: np.ndarray  # (m, length) int64 ns
    state: WindowState


def assemble(times: np.ndarray, values: np.ndarray, state: WindowState | None,
             length: int, max_gap_ns: int) -> Assembled:
    """Cut windows for new readings of one sensor, continuing from ``state``.

    Args:
        times: (n,) int64 event times in ns, any order.
        values: (n, n_features) float readings.
        state: the sensor's state from the previous call. If not given, the series starts here.
        length: window length W.
        max_gap_ns: a gap longer than this between consecutive readings restarts the window.

    The single-sensor case of :func:`assemble_many` (same code).
    """
    times = np.asarray(times, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64).reshape(times.size, -1)
    state = state or WindowState()
    tail_v = state.values.reshape(state.times.size, values.shape[1]) if state.times.size else \
        np.empty((0, values.shape[1]))
    res = assemble_many(np.zeros(times.size, dtype=np.int64), times, values,
                        np.zeros(state.times.size, dtype=np.int64), state.times, tail_v,
                        np.array([state.last_time], dtype=np.int64), length, max_gap_ns)
    return Assembled(res.status, res.window_row, res.windows, res.window_times,
                     WindowState(res.tail_times, res.tail_values, int(res.last_time[0])))


@dataclass
class AssembledMany:
    """Result of :func:`assemble_many` for many sensors (codes ``0..S-1``).

    Like :class:`Assembled`; windows are ordered by (sensor code, event time), and the new
    state is the tails (rows sorted by sensor code, then time) plus ``last_time`` per code.
    """

    status: np.ndarray        # (n,) int8, input order
    window_row: np.ndarray    # (n,) int64, -1 = no window
    windows: np.ndarray       # (m, length, n_features) float64
    window_times: np.ndarray  # (m, length) int64 ns
    tail_codes: np.ndarray    # (k,) int64
    tail_times: np.ndarray    # (k,) int64
    tail_values: np.ndarray   # (k, n_features) float64
    last_time: np.ndarray     # (S,) int64 newest accepted reading per code (NO_TIME if none)


NO_TIME = np.iinfo(np.int64).min


def assemble_many(codes: np.ndarray, times: np.ndarray, values: np.ndarray,
                  tail_codes: np.ndarray, tail_times: np.ndarray, tail_values: np.ndarray,
                  last_time: np.ndarray, length: int, max_gap_ns: int) -> AssembledMany:
    """Cut windows for new readings of many sensors at once, continuing from their tails.

    Args:
        codes: (n,) sensor code of each new reading, in ``0..S-1``.
        times, values: (n,) int64 ns event times (any order) and (n, F) readings.
        tail_codes, tail_times, tail_values: the carried state, each sensor's newest readings
            (at most W-1, all in its current gap-free run), sorted by code then time.
        last_time: (S,) newest accepted reading per code, ``NO_TIME`` for a new sensor.
        length, max_gap_ns: window length W and the gap that restarts a window.

    Vectorised over sensors: one sort, no Python loop, so a micro-batch of thousands of
    sensors costs a few numpy passes.
    """
    codes = np.asarray(codes, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    n = times.size
    values = np.asarray(values, dtype=np.float64).reshape(n, -1)
    n_features = values.shape[1]
    last_time = np.asarray(last_time, dtype=np.int64)
    status = np.full(n, WARMUP, dtype=np.int8)
    window_row = np.full(n, -1, dtype=np.int64)

    # Late: older than the sensor's newest accepted reading; duplicate: same time as one.
    order = np.lexsort((times, codes))
    c_s, t_s = codes[order], times[order]
    prev = last_time[c_s] if n else np.empty(0, dtype=np.int64)
    late = t_s < prev
    dup = t_s == prev
    dup[1:] |= (t_s[1:] == t_s[:-1]) & (c_s[1:] == c_s[:-1]) & ~late[1:]
    status[order[late]] = LATE
    status[order[dup & ~late]] = DUPLICATE
    keep = order[~late & ~dup]

    # Tails and kept readings, merged in (code, time) order: kept readings are newer than
    # everything in their sensor's tail.
    all_c = np.concatenate([np.asarray(tail_codes, dtype=np.int64), codes[keep]])
    all_t = np.concatenate([np.asarray(tail_times, dtype=np.int64), times[keep]])
    all_v = np.concatenate([np.asarray(tail_values, dtype=np.float64).reshape(-1, n_features), values[keep]])
    src = np.concatenate([np.full(len(tail_codes), -1, dtype=np.int64), keep])
    merge = np.lexsort((all_t, all_c))
    all_c, all_t, all_v, src = all_c[merge], all_t[merge], all_v[merge], src[merge]
    k = all_t.size
    idx = np.arange(k)

    # Position of each reading inside its sensor's gap-free run: a window where it reaches W-1.
    breaks = np.ones(k, dtype=bool)
    if k:
        breaks[1:] = (all_c[1:] != all_c[:-1]) | (np.diff(all_t) > max_gap_ns)
    run_start = np.maximum.accumulate(np.where(breaks, idx, 0)) if k else idx
    pos_in_run = idx - run_start
    has_window = (src >= 0) & (pos_in_run >= length - 1)

    ends = np.nonzero(has_window)[0]
    if ends.size:
        win_idx = ends[:, None] - np.arange(length - 1, -1, -1)[None, :]
        windows, window_times = all_v[win_idx], all_t[win_idx]
    else:
        windows = np.empty((0, length, n_features))
        window_times = np.empty((0, length), dtype=np.int64)
    status[src[ends]] = WINDOW
    window_row[src[ends]] = np.arange(ends.size)

    # New tails: each sensor's newest W-1 readings of its last run.
    group_last = np.ones(k, dtype=bool)
    if k:
        group_last[:-1] = all_c[1:] != all_c[:-1]
    last_idx = np.nonzero(group_last)[0]
    row_group_last = np.repeat(last_idx, np.diff(np.concatenate([[0], last_idx + 1]))) if k else idx
    in_tail = (idx >= run_start[row_group_last]) & (idx > row_group_last - (length - 1))
    new_last = last_time.copy()
    new_last[all_c[last_idx]] = all_t[last_idx]
    return AssembledMany(status, window_row, windows, window_times,
                         all_c[in_tail], all_t[in_tail], all_v[in_tail], new_last)


def sensor_windows(times: np.ndarray, values: np.ndarray, length: int, max_gap_ns: int,
                   stride: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch path: all windows of one sensor's full history.

    Returns ``(windows, window_times, end_index)`` where ``end_index`` is the input row of
    each window's newest reading; with ``stride`` > 1 every stride-th window is kept.
    """
    res = assemble(times, values, None, length, max_gap_ns)
    rows = np.nonzero(res.status == WINDOW)[0]
    rows = rows[np.argsort(res.window_row[rows])]
    sel = np.arange(0, rows.size, stride)
    return res.windows[sel], res.window_times[sel], rows[sel]


def calendar_features(window_times: np.ndarray) -> np.ndarray:
    """(m, W) ns UTC times -> (m, W, 3): sin/cos of hour of day, and a weekend flag.

    Water demand follows the clock, so the model sees where in the day each step lies.
    """
    secs = window_times // NS_PER_S
    day_frac = (secs % 86400) / 86400.0
    weekday = (secs // 86400 + 3) % 7  # 1970-01-01 was a Thursday (3 with Monday = 0)
    return np.stack([np.sin(2 * np.pi * day_frac), np.cos(2 * np.pi * day_frac),
                     (weekday >= 5).astype(np.float64)], axis=-1)


class Scaler:
    """Per-sensor standardisation with a global fallback for sensors unseen in training.

    Each sensor in a water network sits at its own elevation, so its pressure has its own
    level; scaling per sensor lets one model serve them all.
    """

    def __init__(self, features: list[str], mean: np.ndarray, std: np.ndarray,
                 per_sensor: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
        self.features = list(features)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.per_sensor = per_sensor or {}

    @classmethod
    def fit(cls, features: list[str], sensor_ids: np.ndarray, values: np.ndarray,
            min_std: float = 1e-3) -> "Scaler":
        values = np.asarray(values, dtype=np.float64).reshape(len(sensor_ids), -1)
        sensor_ids = np.asarray(sensor_ids)
        per = {}
        for sid in np.unique(sensor_ids):
            v = values[sensor_ids == sid]
            per[str(sid)] = (v.mean(axis=0), np.maximum(v.std(axis=0), min_std))
        return cls(features, values.mean(axis=0), np.maximum(values.std(axis=0), min_std), per)

    def params(self, sensor_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, F) mean and std rows for each sensor id."""
        ids = np.asarray(sensor_ids).astype(str)
        uniq, inverse = np.unique(ids, return_inverse=True)
        means = np.stack([self.per_sensor.get(u, (self.mean, self.std))[0] for u in uniq]) if uniq.size else np.empty((0, self.mean.size))
        stds = np.stack([self.per_sensor.get(u, (self.mean, self.std))[1] for u in uniq]) if uniq.size else np.empty((0, self.std.size))
        return means[inverse], stds[inverse]

    def transform(self, windows: np.ndarray, sensor_ids: np.ndarray) -> np.ndarray:
        """(m, W, F) raw windows -> standardised, per the window's sensor."""
        mean, std = self.params(sensor_ids)
        return (windows - mean[:, None, :]) / std[:, None, :]

    def to_json(self) -> str:
        return json.dumps({
            "features": self.features, "method": "per_sensor_standard",
            "global": {"mean": self.mean.tolist(), "std": self.std.tolist()},
            "per_sensor": {k: {"mean": m.tolist(), "std": s.tolist()} for k, (m, s) in sorted(self.per_sensor.items())},
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Scaler":
        d = json.loads(text)
        per = {k: (np.asarray(v["mean"]), np.asarray(v["std"])) for k, v in d.get("per_sensor", {}).items()}
        return cls(d["features"], d["global"]["mean"], d["global"]["std"], per)
