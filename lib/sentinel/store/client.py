"""The store API for readers and operators: one client per store kind behind one interface.

:func:`open_store` takes a store URL (``sqlite:///``, ``postgresql://``, ``s3://``, see
``store.query``), a :class:`~sentinel.store.query.Store` or None (the first of
``sinks.enabled``) and returns a :class:`StoreClient`:

- reads (every store): ``anomalies``, ``incidents``, ``incident``, ``sensors``,
  ``sensor_states``, ``series``, ``stats``, ``health``, ``mutes``;
- operator writes (SQLite and PostgreSQL; S3 raises :class:`StoreError`): ``acknowledge``,
  ``close``, ``label``, ``add_mute``. Each checks the command with the incident rules (the
  ``rules`` given to :func:`open_store`: ``sentinel.incidents.lifecycle``, which sits above the
  store and so is handed in rather than imported), then writes the change and its audit row in
  one transaction that holds the incident's row lock; a rejected command changes nothing.

Frames come out in one shape whatever the store: times as UTC timestamps, JSON fields
(``values``, ``expected``, ``sensors``) as canonical JSON text, booleans as bool. Every query
binds its values as parameters. Errors: :class:`ConfigError` for bad input (filters, times,
labels, windows), :class:`NotFound` for an unknown incident, sensor or zone,
:class:`StoreError` for the store itself; each one sentence.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from sentinel.config import ConfigError, Settings
from sentinel.store.errors import NotFound, StoreError
from sentinel.store.query import Filters, Store, default_store, parse_store
from sentinel.store.sinks.base import (BATCH_COLUMNS, INCIDENT_ACTION_COLUMNS, INCIDENT_COLUMNS, MUTE_COLUMNS,
                                       SCORE_COLUMNS, STATUS_RANK, STATUSES)

__all__ = ["IncidentFilters", "StoreClient", "open_store", "StoreError", "NotFound", "INCIDENT_LIST_CAP",
           "SENSOR_STATE_COLUMNS", "STATS_COLUMNS"]

INCIDENT_LIST_CAP = 1000          # incidents per call at most: page with offset
INCIDENT_LIST_DEFAULT = 100
SERIES_CAP = 100_000              # score rows per series() call at most
SERIES_DEFAULT = 10_000
STATS_MAX_DAYS = 31               # stats() covers at most this range
STD_WINDOW = pd.Timedelta(days=30)
SENSOR_STATE_COLUMNS = ["sensor_id", "zone", "last_event_time", "last_values", "last_score", "threshold",
                        "last_severity", "model_version", "in_open_incident", "open_incident_id", "muted", "silent"]
STATS_COLUMNS = ["sensor_id", "hour", "readings", "mean", "std_30d", "anomalies", "incidents"]
INCIDENT_TIMES = ("opened_at", "last_seen", "closed_at", "detected_at", "updated_at", "acknowledged_at", "labelled_at")
OPERATOR_WRITABLE = {"status", "acknowledged_by", "acknowledged_at", "closed_by", "label", "labelled_by",
                     "labelled_at", "comment"}


class Rules(Protocol):
    """What the operator writes need from ``sentinel.incidents.lifecycle`` (pure checks)."""

    def plan_action(self, incident_id, record, action, actor, label=None, comment=None, at=None): ...

    def validate_mute(self, sensor_id, zone, starts_at, ends_at, reason="", actor="", known_sensors=None,
                      known_zones=None): ...


@dataclass(frozen=True)
class IncidentFilters:
    """Which incidents :meth:`StoreClient.incidents` returns (newest opened first).

    Attributes:
        sensors: only incidents involving one of these sensors (any rank in ``sensors``).
        zone: only this zone.
        since, until: only incidents whose ``opened_at .. last_seen`` overlaps ``[since, until)``.
        min_severity: peak severity at least this.
        status, kind: only these (a string or a tuple of them).
        muted: True / False for muted / not muted only; None for both.
        limit: at most this many (1 .. INCIDENT_LIST_CAP; default 100).
        offset: skip this many first (pagination).
    """

    sensors: tuple[str, ...] = ()
    zone: str | None = None
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    min_severity: float | None = None
    status: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    muted: bool | None = None
    limit: int = INCIDENT_LIST_DEFAULT
    offset: int = 0

    def __post_init__(self):
        for name in ("sensors", "status", "kind"):
            v = getattr(self, name)
            object.__setattr__(self, name, (v,) if isinstance(v, str) else tuple(v or ()))
        for name in ("since", "until"):
            object.__setattr__(self, name, utc(getattr(self, name), name))
        bad = [s for s in self.status if s not in STATUS_RANK]
        if bad:
            raise ConfigError(f"unknown incident status {bad[0]!r}: use one of {', '.join(STATUSES)}")
        if not isinstance(self.limit, int) or not 1 <= self.limit <= INCIDENT_LIST_CAP:
            raise ConfigError(f"incident limit {self.limit!r} is outside 1..{INCIDENT_LIST_CAP}: "
                              "ask for fewer and page with offset")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise ConfigError(f"incident offset {self.offset!r} is negative: give 0 or more")
        check_range(self.since, self.until)


def utc(t, what: str = "time") -> pd.Timestamp | None:
    """A time (Timestamp, datetime, ISO text) -> UTC Timestamp; naive means UTC. None stays None."""
    if t is None or (not isinstance(t, str) and pd.isna(t)):
        return None
    try:
        ts = pd.Timestamp(t)
    except (ValueError, TypeError):
        raise ConfigError(f"{what} {t!r} is not a time: give ISO-8601 such as 2026-03-25T16:00:00Z") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def check_range(since, until) -> None:
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"since ({since}) is not before until ({until}): swap them")


# ---------------------------------------------------------------- one shape for every store
def canonical_json(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    obj = json.loads(v) if isinstance(v, (str, bytes)) else v
    return json.dumps(obj, sort_keys=True)


def _times(col) -> pd.Series:
    return pd.to_datetime(pd.Series(col, dtype=object), utc=True, format="mixed").dt.floor("us")


def _opt_text(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v)


def incident_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Stored incident rows -> INCIDENT_COLUMNS, normalised (operator columns null when absent)."""
    out = pd.DataFrame({c: (frame[c].to_numpy() if c in frame else [None] * len(frame)) for c in INCIDENT_COLUMNS},
                       index=range(len(frame)))
    for c in INCIDENT_TIMES:
        out[c] = _times(out[c])
    out["sensors"] = [canonical_json(v) or "[]" for v in out["sensors"]]
    out["peak_severity"] = out["peak_severity"].astype(float)
    for c in ("readings", "batch_id"):
        out[c] = out[c].astype("int64")
    out["muted"] = pd.Series([bool(v) for v in out["muted"]], index=out.index, dtype=bool)
    for c in ("incident_id", "kind", "status", "first_sensor", "model_version"):
        out[c] = out[c].astype(str)
    for c in ("zone", "explanation", "acknowledged_by", "closed_by", "label", "labelled_by", "comment"):
        out[c] = [_opt_text(v) for v in out[c]]
    return out


