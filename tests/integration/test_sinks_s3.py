"""S3Sink and the bundle copy helpers against the real S3-compatible server (moto_server from
scripts/services/s3.sh; SENTINEL_S3_ENDPOINT from `make test`). A fresh bucket per test."""
from __future__ import annotations

import re
import socket
import uuid

import pandas as pd
import pytest

from sentinel.config import S3Settings
from tests.conftest import need_service
from tests.integration.test_sinks_postgres import HOSTILE, batch, make_anomalies, make_rejects, rec

KEY_RE = r"^{prefix}/(anomalies|rejects|scores|incidents|batches)/dt=\d{{4}}-\d{{2}}-\d{{2}}/batch-\d{{12}}\.parquet$"


@pytest.fixture
def s3_settings():
    endpoint = need_service("SENTINEL_S3_ENDPOINT", "S3 server")
    bucket = f"sentinel-t-{uuid.uuid4().hex[:10]}"
    settings = S3Settings(bucket=bucket, prefix=f"runs/{uuid.uuid4().hex[:6]}", region="us-east-1",
                          endpoint_url=endpoint)
    yield settings
    from sentinel.store.storage import list_keys, s3_client
    client = s3_client(endpoint)
    try:
        for key in list_keys(client, bucket, ""):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)
    except client.exceptions.NoSuchBucket:
        pass


@pytest.fixture
def s3_sink(s3_settings):
    from sentinel.store.sinks.s3 import S3Sink
    sink = S3Sink(s3_settings)
    sink.setup()
    yield sink
    sink.close()


def read_object(sink, key) -> pd.DataFrame:
    from sentinel.store.sinks.s3 import read_parquet_bytes
    return read_parquet_bytes(sink.client.get_object(Bucket=sink.bucket, Key=key)["Body"].read())


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_setup_creates_the_bucket_once_in_its_region(s3_settings, region):
    from dataclasses import replace

    from sentinel.store.sinks.s3 import S3Sink
    sink = S3Sink(replace(s3_settings, region=region))
    sink.setup()
    sink.setup()  # exists now: no error
    loc = sink.client.get_bucket_location(Bucket=sink.bucket)["LocationConstraint"]
    assert (loc or "us-east-1") == region


def test_endpoint_from_env_when_config_is_empty(s3_settings, monkeypatch):
    from dataclasses import replace

    from sentinel.store.sinks.s3 import S3Sink
    monkeypatch.setenv("SENTINEL_S3_ENDPOINT", s3_settings.endpoint_url)
    assert S3Sink(replace(s3_settings, endpoint_url="")).endpoint == s3_settings.endpoint_url
    monkeypatch.setenv("SENTINEL_S3_ENDPOINT", "http://127.0.0.1:1")
    assert S3Sink(s3_settings).endpoint == s3_settings.endpoint_url  # config wins


def test_objects_partitioned_by_date_and_keyed_by_batch(s3_sink):
    rows = [("PT-0001", "2026-03-24T23:59:59.500000Z", 2.0, 1.0, 30.0),
            ("PT-0002", "2026-03-25T00:00:00Z", 3.0, 1.5, 31.0),
            ("PT-0001", "2026-03-25T06:00:00.123456Z", 4.0, 1.0, 29.5)]
    a = make_anomalies(42, rows)
    r = make_rejects(42, [("garbage", "not_json: x", None, None)])
    s3_sink.write(rec(a, r, 42))
    p = s3_sink.prefix
    day = r["received_at"].iloc[0].strftime("%Y-%m-%d")
    keys = sorted(s3_sink.keys("anomalies") + s3_sink.keys("rejects"))
    assert keys == sorted([f"{p}/anomalies/dt=2026-03-24/batch-000000000042.parquet",
                           f"{p}/anomalies/dt=2026-03-25/batch-000000000042.parquet",
                           f"{p}/rejects/dt={day}/batch-000000000042.parquet"])
    got = pd.concat([read_object(s3_sink, k) for k in keys if "/anomalies/" in k], ignore_index=True)
    assert list(got.columns) == ["sensor_id", "event_time", "score", "threshold", "severity", "values", "expected",
                                 "explanation", "model_version", "batch_id", "detected_at"]
    assert got["expected"].isna().all() and got["explanation"].isna().all()  # the writer gave none
    assert str(got["event_time"].dt.tz) == "UTC"
    assert got["event_time"].tolist() == a["event_time"].tolist()
    assert got["severity"].tolist() == a["severity"].tolist()
    assert got["values"].tolist() == a["values"].tolist()
    rej = read_object(s3_sink, keys[-1])
    assert rej["raw"].tolist() == ["garbage"] and rej["event_time"].isna().all()


