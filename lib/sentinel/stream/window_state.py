"""Window state: each sensor's newest W-1 readings, kept by ``transformWithStateInPandas``.

Sensors share state buckets so that one call assembles the windows of many sensors at once
(``windows.assemble_many``, the same function as the batch path). The state is also where
duplicates and late readings are caught: a reading at the same time as, or older than, the
newest one accepted for its sensor becomes a ``duplicate`` or ``late`` reject. A Spark
watermark with ``dropDuplicatesWithinWatermark`` would drop such rows without a trace, so there
is none; state stays bounded anyway (W-1 readings per sensor).

Zone (network) bundles (:class:`ZoneWindowProcessor`): the members of a zone share its bucket
(``chunks.bucket_of`` hashes them by zone) and the bucket's state holds its zones'
``align.AlignState`` (JSON); each micro-batch continues them with ``align.align``, the function
the batch path calls once over a whole table, and emits zone windows with their ``real`` mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sentinel.detect.windows import LATE, STATUS_NAMES
from sentinel.stream.chunks import (REJECT_BUCKET, _fixed, decode_bucket_state, decode_tables, decode_zone_state,
                                    encode_bucket_state, encode_table, encode_zone_state, fixed_to_numpy,
                                    layout_fingerprint, rejects_table)

STAGED_SCHEMA = "bucket int, n_events long, n_warmup long, windows binary, rejects binary"
LATE_REASON = "late: older than the newest reading already scored for this sensor"
DUPLICATE_REASON = "duplicate: same sensor and event time as an accepted reading"


class WindowProcessor:
    """Window state for ``transformWithStateInPandas``, keyed by state bucket.

    Sensors are hashed into ``stream.state_buckets`` buckets; a bucket's state holds the
    newest W-1 readings and newest accepted event time of each of its sensors. One call per
    bucket per micro-batch assembles every window of the bucket's sensors at once
    (``windows.assemble_many``, the batch path's code), so the cost per micro-batch is a few
    state reads and writes and numpy passes, not a Python call and state round trip per
    sensor. A failure fails the micro-batch, which Spark re-runs from the checkpoint (state is
    only committed with the batch).
    """

    def __new__(cls, *args, **kwargs):
        # Subclass StatefulProcessor lazily so this module imports without pyspark.
        from pyspark.sql.streaming import StatefulProcessor

        impl = type("WindowProcessorImpl", (StatefulProcessor,), dict(cls._methods()))
        obj = impl()
        obj._setup(*args, **kwargs)
        return obj

    @staticmethod
    def _methods():
        def _setup(self, length: int, max_gap_ns: int, n_features: int, buckets: int):
            self.length, self.max_gap_ns, self.n_features, self.buckets = length, max_gap_ns, n_features, buckets

        def init(self, handle):
            from pyspark.sql.types import BinaryType, StructField, StructType
            self.state = handle.getValueState("windows", StructType([StructField("tails", BinaryType())]))

        def handleInputRows(self, key, rows, timerValues):
            table = decode_tables(b for pdf in rows for b in pdf["rows"])
            bucket = int(key[0])
            if bucket == REJECT_BUCKET:  # malformed lines: no state, straight to the reject store
                yield pd.DataFrame({"bucket": [bucket], "n_events": [table.num_rows], "n_warmup": [0],
                                    "windows": [None], "rejects": [encode_table(table)]})
                return
            windows, rejects, n_warmup = process_bucket(table, self.state, self.length, self.max_gap_ns,
                                                        self.n_features, self.buckets)
            yield pd.DataFrame({"bucket": [bucket], "n_events": [table.num_rows], "n_warmup": [n_warmup],
                                "windows": [encode_table(windows) if windows.num_rows else None],
                                "rejects": [encode_table(rejects) if rejects.num_rows else None]})

        def close(self):
            pass

        return {"_setup": _setup, "init": init, "handleInputRows": handleInputRows, "close": close}


def process_bucket(readings, state, length: int, max_gap_ns: int, n_features: int, buckets: int):
    """One bucket's new readings (a readings table) + its state -> (windows table, rejects
    table, number of warm-up readings); updates ``state`` (anything with ``get()``/``update()``
    like Spark's ValueState).

    The windows table has one row per reading that completed a window: ``sensor_id``,
    ``event_time`` (ns), ``values``, ``window`` (W*F values), ``window_times`` (W ns).
    Late and duplicate readings become rejects; the rest warm up.
    """
    import pyarrow as pa
    from sentinel.detect.windows import NO_TIME, WARMUP, assemble_many
    stored = state.get()
    if stored is not None:
        ids, last, tail_c, tail_t, tail_v = decode_bucket_state(stored[0], buckets, n_features)
    else:
        ids, last = np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
        tail_c, tail_t, tail_v = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64),
                                  np.empty((0, n_features)))
    known = pd.Index(ids)
    batch_ids = readings.column("sensor_id").to_numpy(zero_copy_only=False).astype(object)
    codes = known.get_indexer(batch_ids)
    if (codes < 0).any():  # sensors new to this bucket
        new_ids = pd.unique(batch_ids[codes < 0])
        known = known.append(pd.Index(new_ids))
        last = np.concatenate([last, np.full(len(new_ids), NO_TIME, dtype=np.int64)])
        codes = known.get_indexer(batch_ids)
    t_ns = readings.column("event_time").to_numpy()
    vals = fixed_to_numpy(readings.column("values"), n_features)
    res = assemble_many(codes, t_ns, vals, tail_c, tail_t, tail_v, last, length, max_gap_ns)
    state.update((encode_bucket_state(known.to_numpy(dtype=object), res.last_time, res.tail_codes,
                                      res.tail_times, res.tail_values, buckets),))
    has = np.flatnonzero(res.window_row >= 0)
    rows = res.window_row[has]
    windows = pa.table({"sensor_id": pa.array(batch_ids[has], pa.string()),
                        "event_time": pa.array(t_ns[has], pa.int64()),
                        "values": _fixed(vals[has]),
                        "window": _fixed(res.windows[rows].reshape(len(rows), length * n_features)),
                        "window_times": _fixed(res.window_times[rows])})
    bad = np.flatnonzero(res.status >= LATE)  # late, duplicate
    status = np.array([STATUS_NAMES[c] for c in range(len(STATUS_NAMES))], dtype=object)[res.status[bad]]
    reasons = np.where(res.status[bad] == LATE, LATE_REASON, DUPLICATE_REASON)
    rejects = rejects_table(readings.column("raw").take(pa.array(bad)), reasons.tolist(), batch_ids[bad],
                            t_ns[bad], status.tolist())
    return windows, rejects, int((res.status == WARMUP).sum())



# -- zone (network) bundles ---------------------------------------------------------------------

ZONE_LATE_REASON = "late: its time step was already emitted for its zone (it came after window.wait_slots)"
UNKNOWN_REASON = "unknown_sensor: not a member of any zone of the model: re-train with this sensor or leave it out"


@dataclass(frozen=True)
class ZoneConfig:
    """What the zone window state aligns with, all from the bundle manifest (no model loaded).

    Attributes:
        zones: zone -> ordered member ids (the model's channels).
        means: member -> training mean (fills a member missing longer than ``max_gap_ns``).
        interval_ns: sampling interval (slot width), ns.
        wait_slots: bounded wait for a late member, in slots.
        length: window length W, in slots.
        max_gap_ns: a member's last value is carried at most this long; a longer gap restarts
            the zone's window.
        buckets: ``stream.state_buckets``.
    """

    zones: dict
    means: dict
    interval_ns: int
    wait_slots: int
    length: int
    max_gap_ns: int
    buckets: int

    @property
    def layout(self):
        from sentinel.detect.align import ZoneLayout
        return ZoneLayout(self.zones, self.means)

    @property
    def zone_of(self) -> dict[str, str]:
        """member sensor -> zone (the parse step buckets members by zone)."""
        return {m: z for z, members in self.zones.items() for m in members}

    @property
    def fingerprint(self) -> str:
        return layout_fingerprint(self.zones)


def is_zone_manifest(manifest: dict) -> bool:
    """A zone-mode residual bundle (``model.kind = "residual"``, ``model.mode = "zone"``)?"""
    m = manifest.get("model") or {}
    return m.get("kind") == "residual" and m.get("mode") == "zone"


def zone_config(manifest: dict, buckets: int) -> ZoneConfig | None:
    """The zone window state's settings from a bundle manifest, or None for a per-sensor bundle.

    Raises:
        ConfigError: the zone bundle cannot be streamed (one sentence naming what and the fix).
    """
    from sentinel.config import ConfigError
    from sentinel.detect.align import ZoneLayout
    from sentinel.detect.windows import NS_PER_S
    if not is_zone_manifest(manifest):
        return None
    m, w = manifest.get("model") or {}, manifest.get("window") or {}
    version = manifest.get("version", "?")
    zones = m.get("zones")
    if not isinstance(zones, dict) or not zones:
        raise ConfigError(f"zone model {version} has no zones in its manifest (model.zones): re-train it with "
                          f"`sentinel train` and model.kind = \"residual\"")
    try:
        layout = ZoneLayout({z: list(v) for z, v in zones.items()}, m.get("means") or {})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"zone model {version} has an unusable zone layout ({exc}): re-train it") from None
    features = list(manifest.get("features") or [])
    if len(features) != 1:
        raise ConfigError(f"zone model {version} aligns one feature per sensor but its manifest lists {features}: "
                          f"re-train it on one feature (data.features)")
    try:
        interval_s, max_gap_s = float(w["interval_s"]), float(w["max_gap_s"])
        length, wait = int(w["length"]), int(w.get("wait_slots", 2))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"zone model {version} has an incomplete window section in its manifest (no {exc}): "
                          f"re-train it") from None
    if interval_s <= 0:
        raise ConfigError(f"zone model {version} has no sampling interval (window.interval_s = {interval_s:g}), so "
                          f"its zones cannot be aligned per time step: re-train it with window.interval_s = 0 "
                          f"(taken from the data) or the sensors' interval")
    if max_gap_s < interval_s:
        raise ConfigError(f"zone model {version} has window.max_gap_s = {max_gap_s:g} below its interval "
                          f"{interval_s:g} s, so no two time steps would join a window: re-train it with "
                          f"window.max_gap_s = 0 (taken from the data)")
    if length < 1 or wait < 0:
        raise ConfigError(f"zone model {version} has window length {length} and wait_slots {wait}: re-train it "
                          f"(length >= 1, wait_slots >= 0)")
    return ZoneConfig(layout.zones, dict(layout.means), int(round(interval_s * NS_PER_S)), wait, length,
                      int(round(max_gap_s * NS_PER_S)), int(buckets))


class ZoneWindowProcessor:
    """Zone window state for ``transformWithStateInPandas``, keyed by state bucket (members of a
    zone share their zone's bucket). One call per bucket per micro-batch runs
    :func:`process_zone_bucket`; like :class:`WindowProcessor`, state is only committed with
    the micro-batch, so a failed batch re-runs from the checkpoint with nothing lost (pending
    readings are part of the state)."""

    def __new__(cls, *args, **kwargs):
        from pyspark.sql.streaming import StatefulProcessor

        impl = type("ZoneWindowProcessorImpl", (StatefulProcessor,), dict(cls._methods()))
        obj = impl()
        obj._setup(*args, **kwargs)
        return obj

    @staticmethod
    def _methods():
        def _setup(self, config: ZoneConfig):
            self.config = config

        def init(self, handle):
            from pyspark.sql.types import BinaryType, StructField, StructType
            self.state = handle.getValueState("zones", StructType([StructField("zones", BinaryType())]))

        def handleInputRows(self, key, rows, timerValues):
            table = decode_tables(b for pdf in rows for b in pdf["rows"])
            bucket = int(key[0])
            if bucket == REJECT_BUCKET:  # malformed lines: no state, straight to the reject store
                yield pd.DataFrame({"bucket": [bucket], "n_events": [table.num_rows], "n_warmup": [0],
                                    "windows": [None], "rejects": [encode_table(table)]})
                return
            windows, rejects, n_warmup = process_zone_bucket(table, self.state, self.config)
            yield pd.DataFrame({"bucket": [bucket], "n_events": [table.num_rows], "n_warmup": [n_warmup],
                                "windows": [encode_table(windows) if windows.num_rows else None],
                                "rejects": [encode_table(rejects) if rejects.num_rows else None]})

        def close(self):
            pass

        return {"_setup": _setup, "init": init, "handleInputRows": handleInputRows, "close": close}


def process_zone_bucket(readings, state, config: ZoneConfig):
    """One bucket's new readings (a readings table) + its zones' state -> (zone windows table,
    rejects table, readings counted as warm-up); updates ``state`` (``get()``/``update()``).

    The zone windows table has one row per emitted zone window: ``zone``, ``event_time`` (the
    slot's time, ns), ``window`` (W*S member values, slot-major), ``window_times`` (W ns),
    ``real`` (S: the member reported at the newest slot), ``fresh`` (S: real, and its reading
    arrived in this batch) and ``times`` (S: the real members' own event times, ns).

    Each reading is counted once, in the batch it arrives in: scored (real at a window emitted
    now: ``fresh``), warm-up (it only fills a window, or it is *pending*: its slot waits for the
    zone's other members, in the state, and is emitted by a later batch), or rejected (``late``,
    ``duplicate``, ``unknown_sensor``).
    """
    import pyarrow as pa
    from sentinel.detect.align import (ALIGNED, DUPLICATE, LATE as Z_LATE, PENDING, STATUS_NAMES as Z_NAMES,
                                       UNKNOWN, WARMUP as Z_WARMUP, align)
    c = config
    stored = state.get()
    prior = decode_zone_state(stored[0], c.fingerprint, c.interval_ns, c.buckets) if stored is not None else {}
    ids = readings.column("sensor_id").to_numpy(zero_copy_only=False).astype(object)
    t_ns = readings.column("event_time").to_numpy()
    vals = fixed_to_numpy(readings.column("values"), 1)[:, 0]
    al = align(ids, t_ns, vals, prior, c.layout, c.interval_ns, c.wait_slots, c.length, c.max_gap_ns)
    state.update((encode_zone_state(al.state, c.fingerprint, c.interval_ns, c.buckets),))
    zone_col, times_col, flat, wtimes, real, fresh, own = [], [], [], [], [], [], []
    for z in sorted(al.zones):
        zw = al.zones[z]
        m, s_n = zw.real.shape
        new = np.zeros((m, s_n), dtype=bool)
        hit = np.flatnonzero((al.status == ALIGNED) & (al.zone == z))
        new[al.row[hit], al.member[hit]] = True
        zone_col += [z] * m
        times_col.append(zw.window_times[:, -1])
        flat += list(zw.windows.reshape(m, -1))
        wtimes.append(zw.window_times)
        real += list(zw.real)
        fresh += list(new)
        own += list(zw.times)
    if zone_col:
        windows = pa.table({"zone": pa.array(zone_col, pa.string()),
                            "event_time": pa.array(np.concatenate(times_col), pa.int64()),
                            "window": pa.array(flat, pa.list_(pa.float64())),
                            "window_times": _fixed(np.concatenate(wtimes)),
                            "real": pa.array(real, pa.list_(pa.bool_())),
                            "fresh": pa.array(fresh, pa.list_(pa.bool_())),
                            "times": pa.array(own, pa.list_(pa.int64()))})
    else:
        windows = pa.table({"zone": pa.array([], pa.string())})
    bad = np.flatnonzero(np.isin(al.status, [Z_LATE, DUPLICATE, UNKNOWN]))
    codes = al.status[bad]
    reasons = np.select([codes == Z_LATE, codes == DUPLICATE], [ZONE_LATE_REASON, DUPLICATE_REASON], UNKNOWN_REASON)
    rejects = rejects_table(readings.column("raw").take(pa.array(bad, pa.int64())), reasons.tolist(), ids[bad],
                            t_ns[bad], [Z_NAMES[int(k)] for k in codes])
    return windows, rejects, int(np.isin(al.status, [Z_WARMUP, PENDING]).sum())
