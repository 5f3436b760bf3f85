"""Why a window scored high: expected values, where its error sits, and its shape.

Contract: from what scoring already has for a batch of windows (the raw windows (m, W, F), the
expected values in the sensor's units (the reconstruction unscaled with the bundle's scaler, or
a prediction already in units) and the per-step, per-feature squared errors the score was
reduced from), :func:`window_details` returns per window the newest step's expected values,
each feature's share of the error, the share carried by the newest steps, and cheap shape
statistics of the raw window that the incident kind rules read. Pure numpy, no model call.

Every statistic is of the window's *top feature* (the one carrying the largest error share)
where a single number is given, so univariate and multivariate models read the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Share of a window's error that "carries" it: error_steps is the number of newest steps
# holding this much of the window's squared error ("error in the newest 4 of 32 steps").
CARRY_FRACTION = 0.8
# Newest steps read as "recent" when the bundle has no recent rule (its recent_steps otherwise).
DEFAULT_RECENT_STEPS = 4
# A step counts as unchanged (flat line) when it moves less than this fraction of the window's
# typical step-to-step change (and, in any case, less than 1e-9 of the reading).
FLAT_FRACTION = 0.05
# The typical step change is floored at this fraction of the sensor's standard deviation, so a
# window that is flat all along (a stuck sensor) does not divide by zero.
TYPICAL_FLOOR_FRACTION = 0.01

SHAPE_COLUMNS = ["recent_share", "error_steps", "top_feature", "deviation", "jump", "jump_ratio",
                 "roughness", "flat_steps"]


@dataclass
class WindowDetails:
    """Per-window explanation inputs (m windows, F features).

    Attributes:
        observed: (m, F) the newest step's readings (units).
        expected: (m, F) the newest step's expected values (units).
        feature_share: (m, F) each feature's share of the window's squared error (rows sum to 1).
        recent_share: (m,) share of the window's error in its newest ``recent_steps`` steps.
        error_steps: (m,) newest steps that hold ``CARRY_FRACTION`` of the error (0 if none).
        top_feature: (m,) index of the feature with the largest share.
        deviation: (m,) observed - expected of the top feature at the newest step (units;
            negative = drop).
        jump: (m,) the largest step-to-step change among the newest ``recent_steps`` steps of
            the top feature, signed (units).
        jump_ratio: (m,) ``|jump|`` over the window's typical step change (median absolute
            change of its older steps): about 1 for normal noise, tens for a burst or spike.
        roughness: (m,) median absolute change of the newest steps over the typical one: 0 for
            a flat line, well above 1 for a noise burst.
        flat_steps: (m,) the longest run of readings in the window that equal their predecessor
            (a stuck sensor; the run need not reach the newest step: a sensor released from a
            stuck value jumps back just as the window is flagged).
        window_steps, recent_steps: W and the number of steps read as recent.
    """

    observed: np.ndarray
    expected: np.ndarray
    feature_share: np.ndarray
    recent_share: np.ndarray
    error_steps: np.ndarray
    top_feature: np.ndarray
    deviation: np.ndarray
    jump: np.ndarray
    jump_ratio: np.ndarray
    roughness: np.ndarray
    flat_steps: np.ndarray
    window_steps: int
    recent_steps: int

    def __len__(self) -> int:
        return int(self.recent_share.size)

    def frame(self, features: list[str]) -> pd.DataFrame:
        """One row per window: ``expected_<f>``, ``share_<f>`` per feature, then SHAPE_COLUMNS
        (``top_feature`` as the feature's name); the columns ``score_table(details=True)``
        adds and the incident tracker reads."""
        out = {}
        for i, f in enumerate(features):
            out[f"expected_{f}"] = self.expected[:, i]
        for i, f in enumerate(features):
            out[f"share_{f}"] = self.feature_share[:, i]
        names = np.asarray(features, dtype=object)
        out.update({"recent_share": self.recent_share, "error_steps": self.error_steps,
                    "top_feature": names[self.top_feature] if len(self) else np.empty(0, dtype=object),
                    "deviation": self.deviation, "jump": self.jump, "jump_ratio": self.jump_ratio,
                    "roughness": self.roughness, "flat_steps": self.flat_steps})
        return pd.DataFrame(out)


def detail_columns(features: list[str]) -> list[str]:
    """The columns :meth:`WindowDetails.frame` produces, in order."""
    return [f"expected_{f}" for f in features] + [f"share_{f}" for f in features] + SHAPE_COLUMNS


def to_units(scaled: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(m, W, F) values in the scaler's units -> sensor units, with per-window (m, F) mean/std."""
    return np.asarray(scaled, dtype=np.float64) * std[:, None, :] + mean[:, None, :]


def feature_shares(sq_errors: np.ndarray) -> np.ndarray:
    """(m, W, F) squared errors -> (m, F) each feature's share (uniform where the error is 0)."""
    per = np.asarray(sq_errors, dtype=np.float64).sum(axis=1)
    total = per.sum(axis=1, keepdims=True)
    f = per.shape[1] if per.ndim == 2 else 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, per / np.where(total > 0, total, 1.0), 1.0 / max(f, 1))


