"""Chunks: how a micro-batch travels between the stream's stages (Arrow IPC tables).

After parsing, each row of the stream is one Arrow IPC table of many readings (one state
bucket's share of one Arrow batch), not one reading. PySpark hands transformWithStateInPandas
its input row by row in Python (serializers.py, itertuples) and converts every column of every
row on each JVM/Python crossing; with chunks those costs are paid per chunk, and the JVM
shuffles a few large binary values instead of 100,000 small rows.

Pure numpy/pyarrow: the parse step (``parse_chunks``), the tables' codec and the window
state's bucket codec; no pyspark.
"""
from __future__ import annotations

import numpy as np

from sentinel.ingest import events

CHUNK_SCHEMA = "bucket int, rows binary"
# State bucket of malformed lines (sensors hash into 0..state_buckets-1).
REJECT_BUCKET = -1
# How sensor ids map to state buckets; stored in the state so a checkpoint written with
# another mapping is refused instead of silently splitting sensors' state.
BUCKET_HASH = "crc32"


def encode_table(table) -> bytes:
    """Arrow table -> IPC stream bytes (one chunk of the stream)."""
    import pyarrow as pa
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_table(blob: bytes):
    """Inverse of :func:`encode_table`."""
    import pyarrow as pa
    return pa.ipc.open_stream(blob).read_all()


def decode_tables(blobs):
    """IPC chunks (nulls skipped) -> one Arrow table, or None if there are none."""
    import pyarrow as pa
    tables = [decode_table(b) for b in blobs if b is not None]
    return pa.concat_tables(tables) if tables else None


def _fixed(matrix: np.ndarray):
    """(n, k) float64/int64 -> Arrow fixed-size lists of k (one buffer, no per-row objects)."""
    import pyarrow as pa
    m = np.ascontiguousarray(matrix)
    k = m.shape[1] if m.ndim == 2 else 1
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), k)


def fixed_to_numpy(column, width: int) -> np.ndarray:
    """Arrow fixed-size list column -> (n, width) array."""
    col = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if len(col) == 0:
        return np.empty((0, width))
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width)


def readings_table(sensor_ids, t_ns: np.ndarray, values: np.ndarray, raw):
    import pyarrow as pa
    return pa.table({"sensor_id": _strings(sensor_ids), "event_time": pa.array(t_ns, pa.int64()),
                     "values": _fixed(values), "raw": _strings(raw)})


def rejects_table(raw, reason, sensor_ids, t_ns, status):
    """Rejected lines; ``t_ns`` may hold None (no parsable time)."""
    import pyarrow as pa
    return pa.table({"raw": _strings(raw), "reason": _strings(reason),
                     "sensor_id": _strings(sensor_ids), "event_time": pa.array(t_ns, pa.int64()),
                     "status": _strings(status)})


def _strings(values):
    import pyarrow as pa
    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())


def bucket_of(sensor_ids, buckets: int, zone_of: dict[str, str] | None = None) -> np.ndarray:
    """Sensor id -> state bucket: CRC-32 of the UTF-8 id modulo ``buckets`` (stable across
    processes and versions, unlike Python's hash). Hashes each distinct id once.

    ``zone_of`` (zone bundles: member sensor -> zone): a member is hashed by its zone's name
    instead, so every member of a zone lands in the zone's bucket (its state key); sensors
    outside it keep their own bucket (the window state rejects them as ``unknown_sensor``).
    """
    import zlib
    import pyarrow.compute as pc
    ids = _strings(sensor_ids if not isinstance(sensor_ids, np.ndarray) else sensor_ids.tolist())
    if len(ids) == 0:
        return np.empty(0, dtype=np.int64)
    encoded = pc.dictionary_encode(ids)
    distinct = encoded.dictionary.to_pylist()
    if zone_of is not None:
        distinct = [zone_of.get(u, u) for u in distinct]
    per_id = np.array([zlib.crc32(u.encode("utf-8")) % buckets for u in distinct], dtype=np.int64)
    return per_id[encoded.indices.to_numpy(zero_copy_only=False)]


def parse_chunks(raw, keys, data_settings, buckets: int, zone_of: dict[str, str] | None = None):
    """Raw lines (Arrow array or list) -> a record batch of chunk rows (``CHUNK_SCHEMA``): one
    readings table per state bucket present, plus one rejects table (bucket ``REJECT_BUCKET``)
    if any line failed to parse. ``zone_of``: zone bundles' member -> zone (:func:`bucket_of`)."""
    import pyarrow as pa
    parsed = events.parse_batch(raw, data_settings, keys)
    bucket_col, blobs = [], []
    if parsed.reject_raw:
        m = len(parsed.reject_raw)
        bucket_col.append(REJECT_BUCKET)
        blobs.append(encode_table(rejects_table(parsed.reject_raw, parsed.reject_reason,
                                                [None] * m, [None] * m, ["reject"] * m)))
    if len(parsed.sensor_id):
        b = bucket_of(parsed.sensor_id, buckets, zone_of)
        order = np.argsort(b, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(b[order]) != 0])
        for idx in np.split(order, starts[1:]):
            take = pa.array(idx)
            bucket_col.append(int(b[idx[0]]))
            blobs.append(encode_table(readings_table(parsed.sensor_id.take(take), parsed.event_time_ns[idx],
                                                     parsed.values[idx], parsed.raw.take(take))))
    return pa.record_batch({"bucket": pa.array(bucket_col, pa.int32()), "rows": pa.array(blobs, pa.binary())})


def _parse_batches(data_settings, buckets: int, zone_of: dict[str, str] | None = None):
    def parse(batches):
        for batch in batches:
            names = batch.schema.names
            raw = batch.column(names.index("raw_bytes" if "raw_bytes" in names else "raw"))
            yield parse_chunks(raw, batch.column(names.index("key")), data_settings, buckets, zone_of)
    return parse


