"""S3 anomaly store: Parquet objects, Hive-partitioned by date (any S3 API: AWS, MinIO, moto).

Layout under ``s3://{bucket}/{prefix}/``::

    anomalies/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet   dt = UTC date of event_time
    rejects/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet     dt = UTC date of received_at
    scores/dt=YYYY-MM-DD/batch-{batch_id:012d}.parquet      every scored reading (write_scores)
    sensors/sensors.parquet                                 the sensor registry (load_sensors)

Keys derive only from the batch id and a date, never from sensor ids, so hostile ids cannot
shape a key, and a replayed micro-batch overwrites its own objects instead of adding copies.
Readers (``sentinel query``) still de-duplicate on the natural key, keeping the lowest batch id
(the first write, like ``ON CONFLICT DO NOTHING`` in the SQL stores).

Endpoint: ``sinks.s3.endpoint_url`` if set (config wins), else ``SENTINEL_S3_ENDPOINT``, else
boto3's own resolution (AWS). Credentials: boto3's standard chain only.
"""
from __future__ import annotations

import io
import json
import logging

import pandas as pd

from sentinel.store import registry
from sentinel.config import S3Settings
from sentinel.store.storage import join_key, list_keys, resolve_endpoint, s3_client

log = logging.getLogger("sentinel.sinks.s3")

KINDS = ("anomalies", "rejects", "scores")
REGISTRY_KEY = "sensors/sensors.parquet"
SCORE_COLUMNS = ["sensor_id", "event_time", "score", "threshold", "severity", "is_anomaly", "values",
                 "model_version", "batch_id"]


def _schemas():
    import pyarrow as pa
    ts = pa.timestamp("us", tz="UTC")
    return {
        "anomalies": pa.schema([("sensor_id", pa.string()), ("event_time", ts), ("score", pa.float64()),
                                ("threshold", pa.float64()), ("severity", pa.float64()), ("values", pa.string()),
                                ("model_version", pa.string()), ("batch_id", pa.int64()), ("detected_at", ts)]),
        "rejects": pa.schema([("batch_id", pa.int64()), ("seq", pa.string()), ("raw", pa.string()),
                              ("reason", pa.string()), ("sensor_id", pa.string()), ("event_time", ts),
                              ("received_at", ts)]),
        "scores": pa.schema([("sensor_id", pa.string()), ("event_time", ts), ("score", pa.float64()),
                             ("threshold", pa.float64()), ("severity", pa.float64()), ("is_anomaly", pa.bool_()),
                             ("values", pa.string()), ("model_version", pa.string()), ("batch_id", pa.int64())]),
        "sensors": pa.schema([("sensor_id", pa.string()), ("latitude", pa.float64()), ("longitude", pa.float64()),
                              ("zone", pa.string()), ("type", pa.string())]),
    }


def object_key(prefix: str, kind: str, day: str, batch_id: int) -> str:
    """``{prefix}/{kind}/dt={day}/batch-{batch_id:012d}.parquet`` (``day`` = YYYY-MM-DD)."""
    if kind not in KINDS:
        raise ValueError(f"unknown object kind {kind!r}")
    return join_key(prefix, kind, f"dt={day}", f"batch-{int(batch_id):012d}.parquet")


def partition_days(times: pd.Series) -> pd.Series:
    """UTC date (YYYY-MM-DD text) of each timestamp (event_time of anomalies and scores,
    received_at of rejects: never null)."""
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
        cols[f.name] = pa.array(s, type=f.type, from_pandas=True)
    table = pa.Table.from_pydict(cols, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def read_parquet_bytes(data: bytes) -> pd.DataFrame:
    import pyarrow.parquet as pq
    return pq.read_table(io.BytesIO(data)).to_pandas()


def score_records(df: pd.DataFrame, model_version: str, batch_id: int, features: list[str]) -> pd.DataFrame:
    """Every scored reading of a micro-batch (rows with a window: status 'window') -> the score
    record: sensor_id, event_time, score, threshold, severity, is_anomaly, values (JSON),
    model_version, batch_id. Same shapes as ``stream.anomaly_records``."""
    if df.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    out = pd.DataFrame({"sensor_id": df["sensor_id"].astype(str),
                        "event_time": pd.to_datetime(df["event_time"], utc=True),
                        "score": df["score"].astype(float), "threshold": df["threshold"].astype(float)})
    out["severity"] = out["score"] / out["threshold"]
    out["is_anomaly"] = df["is_anomaly"].fillna(False).astype(bool).to_numpy()
    out["values"] = [json.dumps(dict(zip(features, map(float, v)))) for v in df["values"]]
    out["model_version"] = model_version
    out["batch_id"] = int(batch_id)
    return out[SCORE_COLUMNS].reset_index(drop=True)


class S3Sink:
    name = "s3"

    def __init__(self, settings: S3Settings | None = None, client=None, max_attempts: int = 5):
        self.settings = settings or S3Settings()
        self.bucket = self.settings.bucket
        self.prefix = self.settings.prefix.strip("/")
        self.region = self.settings.region or "us-east-1"
        self.endpoint = resolve_endpoint(self.settings.endpoint_url)
        self.wants_scores = bool(self.settings.write_scores)
        self._client = client
        self._max_attempts = max_attempts

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.endpoint, self.region, max_attempts=self._max_attempts)
        return self._client

    def _fail(self, what: str, exc: Exception) -> RuntimeError:
        where = f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}" if self.endpoint else "")
        return RuntimeError(f"s3 sink: {what} failed ({where}); last error: {type(exc).__name__}: {exc}")

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

    def write(self, anomalies: pd.DataFrame, rejects: pd.DataFrame, batch_id: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self._put_partitioned(rejects, "rejects", "received_at", batch_id)
            self._put_partitioned(anomalies, "anomalies", "event_time", batch_id)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"write of batch {batch_id}", exc) from exc

    def write_scores(self, scores: pd.DataFrame, batch_id: int) -> list[str]:
        """Every scored reading of the batch (``score_records``), under ``scores/dt=.../``."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self._put_partitioned(scores, "scores", "event_time", batch_id)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"write of scores for batch {batch_id}", exc) from exc

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
            day = next((p[3:] for p in key.split("/") if p.startswith("dt=")), None)
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
