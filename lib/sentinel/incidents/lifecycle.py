"""Operator actions on incidents and maintenance windows (mutes): the rules, checked before writing.

Statuses go ``new -> acknowledged -> closed`` (``new -> closed`` too) and never back; stores
merge a status by rank, so the stream writing ``new`` or ``closed`` never undoes an operator's
acknowledgement. Labels say what an incident turned out to be. A mute silences one sensor or one
zone for a time range: incidents inside it are still stored, marked ``muted``.

:func:`plan_action` and :func:`validate_mute` are pure: they check the input and return the
fields to write (and the audit row), or raise :class:`ActionError` with one sentence naming the
problem and the fix; nothing is written by this module, so a rejected command changes nothing.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd

from sentinel.config import ConfigError
from sentinel.incidents.ids import iso, to_ns

STATUSES = ("new", "acknowledged", "closed")
STATUS_RANK = {s: i for i, s in enumerate(STATUSES)}
# Allowed operator transitions (a status never moves back; "closed" is final).
TRANSITIONS = {"new": ("acknowledged", "closed"), "acknowledged": ("closed",), "closed": ()}
LABELS = ("confirmed", "false_alarm", "maintenance", "sensor_fault")
ACTIONS = ("ack", "close", "label")
ACTION_STATUS = {"ack": "acknowledged", "close": "closed"}
MAX_ACTOR_CHARS = 100
MAX_COMMENT_CHARS = 2000


class ActionError(ConfigError):
    """An operator command is invalid (bad status, label, transition or mute window); one sentence."""


class UnknownIncident(ActionError):
    """The command names an incident id that does not exist."""


def check_status(status: str) -> str:
    """``status`` if it is one of STATUSES, else :class:`ActionError`."""
    if status not in STATUS_RANK:
        raise ActionError(f"unknown incident status {status!r}: use one of {', '.join(STATUSES)}")
    return status


def check_label(label: str) -> str:
    """``label`` if it is one of LABELS, else :class:`ActionError`."""
    if label not in LABELS:
        raise ActionError(f"unknown incident label {label!r}: use one of {', '.join(LABELS)}")
    return label


def check_transition(incident_id: str, current: str, target: str) -> None:
    """Raise :class:`ActionError` unless an operator may move ``current`` to ``target``."""
    check_status(current)
    check_status(target)
    if target == current:
        raise ActionError(f"incident {incident_id} is already {current}: nothing to change")
    if target not in TRANSITIONS[current]:
        raise ActionError(f"incident {incident_id} is {current} and cannot become {target}: "
                          f"a status never moves back (new -> acknowledged -> closed)")


def merge_status(stored: str | None, incoming: str) -> str:
    """The status a store keeps when ``incoming`` meets ``stored``: the higher rank wins."""
    check_status(incoming)
    if stored is None:
        return incoming
    return stored if STATUS_RANK[check_status(stored)] >= STATUS_RANK[incoming] else incoming


@dataclass(frozen=True)
class ActionPlan:
    """What a valid command writes: ``changes`` to the incident row and one ``audit`` row."""

    incident_id: str
    changes: dict
    audit: dict


def _actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise ActionError("the action has no actor: give who does it (e.g. --actor j.smith)")
    if len(actor) > MAX_ACTOR_CHARS:
        raise ActionError(f"actor name is {len(actor)} characters long: keep it under {MAX_ACTOR_CHARS}")
    return actor.strip()


def _comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise ActionError("the comment must be text: quote it")
    if len(comment) > MAX_COMMENT_CHARS:
        raise ActionError(f"the comment is {len(comment)} characters long: keep it under {MAX_COMMENT_CHARS}")
    return comment


def _when(at, what: str) -> pd.Timestamp:
    if at is None:
        return pd.Timestamp(datetime.now(timezone.utc))
    try:
        return pd.Timestamp(to_ns(at), tz="UTC")
    except (ValueError, TypeError) as exc:
        raise ActionError(f"{what} {at!s} is not a timezone-aware time: give it in UTC, e.g. "
                          f"2026-01-20T03:15:00Z") from exc


def plan_action(incident_id: str, record: dict | None, action: str, actor: str,
                label: str | None = None, comment: str | None = None, at=None) -> ActionPlan:
    """Check an operator command on an incident and return what to write.

    Args:
        incident_id: the id the operator gave.
        record: the stored incident (at least ``status``), or None when there is no such id.
        action: ``ack``, ``close`` or ``label``.
        actor: who does it (non-empty).
        label: for ``label``: one of LABELS.
        comment: optional free text (at most MAX_COMMENT_CHARS).
        at: when (tz-aware); if not given, now (UTC).

    Raises:
        UnknownIncident: no such incident.
        ActionError: unknown action or label, or a transition the lifecycle forbids.
    """
    if action not in ACTIONS:
        raise ActionError(f"unknown incident action {action!r}: use one of {', '.join(ACTIONS)}")
    if record is None:
        raise UnknownIncident(f"no incident {incident_id!r}: list them with `sentinel incidents`")
    who, note, when = _actor(actor), _comment(comment), _when(at, "action time")
    current = record.get("status") or "new"
    changes: dict = {}
    if action == "label":
        if label is None:
            raise ActionError(f"labelling incident {incident_id} needs a label: use one of {', '.join(LABELS)}")
        changes = {"label": check_label(label), "labelled_by": who, "labelled_at": when}
    else:
        if label is not None:
            check_label(label)
        target = ACTION_STATUS[action]
        check_transition(incident_id, current, target)
        changes = {"status": target}
        if action == "ack":
            changes.update(acknowledged_by=who, acknowledged_at=when)
        else:
            changes.update(closed_by=who)
        if label is not None:
            changes.update(label=label, labelled_by=who, labelled_at=when)
    if note is not None:
        changes["comment"] = note
    audit = {"incident_id": incident_id, "action": action, "actor": who, "at": when,
             "label": changes.get("label"), "comment": note}
    return ActionPlan(incident_id, changes, audit)


@dataclass(frozen=True)
class Mute:
    """A maintenance window: one sensor or one zone muted over ``[starts_at, ends_at)`` (ns UTC)."""

    mute_id: str
    sensor_id: str | None
    zone: str | None
    starts_at: int
    ends_at: int
    reason: str = ""
    created_by: str = ""

    def covers(self, sensor_id: str, zone: str | None, t_ns: int) -> bool:
        """True when this mute silences ``sensor_id`` (in ``zone``) at ``t_ns``."""
        if not self.starts_at <= t_ns < self.ends_at:
            return False
        return sensor_id == self.sensor_id if self.sensor_id is not None else (zone is not None and zone == self.zone)

    def record(self, created_at=None) -> dict:
        """The ``mutes`` table row (times as UTC Timestamps)."""
        return {"mute_id": self.mute_id, "sensor_id": self.sensor_id, "zone": self.zone,
                "starts_at": pd.Timestamp(self.starts_at, tz="UTC"), "ends_at": pd.Timestamp(self.ends_at, tz="UTC"),
                "reason": self.reason, "created_by": self.created_by,
                "created_at": _when(created_at, "creation time")}


def mute_id(sensor_id: str | None, zone: str | None, starts_at: int, ends_at: int) -> str:
    """Deterministic id of a mute: the same window on the same target is the same mute."""
    key = f"{sensor_id or ''}\x00{zone or ''}\x00{starts_at}\x00{ends_at}".encode("utf-8")
    return "MUTE-" + hashlib.sha256(key).hexdigest()[:12]


def validate_mute(sensor_id: str | None, zone: str | None, starts_at, ends_at, reason: str = "",
                  actor: str = "", known_sensors=None, known_zones=None) -> Mute:
    """Check a maintenance window and return it as a :class:`Mute`.

    Args:
        sensor_id, zone: exactly one of them.
        starts_at, ends_at: tz-aware times, ``ends_at`` after ``starts_at``.
        reason: free text (at most MAX_COMMENT_CHARS).
        actor: who creates it (non-empty).
        known_sensors, known_zones: if given, the target must be in them (the registry).

    Raises:
        ActionError: one sentence naming the problem.
    """
    sensor_id = sensor_id or None
    zone = zone or None
    if (sensor_id is None) == (zone is None):
        raise ActionError("a mute needs exactly one of a sensor or a zone: give --sensor or --zone, not both or neither")
    start, end = _when_required(starts_at, "mute start"), _when_required(ends_at, "mute end")
    if end <= start:
        raise ActionError(f"mute ends at {iso(end)}, not after its start {iso(start)}: give an end after the start")
    if sensor_id is not None and known_sensors is not None and sensor_id not in set(known_sensors):
        raise ActionError(f"unknown sensor {sensor_id!r} for a mute: use a sensor id from the registry")
    if zone is not None and known_zones is not None and zone not in set(known_zones):
        raise ActionError(f"unknown zone {zone!r} for a mute: use a zone from the registry")
    return Mute(mute_id(sensor_id, zone, start, end), sensor_id, zone, start, end,
                _comment(reason) or "", _actor(actor))


def _when_required(t, what: str) -> int:
    if t is None:
        raise ActionError(f"the {what} is missing: give a UTC time, e.g. 2026-01-20T03:15:00Z")
    return to_ns(_when(t, what))


def mutes_from(table) -> list[Mute]:
    """Mutes from a store's ``mutes`` frame (or an iterable of :class:`Mute`/dicts), sorted by id."""
    if table is None:
        return []
    if isinstance(table, pd.DataFrame):
        rows = table.to_dict("records")
    else:
        rows = list(table)
    out = []
    for r in rows:
        if isinstance(r, Mute):
            out.append(r)
            continue
        sid = r.get("sensor_id")
        zone = r.get("zone")
        sid = None if sid is None or (isinstance(sid, float) and sid != sid) else str(sid)
        zone = None if zone is None or (isinstance(zone, float) and zone != zone) else str(zone)
        start, end = to_ns(r["starts_at"]), to_ns(r["ends_at"])
        out.append(Mute(str(r.get("mute_id") or mute_id(sid, zone, start, end)), sid, zone, start, end,
                        str(r.get("reason") or ""), str(r.get("created_by") or "")))
    return sorted(out, key=lambda m: m.mute_id)
