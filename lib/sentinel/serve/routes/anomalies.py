"""``GET /api/anomalies``: anomaly records with the filters of ``sentinel query``, paginated."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from sentinel.serve import records
from sentinel.serve.deps import DEFAULT_LIMIT, MAX_LIMIT, client, ident, next_offset, window
from sentinel.serve.models import Anomaly, AnomalyPage, Problem
from sentinel.store.query import Filters

router = APIRouter(tags=["anomalies"])
COLUMNS = list(Anomaly.model_fields)
# store.query.Filters has no offset: a page is the tail of the first offset + limit + 1 rows,
# so deep pages cost more; narrow since/until instead of paging past this.
MAX_OFFSET = 100_000


@router.get("/api/anomalies", response_model=AnomalyPage, summary="anomalies in event-time order",
            responses={400: {"model": Problem}, 503: {"model": Problem}})
def list_anomalies(sensor: list[str] | None = Query(None, description="only this sensor (repeatable)"),
                   zone: str | None = Query(None, description="only sensors of this zone in the registry"),
                   since: str | None = Query(None, description="event time from T, inclusive (ISO-8601 or 24h, 7d)"),
                   until: str | None = Query(None, description="event time before T, exclusive"),
                   min_severity: float | None = Query(None, ge=0, le=1e12, description="severity (score / threshold) at least X"),
                   limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}"),
                   offset: int = Query(0, ge=0, le=MAX_OFFSET, description=f"at most {MAX_OFFSET}: narrow since/until for older rows"),
                   store=Depends(client)):
    """The same rows as ``sentinel query`` (event time, then sensor id), one page at a time."""
    a, b = window(since, until)
    for s in sensor or []:
        ident(s, "sensor")
    if zone is not None:
        ident(zone, "zone")
    f = Filters(sensors=tuple(sensor or ()), since=a, until=b, min_severity=min_severity, zone=zone,
                limit=offset + limit + 1)
    rows = records.rows(store.anomalies(f).iloc[offset:], COLUMNS)
    return AnomalyPage(limit=limit, offset=offset, next_offset=next_offset(offset, limit, len(rows)),
                       items=[Anomaly.model_validate(r) for r in rows[:limit]])
