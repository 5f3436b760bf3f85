"""The vectorised parser (parse_batch) must give exactly what the reference parser
(parse_line / parse_lines) gives, line for line, on clean and hostile input."""
import json
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sentinel.ingest import events
from sentinel.config import DataSettings
from sentinel.ingest.events import parse_batch, parse_lines

D = DataSettings()

ODD_LINES = [
    "", "   ", "not json", "{", "[1,2]", "null", None,
    '{"sensor_id": "a"} {"sensor_id": "b"}',                                # two objects on one line
    '{"sensor_id": "PT-1",\n "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}',  # newline inside
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}\r',
    '  {"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 2}  ',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1, "pressure": 2}',  # last wins
    '{"sensor_id": "a", "sensor_id": "b", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}',
    '{"sensor_id": 12, "timestamp": "2026-03-25T16:00:00Z", "pressure": 3}',
    '{"sensor_id": " PT-2 ", "timestamp": "2026-03-25T16:00:00Z", "pressure": 3}',
    '{"sensor_id": "PT-é", "timestamp": "2026-03-25T16:00:00Z", "pressure": 3}',
    '{"sensor_id": "a\\u0000b", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}',
    '{"sensor_id": "x" , "timestamp": "2026-03-25T16:00:00Z", "pressure": 1, "n": {"d": [1, {"e": null}]}}',
    '{"sensor_id": "' + "s" * 128 + '", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}',
    '{"sensor_id": "' + "s" * 129 + '", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}',
    '{"timestamp": "2026-03-25T16:00:00Z", "pressure": 3}',                  # sensor from the key
    '{"sensor_id": null, "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": 1774454400000, "pressure": 1}',       # epoch ms
    '{"sensor_id": "PT-1", "timestamp": 1711382400, "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00.25Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00.123456", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00.1234567Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T18:00:00+02:00", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00+00:00", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25 16:00:00Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-02-30T16:00:00Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2024-02-29T16:00:00Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-01-01T23:59:60Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-01-01T24:00:00Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "1999-12-31T23:59:59Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2100-01-01T00:00:00Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": " 2026-03-25T16:00:00Z", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "yesterday", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": null, "pressure": 1}',
    '{"sensor_id": "PT-1", "pressure": 1}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z"}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": null}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": "31.4"}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": true}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": NaN}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": -Infinity}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1e400}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": -500}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": ' + "9" * 40 + "}",
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": -0.0}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 0.1000000000000000055511151231257827}',
    '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1, "pad": "' + "x" * 70_000 + '"}',
    b'{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1, "x": "\xff"}',
    b'{"sensor_id": "PT-\xff", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}',
    b"\xff\xfe\x00\x01garbage",
]