def score_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({c: (frame[c].to_numpy() if c in frame else [None] * len(frame)) for c in SCORE_COLUMNS},
                       index=range(len(frame)))
    out["event_time"] = _times(out["event_time"])
    for c in ("score", "threshold", "severity"):
        out[c] = out[c].astype(float)
    out["is_anomaly"] = pd.Series([bool(v) for v in out["is_anomaly"]], index=out.index, dtype=bool)
    out["values"] = [canonical_json(v) for v in out["values"]]
    out["expected"] = [canonical_json(v) for v in out["expected"]]
    out["sensor_id"] = out["sensor_id"].astype(str)
    out["model_version"] = out["model_version"].astype(str)
    out["batch_id"] = out["batch_id"].astype("int64")
    return out


def mute_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({c: (frame[c].to_numpy() if c in frame else [None] * len(frame)) for c in MUTE_COLUMNS},
                       index=range(len(frame)))
    for c in ("starts_at", "ends_at", "created_at"):
        out[c] = _times(out[c])
    for c in ("sensor_id", "zone"):
        out[c] = [_opt_text(v) for v in out[c]]
    return out.sort_values(["starts_at", "mute_id"], kind="stable").reset_index(drop=True)


def action_records(frame: pd.DataFrame) -> list[dict]:
    out = pd.DataFrame({c: (frame[c].to_numpy() if c in frame else [None] * len(frame))
                        for c in INCIDENT_ACTION_COLUMNS}, index=range(len(frame)))
    out["at"] = _times(out["at"])
    recs = []
    for r in out.to_dict("records"):
        r["action_id"] = int(r["action_id"])
        r["label"], r["comment"] = _opt_text(r["label"]), _opt_text(r["comment"])
        recs.append(r)
    return recs


