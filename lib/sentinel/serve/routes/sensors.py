"""``GET /api/sensors``: the registry with each sensor's newest reading, score and state."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from sentinel.serve import records
from sentinel.serve.deps import client, ident
from sentinel.serve.models import STATES, Problem, Sensor, SensorList, State

router = APIRouter(tags=["sensors"])


def state_of(row: dict) -> str:
    """The one state the map colours a sensor by, most urgent for an operator first: muted
    (someone said so) > incident (in an open incident) > silent (no reading for longer than its
    interval allows) > anomalous (its newest score is over its threshold) > ok."""
    if row.get("muted"):
        return "muted"
    if row.get("in_open_incident"):
        return "incident"
    if row.get("silent") or row.get("last_event_time") is None:
        return "silent"
    score, threshold = row.get("last_score"), row.get("threshold")
    if score is not None and threshold is not None and score >= threshold:
        return "anomalous"
    return "ok"


def sensor_rows(store) -> list[dict]:
    """The registry (coordinates, zone, type) joined with ``sensor_states()`` (newest reading,
    open incident, muted, silent; the stream's clock), one row per sensor, by id. Sensors the
    stream saw that the registry lacks are listed too, with ``registered`` false."""
    registry = {r["sensor_id"]: r for r in records.rows(store.sensors())}
    items = []
    for r in records.rows(store.sensor_states()):
        reg = registry.get(r["sensor_id"])
        row = {**(reg or {}), **r, "registered": reg is not None}
        row["zone"] = r.get("zone") or (reg or {}).get("zone")
        row["severity"] = r.get("last_severity")
        row["state"] = state_of(row)
        items.append(row)
    seen = {r["sensor_id"] for r in items}
    items += [{**reg, "registered": True, "state": "silent"} for sid, reg in registry.items() if sid not in seen]
    return sorted(items, key=lambda r: r["sensor_id"])


@router.get("/api/sensors", response_model=SensorList, summary="sensors with their newest reading and state",
            responses={400: {"model": Problem}, 503: {"model": Problem}})
def list_sensors(zone: str | None = Query(None, description="only this zone"),
                 state: State | None = Query(None, description="only sensors in this state"),
                 store=Depends(client)):
    """Every sensor of the registry (and any the stream saw that it lacks), with its newest scored
    reading, score, threshold and state: ``ok``, ``anomalous``, ``incident`` (in an open
    incident), ``muted`` or ``silent`` (no reading for longer than its interval allows)."""
    if zone is not None:
        ident(zone, "zone")
    items = sensor_rows(store)
    counts = {s: 0 for s in STATES}
    for r in items:
        counts[r["state"]] += 1
    if zone is not None:
        items = [r for r in items if r.get("zone") == zone]
    if state is not None:
        items = [r for r in items if r["state"] == state]
    return SensorList(counts=counts, items=[Sensor.model_validate(r) for r in items])
