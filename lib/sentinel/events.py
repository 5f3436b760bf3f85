"""Sensor events: parsing and validation of raw JSON lines, and the reject contract.

An event is one JSON object, e.g.
``{"sensor_id": "PT-0012", "timestamp": "2026-03-25T16:00:00Z", "pressure": 31.42}``;
field names come from ``[data]`` settings. Anything that cannot be scored becomes a *reject*
(raw text + reason), never an exception: one bad line must not stop the stream.

Pure Python/pandas, so the same parser runs in the streaming job (via ``mapInPandas``), in
``sentinel produce`` and in unit tests.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np
import pandas as pd

from sentinel.config import DataSettings

# Reject reasons (the part before ':' is stable and queryable; the rest is detail).
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
TOO_LARGE = "too_large"
MISSING_SENSOR = "missing_sensor"
BAD_SENSOR = "bad_sensor"
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
MISSING_FEATURE = "missing_feature"
NON_NUMERIC = "non_numeric"
NOT_FINITE = "not_finite"
OUT_OF_RANGE = "out_of_range"
LATE = "late"
DUPLICATE = "duplicate"

MAX_SENSOR_ID_LEN = 128
# Epoch milliseconds accepted: 2000-01-01 .. 2100-01-01. Seconds (1.7e9) fall outside and
# are rejected rather than silently read as 1970.
_MIN_EPOCH_MS = 946_684_800_000
_MAX_EPOCH_MS = 4_102_444_800_000

PARSED_COLUMNS = ["raw", "sensor_id", "event_time", "values", "reject_reason"]


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 string (naive means UTC) or epoch milliseconds -> aware UTC datetime.

    Raises:
        ValueError: with a short human reason.
    """
    if isinstance(value, bool):
        raise ValueError("boolean is not a timestamp")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not _MIN_EPOCH_MS <= value < _MAX_EPOCH_MS:
            raise ValueError(f"epoch milliseconds expected between years 2000 and 2100, got {value!r}")
        return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            raise ValueError("empty or overlong timestamp string")
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not ISO-8601: {text[:40]!r}") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        ts = ts.astimezone(timezone.utc)
        if not 2000 <= ts.year < 2100:
            raise ValueError(f"year {ts.year} outside 2000..2099")
        return ts
    raise ValueError(f"timestamp must be a string or epoch milliseconds, got {type(value).__name__}")


def _reject(raw: str, reason: str) -> tuple:
    return (raw, None, None, None, reason)


def parse_line(raw: Any, data: DataSettings, key: str | None = None) -> tuple:
    """One raw line -> ``(raw, sensor_id, event_time, values, reject_reason)``.

    ``key`` (a Kafka message key) supplies the sensor id when the JSON lacks one.
    Exactly one of ``values`` and ``reject_reason`` is None.
    """
    if raw is None:
        return _reject("", f"{NOT_JSON}: empty message")
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", errors="replace")
    if len(raw) > data.max_line_bytes:
        return _reject(raw[: data.max_line_bytes],
                       f"{TOO_LARGE}: {len(raw)} characters, limit data.max_line_bytes={data.max_line_bytes}")
    text = raw.strip()
    if not text:
        return _reject(raw, f"{NOT_JSON}: empty line")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return _reject(raw, f"{NOT_JSON}: {str(exc)[:80]}")
    if not isinstance(obj, dict):
        return _reject(raw, f"{NOT_OBJECT}: got {type(obj).__name__}")

    sensor = obj.get(data.sensor_field, key)
    if sensor is None:
        return _reject(raw, f"{MISSING_SENSOR}: field '{data.sensor_field}' absent")
    if isinstance(sensor, bool) or not isinstance(sensor, (str, int)):
        return _reject(raw, f"{BAD_SENSOR}: must be a string or integer")
    sensor = str(sensor).strip()
    if not sensor or len(sensor) > MAX_SENSOR_ID_LEN or not sensor.isprintable():
        return _reject(raw, f"{BAD_SENSOR}: empty, longer than {MAX_SENSOR_ID_LEN} or unprintable")

    if data.time_field not in obj or obj[data.time_field] is None:
        return _reject(raw, f"{MISSING_TIMESTAMP}: field '{data.time_field}' absent")
    try:
        event_time = parse_timestamp(obj[data.time_field])
    except ValueError as exc:
        return _reject(raw, f"{BAD_TIMESTAMP}: {exc}")

    values = []
    for name in data.features:
        if name not in obj or obj[name] is None:
            return _reject(raw, f"{MISSING_FEATURE}: field '{name}' absent")
        v = obj[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return _reject(raw, f"{NON_NUMERIC}: field '{name}' is {type(v).__name__}, number expected")
        try:
            v = float(v)
        except OverflowError:
            return _reject(raw, f"{OUT_OF_RANGE}: field '{name}' overflows a double")
        if not math.isfinite(v):
            return _reject(raw, f"{NOT_FINITE}: field '{name}' is {v}")
        if not data.valid_min <= v <= data.valid_max:
            return _reject(raw, f"{OUT_OF_RANGE}: field '{name}'={v} outside "
                                f"[{data.valid_min}, {data.valid_max}] (data.valid_min/valid_max)")
        values.append(v)
    return (raw, sensor, event_time, values, None)


def parse_lines(lines: Iterable[Any], data: DataSettings, keys: Iterable[Any] | None = None) -> pd.DataFrame:
    """Parse many raw lines into a frame with :data:`PARSED_COLUMNS`.

    ``event_time`` is ``datetime64[ns, UTC]`` (NaT for rejects).
    """
    if keys is None:
        rows = [parse_line(line, data) for line in lines]
    else:
        rows = [parse_line(line, data, _key_text(k)) for line, k in zip(lines, keys)]
    frame = pd.DataFrame.from_records(rows, columns=PARSED_COLUMNS)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


def _key_text(key: Any) -> str | None:
    if key is None or (isinstance(key, float) and np.isnan(key)):
        return None
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", errors="replace")
    return str(key)


def to_event_json(sensor_id: str, timestamp: datetime | pd.Timestamp, values: dict[str, float],
                  data: DataSettings) -> str:
    """The wire format for one event (used by the simulator and producers)."""
    ts = pd.Timestamp(timestamp)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    obj = {data.sensor_field: sensor_id, data.time_field: ts.strftime("%Y-%m-%dT%H:%M:%SZ")}
    obj.update({k: (round(float(v), 4) if v is not None else None) for k, v in values.items()})
    return json.dumps(obj)
