"""S3 store: Parquet objects, Hive-partitioned by date (any S3 API: AWS, MinIO, moto).

Layout under ``s3://{bucket}/{prefix}/``::

    anomalies/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet   dt = UTC date of event_time
    rejects/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet     dt = UTC date of received_at
    scores/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet      every scored reading (sinks.write_scores)
    incidents/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet   dt = UTC date of opened_at; the
                                                            batch's version of each incident
    batches/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet     dt = UTC date of written_at; one row
    sensors/sensors.parquet                                 the sensor registry (load_sensors)

Keys derive only from the batch id and a date, never from sensor ids, so hostile ids cannot
shape a key, and a replayed micro-batch overwrites its own objects instead of adding copies.
Readers still de-duplicate: anomalies and scores on their natural key, keeping the lowest
batch id (the first write, like ``ON CONFLICT DO NOTHING`` in the SQL stores); incidents on
``incident_id``, keeping the newest batch's version (status merged by rank). S3 holds no
operator actions and no mutes: it is read-only for operators.

Scores retention (``sinks.scores_retention_days``): whole ``scores/dt=`` partitions older than
that many days before the newest event time written are deleted, on the first batch after
setup and then every RETENTION_EVERY_BATCHES batches.

Endpoint: ``sinks.s3.endpoint_url`` if set (config wins), else ``SENTINEL_S3_ENDPOINT``, else
boto3's own resolution (AWS). Credentials: boto3's standard chain only.
"""
from __future__ import annotations

import io
import logging

import pandas as pd

from sentinel.config import S3Settings
from sentinel.store import registry
from sentinel.store.errors import StoreError
from sentinel.store.sinks.base import (ANOMALY_COLUMNS, BATCH_COLUMNS, SCORE_COLUMNS, BatchRecords, Retention,
                                       conform, incident_rows, score_records)
from sentinel.store.storage import join_key, list_keys, resolve_endpoint, s3_client

log = logging.getLogger("sentinel.sinks.s3")

KINDS = ("anomalies", "rejects", "scores", "incidents", "batches")
REGISTRY_KEY = "sensors/sensors.parquet"
__all__ = ["S3Sink", "SCORE_COLUMNS", "score_records", "object_key", "KINDS"]  # score_records: moved to base


def _schemas():
    import pyarrow as pa
    ts = pa.timestamp("us", tz="UTC")
    f64, i64, txt = pa.float64(), pa.int64(), pa.string()
    return {
        "anomalies": pa.schema([("sensor_id", txt), ("event_time", ts), ("score", f64), ("threshold", f64),
                                ("severity", f64), ("values", txt), ("expected", txt), ("explanation", txt),
                                ("model_version", txt), ("batch_id", i64), ("detected_at", ts)]),
        "rejects": pa.schema([("batch_id", i64), ("seq", txt), ("raw", txt), ("reason", txt), ("sensor_id", txt),
                              ("event_time", ts), ("received_at", ts)]),
        "scores": pa.schema([("sensor_id", txt), ("event_time", ts), ("score", f64), ("threshold", f64),
                             ("severity", f64), ("is_anomaly", pa.bool_()), ("values", txt), ("expected", txt),
                             ("model_version", txt), ("batch_id", i64)]),
        "incidents": pa.schema([("incident_id", txt), ("kind", txt), ("status", txt), ("zone", txt),
                                ("sensors", txt), ("first_sensor", txt), ("opened_at", ts), ("last_seen", ts),
                                ("closed_at", ts), ("peak_severity", f64), ("readings", i64), ("explanation", txt),
                                ("muted", pa.bool_()), ("model_version", txt), ("detected_at", ts),
                                ("updated_at", ts), ("batch_id", i64)]),
        "batches": pa.schema([("batch_id", i64), ("written_at", ts), ("events", i64), ("scored", i64),
                              ("warmup", i64), ("rejects", i64), ("anomalies", i64), ("incidents_open", i64),
                              ("incidents_opened", i64), ("incidents_closed", i64), ("max_event_time", ts),
                              ("model_version", txt), ("duration_s", f64)]),
        "sensors": pa.schema([("sensor_id", txt), ("latitude", f64), ("longitude", f64),
                              ("zone", txt), ("type", txt)]),
    }


def object_key(prefix: str, kind: str, day: str, batch_id: int) -> str:
    """``{prefix}/{kind}/dt={day}/batch-{batch_id:012d}.parquet`` (``day`` = YYYY-MM-DD)."""
    if kind not in KINDS:
        raise ValueError(f"unknown object kind {kind!r}")
    return join_key(prefix, kind, f"dt={day}", f"batch-{int(batch_id):012d}.parquet")


