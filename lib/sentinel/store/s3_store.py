"""The store API on S3 (Parquet under ``s3://bucket/prefix``): read-only, filters in pandas.

Reads only the ``dt=`` partitions a call can need (by event date, opened date or written
date); anomalies and scores de-duplicated on their natural key (first write kept), incidents on
their id (newest batch's version, status merged by rank: ``client.merge_versions``). S3 holds
no operator actions and no mutes, so ``incident()`` has no actions, ``mutes()`` is empty and
every operator write raises :class:`StoreError`.
"""
from __future__ import annotations

import pandas as pd

from sentinel.config import ConfigError, S3Settings
from sentinel.store.client import (SERIES_CAP, IncidentFilters, StoreClient, batch_dict, check_range,
                                   filter_incidents, incident_dict, incident_frame, merge_versions, mute_frame,
                                   score_frame, sort_incidents, states_frame, stats_frame, stats_range, utc)
from sentinel.store.errors import NotFound, StoreError
from sentinel.store.query import Filters, filter_anomalies, normalise
from sentinel.store.sinks.base import MUTE_COLUMNS, SCORE_COLUMNS
from sentinel.store.sinks.s3 import KINDS, S3Sink, key_day
from sentinel.store.storage import join_key

_day = lambda ts: None if ts is None else ts.strftime("%Y-%m-%d")  # noqa: E731