def recent_share(step_errors: np.ndarray, steps: int) -> np.ndarray:
    """(m, W) step errors -> (m,) share of each window's error in its newest ``steps`` steps."""
    e = np.asarray(step_errors, dtype=np.float64)
    if e.shape[0] == 0:
        return np.empty(0)
    total = e.sum(axis=1)
    part = e[:, -steps:].sum(axis=1) if steps > 0 else np.zeros(e.shape[0])
    return np.where(total > 0, part / np.where(total > 0, total, 1.0), 0.0)


def error_steps(step_errors: np.ndarray, carry: float = CARRY_FRACTION) -> np.ndarray:
    """(m, W) step errors -> (m,) the fewest newest steps holding ``carry`` of the error.

    Example: errors [0, 0, 1, 3] -> 2 (the newest two hold 4 of 4; the newest one 3 of 4 < 0.8).
    """
    e = np.asarray(step_errors, dtype=np.float64)
    if e.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    total = e.sum(axis=1)
    newest_first = np.cumsum(e[:, ::-1], axis=1)
    reached = newest_first >= carry * total[:, None] * (1 - 1e-12)
    out = reached.argmax(axis=1) + 1
    return np.where(total > 0, out, 0).astype(np.int64)


def shape_stats(series: np.ndarray, recent: int, scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Shape of each window's raw series (m, W) of one feature.

    Args:
        series: (m, W) raw readings, oldest first.
        recent: how many newest step changes count as recent (at least 1, at most W - 2).
        scale: (m,) the sensor's standard deviation; floors the typical step change at
            ``TYPICAL_FLOOR_FRACTION`` of it. If not given, the floor is 1e-9.

    Returns:
        ``jump``, ``jump_ratio``, ``roughness``, ``flat_steps`` (see :class:`WindowDetails`).
    """
    x = np.asarray(series, dtype=np.float64)
    m, w = x.shape
    if m == 0 or w < 2:
        z = np.zeros(m)
        return {"jump": z, "jump_ratio": z.copy(), "roughness": z.copy(), "flat_steps": np.zeros(m, dtype=np.int64)}
    d = np.diff(x, axis=1)                                   # (m, W-1)
    r = int(min(max(recent, 1), max(d.shape[1] - 1, 1)))
    older = d[:, :-r] if d.shape[1] > r else d
    floor = 1e-9 if scale is None else np.maximum(TYPICAL_FLOOR_FRACTION * np.asarray(scale, dtype=np.float64), 1e-9)
    typical = np.maximum(np.median(np.abs(older), axis=1), floor)
    newest = d[:, -r:]
    pick = np.abs(newest).argmax(axis=1)
    jump = newest[np.arange(m), pick]
    roughness = np.median(np.abs(newest), axis=1) / typical
    tol = np.maximum(FLAT_FRACTION * typical, 1e-9 * np.maximum(1.0, np.abs(x[:, -1])))
    still = np.abs(d) <= tol[:, None]
    run = np.zeros(m, dtype=np.int64)
    flat = np.zeros(m, dtype=np.int64)
    for j in range(d.shape[1]):  # W-1 vector steps: the run of unchanged steps ending at j
        run = (run + 1) * still[:, j]
        np.maximum(flat, run, out=flat)
    return {"jump": jump, "jump_ratio": np.abs(jump) / typical, "roughness": roughness,
            "flat_steps": flat.astype(np.int64)}


def window_details(windows: np.ndarray, expected: np.ndarray, sq_errors: np.ndarray,
                   scale: np.ndarray | None = None, recent_steps: int = DEFAULT_RECENT_STEPS) -> WindowDetails:
    """Explanation inputs for a batch of windows.

    Args:
        windows: (m, W, F) raw readings.
        expected: (m, W, F) expected readings in the sensor's units (:func:`to_units` of the
            reconstruction, or a prediction).
        sq_errors: (m, W, F) squared errors as the score saw them (scaled units); their mean
            over features is scoring's step error.
        scale: (m, F) the sensor's standard deviation per feature (floors the typical step
            change); if not given, none.
        recent_steps: newest steps read as recent (the bundle's recent rule steps; if 0,
            ``DEFAULT_RECENT_STEPS``).
    """
    windows = np.asarray(windows, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    sq = np.asarray(sq_errors, dtype=np.float64)
    m, w, f = windows.shape
    recent = int(recent_steps) if recent_steps and recent_steps > 0 else DEFAULT_RECENT_STEPS
    shares = feature_shares(sq) if m else np.empty((0, f))
    top = shares.argmax(axis=1) if m else np.empty(0, dtype=np.int64)
    rows = np.arange(m)
    top_series = windows[rows, :, top] if m else np.empty((0, w))
    top_scale = None if scale is None else np.asarray(scale, dtype=np.float64).reshape(m, f)[rows, top]
    shape = shape_stats(top_series, recent, top_scale)
    step_err = sq.mean(axis=-1) if m else np.empty((0, w))
    observed, exp_new = windows[:, -1, :], expected[:, -1, :]
    return WindowDetails(
        observed=observed, expected=exp_new, feature_share=shares,
        recent_share=recent_share(step_err, min(recent, w)), error_steps=error_steps(step_err),
        top_feature=top.astype(np.int64), deviation=(observed - exp_new)[rows, top] if m else np.empty(0),
        jump=shape["jump"], jump_ratio=shape["jump_ratio"], roughness=shape["roughness"],
        flat_steps=shape["flat_steps"], window_steps=w, recent_steps=min(recent, w))
