"""Scoring: windows -> scores -> flags. The only scoring code in Pressure Sentinel.

Contract: ``score_windows(bundle, windows, window_times, sensor_ids)`` returns one float per
window (higher means more anomalous): the per-step squared reconstruction errors of the scaled
window reduced by the bundle's ``score.reduce`` (mean, last, max, or the Mahalanobis distance of
the error vector, see :mod:`sentinel.error_model`), capped at the threshold where the window's
error has left its newest steps (:func:`scores_from_errors`, the recent rule); a reading's
window is flagged when its score exceeds its sensor's threshold. Optional alarm persistence (:func:`persist`) turns a sensor's
flags into alarms when at least m of its last n windows were flagged. :func:`score_details`
returns the same scores with their explanation (expected values, error shares, window shape).

Residual bundles (``model.kind = "residual"``, :mod:`sentinel.detect.residual`) are scored by
the same two functions, which dispatch on the bundle's kind: their score is the smoothed
standardised residual of each channel predicted from the others, and for zone bundles every
window scores each of its members (:func:`scored_rows` says which row is whose). Both kinds apply
the stuck rule (:mod:`sentinel.detect.rules`) once the threshold is known.

Used unchanged by training (calibration), ``sentinel score``/``evaluate`` and the streaming
pandas UDF. Pure numpy + the Keras model (autoencoders only); no pyspark.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sentinel.detect import residual, rules
from sentinel.detect.error_model import ErrorModel
from sentinel.detect.explain import WindowDetails, to_units, window_details
from sentinel.detect.model import Bundle
from sentinel.detect.windows import calendar_features

log = logging.getLogger("sentinel.scoring")

PREDICT_BATCH = 4096


def model_inputs(bundle: Bundle, windows: np.ndarray, window_times: np.ndarray,
                 sensor_ids: np.ndarray) -> list[np.ndarray]:
    """Raw windows (m, W, F) -> the model's inputs: scaled values (+ calendar context)."""
    scaled = bundle.scaler.transform(windows, sensor_ids).astype(np.float32)
    if bundle.calendar:
        return [scaled, calendar_features(window_times).astype(np.float32)]
    return [scaled]


_COMPILED: dict[int, object] = {}
# Batch sizes the model is compiled for: a chunk is zero-padded up to the next one, so XLA
# compiles three programs per model, all at first use (about a second each), instead of one
# per batch size it meets, each stalling a micro-batch in mid-stream.
BATCH_SIZES = (256, 1024, PREDICT_BATCH)


def _compiled_call(model):
    """The model's forward pass compiled with XLA (cached per model).

    Eager Keras calls run the recurrent loop op by op in Python and ``predict`` rebuilds a
    data pipeline per call. A ``tf.function`` with a free batch dimension is traced once;
    ``jit_compile`` then fuses the recurrent steps into one XLA program: for the GRU on
    windows of 32, 44,000 windows/s on one thread against 21,000 for the plain traced graph
    (batches of 4096; benchmarks/throughput.py prints it beside ``model.predict``). If XLA
    cannot compile the model, the plain traced graph is used.

    Compiled for every size in ``BATCH_SIZES`` here, at first use: a size first met in
    mid-stream stalled that micro-batch by 2.5 s (measured in the deploy job).
    """
    fn = _COMPILED.get(id(model))
    if fn is None:
        import tensorflow as tf
        specs = [tf.TensorSpec([None, *t.shape[1:]], tf.float32) for t in model.inputs]

        def forward(*xs):
            return model(list(xs) if len(xs) > 1 else xs[0], training=False)

        fn = tf.function(forward, input_signature=specs, jit_compile=True)
        try:
            for size in BATCH_SIZES:
                fn(*[np.zeros((size, *t.shape[1:]), dtype=np.float32) for t in model.inputs])
        except Exception as exc:  # an op XLA does not support on this platform
            log.warning("XLA cannot compile the model (%s); using the plain traced graph", str(exc)[:200])
            fn = tf.function(forward, input_signature=specs)
        _COMPILED[id(model)] = fn
    return fn


def batch_spans(m: int, batch: int = PREDICT_BATCH) -> list[tuple[int, int]]:
    """Row ranges that cover ``m`` rows in model calls: as many calls of a compiled size as fit
    (largest first, none over ``batch``), then one call for the rest, padded up to the
    smallest size. Padding the rest straight up to the next size (2,500 rows to 4,096) made
    the model do up to 4 times the work on it; this way at most 255 rows are padding."""
    sizes = sorted((b for b in BATCH_SIZES if b <= batch), reverse=True) or [batch]
    spans, i = [], 0
    for size in sizes:
        while m - i >= size:
            spans.append((i, i + size))
            i += size
    while i < m:
        spans.append((i, min(i + batch, m)))
        i = spans[-1][1]
    return spans


