"""Deterministic incident ids and the time conversions the incident code shares.

An incident's id derives from its first reading only (sensor and event time), so a replayed
micro-batch, a restarted stream or a batch re-run over the same feed gives the same id.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np
import pandas as pd

ID_PREFIX = "INC-"
DIGEST_CHARS = 16  # 64 bits: collisions need ~4e9 incidents


def to_ns(t) -> int:
    """A tz-aware time (datetime, pandas Timestamp, ISO text with offset) or int ns -> int ns UTC.

    Raises:
        ValueError: for a time without a timezone (say which one: UTC times everywhere).
    """
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    if isinstance(t, np.datetime64):  # numpy times carry no zone; in this code base they are UTC
        return int(pd.Timestamp(t).value)
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        raise ValueError(f"time {t!s} has no timezone: give it in UTC (e.g. 2026-01-20T03:15:00Z)")
    return int(ts.tz_convert("UTC").value)


def from_ns(ns: int | None) -> pd.Timestamp | None:
    """int ns -> a UTC pandas Timestamp (None stays None)."""
    return None if ns is None else pd.Timestamp(int(ns), tz="UTC")


def iso(ns: int | None) -> str | None:
    """int ns -> 'YYYY-MM-DDTHH:MM:SSZ' (fractions kept when present)."""
    if ns is None:
        return None
    ts = pd.Timestamp(int(ns), tz="UTC")
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond or ts.nanosecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def incident_id(sensor_id: str, event_time) -> str:
    """The id of the incident opened by ``sensor_id``'s reading at ``event_time`` (tz-aware or ns).

    Example: ``incident_id("PT-0007", "2026-01-20T03:15:00Z")`` always gives the same
    ``"INC-"`` + 16 hex digits.
    """
    key = f"{sensor_id}\x00{to_ns(event_time)}".encode("utf-8")
    return ID_PREFIX + hashlib.sha256(key).hexdigest()[:DIGEST_CHARS]


def wall_clock(now: datetime | None = None) -> str:
    """The wall-clock time as ISO text (UTC), for detected_at/updated_at."""
    now = now or datetime.now(timezone.utc)
    return iso(to_ns(now))