def test_replayed_batch_overwrites_instead_of_duplicating(s3_sink):
    from sentinel.store.query import Filters, Store, query
    a, r = batch(3)
    s3_sink.write(rec(a, r, 3))
    before = {k: s3_sink.client.head_object(Bucket=s3_sink.bucket, Key=k)["ETag"]
              for k in s3_sink.keys("anomalies") + s3_sink.keys("rejects")}
    a2, r2 = batch(3)  # the re-run: same rows, later detected_at
    s3_sink.write(rec(a2, r2, 3))
    after = {k: s3_sink.client.head_object(Bucket=s3_sink.bucket, Key=k)["ETag"]
             for k in s3_sink.keys("anomalies") + s3_sink.keys("rejects")}
    assert sorted(after) == sorted(before)  # the same objects, rewritten
    assert after != before
    rows = query(Store("s3", s3_sink.bucket, s3_sink.prefix), Filters(),
                 _settings_for(s3_sink))
    assert len(rows) == len(a) == 6
    assert sum(len(read_object(s3_sink, k)) for k in s3_sink.keys("rejects")) == 3


def _settings_for(sink):
    from sentinel.config import load_settings
    return load_settings(None, [f'sinks.s3.endpoint_url="{sink.endpoint}"'])


def test_same_anomaly_in_two_batches_is_read_once(s3_sink):
    from sentinel.store.query import Filters, Store, query
    a, r = batch(5)
    s3_sink.write(rec(a, r, 5))
    s3_sink.write(rec(a.assign(batch_id=9), r.iloc[:0], 9))  # e.g. re-scored after a restart
    rows = query(Store("s3", s3_sink.bucket, s3_sink.prefix), Filters(), _settings_for(s3_sink))
    assert len(rows) == 6 and set(rows["batch_id"]) == {5}  # the first write wins, as in SQL


def test_hostile_ids_never_shape_keys(s3_sink):
    from sentinel.store.query import Filters, Store, query
    rows = [(sid, f"2026-03-2{i % 3 + 1}T10:00:00Z", 2.0 + i, 1.0, 20.0) for i, sid in enumerate(HOSTILE)]
    a = make_anomalies(11, rows)
    r = make_rejects(11, [("../../etc/passwd\x00", "not_json: x", "../../etc", None)])
    s3_sink.write(rec(a, r, 11))
    reg = pd.DataFrame({"sensor_id": HOSTILE, "zone": ["../zone/\n" + z for z in HOSTILE]})
    s3_sink.load_sensors(reg)
    keys = [k for k in s3_sink.client.list_objects_v2(Bucket=s3_sink.bucket)["Contents"]]
    pattern = re.compile(KEY_RE.format(prefix=re.escape(s3_sink.prefix)))
    data_keys = [k["Key"] for k in keys if not k["Key"].endswith("sensors/sensors.parquet")]
    assert len(data_keys) == 5 and all(pattern.match(k) for k in data_keys), data_keys  # + the batch row
    got = query(Store("s3", s3_sink.bucket, s3_sink.prefix), Filters(), _settings_for(s3_sink))
    assert sorted(got["sensor_id"]) == sorted(HOSTILE)
    for sid in HOSTILE[:4]:  # injection, path, unicode, newline
        z = query(Store("s3", s3_sink.bucket, s3_sink.prefix), Filters(zone="../zone/\n" + sid), _settings_for(s3_sink))
        assert z["sensor_id"].tolist() == [sid]


def test_write_scores_and_score_records(s3_sink):
    from sentinel.store.sinks.s3 import SCORE_COLUMNS, score_records
    df = pd.DataFrame({"sensor_id": ["PT-1", "PT-2", "PT-1"],
                       "event_time": pd.to_datetime(["2026-03-25T10:00Z", "2026-03-25T10:00Z", "2026-03-26T00:05Z"]),
                       "score": [0.2, 1.7, 0.4], "threshold": [1.0, 1.0, 1.0], "is_anomaly": [False, True, False],
                       "values": [[30.0], [55.5], [31.0]]})
    rec = score_records(df, "v1", 12, ["pressure"])
    assert list(rec.columns) == SCORE_COLUMNS and rec["is_anomaly"].tolist() == [False, True, False]
    keys = s3_sink.write_scores(rec, 12)
    p = s3_sink.prefix
    assert keys == [f"{p}/scores/dt=2026-03-25/batch-000000000012.parquet",
                    f"{p}/scores/dt=2026-03-26/batch-000000000012.parquet"]
    back = s3_sink.read("scores")
    assert len(back) == 3 and back["values"].tolist() == ['{"pressure": 30.0}', '{"pressure": 55.5}',
                                                          '{"pressure": 31.0}']
    assert s3_sink.write_scores(score_records(df.iloc[:0], "v1", 13, ["pressure"]), 13) == []


