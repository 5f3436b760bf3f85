"""The sensor registry: ``sensor_id, latitude, longitude, zone, type`` (one row per sensor).

Loaded from ``sinks.sensors_file`` (CSV/Parquet/JSON lines) and upserted into every store by
the sinks' ``load_sensors``; the ``--zone`` filter of ``sentinel query`` joins it.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

REGISTRY_COLUMNS = ["sensor_id", "latitude", "longitude", "zone", "type"]


class RegistryError(ValueError):
    """The registry file is missing, unreadable or lacks sensor ids."""


def read_registry(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise RegistryError(f"sensor registry {p} does not exist: fix sinks.sensors_file")
    if p.suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(p)
    elif p.suffix in (".json", ".jsonl", ".ndjson"):
        frame = pd.read_json(p, lines=True, dtype=False)
    else:
        frame = pd.read_csv(p, dtype={"sensor_id": str, "zone": str, "type": str}, keep_default_na=False,
                            na_values={"latitude": [""], "longitude": [""]})
    return normalise(frame)


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Exactly REGISTRY_COLUMNS: ids as text, coordinates as float or None, zone/type text or None
    (blank = None);
    one row per sensor_id (the last one wins). Extra columns are dropped."""
    if "sensor_id" not in frame:
        raise RegistryError("sensor registry has no 'sensor_id' column: add one (columns: "
                            + ", ".join(REGISTRY_COLUMNS) + ")")
    out = pd.DataFrame({"sensor_id": frame["sensor_id"].astype(str)})
    for col in ("latitude", "longitude"):
        out[col] = (pd.to_numeric(frame[col], errors="coerce") if col in frame
                    else pd.Series(float("nan"), index=frame.index)).astype(float)
    for col in ("zone", "type"):
        out[col] = [None if _missing(v) or not str(v).strip() else str(v) for v in frame[col]] if col in frame else None
    out = out.drop_duplicates("sensor_id", keep="last").reset_index(drop=True)
    return out[REGISTRY_COLUMNS]


def rows(frame: pd.DataFrame) -> list[tuple]:
    """Registry rows as plain Python tuples (NaN -> None), ready for a DB driver."""
    norm = normalise(frame)
    return [(sid, _num(lat), _num(lon), zone, typ) for sid, lat, lon, zone, typ in
            norm.itertuples(index=False, name=None)]


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def _num(v):
    return None if _missing(v) else float(v)