def batch_dict(row: dict) -> dict:
    """A stored batch row -> plain Python values (ints, float, str, UTC Timestamps or None)."""
    out = {}
    for c in BATCH_COLUMNS:
        v = row.get(c)
        if c in ("written_at", "max_event_time"):
            out[c] = None if v is None or pd.isna(v) else utc(v)
        elif c == "model_version":
            out[c] = str(v)
        elif c == "duration_s":
            out[c] = float(v)
        else:
            out[c] = int(v)
    return out


def incident_dict(row: dict, actions: list[dict]) -> dict:
    """One incident as a dict: ``sensors`` parsed into a list, ``actions`` (oldest first) added."""
    d = dict(row)
    d["sensors"] = json.loads(d["sensors"]) if d.get("sensors") else []
    for k in INCIDENT_TIMES:
        d[k] = None if pd.isna(d[k]) else d[k]
    d["actions"] = actions
    return d


def sensors_of(sensors_json: str) -> list[str]:
    try:
        return [str(s.get("sensor_id")) for s in json.loads(sensors_json or "[]") if isinstance(s, dict)]
    except (ValueError, TypeError):
        return []


def sort_incidents(frame: pd.DataFrame) -> pd.DataFrame:
    """Newest opened first, ties by id in code-point order (as ORDER BY ... COLLATE "C")."""
    keys = list(zip((-pd.to_datetime(frame["opened_at"], utc=True).astype("int64")).tolist(),
                    frame["incident_id"].astype(str).tolist()))
    return frame.iloc[sorted(range(len(keys)), key=keys.__getitem__)].reset_index(drop=True)


def filter_incidents(frame: pd.DataFrame, f: IncidentFilters) -> pd.DataFrame:
    """IncidentFilters applied in pandas (the S3 store; the SQL stores do it in SQL)."""
    keep = pd.Series(True, index=frame.index)
    if f.status:
        keep &= frame["status"].isin(f.status)
    if f.kind:
        keep &= frame["kind"].isin(f.kind)
    if f.zone is not None:
        keep &= frame["zone"].map(lambda z: z == f.zone)
    if f.muted is not None:
        keep &= frame["muted"] == bool(f.muted)
    if f.min_severity is not None:
        keep &= frame["peak_severity"] >= float(f.min_severity)
    if f.since is not None:
        keep &= frame["last_seen"] >= f.since
    if f.until is not None:
        keep &= frame["opened_at"] < f.until
    if f.sensors:
        wanted = set(f.sensors)
        keep &= frame["sensors"].map(lambda s: bool(wanted & set(sensors_of(s))))
    return frame[keep.to_numpy()]


def merge_versions(frame: pd.DataFrame) -> pd.DataFrame:
    """Many stored versions of each incident (S3: one per batch) -> the newest batch's version,
    status merged by rank over all versions, ``detected_at`` of the first."""
    if frame.empty:
        return frame
    f = frame.assign(_rank=frame["status"].map(STATUS_RANK).fillna(-1)).sort_values("batch_id", kind="stable")
    newest = f.drop_duplicates("incident_id", keep="last").set_index("incident_id")
    top = f.sort_values("_rank", kind="stable").drop_duplicates("incident_id", keep="last").set_index("incident_id")
    newest["status"] = top.loc[newest.index, "status"]
    newest["detected_at"] = f.groupby("incident_id")["detected_at"].min().loc[newest.index]
    return newest.drop(columns="_rank").reset_index()


