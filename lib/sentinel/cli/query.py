"""``sentinel query`` and ``sentinel report``: filters from flags, rows out for people."""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from sentinel.config import ConfigError, Settings
from sentinel.ingest.history import read_readings
from sentinel.store.client import IncidentFilters
from sentinel.store.query import QUERY_COLUMNS, Filters, Store, _iso, _printable, default_store, parse_store, parse_time, query
from sentinel.store.report import report_json, write_report

FORMATS = ("table", "csv", "json")


def filters_from_args(args) -> Filters:
    now = pd.Timestamp.now(tz="UTC")
    f = Filters(sensors=tuple(args.sensor or ()), since=parse_time(args.since, now), until=parse_time(args.until, now),
                min_severity=args.min_severity, zone=args.zone, limit=getattr(args, "limit", None))
    if f.limit is not None and f.limit < 0:
        raise ConfigError("--limit must be 0 (no limit) or positive")
    if f.since is not None and f.until is not None and f.since >= f.until:
        raise ConfigError(f"--since ({f.since}) is not before --until ({f.until}): swap them")
    return f


def format_rows(frame: pd.DataFrame, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "json":
        recs = []
        for r in frame.itertuples(index=False):
            d = r._asdict()
            d["event_time"], d["detected_at"] = _iso(d["event_time"]), _iso(d["detected_at"])
            d["values"] = json.loads(d["values"])
            d["expected"] = None if d["expected"] is None else json.loads(d["expected"])
            d["batch_id"] = int(d["batch_id"])
            recs.append(d)
        return json.dumps(recs, indent=1, ensure_ascii=False) + "\n"
    text = frame.copy()
    for c in ("event_time", "detected_at"):
        text[c] = [_iso(t) for t in text[c]]
    if fmt == "csv":
        return text.to_csv(index=False, lineterminator="\n")
    if text.empty:
        return "(no anomalies)\n"
    cells = [[_printable("" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))) for v in row]
             for row in text.itertuples(index=False)]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(QUERY_COLUMNS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(QUERY_COLUMNS, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines) + f"\n({len(cells)} rows)\n"


# ---------------------------------------------------------------- CLI: query
def _add_filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="URL",
                   help="sqlite:///PATH | postgresql://USER@HOST:PORT/DB[?schema=S] | s3://BUCKET/PREFIX "
                        "(default: the first of sinks.enabled)")
    p.add_argument("--sensor", action="append", metavar="ID", help="only this sensor (repeatable)")
    p.add_argument("--since", metavar="T", help="event time from T (inclusive): ISO-8601 (naive = UTC) or 24h, 7d ...")
    p.add_argument("--until", metavar="T", help="event time before T (exclusive): same forms as --since")
    p.add_argument("--min-severity", type=float, metavar="X", help="severity (score / threshold) at least X")
    p.add_argument("--zone", metavar="Z", help="only sensors of zone Z in the sensor registry")


def add_query_args(p: argparse.ArgumentParser) -> None:
    _add_filter_args(p)
    p.add_argument("--limit", type=int, metavar="N", help="at most N rows (the earliest; default: all)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")


def _store_from_args(args, settings: Settings) -> Store:
    return parse_store(args.store, settings) if args.store else default_store(settings)


def run_query(args, settings: Settings) -> int:
    store = _store_from_args(args, settings)
    frame = query(store, filters_from_args(args), settings)
    sys.stdout.write(format_rows(frame, args.format))
    return 0


# ---------------------------------------------------------------- report
def add_report_args(p: argparse.ArgumentParser) -> None:
    _add_filter_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for summary.md, summary.png and one PNG per sensor")
    p.add_argument("--history", metavar="FILE", help="readings (CSV/Parquet/JSON lines) to draw each sensor's "
                                                     "series under its anomalies (columns: data.sensor_field, "
                                                     "data.time_field, data.features)")
    p.add_argument("--max-sensors", type=int, default=50, metavar="N",
                   help="plot the N sensors with most anomalies (default: 50)")
    p.add_argument("--json", metavar="FILE", help="also write the report's figures (anomaly counts, incidents, "
                                                  "alarm load) as one JSON document to FILE")


def alarm_load_section(incidents: pd.DataFrame, settings: Settings, since=None, until=None) -> tuple[dict, str]:
    """The report's "Alarm load" figures (``sentinel.incidents.load.alarm_load`` over the period's
    incidents, rules from ``[incidents]``) and their Markdown section."""
    from sentinel.incidents import load
    figures = load.alarm_load(incidents, settings, since, until)
    return figures, load.markdown(figures)


def _drift(store, settings: Settings, filters) -> dict | None:
    """The served model's drift over the report's period (docs/lifecycle.md), when the registry
    (lifecycle.registry, else stream.model) exists; None otherwise."""
    from pathlib import Path

    from sentinel.store.storage import is_s3_url
    ref = settings.lifecycle.registry or settings.stream.model
    if not ref or (not is_s3_url(ref) and not Path(ref).expanduser().is_dir()):
        return None
    from sentinel.lifecycle.drift import drift_report
    from sentinel.lifecycle.registry import LifecycleError
    try:
        return drift_report(store, ref, settings, since=filters.since, until=filters.until)
    except LifecycleError as exc:
        return {"available": False, "summary": {"message": str(exc)}, "markdown": f"## Model drift\n\n{exc}\n"}


def run_report(args, settings: Settings) -> int:
    from sentinel.store.client import open_store
    store = _store_from_args(args, settings)
    filters = filters_from_args(argparse.Namespace(**{**vars(args), "limit": None}))
    client = open_store(store, settings)
    try:
        frame = client.anomalies(filters)
        incidents = client.all_incidents(IncidentFilters(sensors=filters.sensors, zone=filters.zone,
                                                         since=filters.since, until=filters.until,
                                                         min_severity=filters.min_severity))
    finally:
        client.release()
    history = read_readings(args.history, settings) if args.history else None
    load, load_md = alarm_load_section(incidents, settings, filters.since, filters.until)
    out = write_report(frame, args.out, history, list(settings.data.features), store.describe(),
                       max_sensors=args.max_sensors, incidents=incidents, alarm_load=load, alarm_load_md=load_md)
    drift = _drift(store, settings, filters)
    if drift is not None:
        text = drift.get("markdown") or f"## Model drift\n\n{(drift.get('summary') or {}).get('message', '')}\n"
        with open(out["summary_md"], "a", encoding="utf-8") as f:
            f.write("\n" + text.rstrip() + "\n")
    if args.json:
        from pathlib import Path
        doc = report_json(frame, incidents, load, store.describe())
        if drift is not None:
            doc["drift"] = {k: drift[k] for k in ("available", "version", "summary", "sensors") if k in drift}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    print(f"report: {out['summary_md']} ({len(frame)} anomalies, {len(incidents)} incidents, "
          f"{len(out['sensors'])} sensor plots)" + (f"; figures in {args.json}" if args.json else ""))
    return 0
