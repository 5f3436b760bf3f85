"""``sentinel compare``: the demo's anomalies and incidents against its simulated ground truth."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sentinel.config import ConfigError, Settings


def add_compare_args(p):
    p.add_argument("--truth", required=True, help="ground truth episodes CSV written by `sentinel simulate --truth`")
    p.add_argument("--db", help="SQLite anomaly store (default: sinks.sqlite.path)")
    p.add_argument("--interval", type=float, help="sampling interval in seconds (default: window.interval_s)")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.add_argument("--no-events", dest="events", action="store_false",
                   help="leave out the table of injected events beside their incidents")
    p.add_argument("--explain-chars", type=int, default=170, metavar="N",
                   help="cut each incident's explanation to N characters in that table (0 = leave it out; "
                        "default: 170)")


def run_compare(args, settings: Settings) -> int:
    """Print episode figures (anomaly rows merged into episodes per sensor; how many false ones stayed
    too weak to open an incident) and, when the store holds incidents, incident figures
    (``incidents.evaluate``: one incident per injected event, kinds) and, unless ``--no-events``,
    each injected event beside the incident that matched it, then the incidents that matched none."""
    import sqlite3
    from sentinel.detect import evaluate
    db = args.db or settings.sinks.sqlite.path
    if not Path(db).exists():
        raise ConfigError(f"anomaly store {db} does not exist: run the deploy job first")
    with sqlite3.connect(db) as con:
        flags = pd.read_sql_query("SELECT sensor_id, event_time AS timestamp, severity FROM anomalies", con)
        n_rejects = con.execute("SELECT count(*) FROM rejects").fetchone()[0]
        has_incidents = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'incidents'"
                                    ).fetchone()[0]
        incidents = pd.read_sql_query("SELECT * FROM incidents", con) if has_incidents else None
    flags["timestamp"] = pd.to_datetime(flags["timestamp"], utc=True)
    truth = pd.read_csv(args.truth)
    interval = pd.Timedelta(seconds=args.interval or settings.window.interval_s)
    tol = interval * settings.window.length
    m = evaluate.episode_metrics(truth, flags, tol, tol)
    print("by episode (anomaly rows, merged per sensor):")
    print(evaluate.format_table(m))
    # Which false episodes paged nobody: the incident on-delay opens none below open_severity
    # (unless a run is long or flat); they stay anomaly rows (docs/incidents.md, step 4).
    quiet = _false_below(truth, flags, tol, settings.incidents.open_severity)
    m["false_episodes_below_open_severity"] = quiet
    if m["false_episodes"]:
        print(f"false episodes whose readings all stayed below severity {settings.incidents.open_severity:g} "
              f"(too weak to open an incident): {quiet} of {m['false_episodes']}")
    out = m | {"anomaly_rows": len(flags), "rejects": n_rejects}
    if incidents is not None:
        from sentinel.incidents import evaluate as incident_eval
        im = incident_eval.incident_metrics(truth, incidents, tol)
        print("\nby incident (what the stream opened for operators):")
        print(incident_eval.format_table(im))
        if args.events:
            print("\ninjected events (left) and the incident the stream opened for each (right); "
                  "delay: event start to the incident's first alarm on its sensor:")
            print(incident_eval.format_events(im, incidents, explain_chars=args.explain_chars))
        per_event = im.pop("per_event")
        out["incidents"] = im | {"per_event": json.loads(per_event.to_json(orient="records", date_format="iso"))}
    print(f"anomaly rows in store: {len(flags)}, incidents: {0 if incidents is None else len(incidents)}, "
          f"rejects: {n_rejects}, store: {Path(db).resolve()}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


def _false_below(truth: pd.DataFrame, flags: pd.DataFrame, tol: pd.Timedelta, severity: float) -> int:
    """False episodes (``episode_metrics``' rule) whose anomaly rows all stay below ``severity``."""
    from sentinel.detect import evaluate
    t = truth.assign(start=pd.to_datetime(truth["start"], utc=True), end=pd.to_datetime(truth["end"], utc=True))
    n = 0
    for d in evaluate.detected_episodes(flags[["sensor_id", "timestamp"]], tol).itertuples(index=False):
        s = t[t["sensor_id"] == d.sensor_id]
        if ((d.start <= s["end"] + tol) & (d.end >= s["start"])).any():
            continue
        rows = flags[(flags["sensor_id"] == d.sensor_id) & (flags["timestamp"] >= d.start)
                     & (flags["timestamp"] <= d.end)]
        n += int(rows["severity"].max() < severity)
    return n