def reconstruct(model, inputs: list[np.ndarray], batch: int = PREDICT_BATCH) -> np.ndarray:
    """Run the model over large batches through one compiled forward pass."""
    m = inputs[0].shape[0]
    if m == 0:
        return np.empty(inputs[0].shape, dtype=np.float32)
    call = _compiled_call(model)
    out = []
    for a, b in batch_spans(m, batch):
        chunk = [x[a:b] for x in inputs]
        k = b - a
        size = next((s for s in BATCH_SIZES if s >= k), k)
        if size > k:
            chunk = [np.concatenate([x, np.zeros((size - k, *x.shape[1:]), dtype=x.dtype)]) for x in chunk]
        out.append(call(*chunk).numpy()[:k])
    return np.concatenate(out)


def step_errors(bundle: Bundle, windows: np.ndarray, window_times: np.ndarray,
                sensor_ids: np.ndarray) -> np.ndarray:
    """(m, W) squared reconstruction error per step, averaged over features."""
    inputs = model_inputs(bundle, windows, window_times, sensor_ids)
    recon = reconstruct(bundle.model, inputs)
    return ((recon - inputs[0]) ** 2).mean(axis=-1)


def reduce_errors(errors: np.ndarray, how: str = "mean", error_model: ErrorModel | None = None) -> np.ndarray:
    """(m, W) step errors -> (m,) scores.

    ``how``: ``mean``, ``last`` (newest step), ``max``, or ``mahalanobis`` (distance of the
    error vector under ``error_model``, fitted on normal validation windows).
    """
    if errors.shape[0] == 0:
        return np.empty(0)
    if how == "mean":
        return errors.mean(axis=1)
    if how == "last":
        return errors[:, -1]
    if how == "max":
        return errors.max(axis=1)
    if how == "mahalanobis":
        if error_model is None:
            raise ValueError("score reduction 'mahalanobis' needs the bundle's error model "
                             "(error_model.json): re-train with threshold.reduce = \"mahalanobis\"")
        return error_model.distance(errors)
    raise ValueError(f"unknown score reduction {how!r}: use mean, last, max or mahalanobis")


def reduction(bundle: Bundle) -> str:
    """The bundle's window score reduction (bundles from before it was recorded: mean)."""
    return bundle.manifest.get("score", {}).get("reduce", "mean")


def recent_rule(bundle: Bundle) -> tuple[int, float]:
    """The bundle's ``(recent_steps, recent_ratio)``; (0, 0) = off (and for older bundles)."""
    sp = bundle.manifest.get("score", {})
    return int(sp.get("recent_steps", 0)), float(sp.get("recent_ratio", 0.0))


def recent_mask(errors: np.ndarray, steps: int, ratio: float) -> np.ndarray:
    """(m, W) step errors -> (m,) True where the window's error is still *current*: the mean
    error of its newest ``steps`` steps is at least ``ratio`` times the window's mean error.

    ``steps`` = 0: all True (rule off); ``steps`` >= W compares the window with itself (True
    for ratio <= 1).
    """
    m = errors.shape[0]
    if steps <= 0 or m == 0:
        return np.ones(m, dtype=bool)
    return errors[:, -steps:].mean(axis=1) >= ratio * errors.mean(axis=1)


def scores_from_errors(bundle: Bundle, errors: np.ndarray, sensor_ids: np.ndarray) -> np.ndarray:
    """(m, W) step errors -> (m,) scores: the bundle's reduction, then its recent rule.

    Recent rule (``score.recent_steps`` > 0): a window keeps an anomaly in view for W-1
    readings after it ended, and those windows still score high although their newest
    readings are normal again; their error sits in the older steps. A window that is not
    :func:`recent_mask`-current scores at most its sensor's threshold, so it does not alarm:
    alarms clear when the readings are back to normal. Needs the calibrated threshold (no cap
    while calibrating).
    """
    scores = reduce_errors(errors, reduction(bundle), bundle.error_model).astype(np.float64)
    steps, ratio = recent_rule(bundle)
    if steps and bundle.threshold is not None and scores.size:
        stale = ~recent_mask(errors, steps, ratio)
        if stale.any():
            scores[stale] = np.minimum(scores[stale], bundle.threshold.for_sensors(np.asarray(sensor_ids)[stale]))
    return scores