class S3Store(StoreClient):
    kind = "s3"
    read_only = True

    def __init__(self, store, settings, rules=None):
        super().__init__(store, settings, rules)
        cfg = settings.sinks.s3
        self.sink = S3Sink(S3Settings(bucket=store.target, prefix=store.namespace, region=cfg.region,
                                      endpoint_url=cfg.endpoint_url))

    def _call(self, what: str, fn):
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return fn()
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"cannot read {what} from s3://{self.store.target}/{self.store.namespace} ({exc}): "
                             "check --store, sinks.s3.endpoint_url / SENTINEL_S3_ENDPOINT and credentials") from None

    def _read(self, kind: str, since_day=None, until_day=None) -> pd.DataFrame:
        return self._call(kind, lambda: self.sink.read(kind, since_day, until_day))

    def _zones(self) -> dict:
        reg = self.sensors()
        return dict(zip(reg["sensor_id"], reg["zone"])) if len(reg) else {}

    # ------------------------------------------------------------ reads
    def anomalies(self, filters: Filters | None = None) -> pd.DataFrame:
        f = filters or Filters()
        frame = self._read("anomalies", _day(f.since), _day(f.until))
        return normalise(filter_anomalies(frame, f, self._zones()))

    def _incidents(self, until=None) -> pd.DataFrame:
        # An incident's versions all sit under its opened date: only ``until`` can prune.
        return incident_frame(merge_versions(self._read("incidents", None, _day(until))))

    def incidents(self, filters: IncidentFilters | None = None) -> pd.DataFrame:
        f = filters or IncidentFilters()
        frame = sort_incidents(filter_incidents(self._incidents(f.until), f))
        return frame.iloc[f.offset:f.offset + f.limit].reset_index(drop=True)

    def all_incidents(self, filters: IncidentFilters | None = None) -> pd.DataFrame:
        f = filters or IncidentFilters()
        return sort_incidents(filter_incidents(self._incidents(f.until), f))

    def incident(self, incident_id: str) -> dict | None:
        frame = self._incidents()
        frame = frame[frame["incident_id"] == str(incident_id)]
        return incident_dict(frame.iloc[0].to_dict(), []) if len(frame) else None

    def sensors(self) -> pd.DataFrame:
        reg = self._call("the sensor registry", self.sink.read_sensors)
        return reg.sort_values("sensor_id", key=lambda s: s.map(lambda x: x.encode("utf-8", "surrogatepass")),
                               kind="stable").reset_index(drop=True) if len(reg) else reg

    def _days(self, kind: str) -> list[str]:
        return sorted({d for d in (key_day(k) for k in self._call(kind, lambda: self.sink.keys(kind))) if d})

    def sensor_states(self, now=None) -> pd.DataFrame:
        # The newest partitions hold every reporting sensor's last reading; a sensor silent for
        # longer than that shows no last reading (and silent).
        kind = "scores" if self._days("scores") else "anomalies"
        days = self._days(kind)
        recent = self._read(kind, days[-2] if len(days) >= 2 else None) if days else self._read(kind)
        incidents = self._incidents()
        return states_frame(recent, self.sensors(), incidents[incidents["status"] != "closed"], self.mutes(), now,
                            self.silent_after)

    def _scores(self, since=None, until=None) -> pd.DataFrame:
        frame = self._read("scores", _day(since), _day(until))
        if frame.empty:
            return score_frame(pd.DataFrame(columns=SCORE_COLUMNS))
        frame = score_frame(frame.sort_values("batch_id", kind="stable")
                            .drop_duplicates(["sensor_id", "event_time", "model_version"], keep="first"))
        keep = pd.Series(True, index=frame.index)
        if since is not None:
            keep &= frame["event_time"] >= since
        if until is not None:
            keep &= frame["event_time"] < until
        return frame[keep.to_numpy()]

    def series(self, sensor_id: str, since=None, until=None, limit: int = 10_000) -> pd.DataFrame:
        since, until = utc(since, "since"), utc(until, "until")
        check_range(since, until)
        if not isinstance(limit, int) or not 1 <= limit <= SERIES_CAP:
            raise ConfigError(f"series limit {limit!r} is outside 1..{SERIES_CAP}: ask for fewer rows")
        frame = self._scores(since, until)
        frame = frame[frame["sensor_id"] == str(sensor_id)].sort_values(["event_time", "model_version"], kind="stable")
        if frame.empty and str(sensor_id) not in set(self.sensors()["sensor_id"]) and \
                str(sensor_id) not in set(self.anomalies(Filters(sensors=(str(sensor_id),), limit=1))["sensor_id"]):
            raise NotFound(f"no sensor {sensor_id!r} in {self.describe()}: use a sensor of the registry")
        return frame.tail(limit).reset_index(drop=True)

    def stats(self, since=None, until=None) -> pd.DataFrame:
        days = self._days("scores")
        newest = None
        if days:
            last = self._read("scores", days[-1], days[-1])
            newest = utc(pd.to_datetime(last["event_time"], utc=True).max()) if len(last) else None
        since, until = stats_range(since, until, newest)
        scores = self._scores(since - pd.Timedelta(days=30), until)
        v = pd.to_numeric(pd.Series([_value(x, self.feature) for x in scores["values"]], index=scores.index,
                                    dtype=object), errors="coerce")
        readings = pd.DataFrame({"sensor_id": scores["sensor_id"], "event_time": scores["event_time"], "v": v})
        readings = readings.dropna(subset=["v"]).groupby(["sensor_id", "event_time"], as_index=False)["v"].max()
        readings["hour"] = readings["event_time"].dt.floor("h")
        hourly = readings.groupby(["sensor_id", "hour"]).agg(n=("v", "size"), total=("v", "sum"),
                                                               squares=("v", lambda x: float((x * x).sum())))
        a = self.anomalies(Filters(since=since, until=until))
        a = a.assign(hour=a["event_time"].dt.floor("h")).groupby(["sensor_id", "hour"])["event_time"].nunique() \
            .rename("anomalies").reset_index() if len(a) else pd.DataFrame(columns=["sensor_id", "hour", "anomalies"])
        inc = self.all_incidents(IncidentFilters(since=since, until=until))
        inc = inc[(inc["opened_at"] >= since) & (inc["opened_at"] < until)]
        return stats_frame(hourly.reset_index(), a, inc, since, until)

    def mutes(self, active_at=None) -> pd.DataFrame:
        return mute_frame(pd.DataFrame(columns=MUTE_COLUMNS))  # operators' data: not on S3

    def health(self) -> dict:
        out = {"reachable": False, "store": self.describe(), "kind": self.kind, "newest_batch": None,
               "counts": {}, "error": None}
        try:
            counts = {kind: len(self._call(kind, lambda k=kind: self.sink.keys(k))) for kind in KINDS}
            out["reachable"] = True
            out["counts"] = {f"{k}_objects": n for k, n in counts.items()}
            days = self._days("batches")
            if days:  # the newest day's highest batch id: one object read, however many batches
                from sentinel.store.sinks.s3 import read_parquet_bytes
                from sentinel.store.storage import list_keys
                prefix = join_key(self.sink.prefix, "batches", f"dt={days[-1]}") + "/"
                keys = self._call("batches", lambda: list_keys(self.sink.client, self.sink.bucket, prefix))
                if keys:
                    body = self._call("batches", lambda: self.sink.client.get_object(
                        Bucket=self.sink.bucket, Key=keys[-1])["Body"].read())
                    out["newest_batch"] = batch_dict(read_parquet_bytes(body).iloc[-1].to_dict())
        except StoreError as exc:
            out["error"] = str(exc)
        return out

    # ------------------------------------------------------------ operator writes: none
    def _act(self, incident_id, action, actor, label, comment) -> dict:
        self._rules()  # raises: read-only
        raise StoreError("unreachable")  # pragma: no cover

    def add_mute(self, sensor_id=None, zone=None, starts_at=None, ends_at=None, reason="", actor="") -> str:
        self._rules()  # raises: read-only
        raise StoreError("unreachable")  # pragma: no cover

    def release(self) -> None:
        self.sink.close()


def _value(values_json, feature: str):
    import json
    try:
        return json.loads(values_json).get(feature) if values_json else None
    except (ValueError, AttributeError):
        return None