# ---------------------------------------------------------------- derived frames shared by the stores
def states_frame(last: pd.DataFrame, registry: pd.DataFrame, open_incidents: pd.DataFrame, mutes: pd.DataFrame,
                 now, silent_after: pd.Timedelta) -> pd.DataFrame:
    """Per sensor (registry and every sensor with a reading): its newest reading, whether an open
    incident involves it, whether a mute covers it at ``now``, and whether it is silent (no
    reading within ``silent_after`` before ``now``).

    ``last``: sensor_id, event_time, values, score, threshold, severity, model_version, batch_id
    (possibly several rows per sensor); ``now`` None: the newest event time of all sensors."""
    last = last.copy()
    if len(last):
        last["event_time"] = _times(last["event_time"])
        last = last.sort_values(["sensor_id", "event_time", "batch_id"], kind="stable")
        last = last.drop_duplicates("sensor_id", keep="last").set_index("sensor_id")
    zones = dict(zip(registry["sensor_id"], registry["zone"])) if len(registry) else {}
    ids = sorted(set(map(str, registry["sensor_id"])) | set(map(str, last.index)))
    if now is None:
        now = last["event_time"].max() if len(last) else pd.Timestamp.now(tz="UTC")
    now = utc(now, "now")
    open_by_sensor: dict[str, str] = {}
    for r in sort_incidents(open_incidents).itertuples(index=False) if len(open_incidents) else []:
        for sid in sensors_of(r.sensors):
            open_by_sensor.setdefault(sid, r.incident_id)  # the newest open incident
    active = mutes[(mutes["starts_at"] <= now) & (mutes["ends_at"] > now)] if len(mutes) else mutes
    muted_sensors = set(active["sensor_id"].dropna()) if len(active) else set()
    muted_zones = set(active["zone"].dropna()) if len(active) else set()
    rows = []
    for sid in ids:
        has = sid in last.index
        r = last.loc[sid] if has else None
        zone = _opt_text(zones.get(sid))
        t = r["event_time"] if has else None
        rows.append({"sensor_id": sid, "zone": zone, "last_event_time": t,
                     "last_values": canonical_json(r["values"]) if has else None,
                     "last_score": float(r["score"]) if has else math.nan,
                     "threshold": float(r["threshold"]) if has else math.nan,
                     "last_severity": float(r["severity"]) if has else math.nan,
                     "model_version": str(r["model_version"]) if has else None,
                     "in_open_incident": sid in open_by_sensor, "open_incident_id": open_by_sensor.get(sid),
                     "muted": sid in muted_sensors or (zone is not None and zone in muted_zones),
                     "silent": t is None or now - t > silent_after})
    out = pd.DataFrame(rows, columns=SENSOR_STATE_COLUMNS)
    out["last_event_time"] = _times(out["last_event_time"])
    for c in ("in_open_incident", "muted", "silent"):
        out[c] = out[c].astype(bool)
    return out


def stats_frame(hourly: pd.DataFrame, anomalies: pd.DataFrame, incidents: pd.DataFrame,
                since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """Per sensor and UTC hour in ``[since, until)``: readings, their mean, the standard deviation
    of the sensor's readings over the 30 days up to the end of that hour, flagged readings
    (anomalies) and incidents involving the sensor opened in that hour.

    ``hourly``: sensor_id, hour, n, total, squares (sums of the readings and their squares, from
    ``since - 30 days``); ``anomalies``: sensor_id, hour, anomalies; ``incidents``: incident rows."""
    parts = []
    h = hourly.copy()
    if len(h):
        h["hour"] = _times(h["hour"])
        h = h.sort_values(["sensor_id", "hour"], kind="stable")
        for c in ("n", "total", "squares"):
            h[c] = h[c].astype(float)
        for sid, g in h.groupby("sensor_id", sort=True):
            roll = g.set_index("hour")[["n", "total", "squares"]].rolling(STD_WINDOW).sum()
            n = roll["n"].to_numpy()
            var = (roll["squares"].to_numpy() - roll["total"].to_numpy() ** 2 / np.maximum(n, 1)) / np.maximum(n - 1, 1)
            std = np.where(n > 1, np.sqrt(np.clip(var, 0.0, None)), np.nan)
            parts.append(pd.DataFrame({"sensor_id": sid, "hour": g["hour"].to_numpy(), "readings": g["n"].to_numpy(),
                                       "mean": g["total"].to_numpy() / g["n"].to_numpy(), "std_30d": std}))
    base = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["sensor_id", "hour", "readings",
                                                                                   "mean", "std_30d"])
    base["hour"] = _times(base["hour"])
    base = base[(base["hour"] >= since.floor("h")) & (base["hour"] < until)]
    a = anomalies.copy()
    a["hour"] = _times(a["hour"]) if len(a) else pd.Series(dtype="datetime64[ns, UTC]")
    inc_rows = []
    for r in incidents.itertuples(index=False) if len(incidents) else []:
        hour = pd.Timestamp(r.opened_at).floor("h")
        if since.floor("h") <= hour < until:
            inc_rows += [{"sensor_id": sid, "hour": hour} for sid in sensors_of(r.sensors)]
    inc = pd.DataFrame(inc_rows, columns=["sensor_id", "hour"])
    inc = inc.groupby(["sensor_id", "hour"]).size().rename("incidents").reset_index() if len(inc) else \
        pd.DataFrame(columns=["sensor_id", "hour", "incidents"])
    inc["hour"] = _times(inc["hour"])
    out = base.merge(a[["sensor_id", "hour", "anomalies"]] if len(a) else
                     pd.DataFrame(columns=["sensor_id", "hour", "anomalies"]).astype({"hour": "datetime64[ns, UTC]"}),
                     on=["sensor_id", "hour"], how="outer")
    out = out.merge(inc, on=["sensor_id", "hour"], how="outer")
    out["readings"] = out["readings"].fillna(0).astype("int64")
    out["anomalies"] = out["anomalies"].fillna(0).astype("int64")
    out["incidents"] = out["incidents"].fillna(0).astype("int64")
    out["mean"] = out["mean"].astype(float)
    out["std_30d"] = out["std_30d"].astype(float)
    out["sensor_id"] = out["sensor_id"].astype(str)
    return out[STATS_COLUMNS].sort_values(["sensor_id", "hour"], kind="stable").reset_index(drop=True)


