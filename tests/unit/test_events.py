"""Event parsing with malformed and hostile input: every bad line becomes a reject."""
import json
from datetime import datetime, timezone

import pytest

from sentinel.config import DataSettings
from sentinel.ingest.events import parse_line, parse_lines, parse_timestamp

D = DataSettings()


def reason(line, **kw):
    return parse_line(line, D, **kw)[4]


def test_valid_event():
    raw, sensor, t, values, rej = parse_line('{"sensor_id": "PT-0012", "timestamp": "2026-03-25T16:00:00Z", "pressure": 31.42}', D)
    assert (sensor, values, rej) == ("PT-0012", [31.42], None)
    assert t == datetime(2026, 3, 25, 16, tzinfo=timezone.utc)


@pytest.mark.parametrize("line,code", [
    ("not json at all", "not_json"),
    ("", "not_json"),
    ("   ", "not_json"),
    ("{", "not_json"),
    ("[1,2,3]", "not_object"),
    ('"just a string"', "not_object"),
    ("null", "not_object"),
    ('{"timestamp": "2026-03-25T16:00:00Z", "pressure": 1}', "missing_sensor"),
    ('{"sensor_id": null, "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}', "missing_sensor"),
    ('{"sensor_id": {"a": 1}, "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}', "bad_sensor"),
    ('{"sensor_id": true, "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}', "bad_sensor"),
    ('{"sensor_id": "", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}', "bad_sensor"),
    ('{"sensor_id": "a\\u0000b", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}', "bad_sensor"),
    ('{"sensor_id": "PT-1", "pressure": 1}', "missing_timestamp"),
    ('{"sensor_id": "PT-1", "timestamp": "yesterday", "pressure": 1}', "bad_timestamp"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-13-45T99:00:00Z", "pressure": 1}', "bad_timestamp"),
    ('{"sensor_id": "PT-1", "timestamp": 1711382400, "pressure": 1}', "bad_timestamp"),  # seconds, not ms
    ('{"sensor_id": "PT-1", "timestamp": "1890-01-01T00:00:00Z", "pressure": 1}', "bad_timestamp"),
    ('{"sensor_id": "PT-1", "timestamp": true, "pressure": 1}', "bad_timestamp"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z"}', "missing_feature"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": null}', "missing_feature"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": "31.4"}', "non_numeric"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": true}', "non_numeric"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": [1]}', "non_numeric"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": NaN}', "not_finite"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": Infinity}', "not_finite"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1e400}', "not_finite"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1e300}', "out_of_range"),
    ('{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": -500}', "out_of_range"),
])
def test_bad_lines_are_rejected_with_a_reason(line, code):
    assert reason(line).split(":")[0] == code


def test_huge_integer_does_not_crash():
    line = '{"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": ' + "9" * 500 + "}"
    assert reason(line).split(":")[0] == "out_of_range"


def test_one_megabyte_line_is_rejected_and_truncated():
    line = json.dumps({"sensor_id": "PT-1", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1, "pad": "x" * 1_000_000})
    raw, *_, rej = parse_line(line, D)
    assert rej.startswith("too_large")
    assert len(raw) == D.max_line_bytes


def test_deeply_nested_json_is_rejected_not_crashing():
    assert reason("[" * 30_000 + "]" * 30_000).split(":")[0] in ("not_json", "not_object")


def test_binary_garbage_is_rejected():
    assert reason(b"\xff\xfe\x00\x01garbage").split(":")[0] == "not_json"


def test_message_key_supplies_missing_sensor():
    _, sensor, *_ , rej = parse_line('{"timestamp": "2026-03-25T16:00:00Z", "pressure": 3}', D, key="PT-9")
    assert (sensor, rej) == ("PT-9", None)


def test_integer_sensor_id_and_extra_fields_are_fine():
    _, sensor, _, values, rej = parse_line('{"sensor_id": 12, "timestamp": "2026-03-25T16:00:00Z", "pressure": 3, "x": "y"}', D)
    assert (sensor, values, rej) == ("12", [3.0], None)


@pytest.mark.parametrize("value,expected", [
    ("2026-03-25T16:00:00Z", datetime(2026, 3, 25, 16, tzinfo=timezone.utc)),
    ("2026-03-25T16:00:00", datetime(2026, 3, 25, 16, tzinfo=timezone.utc)),          # naive = UTC
    ("2026-03-25T18:00:00+02:00", datetime(2026, 3, 25, 16, tzinfo=timezone.utc)),
    ("2026-03-25 16:00:00.250Z", datetime(2026, 3, 25, 16, 0, 0, 250000, tzinfo=timezone.utc)),
    (1774454400000, datetime(2026, 3, 25, 16, tzinfo=timezone.utc)),                   # epoch ms
])
def test_timestamp_formats(value, expected):
    assert parse_timestamp(value) == expected


def test_configured_field_names_and_several_features():
    d = DataSettings(sensor_field="id_sensor", features=("nivelco2", "nivelpm10"))
    _, sensor, _, values, rej = parse_line('{"id_sensor": "s1", "timestamp": "2025-11-09T21:00:00Z", "nivelco2": 22.5, "nivelpm10": 45}', d)
    assert (sensor, values, rej) == ("s1", [22.5, 45.0], None)


def test_parse_lines_returns_a_frame_with_utc_times_and_rejects():
    frame = parse_lines(['{"sensor_id": "a", "timestamp": "2026-03-25T16:00:00Z", "pressure": 1}', "junk"], D)
    assert frame["reject_reason"].isna().tolist() == [True, False]
    assert str(frame["event_time"].dt.tz) == "UTC"
