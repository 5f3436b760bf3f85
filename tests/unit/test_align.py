"""Zone alignment (detect.align) with hand-made lists in and out.

One zone Z of three sensors a, b, c (training means 10, 20, 30); slots of 10 ns, so a time of
20 is slot 2; carry a member's last value at most 20 ns; windows of 2 slots.
"""
import json

import numpy as np
import pytest

from sentinel.detect.align import (ALIGNED, DUPLICATE, LATE, NO_TIME, PENDING, UNKNOWN, WARMUP, AlignState,
                                   ZoneLayout, align)

LAYOUT = ZoneLayout({"Z": ["a", "b", "c"]}, {"a": 10.0, "b": 20.0, "c": 30.0})
KW = dict(layout=LAYOUT, interval_ns=10, length=2, max_gap_ns=20)


def run(readings, state=None, wait=2, flush=False):
    ids = [r[0] for r in readings]
    t = [r[1] for r in readings]
    v = [r[2] for r in readings]
    return align(ids, t, v, state, wait_slots=wait, flush=flush, **KW)


def test_a_late_sensor_inside_the_wait_completes_its_slot():
    first = run([("a", 0, 1.0), ("b", 0, 2.0), ("a", 10, 3.0), ("b", 10, 4.0)])
    assert first.status.tolist() == [PENDING] * 4 and first.zones == {}      # c may still come
    second = run([("c", 0, 5.0), ("c", 10, 6.0)], first.state)
    assert second.status.tolist() == [WARMUP, ALIGNED]                     # slot 0 warms up (W = 2)
    w = second.zones["Z"]
    assert w.windows.tolist() == [[[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]]]
    assert w.window_times.tolist() == [[0, 10]] and w.real.tolist() == [[True, True, True]]
    assert w.times.tolist() == [[10, 10, 10]] and second.row.tolist() == [-1, 0]


def test_a_sensor_past_the_wait_is_filled_and_then_late():
    out = run([("a", 0, 1.0), ("b", 0, 2.0), ("a", 10, 3.0), ("b", 10, 4.0), ("a", 20, 5.0), ("b", 20, 6.0)])
    # slot 2 seen: slot 0 waited 2 slots and is emitted without c (no last value: its mean, 30)
    assert out.status.tolist() == [WARMUP, WARMUP, PENDING, PENDING, PENDING, PENDING]
    assert out.state["Z"].tail_values == [[1.0, 2.0, 30.0]] and out.state["Z"].last_emitted == 0
    later = run([("c", 0, 9.0)], out.state)
    assert later.status.tolist() == [LATE] and later.zones == {}


def test_a_missing_member_is_carried_within_the_max_gap_then_its_mean():
    rows = [("a", 0, 1.0), ("b", 0, 2.0), ("c", 0, 3.0)]
    for s in (1, 2, 3):
        rows += [("a", 10 * s, 1.0 + s), ("b", 10 * s, 2.0 + s)]
    full = run(rows, wait=1, flush=True).zones["Z"]
    # c carried at slots 1 (10 old) and 2 (20 old), its mean (30) at slot 3 (30 old > 20)
    assert full.windows[:, -1, :].tolist() == [[2.0, 3.0, 3.0], [3.0, 4.0, 3.0], [4.0, 5.0, 30.0]]
    assert full.real.tolist() == [[True, True, False]] * 3
    assert full.times[:, 2].tolist() == [NO_TIME] * 3


def test_duplicates_pending_and_emitted_and_unknown_sensors():
    out = run([("a", 0, 1.0), ("a", 1, 1.5), ("x", 0, 7.0), ("b", 0, 2.0), ("c", 0, 3.0)])
    # a@1 is slot 0 again (rounded): a duplicate; x is in no zone
    assert out.status.tolist() == [WARMUP, DUPLICATE, UNKNOWN, WARMUP, WARMUP]
    assert out.zone.tolist() == ["Z", "Z", None, "Z", "Z"] and out.member.tolist() == [0, 0, -1, 1, 2]
    again = run([("b", 0, 2.0), ("b", 2, 2.0)], out.state)   # slot 0 emitted with b real in it
    assert again.status.tolist() == [DUPLICATE, DUPLICATE]


def test_wait_zero_emits_a_slot_at_its_first_reading():
    out = run([("a", 0, 1.0), ("b", 0, 2.0)], wait=0)
    assert out.status.tolist() == [WARMUP, LATE]          # b came after slot 0 was emitted with a alone
    assert out.state["Z"].tail_values == [[1.0, 20.0, 30.0]]


def test_jitter_rounds_to_the_nearest_slot_and_flush_emits_everything():
    out = run([("a", 9, 1.0), ("b", 11, 2.0), ("c", 14, 3.0), ("a", 16, 4.0)], flush=True)
    # 9, 11, 14 -> slot 1; 16 -> slot 2 (c and b carried there)
    assert out.status.tolist() == [WARMUP, WARMUP, WARMUP, ALIGNED]
    assert out.zones["Z"].windows.tolist() == [[[1.0, 2.0, 3.0], [4.0, 2.0, 3.0]]]
    assert out.zones["Z"].real.tolist() == [[True, False, False]]


def test_a_gap_restarts_the_window():
    rows = [(m, t, 1.0) for t in (0, 10, 50, 60) for m in "abc"]
    out = run(rows, flush=True)
    # 10 -> 50 is longer than the 20 ns max gap: slot 5 warms up again, slot 6 has a window
    assert out.zones["Z"].window_times.tolist() == [[0, 10], [50, 60]]
    assert [s for s in out.status.tolist()].count(WARMUP) == 6


def test_state_round_trip_equals_one_call_over_everything():
    rng = np.random.default_rng(0)
    rows = []
    for s in range(12):
        for m in "abc":
            if rng.uniform() < 0.8:                    # some members miss some slots
                rows.append((m, 10 * s + int(rng.integers(-3, 4)), float(rng.normal())))
    rows.sort(key=lambda r: r[1])
    whole = run(rows, wait=1, flush=True)
    state, parts = None, []
    chunks = (rows[:7], rows[7:19], rows[19:])
    for k, chunk in enumerate(chunks):
        part = run(chunk, state, wait=1, flush=k == len(chunks) - 1)
        state = {z: AlignState.from_dict(json.loads(json.dumps(st.to_dict()))) for z, st in part.state.items()}
        if "Z" in part.zones:
            parts.append(part.zones["Z"])
    joined = np.concatenate([p.windows for p in parts])
    assert np.array_equal(joined, whole.zones["Z"].windows)
    assert np.array_equal(np.concatenate([p.real for p in parts]), whole.zones["Z"].real)
    assert state["Z"].to_dict() == whole.state["Z"].to_dict()


def test_input_state_is_not_mutated_and_bad_layouts_are_sentences():
    first = run([("a", 0, 1.0)])
    before = first.state["Z"].to_dict()
    run([("b", 0, 2.0), ("c", 0, 3.0)], first.state)
    assert first.state["Z"].to_dict() == before
    with pytest.raises(ValueError, match="sensor a is a member of zones Z and Y"):
        ZoneLayout({"Z": ["a"], "Y": ["a"]})
