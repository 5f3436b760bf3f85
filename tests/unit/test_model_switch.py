"""The driver's per-batch state and the hot-swap decision, without Spark: a registry folder on
disk whose pointer moves, compatible and incompatible candidates, replays, a failed load."""
from __future__ import annotations

import json

import pytest

from sentinel.detect.model import pointer_text
from sentinel.stream.driver_state import DriverState
from sentinel.stream.model_switch import ModelSelector


def _bundle(registry, version, features=("pressure",), length=16):
    d = registry / version
    d.mkdir(parents=True)
    manifest = {"version": version, "features": list(features),
                "window": {"length": length, "max_gap_s": 1800, "interval_s": 300}}
    (d / "manifest.json").write_text(json.dumps(manifest))
    for f in ("model.keras", "scaler.json", "threshold.json"):
        (d / f).write_text("x")
    return d, manifest


def _promote(registry, version):
    (registry / "promoted").write_text(pointer_text(version))


def test_driver_state_reads_below_and_at_most_and_prunes(tmp_path):
    s = DriverState(tmp_path / "st")
    assert s.latest("incidents", below=5) is None
    for i in (1, 3, 4):
        s.save("incidents", i, f"state {i}")
    assert s.latest("incidents", below=4) == (3, "state 3")   # a replay of 4 starts from 3
    assert s.latest("incidents", at_most=4) == (4, "state 4")
    s.prune("incidents", keep=2)
    assert s.ids("incidents") == [3, 4]
    assert not list((tmp_path / "st").glob(".*.tmp"))  # no temporary files left behind


def test_driver_state_refuses_a_remote_checkpoint_without_a_local_folder():
    with pytest.raises(ValueError, match="stream.driver_state_dir"):
        DriverState.for_checkpoint("s3a://bucket/ckpt")
    assert DriverState.for_checkpoint("s3a://bucket/ckpt", "/tmp/x").folder.name == "x"
    assert DriverState.for_checkpoint("/data/ckpt").folder.as_posix() == "/data/ckpt/sentinel"


def test_follows_the_pointer_and_replays_pin_the_first_decision(tmp_path):
    reg = tmp_path / "models"
    a, ma = _bundle(reg, "20260101T000000Z")
    b, _ = _bundle(reg, "20260102T000000Z")
    _promote(reg, a.name)
    state = DriverState(tmp_path / "st")
    sel = ModelSelector(str(reg), str(a), ma, state, check_s=0)
    assert sel.follows
    assert sel.for_batch(0).version == a.name
    _promote(reg, b.name)
    assert sel.for_batch(1).version == b.name        # switched between batches
    assert sel.for_batch(2).version == b.name
    _promote(reg, a.name)                             # a rollback while batch 1 gets replayed ...
    assert sel.for_batch(1).version == b.name         # ... the replay keeps what batch 1 first used
    assert sel.for_batch(0).version == a.name
    # a restart reads where the last run was
    again = ModelSelector(str(reg), str(a), ma, DriverState(tmp_path / "st"), check_s=0)
    assert again.current.version == b.name and again.for_batch(2).version == b.name  # batch 2's replay
    assert again.for_batch(3).version == a.name       # and then follows the pointer again


def test_an_incompatible_candidate_is_refused_once_with_a_sentence(tmp_path, caplog):
    reg = tmp_path / "models"
    a, ma = _bundle(reg, "v1")
    bad, _ = _bundle(reg, "v2", length=32)            # another window length: the state cannot feed it
    _promote(reg, "v2")
    sel = ModelSelector(str(reg), str(a), ma, None, check_s=0)
    with caplog.at_level("WARNING", logger="sentinel.stream"):
        assert sel.for_batch(0).version == "v1"
        assert sel.for_batch(1).version == "v1"
    refusals = [r.getMessage() for r in caplog.records if "v2" in r.getMessage()]
    assert len(refusals) == 1 and "keeping model v1" in refusals[0]


def test_a_bundle_the_workers_cannot_load_is_refused_and_the_fallback_served(tmp_path):
    reg = tmp_path / "models"
    a, ma = _bundle(reg, "v1")
    _bundle(reg, "v2")
    _promote(reg, "v2")
    state = DriverState(tmp_path / "st")
    sel = ModelSelector(str(reg), str(a), ma, state, check_s=0)
    choice = sel.for_batch(5)
    assert choice.version == "v2" and choice.fallback == str(a)
    sel.refuse_loaded(5, "v2", "model.keras is not a zip file")
    assert sel.for_batch(6).version == "v1"
    assert sel.for_batch(7).version == "v1"           # not tried again while the pointer stays


def test_a_fixed_bundle_is_never_switched(tmp_path):
    reg = tmp_path / "models"
    a, ma = _bundle(reg, "v1")
    _bundle(reg, "v2")
    _promote(reg, "v2")
    sel = ModelSelector(str(a), str(a), ma, None, check_s=0)
    assert not sel.follows and sel.for_batch(0).version == "v1" and sel.for_batch(1).version == "v1"
