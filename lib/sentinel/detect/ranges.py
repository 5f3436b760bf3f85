"""Valid reading ranges per feature: learned from the training data unless configured.

A valid range is a plausibility check (logger garbage: -9999, 65535, unit mix-ups), not anomaly
detection: readings outside it are rejected and never scored, so a range learned too tight would
turn real anomalies (a 30 V sag, a cavitating inlet) into rejects nobody looks at. Learned
ranges are therefore deliberately wide::

    lo = q_lo - h,   hi = q_hi + h,   h = max(span_factor * (q_hi - q_lo), level_factor * |median|)

with ``q_lo``/``q_hi`` the ``trim`` and ``1 - trim`` quantiles (0.5 %) of the finite training
values, so that a few garbage readings in the history cannot stretch the range that then
cleans that same history. With the defaults a 235 +- 3 V supply gets about [0, 470] V, a
2.0 bar inlet [0, 4] bar, a 1450 rpm speed [0, 2900] rpm, a 40 m pressure [-1, 83] m.

``data.valid_ranges = { supply_voltage = [180, 260] }`` configures a feature's range (it wins
over the learned one; ``"auto"`` for one side keeps that side learned). The bundle records the
ranges in ``manifest["valid_ranges"]``. Pure numpy.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

SPAN_FACTOR = 5.0
LEVEL_FACTOR = 1.0
TRIM = 0.005
AUTO = "auto"  # a configured side that stays learned


def _bound(v) -> float | None:
    if v is None or (isinstance(v, str) and v.strip().lower() in (AUTO, "")):
        return None
    return float(v)


def parse_configured(configured: Mapping[str, object] | None) -> dict[str, tuple[float | None, float | None]]:
    """``data.valid_ranges`` values (``[lo, hi]`` lists, or their text) -> ``{feature: (lo, hi)}``.

    Raises:
        ValueError: a value is not two numbers (or ``"auto"``); the message names the feature.
    """
    out: dict[str, tuple[float | None, float | None]] = {}
    for name, value in (configured or {}).items():
        v = value
        if isinstance(v, str):
            import json
            try:
                v = json.loads(v)
            except ValueError:
                v = [p.strip().strip("'\"") for p in v.strip("[]() ").split(",")]
        try:
            lo, hi = (_bound(x) for x in v)
        except (TypeError, ValueError):
            raise ValueError(f"data.valid_ranges.{name} must be [lo, hi] (numbers, or \"auto\" for a learned "
                             f"side), got {value!r}: fix it in the config") from None
        out[str(name)] = (lo, hi)
    return out


def valid_ranges(train_values: np.ndarray, features: Sequence[str],
                 configured: Mapping[str, object] | None = None, span_factor: float = SPAN_FACTOR,
                 level_factor: float = LEVEL_FACTOR, trim: float = TRIM) -> dict[str, tuple[float, float]]:
    """Per-feature ``(lo, hi)`` valid range.

    Args:
        train_values: (n, F) training readings (non-finite values are ignored).
        features: the F feature names, in column order.
        configured: optional ``{feature: [lo, hi]}`` (``data.valid_ranges``); a configured bound
            wins over the learned one, ``None``/``"auto"`` for one side keeps it learned.
        span_factor, level_factor: widening of the learned range (module docstring).
        trim: share of the training values ignored at either end (0 = min/max).

    Raises:
        ValueError: a feature has no finite training value and no configured range, a configured
            range names an unknown feature or is empty; the message names the feature and the fix.
    """
    x = np.asarray(train_values, dtype=np.float64).reshape(-1, len(features))
    conf = parse_configured(configured)
    unknown = sorted(set(conf) - set(features))
    if unknown:
        raise ValueError(f"data.valid_ranges names unknown feature(s) {', '.join(unknown)}: "
                         f"use one of {', '.join(features)}")
    out: dict[str, tuple[float, float]] = {}
    for j, name in enumerate(features):
        col = x[:, j][np.isfinite(x[:, j])]
        lo_c, hi_c = conf.get(name, (None, None))
        if col.size:
            lo_v, hi_v = (float(v) for v in np.quantile(col, [trim, 1 - trim]))
            h = max(span_factor * (hi_v - lo_v), level_factor * abs(float(np.median(col))))
            if h == 0.0:  # a constant channel at zero: allow +-1 unit
                h = 1.0
            lo, hi = lo_v - h, hi_v + h
        elif lo_c is None or hi_c is None:
            raise ValueError(f"feature {name} has no finite training value to learn a valid range from: "
                             f"configure data.valid_ranges.{name} = [lo, hi] or fix the data")
        else:
            lo = hi = float("nan")
        lo = float(lo_c) if lo_c is not None else lo
        hi = float(hi_c) if hi_c is not None else hi
        if not lo < hi:
            raise ValueError(f"valid range of {name} is empty ([{lo:g}, {hi:g}]): configure "
                             f"data.valid_ranges.{name} with lo < hi")
        out[name] = (lo, hi)
    return out


def in_range(values: np.ndarray, features: Sequence[str], ranges: Mapping[str, Sequence[float]]) -> np.ndarray:
    """(n, F) readings -> (n,) True where every feature is finite and inside its range."""
    x = np.asarray(values, dtype=np.float64).reshape(-1, len(features))
    lo = np.array([float(ranges[f][0]) for f in features])
    hi = np.array([float(ranges[f][1]) for f in features])
    return (np.isfinite(x) & (x >= lo) & (x <= hi)).all(axis=1)


def clean_frame(frame: pd.DataFrame, features: Sequence[str], configured: Mapping[str, object] | None = None,
                ranges: Mapping[str, Sequence[float]] | None = None) -> tuple[pd.DataFrame, dict, int]:
    """Drop rows outside the valid ranges: ``(kept frame, ranges, rows dropped)``.

    ``ranges`` if given (already learned), else learned from ``frame`` with ``configured``.
    """
    feats = list(features)
    values = frame[feats].to_numpy(dtype=np.float64)
    if ranges is None:
        ranges = valid_ranges(values, feats, configured)
    ok = in_range(values, feats, ranges)
    kept = frame if ok.all() else frame[ok].reset_index(drop=True)
    return kept, {f: [float(ranges[f][0]), float(ranges[f][1])] for f in feats}, int((~ok).sum())