def clean_line(rng, i):
    when = pd.Timestamp("2026-03-25T16:00:00Z") + pd.Timedelta(seconds=rng.randrange(10**7))
    return json.dumps({"sensor_id": f"PT-{i % 97:04d}", "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "pressure": round(rng.uniform(-10, 200), rng.randrange(0, 8))})


def as_bytes(line):
    return line if isinstance(line, (bytes, type(None))) else line.encode("utf-8")


def expected(lines, data, keys=None):
    """Reference result from parse_lines, in the shape parse_batch returns."""
    ref = parse_lines(lines, data, keys)
    ok = ref["reject_reason"].isna()
    good, bad = ref[ok], ref[~ok]
    return (good["sensor_id"].tolist(), good["event_time"].astype("int64").tolist(),
            [list(v) for v in good["values"]], good["raw"].tolist(),
            bad["raw"].tolist(), bad["reject_reason"].tolist())


def actual(lines, data, keys=None):
    got = parse_batch(pa.array([as_bytes(x) for x in lines], pa.binary()), data, keys)
    assert got.values.shape == (len(got.sensor_id), len(data.features))
    return (got.sensor_id.to_pylist(), got.event_time_ns.tolist(), got.values.tolist(), got.raw.to_pylist(),
            got.reject_raw, got.reject_reason)


def test_odd_lines_alone_give_what_parse_line_gives():
    keys = ["KEY-1"] * len(ODD_LINES)
    assert actual(ODD_LINES, D, keys) == expected(ODD_LINES, D, keys)


def test_odd_lines_scattered_through_large_clean_batches_give_what_parse_line_gives():
    rng = random.Random(7)
    lines = [clean_line(rng, i) for i in range(3000)]
    for odd in ODD_LINES * 2:
        lines.insert(rng.randrange(len(lines) + 1), odd)
    keys = [None if rng.random() < 0.5 else f"K{i}" for i in range(len(lines))]
    got, want = actual(lines, D, keys), expected(lines, D, keys)
    assert len(got[0]) > 3000 and len(got[4]) > len(ODD_LINES)  # both paths had work to do
    assert got == want


def test_several_features_and_renamed_fields():
    d = DataSettings(sensor_field="id_sensor", time_field="fecha", features=("co2", "pm10"))
    lines = ['{"id_sensor": "s1", "fecha": "2025-11-09T21:00:00Z", "co2": 22.5, "pm10": 45}',
             '{"id_sensor": "s2", "fecha": "2025-11-09T21:00:00Z", "co2": 22.5}',
             '{"id_sensor": "s3", "fecha": "2025-11-09T21:00:00.5Z", "co2": 1, "pm10": 2, "pressure": "x"}'] * 300
    assert actual(lines, d) == expected(lines, d)


def test_clean_lines_never_reach_the_per_line_parser(monkeypatch):
    calls = []
    monkeypatch.setattr(events, "parse_line", lambda *a, **k: calls.append(a) or parse_line_ref(*a, **k))
    rng = random.Random(3)
    lines = [clean_line(rng, i) for i in range(2000)]
    got = parse_batch(pa.array(lines), D)
    assert len(got.sensor_id) == 2000 and calls == []
    # One bad line costs one block of lines at most, not the whole batch.
    lines[1234] = lines[1234].replace('"pressure": ', '"pressure": "')[:-1] + '"}'
    got = parse_batch(pa.array(lines), D)
    assert len(got.sensor_id) == 1999 and got.reject_reason[0].startswith("non_numeric")
    assert 1 <= len(calls) <= events._MIN_BLOCK


parse_line_ref = events.parse_line


@pytest.mark.parametrize("raw", [[], pa.array([], pa.string()), pa.array([None, None], pa.binary())])
def test_empty_and_all_null_batches(raw):
    got = parse_batch(raw, D)
    assert len(got.sensor_id) == 0 and got.values.shape == (0, 1)
    assert got.reject_reason == ["not_json: empty message"] * len(raw)


def test_string_input_gives_the_same_as_binary():
    rng = random.Random(5)
    lines = [clean_line(rng, i) for i in range(500)] + ["junk", '{"sensor_id": "é", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}']
    a = parse_batch(pa.array(lines, pa.string()), D)
    b = parse_batch(pa.array([x.encode() for x in lines], pa.binary()), D)
    assert a.sensor_id.equals(b.sensor_id) and a.raw.equals(b.raw) and np.array_equal(a.values, b.values)
    assert a.reject_raw == b.reject_raw == ["junk"]


def test_randomly_damaged_lines_give_what_parse_line_gives():
    rng = random.Random(11)
    alphabet = ['"', "{", "}", ",", ":", "\\", " ", "0", "9", ".", "e", "-", "Z", "T", "n", "\n", "\x00", "é"]
    lines = []
    for i in range(4000):
        line = clean_line(rng, i)
        for _ in range(rng.choice([0, 0, 1, 2])):
            at = rng.randrange(len(line))
            edit = rng.choice(["drop", "insert", "replace"])
            ch = rng.choice(alphabet)
            line = (line[:at] + line[at + 1:] if edit == "drop" else
                    line[:at] + ch + line[at:] if edit == "insert" else line[:at] + ch + line[at + 1:])
        lines.append(line)
    got, want = actual(lines, D), expected(lines, D)
    assert len(got[4]) > 500  # plenty of rejects, as well as accepted lines
    assert got == want
