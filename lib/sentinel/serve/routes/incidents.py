"""``/api/incidents``: list (the filters of ``sentinel incidents``), one with its audit trail,
and the operator actions ``ack``, ``close``, ``label`` (bearer token)."""
from __future__ import annotations

import logging

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query

from sentinel.serve import records
from sentinel.serve.deps import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    client,
    ident,
    next_offset,
    require_token,
    require_writable,
    window,
)
from sentinel.serve.models import (
    KINDS,
    STATUSES,
    ActionIn,
    Incident,
    IncidentDetail,
    IncidentPage,
    Kind,
    LabelIn,
    Problem,
)
from sentinel.store.client import INCIDENT_LIST_CAP, IncidentFilters

log = logging.getLogger("sentinel.serve")
router = APIRouter(tags=["incidents"])
OPEN = ("new", "acknowledged")
ERRORS = {400: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}}
WRITE_ERRORS = {**ERRORS, 401: {"model": Problem}, 403: {"model": Problem}, 409: {"model": Problem}}
IncidentId = Path(..., description="the incident's id (INC- and 16 hex digits)", max_length=200)


def statuses(values: list[str] | None) -> tuple[str, ...]:
    """``status`` parameters -> statuses; ``open`` means new and acknowledged."""
    out: list[str] = []
    for v in values or []:
        for s in v.split(","):
            s = s.strip()
            if s == "open":
                out += OPEN
            elif s in STATUSES:
                out.append(s)
            elif s:
                raise HTTPException(400, f"status {s[:40]!r} is not one of open, {', '.join(STATUSES)}")
    return tuple(dict.fromkeys(out))


@router.get("/api/incidents", response_model=IncidentPage, responses=ERRORS,
            summary="incidents, newest first, with the filters of `sentinel incidents`")
def list_incidents(sensor: list[str] | None = Query(None, description="only incidents involving this sensor (repeatable)"),
                   zone: str | None = Query(None, description="only this zone"),
                   since: str | None = Query(None, description="active at or after T (ISO-8601 or 24h, 7d)"),
                   until: str | None = Query(None, description="opened before T"),
                   min_severity: float | None = Query(None, ge=0, le=1e12, description="peak severity at least X"),
                   status: list[str] | None = Query(None, description="new, acknowledged, closed or open (= new and "
                                                                      "acknowledged); repeatable or comma-separated"),
                   kind: list[Kind] | None = Query(None, description=f"one of {', '.join(KINDS)} (repeatable)"),
                   muted: bool | None = Query(None, description="only muted (true) or unmuted (false) incidents"),
                   limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description=f"page size, at most {MAX_LIMIT}"),
                   offset: int = Query(0, ge=0, le=MAX_OFFSET),
                   store=Depends(client)):
    """Incidents whose span (opened_at .. last_seen) overlaps since/until, most recently opened first."""
    a, b = window(since, until)
    for s in sensor or []:
        ident(s, "sensor")
    if zone is not None:
        ident(zone, "zone")
    asked = min(limit + 1, INCIDENT_LIST_CAP)
    f = IncidentFilters(sensors=tuple(sensor or ()), zone=zone, since=a, until=b, min_severity=min_severity,
                        status=statuses(status), kind=tuple(kind or ()), muted=muted,
                        limit=asked, offset=offset)
    rows = records.rows(store.incidents(f))
    return IncidentPage(limit=limit, offset=offset, next_offset=next_offset(offset, limit, len(rows), asked),
                        items=[Incident.model_validate(r) for r in rows[:limit]])


def detail(store, incident_id: str) -> IncidentDetail:
    found = store.incident(incident_id)
    if found is None:
        raise HTTPException(404, f"no incident {incident_id!r}: list them with GET /api/incidents")
    return IncidentDetail.model_validate(records.one(found) | {"actions": [records.one(a) for a in found.get("actions") or []]})


@router.get("/api/incidents/{incident_id}", response_model=IncidentDetail, responses=ERRORS,
            summary="one incident with its explanation and audit trail")
def get_incident(incident_id: str = IncidentId, store=Depends(client)):
    return detail(store, ident(incident_id, "incident id"))


def act(store, incident_id: str, action: str, body: ActionIn, label: str | None = None) -> IncidentDetail:
    incident_id = ident(incident_id, "incident id")
    if action == "ack":
        store.acknowledge(incident_id, body.actor, comment=body.comment)
    elif action == "close":
        store.close(incident_id, body.actor, comment=body.comment)
    else:
        store.label(incident_id, label, body.actor, comment=body.comment)
    log.info("incident %s: %s by %s", incident_id, action if label is None else f"label {label}", body.actor)
    return detail(store, incident_id)


WRITE = [Depends(require_token), Depends(require_writable)]


@router.post("/api/incidents/{incident_id}/ack", response_model=IncidentDetail, responses=WRITE_ERRORS,
             dependencies=WRITE, summary="acknowledge an incident (bearer token)")
def acknowledge(incident_id: str = IncidentId, body: ActionIn = Body(default_factory=ActionIn), store=Depends(client)):
    """new -> acknowledged (409 if it is already acknowledged or closed)."""
    return act(store, incident_id, "ack", body)


@router.post("/api/incidents/{incident_id}/close", response_model=IncidentDetail, responses=WRITE_ERRORS,
             dependencies=WRITE, summary="close an incident (bearer token)")
def close(incident_id: str = IncidentId, body: ActionIn = Body(default_factory=ActionIn), store=Depends(client)):
    """new or acknowledged -> closed (409 if it is already closed)."""
    return act(store, incident_id, "close", body)


@router.post("/api/incidents/{incident_id}/label", response_model=IncidentDetail, responses=WRITE_ERRORS,
             dependencies=WRITE, summary="label an incident (bearer token)")
def label(body: LabelIn, incident_id: str = IncidentId, store=Depends(client)):
    """What the incident turned out to be: confirmed, false_alarm, maintenance or sensor_fault
    (retraining leaves labelled false alarms in the normal data)."""
    return act(store, incident_id, "label", body, label=body.label)