def encode_bucket_state(sensor_ids, last_time: np.ndarray, tail_codes: np.ndarray, tail_times: np.ndarray,
                        tail_values: np.ndarray, buckets: int) -> bytes:
    """One state bucket (its sensors' tails) -> Arrow IPC bytes.

    One row per sensor: id, newest accepted time, tail times, tail values (flattened).
    ``buckets`` and the hash are stored so a changed ``stream.state_buckets`` is caught, not
    misread.
    """
    import pyarrow as pa
    n_features = tail_values.shape[1] if tail_values.ndim == 2 else 1
    counts = np.bincount(tail_codes, minlength=len(sensor_ids)).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    table = pa.table({
        "sensor_id": pa.array(list(sensor_ids), pa.string()),
        "last_time": pa.array(last_time, pa.int64()),
        "tail_times": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tail_times, pa.int64())),
        "tail_values": pa.ListArray.from_arrays(pa.array(offsets * n_features),
                                                pa.array(tail_values.ravel(), pa.float64())),
    }).replace_schema_metadata({"buckets": str(buckets), "features": str(n_features), "hash": BUCKET_HASH})
    return encode_table(table)


def decode_bucket_state(blob: bytes, buckets: int, n_features: int):
    """Inverse of :func:`encode_bucket_state`: (sensor_ids, last_time, tail_codes, tail_times,
    tail_values). Stops with one sentence if the checkpoint was written with other settings."""
    if bytes(blob[:1]) == b"{":
        raise ValueError("the checkpoint's window state was written for a zone (network) bundle: deploy a zone "
                         "bundle with it, or start from a new stream.checkpoint")
    table = decode_table(blob)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get("hash") != BUCKET_HASH:
        raise ValueError("the checkpoint's window state was written by an older version that assigned "
                         "sensors to state buckets differently: start from a new stream.checkpoint")
    if int(meta.get("buckets", buckets)) != buckets:
        raise ValueError(f"stream.state_buckets is {buckets} but the checkpoint was written with "
                         f"{meta['buckets']}: set it back, or start from a new stream.checkpoint")
    if int(meta.get("features", n_features)) != n_features:
        raise ValueError(f"the model has {n_features} feature(s) but the checkpoint's window state has "
                         f"{meta['features']}: start from a new stream.checkpoint for this model")
    times = table.column("tail_times").combine_chunks()
    offsets = times.offsets.to_numpy()
    tail_codes = np.repeat(np.arange(table.num_rows), np.diff(offsets))
    tail_times = times.values.to_numpy()
    tail_values = table.column("tail_values").combine_chunks().values.to_numpy().reshape(-1, n_features)
    return (table.column("sensor_id").to_pandas().to_numpy(dtype=object),
            table.column("last_time").to_numpy().copy(), tail_codes, tail_times, tail_values)


# Zone bundles' window state: per bucket, a JSON object with its zones' ``align.AlignState`` and
# what they were aligned with, so a checkpoint written with another layout, grid or bucketing is
# refused with one sentence instead of misread.
ZONE_STATE_FORMAT = "zones/1"


def layout_fingerprint(zones: dict[str, list[str]]) -> str:
    """Short hash of a zone layout (zone -> ordered members): what a zone state was aligned for."""
    import hashlib
    import json
    text = json.dumps({str(z): [str(m) for m in v] for z, v in zones.items()}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def encode_zone_state(states: dict, fingerprint: str, interval_ns: int, buckets: int) -> bytes:
    """One state bucket's zones (zone -> ``align.AlignState``) -> JSON bytes."""
    import json
    return json.dumps({"format": ZONE_STATE_FORMAT, "hash": BUCKET_HASH, "buckets": int(buckets),
                       "layout": fingerprint, "interval_ns": int(interval_ns),
                       "zones": {z: st.to_dict() for z, st in sorted(states.items())}},
                      separators=(",", ":"), allow_nan=True).encode("utf-8")


def decode_zone_state(blob: bytes, fingerprint: str, interval_ns: int, buckets: int) -> dict:
    """Inverse of :func:`encode_zone_state`: zone -> ``align.AlignState``. Stops with one sentence
    if the checkpoint was written for per-sensor windows, another layout, grid or bucketing."""
    import json

    from sentinel.detect.align import AlignState
    if bytes(blob[:1]) != b"{":
        raise ValueError("the checkpoint's window state was written for a per-sensor bundle, not a zone (network) "
                         "bundle: deploy that kind of bundle with it, or start from a new stream.checkpoint")
    d = json.loads(bytes(blob).decode("utf-8"))
    if d.get("format") != ZONE_STATE_FORMAT or d.get("hash") != BUCKET_HASH:
        raise ValueError("the checkpoint's zone window state was written by another version: start from a new "
                         "stream.checkpoint")
    if int(d["buckets"]) != buckets:
        raise ValueError(f"stream.state_buckets is {buckets} but the checkpoint was written with "
                         f"{d['buckets']}: set it back, or start from a new stream.checkpoint")
    if d["layout"] != fingerprint:
        raise ValueError("the model's zones (which sensors are aligned together) differ from those the checkpoint's "
                         "window state was aligned for: start from a new stream.checkpoint for this model")
    if int(d["interval_ns"]) != int(interval_ns):
        raise ValueError(f"the model's sampling interval ({interval_ns / 1e9:g} s) differs from the one the "
                         f"checkpoint's zone state was aligned on ({int(d['interval_ns']) / 1e9:g} s): start from "
                         f"a new stream.checkpoint for this model")
    return {z: AlignState.from_dict(st) for z, st in d["zones"].items()}
