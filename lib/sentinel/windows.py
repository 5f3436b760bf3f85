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
    """
    times = np.asarray(times, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64).reshape(times.size, -1)
    n, n_features = values.shape
    state = state or WindowState()
    status = np.full(n, WARMUP, dtype=np.int8)
    window_row = np.full(n, -1, dtype=np.int64)

    order = np.argsort(times, kind="stable")
    t_sorted = times[order]
    # Late: before the newest accepted reading; duplicate: same time as an accepted one.
    late = t_sorted < state.last_time
    dup = t_sorted == state.last_time
    dup[1:] |= (t_sorted[1:] == t_sorted[:-1]) & ~late[1:]
    status[order[late]] = LATE
    status[order[dup & ~late]] = DUPLICATE
    keep = order[~late & ~dup]

    buf_t = state.times if state.values.size else np.empty(0, dtype=np.int64)
    buf_v = state.values if state.values.size else np.empty((0, n_features))
    all_t = np.concatenate([buf_t, times[keep]])
    all_v = np.concatenate([buf_v.reshape(-1, n_features), values[keep]])
    n_buf = buf_t.size

    # Position of each reading inside its gap-free run: a window exists where it reaches W-1.
    breaks = np.zeros(all_t.size, dtype=bool)
    if all_t.size:
        breaks[0] = True
        breaks[1:] = np.diff(all_t) > max_gap_ns
    run_start = np.maximum.accumulate(np.where(breaks, np.arange(all_t.size), 0))
    pos_in_run = np.arange(all_t.size) - run_start
    has_window = pos_in_run[n_buf:] >= length - 1

    ends = np.nonzero(has_window)[0] + n_buf
    if ends.size:
        idx = ends[:, None] - np.arange(length - 1, -1, -1)[None, :]
        windows = all_v[idx]
        window_times = all_t[idx]
    else:
        windows = np.empty((0, length, n_features))
        window_times = np.empty((0, length), dtype=np.int64)
    status[keep[has_window]] = WINDOW
    window_row[keep[has_window]] = np.arange(ends.size)

    if all_t.size:
        tail_start = max(run_start[-1], all_t.size - (length - 1))
        new_state = WindowState(all_t[tail_start:].copy(), all_v[tail_start:].copy(), int(all_t[-1]))
    else:
        new_state = state
    return Assembled(status, window_row, windows, window_times, new_state)


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
