"""Where a retraining window comes from: a store's scores (what the deploy job wrote) or a
history file, plus the store's incidents, mutes and sensor registry for the exclusion rules.

Every reader returns a :class:`WindowData` whose ``readings`` have ``sensor_id`` (text),
``event_time`` (UTC), the feature columns (float) and, from a store, ``flagged`` (the serving
model's flag: not a label, it only marks stray alarms) or, from a history file, its label column
(``data.label_field``); sorted by
sensor and time, one row per (sensor, time), cleaned like training history (null, unparsable
and out-of-range readings and duplicates counted and dropped).
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sentinel.config import Settings
from sentinel.lifecycle.registry import LifecycleError

log = logging.getLogger("sentinel.retrain")
FLAG_COL = "flagged"  # the serving model's flag on a stored score (never a label)


@dataclass
class WindowData:
    readings: pd.DataFrame                    # sensor_id, event_time, features [, flagged] [, label]
    incidents: pd.DataFrame | None = None     # store incident records (label, sensors, opened_at ...)
    mutes: pd.DataFrame | None = None         # store mute records
    zones: dict = field(default_factory=dict)  # sensor_id -> zone (sensor registry)
    source: str = ""                          # what was read, for the manifest's lineage
    cleaning: dict = field(default_factory=dict)


def clean_readings(frame: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, dict]:
    """Readings in the data's own column names -> ``sensor_id``, ``event_time``, features (+ the
    label column ``data.label_field`` when present), and the cleaning counts (the same reasons
    as ``stream.history.load_clean``: null or unparsable, out of range, duplicates)."""
    d = settings.data
    feats = list(d.features)
    missing = [c for c in [d.time_field, *feats] if c not in frame]
    if missing:
        raise LifecycleError(f"the history has no column(s) {', '.join(missing)} (it has {', '.join(map(str, frame.columns))}): "
                             f"set data.time_field / data.features to match it")
    col = frame[d.time_field]
    times = (pd.to_datetime(col, unit="ms", utc=True, errors="coerce") if pd.api.types.is_numeric_dtype(col)
             else pd.to_datetime(col, utc=True, errors="coerce", format="mixed"))
    out = pd.DataFrame({"sensor_id": frame[d.sensor_field].astype(str) if d.sensor_field in frame else "sensor",
                        "event_time": times})
    for f in feats:
        out[f] = pd.to_numeric(frame[f], errors="coerce")
    if d.label_field in frame and d.label_field not in out:
        out[d.label_field] = pd.to_numeric(frame[d.label_field], errors="coerce").fillna(0).astype(np.int8)
    bad = out["event_time"].isna().to_numpy() | ~np.isfinite(out[feats].to_numpy(dtype=np.float64)).all(axis=1)
    if d.sensor_field in frame:
        bad |= frame[d.sensor_field].isna().to_numpy()
    vals = out[feats].to_numpy(dtype=np.float64)
    out_of_range = ~bad & ((vals < d.valid_min) | (vals > d.valid_max)).any(axis=1)
    kept = out[~bad & ~out_of_range]
    deduped = kept.drop_duplicates(["sensor_id", "event_time"], keep="first")
    counts = {"rows_read": int(len(frame)), "null_or_unparsable": int(bad.sum()),
              "out_of_range": int(out_of_range.sum()), "duplicates": int(len(kept) - len(deduped)),
              "rows_kept": int(len(deduped))}
    return deduped.sort_values(["sensor_id", "event_time"]).reset_index(drop=True), counts


def scores_to_readings(scores: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Score records (``sensor_id, event_time, values`` JSON, ``is_anomaly`` ...) -> one row per
    reading with its feature columns and ``flagged`` (the record's ``is_anomaly``). A reading
    scored by two versions (a replay across a model switch) appears once: its values are the same."""
    if scores.empty:
        return pd.DataFrame(columns=["sensor_id", "event_time", *features, FLAG_COL])
    vals = [json.loads(v) if isinstance(v, str) else (v or {}) for v in scores["values"]]
    out = pd.DataFrame({"sensor_id": scores["sensor_id"].astype(str).to_numpy(),
                        "event_time": pd.to_datetime(scores["event_time"], utc=True).to_numpy()})
    out["event_time"] = pd.to_datetime(out["event_time"], utc=True)
    for f in features:
        out[f] = pd.to_numeric(pd.Series([v.get(f) for v in vals]), errors="coerce").to_numpy()
    flags = scores["is_anomaly"] if "is_anomaly" in scores else pd.Series(False, index=scores.index)
    out[FLAG_COL] = pd.to_numeric(flags, errors="coerce").fillna(0).astype(np.int8).to_numpy()
    # a replayed reading may be flagged by one version and not the other: keep the flag
    out = out.sort_values(["sensor_id", "event_time", FLAG_COL], ascending=[True, True, False])
    return out.drop_duplicates(["sensor_id", "event_time"], keep="first").reset_index(drop=True)


