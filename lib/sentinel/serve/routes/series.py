"""``GET /api/sensors/{id}/series`` (one sensor's chart) and ``GET /api/stats`` (per sensor and
hour: mean reading, 30-day standard deviation, anomaly and incident counts)."""
from __future__ import annotations

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Query

from sentinel.serve import records
from sentinel.serve.deps import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, client, ident, next_offset, window
from sentinel.serve.models import Mark, Problem, Series, Span, StatPage, StatRow
from sentinel.store.client import IncidentFilters, stats_range
from sentinel.store.query import Filters

router = APIRouter(tags=["series"])
DEFAULT_SPAN = pd.Timedelta(hours=24)
MAX_SPAN = pd.Timedelta(days=31)
MAX_POINTS = 50_000        # 31 days of 1-minute readings; a chart shows no more than that
DEFAULT_POINTS = 20_000
ERRORS = {400: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}}


def bounded(since: pd.Timestamp | None, until: pd.Timestamp | None, end: pd.Timestamp | None,
            span: pd.Timedelta = DEFAULT_SPAN) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Fill a missing side of the window (``span`` back from ``until``, or forward from
    ``since``; neither: ``span`` up to ``end``, the newest data) and refuse one over MAX_SPAN."""
    end = end if end is not None else pd.Timestamp.now(tz="UTC")
    if since is None and until is None:
        until = end.floor("s") + pd.Timedelta(seconds=1)   # include the newest reading (until is exclusive)
        since = until - span
    elif since is None:
        since = until - span
    elif until is None:
        until = since + span
    if until - since > MAX_SPAN:
        raise HTTPException(400, f"the window {since.isoformat()} .. {until.isoformat()} is longer than "
                                 f"{MAX_SPAN.days} days: narrow since/until")
    return since, until


def last_reading(store, sensor_id: str) -> pd.Timestamp | None:
    """The sensor's newest scored event time (None: no scores yet); the store raises NotFound
    (404) for a sensor it has never seen."""
    newest = store.series(sensor_id, None, None, 1)
    return None if not len(newest) else pd.Timestamp(newest["event_time"].iloc[-1]).tz_convert("UTC")


def columns_by_feature(points: pd.DataFrame, column: str, features: list[str]) -> dict[str, list]:
    parsed = [records.parse_json(v) or {} for v in points[column]] if column in points else [{}] * len(points)
    return {f: [records.plain(p.get(f)) for p in parsed] for f in features}


@router.get("/api/sensors/{sensor_id}/series", response_model=Series, responses=ERRORS,
            summary="one sensor's readings, expected values, score and threshold over time")
def sensor_series(sensor_id: str = Path(..., max_length=200),
                  since: str | None = Query(None, description="from T, inclusive (ISO-8601 or 24h, 7d); "
                                                              "default: 24 hours before until"),
                  until: str | None = Query(None, description="before T, exclusive; default: just after the "
                                                              "sensor's newest reading (24 h after since if given)"),
                  limit: int = Query(DEFAULT_POINTS, ge=1, le=MAX_POINTS, description="at most this many readings"),
                  store=Depends(client)):
    """Every scored reading of the sensor in the window (the stores' ``scores``), its anomaly
    records and the incidents it took part in: what the page's chart draws."""
    sensor_id = ident(sensor_id, "sensor")
    a, b = window(since, until)
    a, b = bounded(a, b, last_reading(store, sensor_id) if a is None and b is None else None)
    points = store.series(sensor_id, a, b, limit + 1)
    truncated = len(points) > limit
    points = points.iloc[len(points) - limit:] if truncated else points   # the store gives the newest rows
    flagged = store.anomalies(Filters(sensors=(sensor_id,), since=a, until=b, limit=MAX_POINTS))
    spans = store.incidents(IncidentFilters(sensors=(sensor_id,), since=a, until=b, limit=200))
    features: list[str] = []
    for col, frame in (("values", points), ("values", flagged)):
        for v in frame.get(col, []):
            features += [k for k in (records.parse_json(v) or {}) if k not in features]
            break
    return Series(
        sensor_id=sensor_id, since=records.iso(a), until=records.iso(b), features=features,
        time=records.epoch_s(points["event_time"]) if len(points) else [],
        values=columns_by_feature(points, "values", features),
        expected=columns_by_feature(points, "expected", features),
        score=[records.plain(x) for x in points["score"]] if len(points) else [],
        threshold=[records.plain(x) for x in points["threshold"]] if len(points) else [],
        is_anomaly=[bool(x) for x in points["is_anomaly"]] if len(points) else [],
        anomalies=[Mark.model_validate(r) for r in records.rows(flagged, ["event_time", "score", "severity"])],
        incidents=[Span(incident_id=r["incident_id"], kind=r["kind"], status=r["status"], start=r["opened_at"],
                        end=r.get("closed_at") or r["last_seen"])
                   for r in records.rows(spans)],
        truncated=truncated)


@router.get("/api/stats", response_model=StatPage, responses=ERRORS,
            summary="per sensor and hour: mean reading, 30-day standard deviation, anomalies, incidents")
def stats(since: str | None = Query(None, description="from T (ISO-8601 or 24h, 7d); default: 24 h before until"),
          until: str | None = Query(None, description="before T; default: just after the newest batch's event time"),
          sensor: list[str] | None = Query(None, description="only this sensor (repeatable)"),
          zone: str | None = Query(None, description="only this zone"),
          limit: int = Query(DEFAULT_LIMIT * 10, ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}"),
          offset: int = Query(0, ge=0, le=MAX_OFFSET),
          store=Depends(client)):
    """The fields of the API our users' older systems had (hourly means and 30-day standard
    deviations), plus the hour's anomaly and incident counts; ordered by sensor, then hour."""
    for s in sensor or []:
        ident(s, "sensor")
    if zone is not None:
        ident(zone, "zone")
    a, b = window(since, until)
    if a is None or b is None:   # the store's defaults (a day up to the newest data), made explicit
        newest = (store.health().get("newest_batch") or {}).get("max_event_time")
        a, b = stats_range(a, b, None if records.missing(newest) else pd.Timestamp(newest).tz_convert("UTC"))
    frame = store.stats(a, b)
    zones = {r["sensor_id"]: r.get("zone") for r in records.rows(store.sensors())}
    rows = [{**r, "zone": zones.get(r["sensor_id"])} for r in records.rows(frame)]
    if sensor:
        rows = [r for r in rows if r.get("sensor_id") in set(sensor)]
    if zone is not None:
        rows = [r for r in rows if r.get("zone") == zone]
    page = rows[offset: offset + limit + 1]
    return StatPage(since=records.iso(a), until=records.iso(b), limit=limit, offset=offset,
                    next_offset=next_offset(offset, limit, len(page)),
                    items=[StatRow.model_validate(r) for r in page[:limit]])
