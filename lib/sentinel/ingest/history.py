"""Readings from files with pandas: history formats, reading and writing tables.

The training job reads and cleans history with Spark (``stream.history``); the commands that
work on one file in memory (``sentinel score``, ``evaluate``, ``report --history``,
``simulate --out``) use these readers.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sentinel.config import ConfigError, Settings

log = logging.getLogger("sentinel.history")


class HistoryError(ValueError):
    """The history file is missing or lacks a needed column; the message names it."""


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.lower().rstrip("/")
    for ext, f in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"), (".jsonl", "json"),
                   (".json", "json"), (".ndjson", "json")):
        if name.endswith(ext) or name.endswith(ext + ".gz"):
            return f
    if Path(path).is_dir() and any(Path(path).glob("*.parquet")):
        return "parquet"
    raise HistoryError(f"cannot tell the format of {path}: name it .csv/.parquet/.jsonl or set train.format")


def read_table(path: str) -> pd.DataFrame:
    """A CSV, Parquet (file or folder) or JSON-lines file as it is."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"input file {path} does not exist: check the path")
    if p.suffix in (".parquet", ".pq") or p.is_dir():
        return pd.read_parquet(p)
    if p.suffix in (".jsonl", ".json", ".ndjson"):
        return pd.read_json(p, lines=True)
    return pd.read_csv(p)


def write_table(frame: pd.DataFrame, path: str) -> None:
    """Write a frame as Parquet (``.parquet``/``.pq``) or CSV (times as ISO-8601 UTC text)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix in (".parquet", ".pq"):
        frame.to_parquet(p, index=False)
    else:
        out = frame.copy()
        for c in out.columns:
            if isinstance(out[c].dtype, pd.DatetimeTZDtype):
                out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.to_csv(p, index=False)


def read_readings(path: str, settings: Settings) -> pd.DataFrame:
    """Readings file (CSV/Parquet/JSON lines) -> sensor_id, event_time (UTC) and the feature columns
    present, sorted by sensor and time (``sentinel report --history``)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--history {path} does not exist: check the path")
    if p.suffix in (".parquet", ".pq") or p.is_dir():
        frame = pd.read_parquet(p)
    elif p.suffix in (".json", ".jsonl", ".ndjson"):
        frame = pd.read_json(p, lines=True)
    else:
        frame = pd.read_csv(p, dtype={settings.data.sensor_field: str})
    d = settings.data
    if d.time_field not in frame:
        raise ConfigError(f"--history {path} has no time column {d.time_field!r}: set data.time_field")
    feats = [f for f in d.features if f in frame]
    if not feats:
        raise ConfigError(f"--history {path} has none of the features {list(d.features)}: set data.features")
    col = frame[d.time_field]
    times = (pd.to_datetime(col, unit="ms", utc=True, errors="coerce") if pd.api.types.is_numeric_dtype(col)
             else pd.to_datetime(col, utc=True, errors="coerce", format="mixed"))
    out = pd.DataFrame({"sensor_id": frame[d.sensor_field].astype(str) if d.sensor_field in frame else "sensor",
                        "event_time": times})
    for f in feats:
        out[f] = pd.to_numeric(frame[f], errors="coerce")
    return out.dropna(subset=["event_time"]).sort_values(["sensor_id", "event_time"]).reset_index(drop=True)