def is_residual(bundle) -> bool:
    """A residual bundle (``model.kind = "residual"``)?"""
    return getattr(bundle, "kind", "autoencoder") == "residual"


def scored_rows(bundle, sensor_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(window index, sensor id)`` of each score :func:`score_windows` returns for windows of
    ``sensor_ids``: one per window, except zone bundles (``sensor_ids`` are zones), which score
    every member of every window, window-major, members in the bundle's layout order."""
    if is_residual(bundle):
        return residual.scored_rows(bundle, sensor_ids)
    ids = np.asarray(sensor_ids)
    return np.arange(ids.size), ids


def stuck_rule(bundle, scores: np.ndarray, windows: np.ndarray, sensor_ids: np.ndarray) -> np.ndarray:
    """Autoencoder bundles: raise the score of windows whose newest readings repeat one value for
    the bundle's ``score.stuck_limit`` to ``residual.STUCK_SEVERITY`` times the threshold (no-op
    before calibration and for bundles without a limit)."""
    limit = bundle.manifest.get("score", {}).get("stuck_limit")
    if not limit or bundle.threshold is None or len(scores) == 0:
        return scores
    hit = rules.stuck(windows, np.asarray(limit, dtype=np.int64)).any(axis=1)
    if not hit.any():
        return scores
    thr = bundle.threshold.for_sensors(np.asarray(sensor_ids))
    return np.where(hit, np.maximum(scores, residual.STUCK_SEVERITY * thr), scores)


def score_windows(bundle: Bundle, windows: np.ndarray, window_times: np.ndarray,
                  sensor_ids: np.ndarray, drift=None) -> np.ndarray:
    """(m, W, F) raw windows of the given sensors -> anomaly scores: (m,) for sensor bundles,
    one per window and member for zone bundles (:func:`scored_rows`).

    ``drift``: residual bundles with drift tracking: the ``adapt.DriftAdapter`` to apply and
    update (windows in event-time order per sensor); if not given, a tracker at the end-of-training
    state is used for this call alone.
    """
    if is_residual(bundle):
        return residual.score(bundle, windows, window_times, sensor_ids, drift).scores
    scores = scores_from_errors(bundle, step_errors(bundle, windows, window_times, sensor_ids), sensor_ids)
    return stuck_rule(bundle, scores, windows, sensor_ids)


@dataclass
class Details:
    """:func:`score_details`' result: the scores and why (``explain.WindowDetails``)."""

    scores: np.ndarray               # (m,) exactly score_windows' scores
    explain: WindowDetails           # expected values, error shares, shape statistics

    def frame(self, features: list[str]) -> pd.DataFrame:
        """``score`` plus the explanation columns (``explain.detail_columns``), one row per window."""
        out = self.explain.frame(features)
        out.insert(0, "score", self.scores)
        return out


def score_details(bundle: Bundle, windows: np.ndarray, window_times: np.ndarray,
                  sensor_ids: np.ndarray, drift=None) -> Details:
    """(m, W, F) raw windows -> scores and their explanation, in one model call.

    The scores equal :func:`score_windows`' (same inputs, reconstruction and reduction); the
    reconstruction the score came from also gives the expected values in the sensor's units
    (unscaled with the bundle's scaler) and the per-feature errors (``explain.window_details``).
    Residual bundles: the predictions are the expected values, ``z**2`` the errors; zone bundles
    explain every scored row (:func:`scored_rows`) as a one-feature series of its member.
    """
    if is_residual(bundle):
        sc = residual.score(bundle, windows, window_times, sensor_ids, drift)
        return Details(sc.scores, window_details(sc.values, sc.expected, sc.sq_errors, sc.scale))
    inputs = model_inputs(bundle, windows, window_times, sensor_ids)
    recon = reconstruct(bundle.model, inputs)
    sq = (recon - inputs[0]) ** 2                          # (m, W, F) scaled squared errors
    scores = stuck_rule(bundle, scores_from_errors(bundle, sq.mean(axis=-1), sensor_ids), windows, sensor_ids)
    mean, std = bundle.scaler.params(sensor_ids)
    expected = to_units(recon, mean, std)
    details = window_details(windows, expected, sq, std, recent_rule(bundle)[0])
    return Details(scores, details)


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


def persist(flags: np.ndarray, m: int, n: int, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Alarm persistence for ONE sensor: alarm where at least ``m`` of the last ``n`` flags are set.

    Args:
        flags: (k,) raw window flags (score > threshold) of one sensor, in event-time order.
        m, n: at least m of the last n flags (1 <= m <= n; m = n = 1 returns ``flags``).
        prior: the sensor's previous raw flags, oldest first (the ``tail`` returned by the
            previous call; only its last n-1 count). None or empty: no history (counted as
            unflagged).

    Returns:
        ``(alarms, tail)``: (k,) bool alarms, and the newest n-1 raw flags including ``prior``
        (oldest first, shorter while fewer exist) to carry to the next call.

    Example (m=2, n=3): flags 1 0 1 0 0 1 -> alarms 0 0 1 0 0 0, tail [0, 1].
    """
    alarms, tails = persist_groups(flags, np.zeros(len(flags), dtype=np.int8), m, n,
                                   None if prior is None else {0: prior})
    return alarms, tails.get(0, _tail(prior, n))


def persist_groups(flags: np.ndarray, groups: np.ndarray, m: int, n: int,
                   priors: dict | None = None) -> tuple[np.ndarray, dict]:
    """:func:`persist` for many sensors at once (vectorised, no Python loop over rows).

    Args:
        flags: (k,) raw window flags, sorted by group (sensor) and, within it, event time.
        groups: (k,) sensor id (or any group code) of each flag; each group's rows contiguous.
        m, n: alarm where at least m of the group's last n raw flags are set.
        priors: optional ``{group: previous raw flags, oldest first}`` (the returned tails of
            the previous call); groups without an entry start with no history.

    Returns:
        ``(alarms, tails)``: (k,) bool alarms in input order, and ``{group: newest n-1 raw
        flags, oldest first}`` for every group present in ``groups``.
    """
    flags = np.asarray(flags).astype(bool)
    groups = np.asarray(groups)
    if not 1 <= m <= n:
        raise ValueError(f"alarm persistence needs 1 <= m <= n, got m={m}, n={n}")
    k = flags.size
    if groups.shape != flags.shape:
        raise ValueError("flags and groups must have the same length")
    if k == 0:
        return np.zeros(0, dtype=bool), {}
    starts = np.concatenate([[0], np.nonzero(groups[1:] != groups[:-1])[0] + 1])
    keys = groups[starts]
    if len(set(keys.tolist())) != keys.size:
        raise ValueError("persist_groups needs each group's rows contiguous: sort by sensor, then time")
    if n == 1:
        return flags.copy(), {key: np.zeros(0, dtype=bool) for key in keys.tolist()}
    h = n - 1
    # Each group's segment gets h leading slots holding its prior flags (right-aligned,
    # missing ones unflagged), so one cumulative sum serves every group: a row's window of n
    # never reaches into the previous group's segment.
    pad = np.zeros((keys.size, h), dtype=bool)
    for i, key in enumerate(keys.tolist()):  # one step per sensor, not per row
        tail = _tail((priors or {}).get(key), n)
        if tail.size:
            pad[i, h - tail.size:] = tail
    sizes = np.diff(np.concatenate([starts, [k]]))
    seg_start = starts + h * np.arange(keys.size)          # where each segment begins in ext
    ext = np.zeros(k + h * keys.size, dtype=bool)
    pad_pos = seg_start[:, None] + np.arange(h)[None, :]
    ext[pad_pos.ravel()] = pad.ravel()
    row_pos = np.arange(k) + h * np.repeat(np.arange(keys.size) + 1, sizes)  # each row's slot in ext
    ext[row_pos] = flags
    csum = np.concatenate([[0], np.cumsum(ext, dtype=np.int64)])
    alarms = (csum[row_pos + 1] - csum[row_pos + 1 - n]) >= m
    seg_end = seg_start + h + sizes                         # one past each segment's last slot
    # Tails: the newest n-1 real flags (prior + new); shorter while a sensor has fewer.
    known = sizes + np.array([_tail((priors or {}).get(key), n).size for key in keys.tolist()])
    lengths = np.minimum(h, known)
    tails = {key: ext[seg_end[i] - lengths[i]:seg_end[i]].copy() for i, key in enumerate(keys.tolist())}
    return alarms, tails


def _tail(prior, n: int) -> np.ndarray:
    """The newest n-1 flags of a prior (empty when there is none)."""
    if prior is None or n <= 1:
        return np.zeros(0, dtype=bool)
    p = np.asarray(prior).astype(bool).ravel()
    return p[max(p.size - (n - 1), 0):]