def stats_range(since, until, newest) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``stats`` defaults: ``until`` = the hour after the newest score, ``since`` = a day before."""
    since, until = utc(since, "since"), utc(until, "until")
    if until is None:
        until = (newest.floor("h") + pd.Timedelta(hours=1)) if newest is not None else pd.Timestamp.now(tz="UTC").ceil("h")
    if since is None:
        since = until - pd.Timedelta(days=1)
    check_range(since, until)
    if until - since > pd.Timedelta(days=STATS_MAX_DAYS):
        raise ConfigError(f"stats range {since} .. {until} is longer than {STATS_MAX_DAYS} days: narrow since/until")
    return since, until


# ---------------------------------------------------------------- the interface
class StoreClient:
    """One store, read by readers and written by operators. See the module doc; subclasses
    implement the store-specific parts. Use as a context manager or call :meth:`close`."""

    kind = ""
    read_only = False

    def __init__(self, store: Store, settings: Settings, rules: Rules | None = None):
        self.store, self.settings, self.rules = store, settings, rules
        self.silent_after = pd.Timedelta(seconds=settings.window.max_gap_s)
        self.feature = settings.data.features[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def release(self) -> None:
        """Release connections (the context manager does it on exit; ``close()`` with no
        arguments too)."""

    def describe(self) -> str:
        return self.store.describe()

    # reads ------------------------------------------------------------
    def anomalies(self, filters: Filters | None = None) -> pd.DataFrame:
        """Anomalies matching ``filters`` (``store.query.QUERY_COLUMNS``), by event time then sensor id."""
        raise NotImplementedError

    def incidents(self, filters: IncidentFilters | None = None) -> pd.DataFrame:
        """INCIDENT_COLUMNS, newest opened first (ties by id), at most ``filters.limit`` rows."""
        raise NotImplementedError

    def all_incidents(self, filters: IncidentFilters | None = None) -> pd.DataFrame:
        """Every incident matching ``filters``, limit and offset ignored (reports, stats, retraining)."""
        raise NotImplementedError

    def incident(self, incident_id: str) -> dict | None:
        """One incident as a dict (``sensors`` a list) with its ``actions`` (oldest first), or None."""
        raise NotImplementedError

    def sensors(self) -> pd.DataFrame:
        """The sensor registry: sensor_id, latitude, longitude, zone, type."""
        raise NotImplementedError

    def sensor_states(self, now=None) -> pd.DataFrame:
        """SENSOR_STATE_COLUMNS per sensor (registry and sensors with readings), by sensor id.

        ``now``: when to judge ``muted`` and ``silent`` (no reading for ``window.max_gap_s``); if
        not given, the newest event time in the store (the stream's clock, right for replayed
        feeds; pass the wall clock to see a whole feed that stopped as silent). Readings come
        from ``scores``, or from ``anomalies`` when the store holds no scores."""
        raise NotImplementedError

    def series(self, sensor_id: str, since=None, until=None, limit: int = SERIES_DEFAULT) -> pd.DataFrame:
        """SCORE_COLUMNS of one sensor in ``[since, until)``, oldest first: the newest ``limit``
        rows (at most SERIES_CAP). Raises NotFound for a sensor the store has never seen."""
        raise NotImplementedError

    def stats(self, since=None, until=None) -> pd.DataFrame:
        """STATS_COLUMNS (see :func:`stats_frame`) of the first feature (``data.features[0]``), by
        sensor and hour. ``until``: if not given, the hour after the newest score; ``since``: a
        day before ``until``; the range is at most STATS_MAX_DAYS."""
        raise NotImplementedError

    def health(self) -> dict:
        """``reachable``, ``store``, ``kind``, ``newest_batch`` (the batch row written last, or
        None), ``counts`` (rows per table; objects per prefix on S3) and ``error`` (None, or why
        the store cannot be read). Never raises for an unreachable store."""
        raise NotImplementedError

    def mutes(self, active_at=None) -> pd.DataFrame:
        """MUTE_COLUMNS, by start; only those covering ``active_at`` when given."""
        raise NotImplementedError

    # operator writes ----------------------------------------------------
    def acknowledge(self, incident_id: str, actor: str, comment: str | None = None) -> dict:
        """Mark an incident acknowledged by ``actor``; returns the updated incident."""
        return self._act(incident_id, "ack", actor, None, comment)

    def close(self, incident_id: str | None = None, actor: str | None = None, comment: str | None = None):
        """``close(incident_id, actor, comment=None)``: close an incident (operator action) and
        return it. ``close()`` with no arguments releases the connections, like :meth:`release`
        (the contract names both; an incident id is what tells them apart)."""
        if incident_id is None:
            if actor is not None or comment is not None:
                raise ConfigError("closing an incident needs its id: give the incident id, then the actor")
            return self.release()
        return self._act(incident_id, "close", actor, None, comment)

    def label(self, incident_id: str, label: str, actor: str, comment: str | None = None) -> dict:
        """Say what the incident turned out to be (confirmed | false_alarm | maintenance | sensor_fault)."""
        return self._act(incident_id, "label", actor, label, comment)

    def add_mute(self, sensor_id: str | None = None, zone: str | None = None, starts_at=None, ends_at=None,
                 reason: str = "", actor: str = "") -> str:
        """A maintenance window for one sensor or one zone; returns its ``mute_id`` (the same
        window on the same target is the same mute: adding it again changes nothing)."""
        raise NotImplementedError

    def _act(self, incident_id, action, actor, label, comment) -> dict:
        raise NotImplementedError

    def _rules(self) -> Rules:
        if self.read_only:
            raise StoreError(f"{self.describe()} is read-only for operator actions: acknowledge, close, label "
                             "and mute on the SQLite or PostgreSQL store")
        if self.rules is None:
            raise StoreError("this store client was opened without the incident rules: open it with "
                             "open_store(..., rules=sentinel.incidents.lifecycle)")
        return self.rules


def open_store(target: str | Store | None = None, settings: Settings | None = None,
               rules: Rules | None = None) -> StoreClient:
    """A client for ``target``: a store URL, a :class:`Store`, or None for the first store in
    ``sinks.enabled``. ``rules``: ``sentinel.incidents.lifecycle`` to allow operator writes.

    Raises:
        ConfigError: the URL is not a store URL (or names a SQLite file that does not exist).
    """
    settings = settings or Settings()
    store = target if isinstance(target, Store) else (parse_store(target, settings) if target else
                                                      default_store(settings))
    if store.kind == "sqlite":
        from sentinel.store.sql_store import SqliteStore
        return SqliteStore(store, settings, rules)
    if store.kind == "postgres":
        from sentinel.store.sql_store import PostgresStore
        return PostgresStore(store, settings, rules)
    if store.kind == "s3":
        from sentinel.store.s3_store import S3Store
        return S3Store(store, settings, rules)
    raise ConfigError(f"unknown store kind {store.kind!r}: use sqlite, postgres or s3")  # pragma: no cover

