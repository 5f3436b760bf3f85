"""``sentinel compare``: the demo's anomalies against its simulated ground truth."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sentinel.config import ConfigError, Settings


def add_compare_args(p):
    p.add_argument("--truth", required=True, help="ground truth episodes CSV written by `sentinel simulate --truth`")
    p.add_argument("--db", help="SQLite anomaly store (default: sinks.sqlite.path)")
    p.add_argument("--interval", type=int, help="sampling interval in seconds (default: window.interval_s)")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")


def run_compare(args, settings: Settings) -> int:
    import sqlite3
    from sentinel.detect import evaluate
    db = args.db or settings.sinks.sqlite.path
    if not Path(db).exists():
        raise ConfigError(f"anomaly store {db} does not exist: run the deploy job first")
    with sqlite3.connect(db) as con:
        flags = pd.read_sql_query("SELECT sensor_id, event_time AS timestamp FROM anomalies", con)
        n_rejects = con.execute("SELECT count(*) FROM rejects").fetchone()[0]
    flags["timestamp"] = pd.to_datetime(flags["timestamp"], utc=True)
    truth = pd.read_csv(args.truth)
    interval = pd.Timedelta(seconds=args.interval or settings.window.interval_s)
    tol = interval * settings.window.length
    m = evaluate.episode_metrics(truth, flags, tol, tol)
    print(evaluate.format_table(m))
    print(f"anomaly rows in store: {len(flags)}, rejects: {n_rejects}, store: {Path(db).resolve()}")
    if args.json:
        Path(args.json).write_text(json.dumps(m | {"anomaly_rows": len(flags), "rejects": n_rejects}, indent=1, default=float))
    return 0
