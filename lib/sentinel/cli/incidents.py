"""``sentinel incidents``: list, show and act on incidents; maintenance windows (mutes).

    sentinel incidents list [--store URL] [--sensor ID] [--zone Z] [--since T] [--until T]
                            [--status S] [--kind K] [--min-severity X] [--muted|--not-muted]
                            [--limit N] [--offset N] [--format table|csv|json]
    sentinel incidents show ID [--format table|json]
    sentinel incidents ack ID --by NAME [--comment TEXT]
    sentinel incidents close ID --by NAME [--comment TEXT]
    sentinel incidents label ID LABEL --by NAME [--comment TEXT]
    sentinel incidents mute (--sensor ID | --zone Z) --from T --until T --reason TEXT --by NAME
    sentinel incidents mutes [--active-at T] [--format table|csv|json]

Writes go through the incident rules (``sentinel.incidents.lifecycle``) in one transaction;
bad input stops with one sentence, exit code 2, and changes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from sentinel.cli import common
from sentinel.config import ConfigError, Settings
from sentinel.incidents import lifecycle
from sentinel.store import IncidentFilters, open_store
from sentinel.store.client import INCIDENT_LIST_CAP, INCIDENT_TIMES
from sentinel.store.query import _iso, _printable, default_store, parse_store, parse_time
from sentinel.store.sinks.base import INCIDENT_COLUMNS, MUTE_COLUMNS

FORMATS = ("table", "csv", "json")
LIST_TABLE = ["incident_id", "status", "kind", "zone", "first_sensor", "opened_at", "last_seen", "peak_severity",
              "readings", "muted", "label"]
MUTE_TIMES = ("starts_at", "ends_at", "created_at")


# ---------------------------------------------------------------- arguments
def _shared(sub: argparse.ArgumentParser) -> None:
    """--config/--set/-v after the action too (`incidents list --config f`), without a default
    that would overwrite the same flags given before the action."""
    common.add_common_args(sub)
    for action in sub._actions:  # argparse keeps no public handle on an argument's default
        if action.dest in ("config", "overrides", "verbose"):
            action.default = argparse.SUPPRESS
    sub.add_argument("--store", metavar="URL", default=argparse.SUPPRESS,
                     help="sqlite:///PATH | postgresql://USER@HOST:PORT/DB[?schema=S] | s3://BUCKET/PREFIX "
                          "(default: the first of sinks.enabled)")


def _format(sub: argparse.ArgumentParser, choices=FORMATS) -> None:
    sub.add_argument("--format", choices=choices, default="table", help="output format (default: table)")


def add_incidents_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="URL", default=None, help=argparse.SUPPRESS)
    actions = p.add_subparsers(dest="incidents_action", required=True, metavar="ACTION")
    mk = lambda name, text: actions.add_parser(name, help=text, description=text,  # noqa: E731
                                               formatter_class=common.EnvDefaultHelp)

    ls = mk("list", "incidents matching the filters, newest opened first")
    _shared(ls)
    ls.add_argument("--sensor", action="append", metavar="ID", help="involving this sensor (repeatable)")
    ls.add_argument("--zone", metavar="Z", help="only zone Z")
    ls.add_argument("--since", metavar="T", help="active at or after T: ISO-8601 (naive = UTC) or 24h, 7d ...")
    ls.add_argument("--until", metavar="T", help="opened before T: same forms as --since")
    ls.add_argument("--status", action="append", metavar="S", help="new | acknowledged | closed (repeatable)")
    ls.add_argument("--kind", action="append", metavar="K",
                    help="leak | burst | sensor_fault | operational | unknown (repeatable)")
    ls.add_argument("--min-severity", type=float, metavar="X", help="peak severity at least X")
    muted = ls.add_mutually_exclusive_group()
    muted.add_argument("--muted", dest="muted", action="store_const", const=True, default=None,
                       help="only incidents inside a maintenance window")
    muted.add_argument("--not-muted", dest="muted", action="store_const", const=False, help="only the others")
    ls.add_argument("--limit", type=int, default=100, metavar="N",
                    help=f"at most N incidents (default: 100, at most {INCIDENT_LIST_CAP})")
    ls.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N (default: 0)")
    _format(ls)

    show = mk("show", "one incident: its record, sensors and the operators' actions")
    _shared(show)
    show.add_argument("incident_id", metavar="ID")
    _format(show, ("table", "json"))

    for name, text in (("ack", "acknowledge an incident (someone is on it)"), ("close", "close an incident")):
        act = mk(name, text)
        _shared(act)
        act.add_argument("incident_id", metavar="ID")
        act.add_argument("--by", required=True, metavar="NAME", help="who does it")
        act.add_argument("--comment", metavar="TEXT", help="a note kept with the incident and in its audit trail")

    lab = mk("label", "say what an incident turned out to be")
    _shared(lab)
    lab.add_argument("incident_id", metavar="ID")
    lab.add_argument("label", metavar="LABEL", help=" | ".join(lifecycle.LABELS))
    lab.add_argument("--by", required=True, metavar="NAME", help="who does it")
    lab.add_argument("--comment", metavar="TEXT", help="a note kept with the incident and in its audit trail")

    mute = mk("mute", "a maintenance window: incidents of the sensor or zone inside it are marked muted")
    _shared(mute)
    target = mute.add_mutually_exclusive_group(required=True)
    target.add_argument("--sensor", metavar="ID", help="mute this sensor")
    target.add_argument("--zone", metavar="Z", help="mute every sensor of this zone")
    mute.add_argument("--from", dest="starts_at", required=True, metavar="T",
                      help="start: ISO-8601 (naive = UTC), now, or +2h / -30m from now")
    mute.add_argument("--until", dest="ends_at", required=True, metavar="T", help="end (exclusive): same forms")
    mute.add_argument("--reason", required=True, metavar="TEXT", help="why (kept with the mute)")
    mute.add_argument("--by", required=True, metavar="NAME", help="who sets it")

    mutes = mk("mutes", "the maintenance windows, by start")
    _shared(mutes)
    mutes.add_argument("--active-at", metavar="T", help="only those covering T (ISO-8601, now, +2h ...)")
    _format(mutes)


# ---------------------------------------------------------------- output
def _cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v) or v is pd.NaT:
        return ""
    if isinstance(v, pd.Timestamp):
        return _iso(v)
    if isinstance(v, float):
        return f"{v:.2f}"
    return _printable(str(v))


def _table(frame: pd.DataFrame, columns: list[str], empty: str) -> str:
    if frame.empty:
        return f"({empty})\n"
    cells = [[_cell(r[c]) for c in columns] for r in frame.to_dict("records")]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(columns, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + f"\n({len(cells)} rows)\n"


def _jsonable(rec: dict) -> dict:
    out = {}
    for k, v in rec.items():
        if isinstance(v, pd.Timestamp) or v is pd.NaT:
            out[k] = _iso(v) or None
        elif k == "sensors" and isinstance(v, str):
            out[k] = json.loads(v)
        elif isinstance(v, list):
            out[k] = [_jsonable(x) if isinstance(x, dict) else x for x in v]
        elif isinstance(v, float) and v != v:
            out[k] = None
        elif hasattr(v, "item"):  # numpy scalars
            out[k] = v.item()
        else:
            out[k] = v
    return out


def format_frame(frame: pd.DataFrame, fmt: str, table_columns: list[str], times, empty: str) -> str:
    if fmt == "json":
        return json.dumps([_jsonable(r) for r in frame.to_dict("records")], indent=1, ensure_ascii=False) + "\n"
    if fmt == "csv":
        text = frame.copy()
        for c in times:
            text[c] = [_iso(t) for t in text[c]]
        return text.to_csv(index=False, lineterminator="\n")
    return _table(frame, table_columns, empty)


def format_incident(inc: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(_jsonable(inc), indent=1, ensure_ascii=False) + "\n"
    lines = [f"{k:16} {_cell(inc[k])}" for k in INCIDENT_COLUMNS if k != "sensors"]
    lines += ["", "sensors (by share):"]
    sensors = pd.DataFrame(inc["sensors"])
    lines.append(_table(sensors, list(sensors.columns), "none").rstrip() if len(sensors) else "  (none)")
    lines += ["", "actions:"]
    lines += [f"  {_iso(a['at'])}  {_printable(a['action'])}  by {_printable(a['actor'])}"
              + (f"  label {_printable(a['label'])}" if a.get("label") else "")
              + (f"  comment: {_printable(a['comment'])}" if a.get("comment") else "")
              for a in inc["actions"]] or ["  (none)"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- run
def _mute_time(text: str, now: pd.Timestamp) -> pd.Timestamp:
    t = (text or "").strip()
    if t.startswith("+"):  # ahead of now: maintenance usually starts now and ends later
        back = parse_time(t[1:], now)
        return now + (now - back)
    return parse_time(t, now)


def run_incidents(args, settings: Settings) -> int:
    store = parse_store(args.store, settings) if getattr(args, "store", None) else default_store(settings)
    client = open_store(store, settings, rules=lifecycle)
    try:
        return _run(client, args)
    finally:
        client.release()


def _run(client, args) -> int:
    action, out = args.incidents_action, sys.stdout
    now = pd.Timestamp.now(tz="UTC")
    if action == "list":
        f = IncidentFilters(sensors=tuple(args.sensor or ()), zone=args.zone, since=parse_time(args.since, now),
                            until=parse_time(args.until, now), min_severity=args.min_severity,
                            status=tuple(args.status or ()), kind=tuple(args.kind or ()), muted=args.muted,
                            limit=args.limit, offset=args.offset)
        out.write(format_frame(client.incidents(f), args.format, LIST_TABLE, INCIDENT_TIMES, "no incidents"))
    elif action == "show":
        inc = client.incident(args.incident_id)
        if inc is None:
            from sentinel.store import NotFound
            raise NotFound(f"no incident {args.incident_id!r} in {client.describe()}: list them with "
                           "`sentinel incidents list`")
        out.write(format_incident(inc, args.format))
    elif action in ("ack", "close", "label"):
        if action == "ack":
            inc = client.acknowledge(args.incident_id, args.by, args.comment)
        elif action == "close":
            inc = client.close(args.incident_id, args.by, args.comment)
        else:
            inc = client.label(args.incident_id, args.label, args.by, args.comment)
        done = {"ack": "acknowledged", "close": "closed", "label": f"labelled {inc['label']}"}[action]
        print(f"incident {_printable(inc['incident_id'])} {done} by {_printable(args.by)} "
              f"(status {inc['status']})")
    elif action == "mute":
        mute_id = client.add_mute(sensor_id=args.sensor, zone=args.zone, starts_at=_mute_time(args.starts_at, now),
                                  ends_at=_mute_time(args.ends_at, now), reason=args.reason, actor=args.by)
        what = f"sensor {args.sensor}" if args.sensor else f"zone {args.zone}"
        print(f"mute {mute_id}: {_printable(what)} muted from {_iso(_mute_time(args.starts_at, now))} "
              f"until {_iso(_mute_time(args.ends_at, now))}")
    elif action == "mutes":
        at = _mute_time(args.active_at, now) if args.active_at else None
        out.write(format_frame(client.mutes(at), args.format, MUTE_COLUMNS, MUTE_TIMES, "no mutes"))
    else:  # pragma: no cover - argparse allows only the actions above
        raise ConfigError(f"unknown incidents action {action!r}")
    return 0
