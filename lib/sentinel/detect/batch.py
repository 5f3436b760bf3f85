"""Batch scoring: a table of readings cut into windows and scored exactly as the stream does.

``table_windows`` cuts every sensor's windows with ``windows.assemble_many`` (the stream's
window state calls the same function) and ``score_table`` scores them with ``scoring``.
Used by ``sentinel score``/``evaluate``, the quality benchmark and the tests that compare
streamed with batch scores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sentinel.config import ConfigError, Settings


def table_windows(frame: pd.DataFrame, settings: Settings, features: list[str], length: int,
                  max_gap_s: int) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """An input table's windows, as the streaming job cuts them (``windows.assemble_many``).

    Returns the output frame's base columns (sensor_id, timestamp, features; one row per input
    row) and ``(windows, window_times, sensor_ids, rows)``: every window with the input row it
    scores, sorted by sensor and then event time. Rows with a bad time or value, and the first
    W-1 readings of a sensor (or after a gap), have no window.
    """
    from sentinel.detect.windows import NO_TIME, NS_PER_S, assemble_many
    d = settings.data
    missing = [c for c in [d.time_field] + features if c not in frame]
    if missing:
        raise ConfigError(f"input lacks column(s) {', '.join(missing)}: pass --time-col/--features to match it")
    sensors = frame[d.sensor_field].astype(str) if d.sensor_field in frame else pd.Series("sensor", index=frame.index)
    times = _to_utc(frame[d.time_field])
    values = frame[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    ok_rows = np.nonzero(times.notna().to_numpy() & np.isfinite(values).all(axis=1))[0]
    t_ns = times.astype("int64").to_numpy()
    # All sensors in one call, as the stream assembles a bucket (sorted codes: windows come
    # out by sensor id, then event time).
    codes, ids = pd.factorize(sensors.to_numpy()[ok_rows], sort=True)
    none = np.empty(0, dtype=np.int64)
    res = assemble_many(codes, t_ns[ok_rows], values[ok_rows], none, none, np.empty((0, len(features))),
                        np.full(len(ids), NO_TIME, dtype=np.int64), length, max_gap_s * NS_PER_S)
    has = np.nonzero(res.window_row >= 0)[0]
    has = has[np.argsort(res.window_row[has])]  # window order: sensor, then event time
    base = pd.DataFrame({"sensor_id": sensors.to_numpy(), "timestamp": times.dt.strftime("%Y-%m-%dT%H:%M:%SZ")})
    for i, f in enumerate(features):
        base[f] = values[:, i]
    return base, (res.windows, res.window_times, np.asarray(ids, dtype=object)[codes[has]], ok_rows[has])


def score_table(bundle, frame: pd.DataFrame, settings: Settings, details: bool = False) -> pd.DataFrame:
    """One row per input row: sensor_id, timestamp, features, score, threshold, is_anomaly.

    Windows come from ``table_windows`` (``windows.assemble``), scores and flags from
    ``scoring.score_windows`` and ``scoring.flag``, exactly as in the streaming UDF; rows without a full window get no score and is_anomaly 0. With
    ``threshold.persistence_n`` > 1, is_anomaly is the alarm of ``scoring.persist_groups``: at
    least m of the sensor's last n scored windows (event-time order) flagged.

    ``details=True`` scores with ``scoring.score_details`` instead (the same scores, one model
    call) and adds its explanation columns (``explain.detail_columns``: ``expected_<feature>``,
    ``share_<feature>``, ``recent_share``, ``error_steps``, ``top_feature``, ``deviation``,
    ``jump``, ``jump_ratio``, ``roughness``, ``flat_steps``), empty where a row has no window.
    Off by default: the output is then unchanged.
    """
    from sentinel.detect import scoring
    from sentinel.detect.explain import detail_columns
    out, (w, wt, sids, rows) = table_windows(frame, settings, bundle.features, bundle.length,
                                             int(bundle.manifest["window"]["max_gap_s"]))
    n = len(frame)
    score = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    flags = np.zeros(n, dtype=np.int8)
    extra = None
    if len(rows):
        if details:
            d = scoring.score_details(bundle, w, wt, sids)
            sc, extra = d.scores, d.explain.frame(bundle.features)
        else:
            sc = scoring.score_windows(bundle, w, wt, sids)
        th, fl = scoring.flag(bundle, sc, sids)
        p = settings.threshold
        if p.persistence_n > 1:
            fl, _ = scoring.persist_groups(fl, sids, p.persistence_m, p.persistence_n)
        score[rows], threshold[rows], flags[rows] = sc, th, fl
    out["score"], out["threshold"], out["is_anomaly"] = score, threshold, flags
    if details:
        for col in detail_columns(bundle.features):
            if col == "top_feature":
                values = np.full(n, None, dtype=object)
            else:
                values = np.full(n, np.nan)
            if extra is not None:
                values[rows] = extra[col].to_numpy()
            out[col] = values
    return out


def _to_utc(col: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col):
        return pd.to_datetime(col, unit="ms", utc=True, errors="coerce")
    return pd.to_datetime(col, utc=True, errors="coerce", format="mixed")
