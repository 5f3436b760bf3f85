"""``GET /api/health`` (store reachable, newest batch, stream lag) and ``GET /metrics``
(Prometheus text exposition format 0.0.4)."""
from __future__ import annotations

import pandas as pd
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from sentinel.serve import records
from sentinel.serve.deps import client
from sentinel.serve.models import Health

router = APIRouter(tags=["operations"])


def health_of(store, writable: bool) -> dict:
    """``store.health()`` plus the two lags, judged on the wall clock now."""
    h = records.one(store.health())
    batch = h.get("newest_batch") or None
    age = lag = None
    if batch:
        written, newest = batch.get("written_at"), batch.get("max_event_time")
        if written:
            age = (pd.Timestamp.now(tz="UTC") - pd.Timestamp(written)).total_seconds()
            if newest:
                lag = (pd.Timestamp(written) - pd.Timestamp(newest)).total_seconds()
    return {"reachable": bool(h.get("reachable")), "store": h.get("store") or store.describe(), "writable": writable,
            "error": h.get("error"), "newest_batch": batch, "batch_age_s": age, "event_lag_s": lag,
            "counts": {str(k): (None if v is None else int(v)) for k, v in (h.get("counts") or {}).items()}}


@router.get("/api/health", response_model=Health, summary="store reachable, newest batch, stream lag",
            responses={503: {"model": Health, "description": "the store cannot be reached"}})
def health(request: Request, store=Depends(client)):
    """200 while the store answers, 503 (same body) when it does not: fit for a load balancer's check."""
    body = Health.model_validate(health_of(store, request.app.state.writable))
    return JSONResponse(body.model_dump(), status_code=200 if body.reachable else 503)


# name, type, help, how to read it from health_of()
METRICS = [
    ("sentinel_store_up", "gauge", "1 when the store answers, else 0", lambda h: int(h["reachable"])),
    ("sentinel_batches_total", "counter", "micro-batches the stream wrote", lambda h: h["counts"].get("batches")),
    ("sentinel_last_batch_events", "gauge", "events read by the newest micro-batch",
     lambda h: (h["newest_batch"] or {}).get("events")),
    ("sentinel_rejects_total", "counter", "rejected input lines stored", lambda h: h["counts"].get("rejects")),
    ("sentinel_anomalies_total", "counter", "anomaly records stored", lambda h: h["counts"].get("anomalies")),
    ("sentinel_incidents_total", "counter", "incidents stored", lambda h: h["counts"].get("incidents")),
    ("sentinel_incidents_open", "gauge", "incidents not closed", lambda h: h["counts"].get("incidents_open")),
    ("sentinel_newest_batch_id", "gauge", "id of the newest micro-batch", lambda h: (h["newest_batch"] or {}).get("batch_id")),
    ("sentinel_batch_age_seconds", "gauge", "seconds since the newest micro-batch was written (stream lag)",
     lambda h: h["batch_age_s"]),
    ("sentinel_event_lag_seconds", "gauge", "newest batch: written_at minus its newest event time",
     lambda h: h["event_lag_s"]),
]


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(request: Request, store=Depends(client)):
    """Batches, events, rejects, anomalies, open incidents and lag, for a Prometheus scrape. A
    value the store cannot give (unreachable, or a table it lacks) is left out, not reported as 0."""
    h = health_of(store, request.app.state.writable)
    lines = []
    for name, kind, text, read in METRICS:
        value = read(h)
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        if value is not None:
            lines.append(f"{name} {float(value):.6g}" if isinstance(value, float) else f"{name} {int(value)}")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")
