"""Store frames -> JSON-ready dicts: ISO-8601 UTC times, NaN -> null, JSON text parsed.

The store API returns pandas frames whose cells may be Timestamps, numpy scalars, NaN/NaT or
JSON text (``values``, ``expected``, ``sensors``); the API's pydantic models want plain Python.
"""
from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pandas as pd

JSON_FIELDS = ("values", "expected", "last_values", "sensors")


def missing(v) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    return False


def iso(v) -> str | None:
    """A time (Timestamp, datetime, ISO text) -> ``2026-01-20T03:15:00Z`` (fractions kept)."""
    if missing(v):
        return None
    ts = pd.Timestamp(v)
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def plain(v):
    """One cell -> a JSON-ready Python value (times as ISO text)."""
    if missing(v):
        return None
    if isinstance(v, (pd.Timestamp, datetime, np.datetime64)):
        return iso(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.ndarray):
        return [plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    return v


def parse_json(v):
    """A JSON field: text parsed, dict/list kept, null stays null; unreadable text -> None."""
    if missing(v):
        return None
    if isinstance(v, (bytes, str)):
        try:
            return plain(json.loads(v))
        except ValueError:
            return None
    return plain(v)


def rows(frame: pd.DataFrame | None, columns: list[str] | None = None) -> list[dict]:
    """A frame -> one dict per row with ``columns`` (default: all; missing ones are null)."""
    if frame is None or not len(frame):
        return []
    cols = columns or list(frame.columns)
    present = [c for c in cols if c in frame.columns]
    out = []
    for values in zip(*(frame[c].tolist() for c in present)):
        d = {c: (parse_json(v) if c in JSON_FIELDS else plain(v)) for c, v in zip(present, values)}
        for c in cols:
            d.setdefault(c, None)
        out.append(d)
    return out


def one(mapping: dict | None) -> dict | None:
    """A dict from the store (``incident()``, ``health()``) made JSON-ready the same way."""
    if mapping is None:
        return None
    return {k: (parse_json(v) if k in JSON_FIELDS else plain(v)) for k, v in mapping.items()}


def epoch_s(series: pd.Series) -> list[float]:
    """UTC times -> seconds since the epoch (what the page's chart plots)."""
    t = pd.to_datetime(series, utc=True, format="mixed")
    return (t.astype("int64") / 1e9).round(3).tolist()
