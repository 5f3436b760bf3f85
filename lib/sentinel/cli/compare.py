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


def run_compare(args, settings: Settings) -> int:
    """Print episode figures (anomaly rows merged into episodes per sensor) and, when the store holds
    incidents, incident figures (``incidents.evaluate``: one incident per injected event, kinds)."""
    import sqlite3
    from sentinel.detect import evaluate
    db = args.db or settings.sinks.sqlite.path
    if not Path(db).exists():
        raise ConfigError(f"anomaly store {db} does not exist: run the deploy job first")
    with sqlite3.connect(db) as con:
        flags = pd.read_sql_query("SELECT sensor_id, event_time AS timestamp FROM anomalies", con)
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
    out = m | {"anomaly_rows": len(flags), "rejects": n_rejects}
    if incidents is not None:
        from sentinel.incidents import evaluate as incident_eval
        im = incident_eval.incident_metrics(truth, incidents, tol)
        im.pop("per_event")
        print("\nby incident (what the stream opened for operators):")
        print(incident_eval.format_table(im))
        out["incidents"] = im
    print(f"anomaly rows in store: {len(flags)}, incidents: {0 if incidents is None else len(incidents)}, "
          f"rejects: {n_rejects}, store: {Path(db).resolve()}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0
