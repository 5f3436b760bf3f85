"""The zone (network) window state of one bucket, without Spark: bucketing by zone, the zone
state codec and its refusals, process_zone_bucket's hand-off (zone windows, rejects, counts)
and the manifest checks deploy runs before Spark starts. Spark runs the same functions in
tests/integration/test_stream_zones.py."""
import json

import numpy as np
import pytest

from sentinel.config import ConfigError, load_settings
from sentinel.detect.align import AlignState, ZoneLayout, align
from sentinel.stream.chunks import (bucket_of, decode_bucket_state, decode_table, decode_zone_state,
                                    encode_bucket_state, encode_zone_state, fixed_to_numpy, layout_fingerprint,
                                    parse_chunks, readings_table)
from sentinel.stream.query import check_bundle
from sentinel.stream.window_state import (DUPLICATE_REASON, UNKNOWN_REASON, ZONE_LATE_REASON, ZoneConfig,
                                          process_zone_bucket, zone_config)

S = 1_000_000_000
ZONES = {"Z": ["a", "b", "c"], "Y": ["d", "e"]}


def manifest(**window):
    w = {"length": 2, "interval_s": 10.0, "max_gap_s": 20.0, "wait_slots": 2} | window
    return {"version": "v1", "features": ["pressure"], "window": w,
            "model": {"kind": "residual", "mode": "zone", "zones": ZONES,
                      "means": {"a": 10.0, "b": 20.0, "c": 30.0, "d": 1.0, "e": 2.0}}}


CFG = zone_config(manifest(), 4)


class Cell:
    """Holds one value, with ValueState's get/update (None when empty)."""

    def __init__(self):
        self.value = None

    def get(self):
        return self.value

    def update(self, value):
        self.value = value


def readings(*rows):
    """(sensor, seconds, value) -> the readings table the stream hands to the state."""
    return readings_table([r[0] for r in rows], np.array([r[1] * S for r in rows], dtype=np.int64),
                          np.array([[r[2]] for r in rows]), [f"{r[0]}@{r[1]}" for r in rows])


def test_members_of_a_zone_share_its_bucket_and_others_keep_their_own():
    ids = ["a", "b", "c", "d", "e", "x"]
    b = bucket_of(ids, 7, CFG.zone_of)
    assert len(set(b[:3])) == 1 and b[3] == b[4]
    assert b[0] == bucket_of(["Z"], 7)[0] and b[3] == bucket_of(["Y"], 7)[0]
    assert b[5] == bucket_of(["x"], 7)[0]
    assert bucket_of(ids, 7).tolist() == bucket_of(ids, 7, None).tolist()   # per-sensor: unchanged
    lines = [json.dumps({"sensor_id": s, "timestamp": "2026-01-01T00:00:00Z", "pressure": 1.0}) for s in ids]
    batch = parse_chunks(lines, [None] * len(lines), load_settings().data, 7, CFG.zone_of)
    per_chunk = [set(decode_table(blob).column("sensor_id").to_pylist()) for blob in batch.column("rows").to_pylist()]
    assert any({"a", "b", "c"} <= c for c in per_chunk) and any({"d", "e"} <= c for c in per_chunk)


def test_zone_state_round_trips_and_refuses_other_settings():
    st = {"Z": AlignState(3, {4: {0: (1.5, 40 * S)}}, [3], [[1.0, float("nan"), 3.0]], last_emitted=3, max_seen=4)}
    fp = layout_fingerprint(ZONES)
    blob = encode_zone_state(st, fp, 10 * S, 4)
    back = decode_zone_state(blob, fp, 10 * S, 4)
    assert back["Z"].pending == {4: {0: (1.5, 40 * S)}} and back["Z"].last_emitted == 3
    assert np.isnan(back["Z"].tail_values[0][1])
    with pytest.raises(ValueError, match="state_buckets is 8"):
        decode_zone_state(blob, fp, 10 * S, 8)
    with pytest.raises(ValueError, match="zones .* differ"):
        decode_zone_state(blob, layout_fingerprint({"Z": ["a", "b"]}), 10 * S, 4)
    with pytest.raises(ValueError, match="sampling interval"):
        decode_zone_state(blob, fp, 60 * S, 4)
    per_sensor = encode_bucket_state(["a"], np.array([0]), np.array([0]), np.array([0]), np.zeros((1, 1)), 4)
    with pytest.raises(ValueError, match="per-sensor bundle"):
        decode_zone_state(per_sensor, fp, 10 * S, 4)
    with pytest.raises(ValueError, match="zone \\(network\\) bundle"):
        decode_bucket_state(blob, 4, 1)


