"""The model registry on S3 (moto's server from scripts/services/s3.sh): versions uploaded
manifest last, the pointer read by detect.model as the deploy job reads it, promote, rollback,
refusals that change nothing, and the CLI. Bundles are files here (no Keras)."""
from __future__ import annotations

import json
import threading
import uuid

import pytest

from sentinel.cli import main
from sentinel.detect.model import BundleError, pin_bundle, read_manifest, read_pointer, resolve_bundle
from sentinel.lifecycle.registry import HISTORY, LifecycleError, Registry
from tests.conftest import need_service
from tests.unit.test_model_pointer import fake_bundle

V1, V2, V3 = "20260101T000000Z", "20260201T000000Z", "20260301T000000Z"


@pytest.fixture
def s3_registry(tmp_path, monkeypatch):
    need_service("SENTINEL_S3_ENDPOINT", "S3 server")
    from sentinel.store.storage import list_keys, s3_client
    client = s3_client()
    bucket = f"sentinel-reg-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("SENTINEL_BUNDLE_CACHE", str(tmp_path / "cache"))
    url = f"s3://{bucket}/models/pressure"
    reg = Registry(url)
    for v in (V1, V2, V3):
        fake_bundle(tmp_path / "staged", v)
        reg.add_version(tmp_path / "staged" / v, v)
    yield reg, client, bucket
    for key in list_keys(client, bucket, ""):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)


def pointer_etag(client, bucket):
    try:
        return client.head_object(Bucket=bucket, Key="models/pressure/promoted")["ETag"]
    except client.exceptions.ClientError:
        return None


def test_versions_pointer_and_resolution(s3_registry, tmp_path):
    reg, client, bucket = s3_registry
    assert reg.versions() == [V1, V2, V3] and reg.list()["complete"].all()
    assert read_pointer(reg.url) is None and pin_bundle(reg.url) == f"{reg.url}/{V3}"  # no pointer: the newest
    assert reg.promote(V1, "ana")["changed"]
    assert read_pointer(reg.url) == V1 and pin_bundle(reg.url) == f"{reg.url}/{V1}"
    assert read_manifest(reg.url)["version"] == V1
    local = resolve_bundle(reg.url)  # what the deploy job loads: downloaded once into the cache
    assert local.name == V1 and (local / "model.keras").is_file() and str(local).startswith(str(tmp_path / "cache"))
    reg.promote(V3, "ana")
    reg.promote(V2, "bob")
    assert reg.rollback("carl")["version"] == V3 and read_pointer(reg.url) == V3
    lines = client.get_object(Bucket=bucket, Key=f"models/pressure/{HISTORY}")["Body"].read().decode().splitlines()
    assert [json.loads(x)["version"] for x in lines] == [V1, V3, V2, V3]
    assert reg.overview()["serving"] == V3 and len(reg.overview()["versions"]) == 3


def test_refusals_change_nothing(s3_registry, tmp_path, capsys):
    reg, client, bucket = s3_registry
    reg.promote(V2, "ana")
    before = pointer_etag(client, bucket)
    client.delete_object(Bucket=bucket, Key=f"models/pressure/{V3}/scaler.json")
    with pytest.raises(LifecycleError, match="lacks scaler.json"):
        reg.promote(V3, "ana")
    assert main(["models", "promote", "20990101T000000Z", "--registry", reg.url]) == 2
    assert "has no version" in capsys.readouterr().err
    assert pointer_etag(client, bucket) == before and read_pointer(reg.url) == V2
    client.put_object(Bucket=bucket, Key="models/pressure/promoted", Body=b"{broken")
    with pytest.raises(BundleError, match="sentinel models promote"):
        pin_bundle(reg.url)
    assert main(["models", "rollback", "--registry", reg.url]) == 2  # nothing known to roll back from
    assert main(["models", "promote", V1, "--registry", reg.url]) == 0 and read_pointer(reg.url) == V1  # repaired


def test_cli_lists_an_s3_registry(s3_registry, capsys):
    reg, _, _ = s3_registry
    assert main(["models", "list", "--registry", reg.url]) == 0
    out = capsys.readouterr().out
    assert all(v in out for v in (V1, V2, V3)) and "no pointer yet" in out


def test_readers_see_whole_pointers_while_it_changes(s3_registry):
    reg, _, _ = s3_registry
    seen, errors, stop = set(), [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                seen.add(read_pointer(reg.url))
            except Exception as exc:  # noqa: BLE001 - any failed read is the finding
                errors.append(exc)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(8):
            reg.promote((V1, V2)[i % 2], "ana", "x" * 20_000)
    finally:
        stop.set()
        reader.join()
    assert not errors and seen <= {None, V1, V2}
