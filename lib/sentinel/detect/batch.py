"""Batch scoring: a table of readings cut into windows and scored exactly as the stream does.

``table_windows`` cuts every sensor's windows with ``windows.assemble_many`` (the stream's
window state calls the same function) and ``score_table`` scores them with ``scoring``. Zone
(network) bundles align the readings of each zone per time step instead (``zone_windows``:
``align.align`` with ``flush=True``, the function the stream's zone window state calls).
Used by ``sentinel score``/``evaluate``, the quality benchmark and the tests that compare
streamed with batch scores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sentinel.config import ConfigError, Settings


def table_windows(frame: pd.DataFrame, settings: Settings, features: list[str], length: int,
                  max_gap_s: float) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
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
                        np.full(len(ids), NO_TIME, dtype=np.int64), length, int(round(max_gap_s * NS_PER_S)))
    has = np.nonzero(res.window_row >= 0)[0]
    has = has[np.argsort(res.window_row[has])]  # window order: sensor, then event time
    base = pd.DataFrame({"sensor_id": sensors.to_numpy(), "timestamp": times.dt.strftime("%Y-%m-%dT%H:%M:%SZ")})
    for i, f in enumerate(features):
        base[f] = values[:, i]
    return base, (res.windows, res.window_times, np.asarray(ids, dtype=object)[codes[has]], ok_rows[has])


def zone_windows(frame: pd.DataFrame, settings: Settings, bundle):
    """A table's zone windows, as the stream aligns them (``align.align``, everything flushed).

    Returns the output frame's base columns (as :func:`table_windows`) and the ``Aligned``
    result, whose ``status``/``zone``/``member``/``row`` are per input row (-1 rows for readings
    with a bad time or value).
    """
    from sentinel.detect.align import UNKNOWN, Aligned, align
    from sentinel.detect.windows import NS_PER_S
    d = settings.data
    feats = bundle.features
    missing = [c for c in [d.time_field] + feats if c not in frame]
    if missing:
        raise ConfigError(f"input lacks column(s) {', '.join(missing)}: pass --time-col/--features to match it")
    sensors = frame[d.sensor_field].astype(str) if d.sensor_field in frame else pd.Series("sensor", index=frame.index)
    times = _to_utc(frame[d.time_field])
    values = frame[feats].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    ok = np.nonzero(times.notna().to_numpy() & np.isfinite(values).all(axis=1))[0]
    t_ns = times.astype("int64").to_numpy()
    wd = bundle.manifest["window"]
    al = align(sensors.to_numpy()[ok], t_ns[ok], values[ok, 0], None, bundle.layout,
               int(round(float(wd["interval_s"]) * NS_PER_S)), int(wd.get("wait_slots", 2)), bundle.length,
               int(round(float(wd["max_gap_s"]) * NS_PER_S)), flush=True)
    n = len(frame)
    full = Aligned(np.full(n, UNKNOWN, dtype=np.int8), np.full(n, None, dtype=object), np.full(n, -1, dtype=np.int64),
                   np.full(n, -1, dtype=np.int64), al.zones, al.state)
    full.status[ok], full.zone[ok], full.member[ok], full.row[ok] = al.status, al.zone, al.member, al.row
    base = pd.DataFrame({"sensor_id": sensors.to_numpy(), "timestamp": times.dt.strftime("%Y-%m-%dT%H:%M:%SZ")})
    for i, f in enumerate(feats):
        base[f] = values[:, i]
    return base, full


def _score_zones(bundle, frame: pd.DataFrame, settings: Settings, details: bool):
    """Zone bundles: (base frame, rows, scores, sensor ids, explanation frame or None), rows = the
    input rows that were real at an emitted window (each scored once, as its member)."""
    from sentinel.detect import scoring
    from sentinel.detect.align import ALIGNED
    out, al = zone_windows(frame, settings, bundle)
    rows_all, sc_all, sid_all, extra_all, t_all = [], [], [], [], []
    for z, zw in sorted(al.zones.items()):
        zones = np.full(len(zw), z, dtype=object)
        if details:
            d = scoring.score_details(bundle, zw.windows, zw.window_times, zones)
            sc, extra = d.scores, d.explain.frame(bundle.features)
        else:
            sc, extra = scoring.score_windows(bundle, zw.windows, zw.window_times, zones), None
        s_n = zw.windows.shape[2]
        pick = np.nonzero((al.status == ALIGNED) & (al.zone == z))[0]
        flat = al.row[pick] * s_n + al.member[pick]
        rows_all.append(pick)
        sc_all.append(sc[flat])
        sid_all.append(np.asarray(bundle.layout.zones[z], dtype=object)[al.member[pick]])
        t_all.append(zw.window_times[al.row[pick], -1])
        if extra is not None:
            extra_all.append(extra.iloc[flat].reset_index(drop=True))
    if not rows_all:
        return out, np.empty(0, np.int64), np.empty(0), np.empty(0, object), None
    rows = np.concatenate(rows_all)
    sc, sids, t = np.concatenate(sc_all), np.concatenate(sid_all), np.concatenate(t_all)
    order = np.lexsort((t, sids))        # by sensor, then time: persistence reads each sensor in order
    extra = pd.concat(extra_all, ignore_index=True).iloc[order].reset_index(drop=True) if extra_all else None
    return out, rows[order], sc[order], sids[order], extra


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

    Zone (network) bundles score each reading that was real at its zone's emitted time step
    (``zone_windows``); residual bundles with drift tracking carry one tracker through the
    whole table (each sensor's windows in event-time order), as the stream carries it.
    """
    from sentinel.detect import scoring
    from sentinel.detect.explain import detail_columns
    n = len(frame)
    score = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    flags = np.zeros(n, dtype=np.int8)
    extra = None
    if bundle.layout is not None:
        out, rows, sc, sids, extra = _score_zones(bundle, frame, settings, details)
    else:
        out, (w, wt, sids, rows) = table_windows(frame, settings, bundle.features, bundle.length,
                                                 float(bundle.manifest["window"]["max_gap_s"]))
        if len(rows):
            drift = bundle.model.new_drift() if scoring.is_residual(bundle) else None
            kw = {"drift": drift} if drift is not None else {}
            if details:
                d = scoring.score_details(bundle, w, wt, sids, **kw)
                sc, extra = d.scores, d.explain.frame(bundle.features)
            else:
                sc = scoring.score_windows(bundle, w, wt, sids, **kw)
    if len(rows):
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