def test_load_sensors_upserts_the_registry(s3_sink):
    s3_sink.load_sensors(pd.DataFrame({"sensor_id": ["A", "B"], "zone": ["north", "south"],
                                       "latitude": [40.1, 40.2], "longitude": [-3.1, -3.2]}))
    s3_sink.load_sensors(pd.DataFrame({"sensor_id": ["B", "C"], "zone": ["east", None]}))
    reg = s3_sink.read_sensors().set_index("sensor_id")
    assert reg["zone"].to_dict() == {"A": "north", "B": "east", "C": None}
    assert reg.loc["A", "latitude"] == 40.1 and pd.isna(reg.loc["B", "latitude"])


def test_upload_and_download_a_bundle_directory(s3_sink, tmp_path):
    from sentinel.store.storage import download_prefix, upload_dir
    src = tmp_path / "bundle"
    (src / "assets").mkdir(parents=True)
    files = {"manifest.json": b'{"version": "v1"}', "model.keras": bytes(range(256)) * 40,
             "assets/notes.txt": "ünïcode\n".encode()}
    for name, data in files.items():
        (src / name).write_bytes(data)
    url = f"s3://{s3_sink.bucket}/models/pressure/v1/"
    keys = upload_dir(src, url, client=s3_sink.client)
    assert sorted(keys) == sorted(f"models/pressure/v1/{n}" for n in files)
    dest = download_prefix(f"s3://{s3_sink.bucket}/models/pressure/v1", tmp_path / "copy", client=s3_sink.client)
    assert {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == files
    # a prefix that is only a name-prefix of another must not pull the other one in
    upload_dir(src, f"s3://{s3_sink.bucket}/models/pressure/v10", client=s3_sink.client)
    dest2 = download_prefix(f"s3://{s3_sink.bucket}/models/pressure/v1", tmp_path / "copy2", client=s3_sink.client)
    assert sorted(p.relative_to(dest2).as_posix() for p in dest2.rglob("*") if p.is_file()) == sorted(files)
    with pytest.raises(FileNotFoundError):
        download_prefix(f"s3://{s3_sink.bucket}/models/none", tmp_path / "none", client=s3_sink.client)
    s3_sink.client.put_object(Bucket=s3_sink.bucket, Key="evil/../../escape.txt", Body=b"x")
    with pytest.raises(ValueError, match="outside"):
        download_prefix(f"s3://{s3_sink.bucket}/evil", tmp_path / "evil", client=s3_sink.client)
    assert not (tmp_path / "escape.txt").exists()


def test_unreachable_endpoint_fails_loudly():
    need_service("SENTINEL_S3_ENDPOINT", "S3 server")
    from sentinel.store.sinks.s3 import S3Sink
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = S3Sink(S3Settings(bucket="nowhere", prefix="p", endpoint_url=f"http://127.0.0.1:{port}"), max_attempts=1)
    a, r = batch(1)
    with pytest.raises(RuntimeError, match=r"s3 sink: write of batch 1 failed \(s3://nowhere/p at http://127\.0\.0\.1"):
        sink.write(rec(a, r, 1))
    with pytest.raises(RuntimeError, match="s3 sink: setup"):
        sink.setup()


def test_fetch_newest_bundle_into_a_cache(s3_sink, tmp_path):
    from sentinel.store.storage import fetch_bundle, newest_bundle_url, upload_dir
    for version, value in (("20260101T000000000000Z", b"old"), ("20260301T000000000000Z", b"new")):
        src = tmp_path / version
        src.mkdir()
        (src / "manifest.json").write_bytes(b'{"version": "%s"}' % version.encode())
        (src / "model.keras").write_bytes(value)
        upload_dir(src, f"s3://{s3_sink.bucket}/models/pressure/{version}", client=s3_sink.client)
    base = f"s3://{s3_sink.bucket}/models/pressure"
    assert newest_bundle_url(base, s3_sink.client) == base + "/20260301T000000000000Z"
    assert newest_bundle_url(base + "/20260101T000000000000Z/", s3_sink.client) == base + "/20260101T000000000000Z"
    local = fetch_bundle(base, tmp_path / "cache", s3_sink.client)
    assert local == tmp_path / "cache" / s3_sink.bucket / "models" / "pressure" / "20260301T000000000000Z"
    assert (local / "model.keras").read_bytes() == b"new"
    s3_sink.client.delete_object(Bucket=s3_sink.bucket, Key="models/pressure/20260301T000000000000Z/model.keras")
    assert fetch_bundle(base, tmp_path / "cache", s3_sink.client) == local  # cached: no second download
    assert not [p for p in local.parent.iterdir() if p.name.startswith(".partial-")]
    with pytest.raises(FileNotFoundError, match="no model bundle"):
        newest_bundle_url(f"s3://{s3_sink.bucket}/models/none", s3_sink.client)