def key_day(key: str) -> str | None:
    """The ``dt=`` partition day of a key (None when it has none)."""
    return next((p[3:] for p in key.split("/") if p.startswith("dt=")), None)


def partition_days(times: pd.Series) -> pd.Series:
    """UTC date (YYYY-MM-DD text) of each timestamp (event_time of anomalies and scores,
    received_at of rejects, opened_at of incidents, written_at of batches: never null)."""
    return pd.to_datetime(times, utc=True).dt.strftime("%Y-%m-%d")


def to_parquet_bytes(frame: pd.DataFrame, kind: str) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = _schemas()[kind]
    cols = {}
    for f in schema:
        s = frame[f.name] if f.name in frame else pd.Series([None] * len(frame), index=frame.index, dtype=object)
        if pa.types.is_timestamp(f.type):
            s = pd.to_datetime(s, utc=True).dt.floor("us")
        elif pa.types.is_string(f.type):
            s = s.astype(object).where(s.notna(), None)
            s = s.map(lambda v: v if v is None else str(v))
        elif pa.types.is_boolean(f.type):
            s = s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else bool(v))
        cols[f.name] = pa.array(s, type=f.type, from_pandas=True)
    table = pa.Table.from_pydict(cols, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet_bytes(data: bytes) -> pd.DataFrame:
    import pyarrow.parquet as pq
    return pq.read_table(io.BytesIO(data)).to_pandas()


class S3Sink:
    name = "s3"

    def __init__(self, settings: S3Settings | None = None, client=None, max_attempts: int = 5,
                 write_scores: bool = True, scores_retention_days: int = 0, retention_every: int | None = None):
        self.settings = settings or S3Settings()
        self.bucket = self.settings.bucket
        self.prefix = self.settings.prefix.strip("/")
        self.region = self.settings.region or "us-east-1"
        self.endpoint = resolve_endpoint(self.settings.endpoint_url)
        self.wants_scores = bool(write_scores)
        self.retention = Retention(scores_retention_days, *([retention_every] if retention_every else []))
        self.newest_score: pd.Timestamp | None = None  # newest event time this sink wrote to scores/
        self._client = client
        self._max_attempts = max_attempts

    @classmethod
    def from_settings(cls, settings) -> "S3Sink":
        return cls(settings.sinks.s3, write_scores=settings.sinks.write_scores,
                   scores_retention_days=settings.sinks.scores_retention_days)

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.endpoint, self.region, max_attempts=self._max_attempts)
            self._client.meta.events.register("needs-retry.s3", self._log_retry)
        return self._client

    def _fail(self, what: str, exc: Exception) -> StoreError:
        where = f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}" if self.endpoint else "")
        reason = " ".join(str(exc).split())
        return StoreError(f"s3 sink: {what} failed ({where}); last error: {type(exc).__name__}: {reason}; check that "
                          "the endpoint is up and the credentials are valid and restart the job, which resumes "
                          "from its checkpoint")

    def _log_retry(self, attempts=None, caught_exception=None, response=None, operation=None, **_):
        """botocore's ``needs-retry`` event, seen before its retry handler decides: a warning per
        failed attempt that will be retried (botocore itself logs retries at debug level only)."""
        status = (response[1] or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") if response else None
        if caught_exception is None and (status is None or status < 500) or not attempts:
            return None
        if attempts < self._max_attempts:
            why = (" ".join(str(caught_exception).split()) if caught_exception is not None else f"HTTP {status}")
            log.warning("s3 sink: %s attempt %d of %d failed (%s); botocore retries it with back-off",
                        getattr(operation, "name", "request"), attempts, self._max_attempts, why)
        return None

    # ------------------------------------------------------------ setup
    def setup(self) -> None:
        """Create the bucket if it does not exist (us-east-1 takes no LocationConstraint)."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            kwargs = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self.client.create_bucket(**kwargs)
                log.info("created bucket s3://%s (%s)", self.bucket, self.region)
            except ClientError as exc:  # another job created it first
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                    raise
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("setup (bucket check/creation)", exc) from exc

    # ------------------------------------------------------------ writes
    def _put_partitioned(self, frame: pd.DataFrame, kind: str, time_col: str, batch_id: int) -> list[str]:
        if frame is None or not len(frame):
            return []
        days = partition_days(frame[time_col])
        keys = []
        for day, part in frame.groupby(days.to_numpy(), sort=True):
            key = object_key(self.prefix, kind, day, batch_id)
            self.client.put_object(Bucket=self.bucket, Key=key, Body=to_parquet_bytes(part, kind),
                                   ContentType="application/vnd.apache.parquet")
            keys.append(key)
        return keys

    def write(self, records: BatchRecords) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        b = records.batch_id
        try:
            self._put_partitioned(records.rejects, "rejects", "received_at", b)
            self._put_partitioned(conform(records.anomalies, ANOMALY_COLUMNS), "anomalies", "event_time", b)
            if self.wants_scores and records.scores is not None and len(records.scores):
                self._put_partitioned(conform(records.scores, SCORE_COLUMNS), "scores", "event_time", b)
                newest = pd.to_datetime(records.scores["event_time"], utc=True).max()
                self.newest_score = newest if self.newest_score is None else max(self.newest_score, newest)
            self._put_partitioned(incident_rows(records.incidents), "incidents", "opened_at", b)
            self._put_partitioned(pd.DataFrame([{c: records.batch.get(c) for c in BATCH_COLUMNS}]), "batches",
                                  "written_at", b)
            if self.wants_scores and self.retention.due(b):
                self.prune_scores()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"write of batch {b}", exc) from exc

    def write_scores(self, scores: pd.DataFrame, batch_id: int) -> list[str]:
        """Every scored reading of the batch (``score_records``), under ``scores/dt=.../``
        (``write`` does this when ``sinks.write_scores`` is on)."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self._put_partitioned(conform(scores, SCORE_COLUMNS), "scores", "event_time", batch_id)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"write of scores for batch {batch_id}", exc) from exc

    def prune_scores(self) -> list[str]:
        """Delete the ``scores/dt=`` partitions wholly older than the retention (returns the keys deleted)."""
        cutoff = self.retention.cutoff(self.newest_score)
        if cutoff is None:
            return []
        first_kept = cutoff.strftime("%Y-%m-%d")  # a partition before this day holds only older rows
        old = [k for k in self.keys("scores") if (key_day(k) or "9999") < first_kept]
        for i in range(0, len(old), 1000):  # DeleteObjects takes up to 1000 keys
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": [{"Key": k} for k in old[i:i + 1000]], "Quiet": True})
        if old:
            log.info("s3 sink: deleted %d score objects before %s (retention %d days)", len(old), first_kept,
                     self.retention.days)
        return old

    def load_sensors(self, sensors: pd.DataFrame) -> int:
        """Upsert the registry into ``{prefix}/sensors/sensors.parquet`` (new rows win by sensor_id)."""
        from botocore.exceptions import BotoCoreError, ClientError
        new = registry.normalise(sensors)
        key = join_key(self.prefix, REGISTRY_KEY)
        try:
            try:
                old = read_parquet_bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
                merged = registry.normalise(pd.concat([old, new], ignore_index=True))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
                merged = new
            self.client.put_object(Bucket=self.bucket, Key=key, Body=to_parquet_bytes(merged, "sensors"))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("load of the sensor registry", exc) from exc
        return len(new)

    # ------------------------------------------------------------ reads (sentinel query)
    def keys(self, kind: str) -> list[str]:
        return list_keys(self.client, self.bucket, join_key(self.prefix, kind) + "/")

    def read(self, kind: str, since_day: str | None = None, until_day: str | None = None) -> pd.DataFrame:
        """All objects of ``kind`` whose dt partition lies in [since_day, until_day]."""
        from concurrent.futures import ThreadPoolExecutor
        wanted = []
        for key in self.keys(kind):
            day = key_day(key)
            if day is None or (since_day and day < since_day) or (until_day and day > until_day):
                continue
            wanted.append(key)
        client = self.client  # boto3 clients are thread-safe

        def get(key: str) -> pd.DataFrame:
            return read_parquet_bytes(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

        with ThreadPoolExecutor(max_workers=8) as pool:
            frames = list(pool.map(get, wanted))
        if not frames:
            return to_pandas_empty(kind)
        return pd.concat(frames, ignore_index=True)

    def read_sensors(self) -> pd.DataFrame:
        from botocore.exceptions import ClientError
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=join_key(self.prefix, REGISTRY_KEY))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return to_pandas_empty("sensors")
            raise
        return read_parquet_bytes(body)

    def close(self) -> None:
        self._client = None


def to_pandas_empty(kind: str) -> pd.DataFrame:
    return _schemas()[kind].empty_table().to_pandas()