def read_history(path: str, settings: Settings) -> WindowData:
    """A history file or folder (CSV, Parquet, JSON lines; local or ``s3://``) -> WindowData.

    An ``s3://`` prefix is downloaded to a temporary folder first (every Parquet/CSV/JSON
    object under it). A label column (``data.label_field``) is kept for the exclusion rules.
    """
    from sentinel.ingest.history import read_table
    from sentinel.store.storage import download_prefix, is_s3_url
    if is_s3_url(path):
        with tempfile.TemporaryDirectory(prefix="sentinel-history-") as tmp:
            try:
                local = download_prefix(path, tmp)
            except FileNotFoundError:
                raise LifecycleError(f"no objects under {path}: check the --history URL") from None
            files = sorted(p for p in Path(local).rglob("*") if p.is_file() and not p.name.startswith("."))
            frames = [read_table(str(p)) for p in files if p.suffix in (".parquet", ".pq", ".csv", ".jsonl", ".json")]
            if not frames:
                raise LifecycleError(f"{path} holds no .parquet, .csv or .jsonl file: point --history at readings")
            raw = pd.concat(frames, ignore_index=True)
    else:
        if not Path(path).exists():
            raise LifecycleError(f"history {path} does not exist: pass --history with a readings file "
                                 f"or folder, or --store to read the deploy job's scores")
        raw = read_table(path)
    readings, counts = clean_readings(raw, settings)
    return WindowData(readings, source=str(path), cleaning=counts)


def read_store(url, settings: Settings, since: pd.Timestamp | None, until: pd.Timestamp | None,
               scores: bool = True) -> WindowData:
    """A store's scores (as readings), incidents, mutes and sensor zones between ``since``
    (inclusive) and ``until`` (exclusive), through the store API (``store.client.open_store``).

    ``scores=False`` reads only the incidents, mutes and zones (labels for a ``--history`` window).
    """
    from sentinel.store.client import open_store
    client = open_store(url, settings)  # a URL or a store.query.Store
    zones = _zones(client)
    name = url if isinstance(url, str) else url.describe()
    data = WindowData(pd.DataFrame(), source=name)
    if scores:
        raw = store_scores(client, since, until, extra_sensors=list(zones))
        if raw.empty:
            raise LifecycleError(f"store {name} holds no scores between {since} and {until}: the deploy job writes "
                                 f"them with sinks.write_scores = true, or pass --history with readings")
        readings = scores_to_readings(raw, list(settings.data.features))
        feats = list(settings.data.features)
        ok = np.isfinite(readings[feats].to_numpy(dtype=np.float64)).all(axis=1)
        data.readings = readings[ok].reset_index(drop=True)
        data.cleaning = {"rows_read": int(len(raw)), "null_or_unparsable": int((~ok).sum()),
                         "duplicates": int(len(raw) - len(readings)), "rows_kept": int(ok.sum())}
    data.incidents = store_incidents(client, since, until)
    data.mutes = _call(client, "mutes")
    data.zones = zones
    return data


def store_scores(client, since, until, extra_sensors: list[str] = ()) -> pd.DataFrame:
    """Score records in [since, until) of every sensor the store knows (``sensor_states``) and
    of ``extra_sensors`` (the registry's), read one sensor at a time through ``series`` (paged
    back in time when a sensor has more rows than one call returns)."""
    from sentinel.store.client import SERIES_CAP
    from sentinel.store.errors import NotFound
    states = _call(client, "sensor_states")
    sensors = [] if states is None or states.empty else states["sensor_id"].astype(str).tolist()
    parts = []
    for sid in sorted(set(sensors) | {str(s) for s in extra_sensors}):
        end = until
        while True:
            try:
                part = client.series(sid, since, end, SERIES_CAP)
            except NotFound:  # in the registry, never scored
                break
            if part is None or part.empty:
                break
            parts.append(part)
            if len(part) < SERIES_CAP:
                break
            end = pd.Timestamp(part["event_time"].min())  # the newest rows came first: page back
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def store_incidents(client, since, until) -> pd.DataFrame | None:
    """Incidents overlapping [since, until) (every status, muted or not), with their labels."""
    from sentinel.store.client import INCIDENT_LIST_CAP, IncidentFilters
    frames, offset = [], 0
    while True:  # the API caps each call: read page by page
        part = client.incidents(IncidentFilters(since=since, until=until, limit=INCIDENT_LIST_CAP, offset=offset))
        if part is None or part.empty:
            break
        frames.append(part)
        if len(part) < INCIDENT_LIST_CAP:
            break
        offset += len(part)
    return pd.concat(frames, ignore_index=True) if frames else None


def _zones(client) -> dict:
    reg = _call(client, "sensors")
    if reg is None or reg.empty or "zone" not in reg:
        return {}
    return {str(s): (z if isinstance(z, str) else None) for s, z in zip(reg["sensor_id"], reg["zone"])}


def _call(client, name: str):
    fn = getattr(client, name, None)
    return fn() if callable(fn) else None
