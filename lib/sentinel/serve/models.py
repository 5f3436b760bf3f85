"""The API's response and request bodies (pydantic), so that /docs shows the contract.

Times are ISO-8601 UTC text (``2026-01-20T03:15:00Z``); JSON fields of the records
(``values``, ``expected``, ``sensors``) are objects here, not text.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sentinel.incidents.lifecycle import MAX_ACTOR_CHARS, MAX_COMMENT_CHARS

State = Literal["ok", "anomalous", "incident", "muted", "silent"]
Kind = Literal["leak", "burst", "sensor_fault", "operational", "unknown"]
Status = Literal["new", "acknowledged", "closed"]
Label = Literal["confirmed", "false_alarm", "maintenance", "sensor_fault"]
STATES: tuple[str, ...] = State.__args__
KINDS: tuple[str, ...] = Kind.__args__
STATUSES: tuple[str, ...] = Status.__args__
LABELS: tuple[str, ...] = Label.__args__


class Problem(BaseModel):
    detail: str = Field(description="one sentence naming what is wrong and the fix")


class Sensor(BaseModel):
    sensor_id: str
    latitude: float | None = None
    longitude: float | None = None
    zone: str | None = None
    type: str | None = None
    state: State = Field(description="muted > incident (in an open incident) > silent (no reading for longer than "
                                      "its interval allows) > anomalous (last score over its threshold) > ok")
    last_event_time: str | None = Field(None, description="event time of the newest scored reading")
    last_values: dict[str, float | None] | None = None
    last_score: float | None = None
    threshold: float | None = None
    severity: float | None = Field(None, description="last_score / threshold")
    open_incident_id: str | None = Field(None, description="the newest open incident involving the sensor")
    model_version: str | None = None
    registered: bool = Field(True, description="false: seen in the stream but not in the sensor registry")


class SensorList(BaseModel):
    """States are judged at the store's newest event time (the stream's clock)."""

    counts: dict[str, int] = Field(description="sensors per state")
    items: list[Sensor]


class IncidentSensor(BaseModel):
    model_config = ConfigDict(extra="allow")
    sensor_id: str
    share: float | None = None
    peak_severity: float | None = None
    readings: int | None = None
    first_seen: str | None = None
    last_seen: str | None = None


class Incident(BaseModel):
    incident_id: str
    kind: str
    status: str
    zone: str | None = None
    sensors: list[IncidentSensor] = []
    first_sensor: str | None = None
    opened_at: str | None = None
    last_seen: str | None = None
    closed_at: str | None = None
    peak_severity: float | None = None
    readings: int | None = None
    explanation: str | None = None
    muted: bool = False
    model_version: str | None = None
    detected_at: str | None = None
    updated_at: str | None = None
    batch_id: int | None = None
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    closed_by: str | None = None
    label: str | None = None
    labelled_by: str | None = None
    labelled_at: str | None = None
    comment: str | None = None


class Action(BaseModel):
    incident_id: str
    action: str
    actor: str
    at: str | None = None
    label: str | None = None
    comment: str | None = None


class IncidentDetail(Incident):
    actions: list[Action] = Field([], description="the audit trail: every ack, close and label, oldest first")


class Page(BaseModel):
    limit: int
    offset: int
    next_offset: int | None = Field(None, description="offset of the next page; null on the last page")


class IncidentPage(Page):
    items: list[Incident]


class Anomaly(BaseModel):
    sensor_id: str
    event_time: str
    zone: str | None = None
    score: float | None = None
    threshold: float | None = None
    severity: float | None = None
    values: dict[str, float | None] | None = None
    expected: dict[str, float | None] | None = None
    explanation: str | None = None
    model_version: str | None = None
    batch_id: int | None = None
    detected_at: str | None = None


class AnomalyPage(Page):
    items: list[Anomaly]


class Span(BaseModel):
    incident_id: str
    kind: str
    status: str
    start: str
    end: str


class Mark(BaseModel):
    event_time: str
    score: float | None = None
    severity: float | None = None


class Series(BaseModel):
    sensor_id: str
    since: str
    until: str
    features: list[str]
    time: list[float] = Field(description="event times, seconds since the epoch (UTC)")
    values: dict[str, list[float | None]] = Field(description="per feature, the readings")
    expected: dict[str, list[float | None]] = Field(description="per feature, the model's expected values")
    score: list[float | None]
    threshold: list[float | None]
    is_anomaly: list[bool]
    anomalies: list[Mark] = Field(description="the sensor's anomaly records in the window")
    incidents: list[Span] = Field(description="incidents of the sensor overlapping the window (shaded spans)")
    truncated: bool = Field(description="true when the window held more readings than the limit (the newest are shown)")


class StatRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    sensor_id: str
    hour: str
    zone: str | None = None
    mean: float | None = Field(None, description="mean reading of the hour (first feature)")
    std_30d: float | None = Field(None, description="standard deviation of the readings over the 30 days up to the hour")
    anomalies: int = 0
    incidents: int = 0


class StatPage(Page):
    since: str
    until: str
    items: list[StatRow]


class Health(BaseModel):
    reachable: bool
    store: str = Field(description="the store, without credentials")
    writable: bool
    error: str | None = None
    newest_batch: dict | None = Field(None, description="the newest batch row (batch_id, written_at, events, ...)")
    batch_age_s: float | None = Field(None, description="seconds since the newest batch was written (wall clock)")
    event_lag_s: float | None = Field(None, description="written_at - max_event_time of the newest batch: how far "
                                                        "the stream runs behind the events' own clock")
    counts: dict[str, int | None] = {}


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor: str = Field("operator", min_length=1, max_length=MAX_ACTOR_CHARS, description="who does it (shown in the audit trail)")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)


class LabelIn(ActionIn):
    label: Label
