"""The registry pointer and bundle resolution in detect.model (no Keras: bundles are files here)."""
import json

import pytest

from sentinel.detect.model import (POINTER, BundleError, check_compatible, parse_pointer, pin_bundle,
                                   pointer_text, read_manifest, read_pointer, read_pointer_record,
                                   resolve_bundle, version_ref)


def manifest(version, features=("pressure",), length=32, max_gap_s=1800, reduce="mean"):
    return {"version": version, "features": list(features), "score": {"reduce": reduce},
            "window": {"length": length, "max_gap_s": max_gap_s, "interval_s": 300, "calendar": True}}


def fake_bundle(root, version, **kw):
    d = root / version
    d.mkdir(parents=True)
    for f in ("model.keras", "scaler.json", "threshold.json"):
        (d / f).write_text("{}")
    (d / "manifest.json").write_text(json.dumps(manifest(version, **kw)))
    return d


def test_no_pointer_means_the_newest_version_as_before(tmp_path):
    fake_bundle(tmp_path, "20260101T000000Z")
    newest = fake_bundle(tmp_path, "20260201T000000Z")
    (tmp_path / ".staging-abc").mkdir()  # a half-built challenger is never "newest"
    (tmp_path / ".staging-abc" / "manifest.json").write_text("{}")
    assert read_pointer(tmp_path) is None
    assert resolve_bundle(tmp_path) == newest
    assert resolve_bundle(newest) == newest  # a bundle stays itself
    assert read_pointer(newest) is None


def test_pointer_is_followed_json_or_bare_name(tmp_path):
    old = fake_bundle(tmp_path, "20260101T000000Z")
    fake_bundle(tmp_path, "20260201T000000Z")
    (tmp_path / POINTER).write_text(pointer_text("20260101T000000Z", promoted_by="ana"))
    assert read_pointer(tmp_path) == "20260101T000000Z"
    assert read_pointer_record(tmp_path)["promoted_by"] == "ana"
    assert resolve_bundle(tmp_path) == old
    assert pin_bundle(tmp_path) == str(old)
    assert read_manifest(tmp_path)["version"] == "20260101T000000Z"
    (tmp_path / POINTER).write_text("20260101T000000Z\n")  # written by hand
    assert resolve_bundle(tmp_path) == old


@pytest.mark.parametrize("text", ["", "{not json", '{"version": "../etc"}', '{"v": 1}', "a/b", "[1]"])
def test_a_corrupt_pointer_is_one_sentence(tmp_path, text):
    fake_bundle(tmp_path, "v1")
    (tmp_path / POINTER).write_text(text)
    with pytest.raises(BundleError, match="sentinel models promote") as exc:
        resolve_bundle(tmp_path)
    assert str(exc.value).count(". ") == 0


def test_pointer_to_a_missing_version_is_refused_not_replaced_by_the_newest(tmp_path):
    fake_bundle(tmp_path, "v1")
    (tmp_path / POINTER).write_text(pointer_text("v9"))
    with pytest.raises(BundleError, match="names version v9"):
        resolve_bundle(tmp_path)


def test_version_names_are_checked():
    with pytest.raises(BundleError):
        pointer_text("../x")
    with pytest.raises(BundleError):
        version_ref("models/pressure", "a/b")
    assert version_ref("s3://b/models/pressure/", "v1") == "s3://b/models/pressure/v1"
    assert parse_pointer('{"version": "v1", "previous": null}')["version"] == "v1"


def test_check_compatible(tmp_path):
    run = manifest("a")
    assert check_compatible(run, manifest("b")) is None
    assert "features" in check_compatible(run, manifest("b", features=("pressure", "flow")))
    assert "window length is 16" in check_compatible(run, manifest("b", length=16))
    assert "max_gap_s" in check_compatible(run, manifest("b", max_gap_s=600))
    assert "incomplete manifest" in check_compatible(run, {"version": "b"})
    d = fake_bundle(tmp_path, "b")
    assert check_compatible(run, manifest("b"), d) is None
    (d / "scaler.json").unlink()
    assert "lacks scaler.json" in check_compatible(run, manifest("b"), d)
    d2 = fake_bundle(tmp_path, "c", reduce="mahalanobis")
    assert "error_model.json" in check_compatible(run, manifest("c", reduce="mahalanobis"), d2)
    for why in (check_compatible(run, manifest("b", length=16)), check_compatible(run, manifest("b"), d)):
        assert why.count(": ") >= 1 and "\n" not in why
