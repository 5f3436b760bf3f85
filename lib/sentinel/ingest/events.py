"""Sensor events: parsing and validation of raw JSON lines, and the reject contract.

An event is one JSON object, e.g.
``{"sensor_id": "PT-0012", "timestamp": "2026-03-25T16:00:00Z", "pressure": 31.42}``;
field names come from ``[data]`` settings. Anything that cannot be scored becomes a *reject*
(raw text + reason), never an exception: one bad line must not stop the stream.

:func:`parse_line` is the definition, in plain Python, used by ``sentinel produce`` and tests.
:func:`parse_batch` gives the same result for a whole batch with Arrow's JSON reader (about
1 µs a line instead of 15) and is what the streaming job runs.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple

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


class ParsedBatch(NamedTuple):
    """:func:`parse_batch` output: accepted readings (in input order) and rejected lines."""

    sensor_id: Any          # pyarrow string array
    event_time_ns: np.ndarray  # int64 ns since the epoch, UTC
    values: np.ndarray      # (n, features) float64
    raw: Any                # pyarrow string array
    reject_raw: list
    reject_reason: list


# A timestamp the vectorised path can read exactly as datetime.fromisoformat does; any other
# form (offsets, week dates, 7+ fraction digits, epoch ms) goes through parse_line.
_CANONICAL_TIME = r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,6}))?(?:Z|\+00:00)?$"
# Blocks of lines Arrow refuses are halved until they are this small, then parsed line by line.
_MIN_BLOCK = 256


def parse_batch(raw: Any, data: DataSettings, keys: Any = None) -> ParsedBatch:
    """Parse a batch of raw lines (Arrow binary/string array or a list) with the result
    :func:`parse_lines` gives, vectorised.

    Arrow's JSON reader parses every line that looks like one JSON object in one call; a row is
    accepted there only if it passes every check of :func:`parse_line` in a form the
    vectorised checks can vouch for (a canonical ISO-8601 time, a printable ASCII id, finite
    in-range values). Every other line, including every line of a block Arrow refuses (bad
    JSON, wrong types, duplicate keys), goes through :func:`parse_line`, which also writes
    every reject reason. ``keys`` (Kafka keys) are only needed there.
    """
    import pyarrow as pa

    lines = _as_binary(raw)
    n = len(lines)
    key_list = None if keys is None else (keys.to_pylist() if hasattr(keys, "to_pylist") else list(keys))
    candidate = _looks_like_one_object(lines, data.max_line_bytes)
    fields = [data.sensor_field, data.time_field, *data.features]
    if len(set(fields)) < len(fields):
        candidate[:] = False  # a field read twice: leave it to parse_line
    idx = np.flatnonzero(candidate)
    cand = lines.take(pa.array(idx))
    try:
        text = cand.cast(pa.string())  # also checks UTF-8
    except pa.ArrowInvalid:  # some lines are not UTF-8: parse_line decodes them leniently
        idx = idx[np.array([_is_utf8(b) for b in cand.to_pylist()], dtype=bool)]
        cand = lines.take(pa.array(idx))
        text = cand.cast(pa.string())
    accepted = np.zeros(n, dtype=bool)
    f_idx, f_ids, f_t, f_vals, f_raw = [], [], [], [], []
    for lo, table in (_read_objects(cand, data) if len(idx) else []):
        ok, t_ns, vals = _vouch(table, data)
        at = lo + np.flatnonzero(ok)  # positions among the candidates
        accepted[idx[at]] = True
        f_idx.append(idx[at])
        f_ids.append(table.column(0).filter(pa.array(ok)).combine_chunks())
        f_t.append(t_ns[ok])
        f_vals.append(vals[ok])
        f_raw.append(text.take(pa.array(at)))
    s_idx, s_ids, s_t, s_vals, s_raw, r_raw, r_reason = [], [], [], [], [], [], []
    slow = np.flatnonzero(~accepted)
    slow_lines = lines.take(pa.array(slow)).to_pylist() if len(slow) else []
    for i, line in zip(slow.tolist(), slow_lines):
        row = parse_line(line, data, None if key_list is None else _key_text(key_list[i]))
        if row[4] is None:
            s_idx.append(i)
            s_ids.append(row[1])
            s_t.append(pd.Timestamp(row[2]).value)
            s_vals.append(row[3])
            s_raw.append(row[0])
        else:
            r_raw.append(row[0])
            r_reason.append(row[4])
    # Put the two paths' rows back in input order: order decides which of two duplicates wins.
    order = np.argsort(np.concatenate([*f_idx, np.array(s_idx, dtype=np.int64)]), kind="stable")
    take = pa.array(order)
    ids = pa.concat_arrays([*f_ids, pa.array(s_ids, pa.string())]).take(take)
    raws = pa.concat_arrays([*f_raw, pa.array(s_raw, pa.string())]).take(take)
    t_all = np.concatenate([*f_t, np.array(s_t, dtype=np.int64)])[order]
    v_all = np.concatenate([*f_vals, np.array(s_vals, dtype=np.float64).reshape(-1, len(data.features))])[order]
    return ParsedBatch(ids, t_all, v_all, raws, r_raw, r_reason)


def _as_binary(raw: Any):
    import pyarrow as pa
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    if isinstance(raw, pa.Array):
        return raw.cast(pa.binary())
    items = raw.tolist() if hasattr(raw, "tolist") else list(raw)
    return pa.array([x.encode("utf-8") if isinstance(x, str) else x for x in items], pa.binary())


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _looks_like_one_object(lines, max_bytes: int) -> np.ndarray:
    """Lines Arrow may read as exactly one row each: ``{...}`` on one line, within the size limit.
    (Arrow skips empty lines and splits on CR/LF, which would shift rows.)"""
    import pyarrow.compute as pc
    n = len(lines)
    if n == 0:
        return np.zeros(0, dtype=bool)
    ok = pc.and_kleene(pc.starts_with(lines, pattern="{"), pc.ends_with(lines, pattern="}"))
    ok = pc.and_kleene(ok, pc.less_equal(pc.binary_length(lines), max_bytes))
    ok = ok.fill_null(False).to_numpy(zero_copy_only=False).copy()
    # CR/LF anywhere: found in the values buffer with numpy (a regex per line costs 7x more).
    _, offsets_buf, data_buf = lines.buffers()
    if data_buf is not None:
        offsets = np.frombuffer(offsets_buf, dtype=np.int32)[lines.offset:lines.offset + n + 1]
        data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]]
        breaks = np.flatnonzero((data == 10) | (data == 13)) + offsets[0]
        ok[np.searchsorted(offsets, breaks, side="right") - 1] = False
    return ok


def _read_objects(lines, data: DataSettings):
    """Arrow-parse ``lines`` (UTF-8 binary, one JSON object each) -> [(first position, table)]
    for the blocks Arrow accepts; blocks it refuses are halved, down to :data:`_MIN_BLOCK`
    lines (left to parse_line)."""
    import pyarrow as pa
    import pyarrow.json as pj
    schema = pa.schema([(data.sensor_field, pa.string()), (data.time_field, pa.string()),
                        *[(f, pa.float64()) for f in data.features]])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    out, pending = [], [(0, len(lines))]
    while pending:
        lo, hi = pending.pop()
        buf = b"\n".join(lines.slice(lo, hi - lo).to_pylist())
        try:
            table = pj.read_json(pa.py_buffer(buf), parse_options=options,
                                 read_options=pj.ReadOptions(use_threads=False, block_size=len(buf) + 1))
            if table.num_rows == hi - lo:
                out.append((lo, table.select(list(range(len(schema))))))
                continue
        except pa.ArrowInvalid:
            pass
        if hi - lo > _MIN_BLOCK:
            mid = (lo + hi) // 2
            pending += [(mid, hi), (lo, mid)]
    return out


def _vouch(table, data: DataSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of an Arrow-parsed block that parse_line would accept as they stand -> (mask, event
    time ns, values). A row not vouched for is not rejected here: parse_line decides it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    sensor, when = table.column(0).combine_chunks(), table.column(1).combine_chunks()
    # Printable ASCII, no surrounding spaces, 1..128 long: str.strip() and isprintable() agree.
    plain = pc.and_kleene(pc.ascii_is_printable(sensor), pc.equal(pc.ascii_trim_whitespace(sensor), sensor))
    plain = pc.and_kleene(plain, pc.less_equal(pc.binary_length(sensor), MAX_SENSOR_ID_LEN))
    ok = plain.fill_null(False).to_numpy(zero_copy_only=False).copy()
    parts = pc.extract_regex(when, pattern=_CANONICAL_TIME)
    seconds = _seconds(pc.struct_field(parts, "base"))
    ok &= seconds.is_valid().to_numpy(zero_copy_only=False)
    sec = pc.cast(seconds, pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    micros = pc.cast(pc.utf8_rpad(pc.struct_field(parts, "frac").fill_null(""), width=6, padding="0"), pa.int64(),
                     safe=False) if len(table) else pa.array([], pa.int64())
    t_ns = sec * 1_000_000_000 + micros.fill_null(0).to_numpy(zero_copy_only=False) * 1000
    ok &= (t_ns >= _MIN_EPOCH_MS * 1_000_000) & (t_ns < _MAX_EPOCH_MS * 1_000_000)
    vals = np.column_stack([table.column(2 + j).to_numpy(zero_copy_only=False).astype(np.float64)
                            for j in range(len(data.features))]) if len(table) else np.empty((0, len(data.features)))
    with np.errstate(invalid="ignore"):
        ok &= (np.isfinite(vals) & (vals >= data.valid_min) & (vals <= data.valid_max)).all(axis=1)
    return ok, t_ns, vals


def _seconds(base):
    """'YYYY-MM-DDTHH:MM:SS' strings -> timestamps in seconds; null where no such time exists."""
    import pyarrow as pa
    import pyarrow.compute as pc
    try:
        return base.cast(pa.timestamp("s"))  # strict, and fast: one impossible time fails the lot
    except pa.ArrowInvalid:
        seconds = pc.strptime(base, format="%Y-%m-%dT%H:%M:%S", unit="s", error_is_null=True)
        # strptime rolls 02-30 over to 03-02: keep only times that print back as written.
        same = pc.equal(pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S"), base)
        return pc.if_else(same.fill_null(False), seconds, pa.scalar(None, seconds.type))


def to_event_json(sensor_id: str, timestamp: datetime | pd.Timestamp, values: dict[str, float],
                  data: DataSettings) -> str:
    """The wire format for one event (used by the simulator and producers)."""
    ts = pd.Timestamp(timestamp)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    obj = {data.sensor_field: sensor_id, data.time_field: ts.strftime("%Y-%m-%dT%H:%M:%SZ")}
    obj.update({k: (round(float(v), 4) if v is not None else None) for k, v in values.items()})
    return json.dumps(obj)