def test_process_zone_bucket_carries_pending_steps_across_batches_like_one_align_call():
    cell = Cell()
    first = readings(("a", 0, 1.0), ("b", 0, 2.0), ("c", 0, 3.0), ("a", 10, 4.0), ("b", 10, 5.0),
                     ("x", 10, 9.0), ("d", 0, 7.0), ("d", 10, 7.1), ("d", 20, 7.2))
    w1, rej1, warm1 = process_zone_bucket(first, cell, CFG)
    # slot 0 warms Z up (W = 2), slot 1 waits for c; Y emits slot 0 without e (d is 2 slots on),
    # slots 1 and 2 wait; x is in no zone. Warm-up counts the waiting readings too.
    assert w1.num_rows == 0 and warm1 == 8
    assert rej1.column("status").to_pylist() == ["unknown_sensor"]
    assert rej1.column("reason").to_pylist() == [UNKNOWN_REASON] and rej1.column("raw").to_pylist() == ["x@10"]
    second = readings(("a", 20, 6.0), ("c", 10, 7.5), ("b", 10, 5.0), ("e", 0, 0.5))
    w2, rej2, warm2 = process_zone_bucket(second, cell, CFG)
    assert warm2 == 1                                             # a@20 waits in the state
    assert sorted(zip(rej2.column("status").to_pylist(), rej2.column("reason").to_pylist())) == [
        ("duplicate", DUPLICATE_REASON), ("late", ZONE_LATE_REASON)]
    assert w2.column("zone").to_pylist() == ["Z"]
    assert fixed_to_numpy(w2.column("window_times"), 2).tolist() == [[0, 10 * S]]
    assert w2.column("window").to_pylist() == [[1.0, 2.0, 3.0, 4.0, 5.0, 7.5]]
    assert w2.column("real").to_pylist() == [[True, True, True]]
    assert w2.column("fresh").to_pylist() == [[False, False, True]]   # a and b came in the first batch
    assert w2.column("times").to_pylist() == [[10 * S, 10 * S, 10 * S]]
    # the same readings in one call give the same windows
    rows = [("a", 0, 1.0), ("b", 0, 2.0), ("c", 0, 3.0), ("a", 10, 4.0), ("b", 10, 5.0), ("d", 0, 7.0),
            ("d", 10, 7.1), ("d", 20, 7.2), ("a", 20, 6.0), ("c", 10, 7.5)]
    one = align([r[0] for r in rows], [r[1] * S for r in rows], [r[2] for r in rows], None, CFG.layout,
                CFG.interval_ns, CFG.wait_slots, CFG.length, CFG.max_gap_ns)
    assert one.zones["Z"].windows.reshape(1, -1).tolist() == w2.column("window").to_pylist()
    state = decode_zone_state(cell.value[0], CFG.fingerprint, CFG.interval_ns, CFG.buckets)
    assert set(state) == {"Z", "Y"} and list(state["Z"].pending) == [2]


def test_zone_config_from_the_manifest_and_its_refusals():
    assert zone_config({"version": "v", "features": ["p"], "window": {"length": 4, "max_gap_s": 600},
                        "model": {"kind": "autoencoder"}}, 4) is None
    assert CFG == ZoneConfig(ZONES, {"a": 10.0, "b": 20.0, "c": 30.0, "d": 1.0, "e": 2.0}, 10 * S, 2, 2, 20 * S, 4)
    assert CFG.zone_of["e"] == "Y" and isinstance(CFG.layout, ZoneLayout)
    with pytest.raises(ConfigError, match="no sampling interval"):
        zone_config(manifest(interval_s=0.0), 4)
    with pytest.raises(ConfigError, match="max_gap_s = 5 below"):
        zone_config(manifest(max_gap_s=5.0), 4)
    bad = manifest()
    bad["model"]["zones"] = {"Z": ["a", "b"], "Y": ["b", "c"]}
    with pytest.raises(ConfigError, match="unusable zone layout"):
        zone_config(bad, 4)
    two = manifest()
    two["features"] = ["pressure", "flow"]
    with pytest.raises(ConfigError, match="one feature per sensor"):
        zone_config(two, 4)
    with pytest.raises(ConfigError, match="data.features is"):
        check_bundle(load_settings(None, ['data.features=["head"]']), manifest())
    assert check_bundle(load_settings(), manifest()) == zone_config(manifest(), load_settings().stream.state_buckets)


def test_deploy_refuses_an_unstreamable_zone_bundle_before_spark_starts(tmp_path, capsys):
    from sentinel.cli import main
    (tmp_path / "manifest.json").write_text(json.dumps(manifest(interval_s=0.0)))
    code = main(["deploy", "--model", str(tmp_path), "--checkpoint", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 2 and "no sampling interval" in err and err.count("\n") == 1
    assert not (tmp_path / "ckpt").exists()
