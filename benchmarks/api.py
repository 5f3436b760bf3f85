"""The web app's response times: p50/p95 of ``GET /api/sensors`` and of a 24-hour
``GET /api/sensors/{id}/series``, for 20 and 1,000 sensors, over real HTTP (uvicorn on 127.0.0.1,
one keep-alive client), with the same reads issued straight to the store API as the baseline
(what the HTTP layer, validation and JSON add).

The store is filled the way the stream fills it: ``tests.serve_data.Feed`` micro-batches (one
reading per sensor every 5 minutes, a few incidents) through the real SQLite sink (and the
PostgreSQL sink with ``--postgres``, which needs PG* as ``make test`` / dev-env set them).

    make bench-api                                   # = scripts/bench.sh api
    .venv/bin/python benchmarks/api.py --sensors 20,1000 --days 2 --requests 40 [--postgres]

Prints a table and one JSON line (also written to reports/bench_api.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(sinks, n_sensors: int, days: float):
    from tests.serve_data import Episode, Feed, registry
    steps = int(days * 288)
    rng = random.Random(7)
    ids = [f"PT-{i + 1:04d}" for i in range(n_sensors)]
    # about 5 % of the sensors with an incident in the newest day (a busy network)
    episodes = [Episode(sid, steps - 288 + rng.randrange(250), 12, severity=2.0 + rng.random() * 2)
                for sid in rng.sample(ids, max(1, n_sensors // 20))]
    feed = Feed(n_sensors, episodes=episodes)
    for sink in sinks:
        sink.setup()
        sink.load_sensors(registry(n_sensors))
    t0 = time.perf_counter()
    batches = feed.write(sinks, steps, per_batch=12)
    return feed, steps, batches, time.perf_counter() - t0


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2), "max_ms": round(float(a.max()), 2)}


def measure(url: str, n_sensors: int, requests: int) -> dict:
    import httpx2
    import uvicorn
    from sentinel.config import load_settings
    from sentinel.serve import create_app
    from sentinel.serve.routes.series import DEFAULT_SPAN
    from sentinel.store.client import IncidentFilters, open_store
    from sentinel.store.query import Filters
    settings = load_settings()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(url, settings), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    rng = random.Random(11)
    ids = [f"PT-{i + 1:04d}" for i in range(n_sensors)]
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http, \
                open_store(url, settings) as store:
            def get(path):
                r = http.get(path)
                r.raise_for_status()
                return r

            get("/api/sensors"), get(f"/api/sensors/{ids[0]}/series")     # warm-up
            body = get("/api/sensors").json()
            assert len(body["items"]) == n_sensors, len(body["items"])
            series_points = len(get(f"/api/sensors/{ids[0]}/series").json()["time"])
            out = {"sensors_http": summary(timed(lambda: get("/api/sensors"), requests)),
                   "series_http": summary(timed(lambda: get(f"/api/sensors/{rng.choice(ids)}/series"), requests))}

            def direct_sensors():
                store.sensors()
                store.sensor_states()

            def direct_series():
                sid = rng.choice(ids)
                last = store.series(sid, None, None, 1)["event_time"].iloc[-1]
                b = last.floor("s") + pd.Timedelta(seconds=1)
                a = b - DEFAULT_SPAN
                store.series(sid, a, b, 20_001)
                store.anomalies(Filters(sensors=(sid,), since=a, until=b, limit=50_000))
                store.incidents(IncidentFilters(sensors=(sid,), since=a, until=b, limit=200))

            out["sensors_store"] = summary(timed(direct_sensors, requests))
            out["series_store"] = summary(timed(direct_series, requests))
            out["series_points"] = series_points
            out["sensors_bytes"] = len(http.get("/api/sensors", headers={"Accept-Encoding": "identity"}).content)
    finally:
        server.should_exit = True
        thread.join(10)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sensors", default="20,1000", help="sensor counts (default: 20,1000)")
    p.add_argument("--days", type=float, default=2.0, help="days of 5-minute scores in the store (default: 2)")
    p.add_argument("--requests", type=int, default=40, help="timed requests per endpoint (default: 40)")
    p.add_argument("--postgres", action="store_true", help="also a PostgreSQL store (PG* environment)")
    p.add_argument("--out", default=str(ROOT / "reports" / "bench_api.json"))
    args = p.parse_args(argv)
    from sentinel.config import PostgresSettings
    from sentinel.store.sinks.sqlite import SqliteSink
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        for n in [int(x) for x in args.sensors.split(",")]:
            stores = [("sqlite", lambda n=n: SqliteSink(Path(tmp) / f"s{n}.db"),
                       lambda n=n: f"sqlite:///{Path(tmp) / f's{n}.db'}", lambda: None)]
            if args.postgres:
                from sentinel.store.sinks.postgres import PostgresSink
                schema = f"bench_api_{uuid.uuid4().hex[:8]}"
                e = os.environ

                def drop(schema=schema):
                    import psycopg2
                    con = psycopg2.connect("")
                    with con, con.cursor() as cur:
                        cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                    con.close()

                pg = f"postgresql://{e['PGUSER']}@{e['PGHOST']}:{e['PGPORT']}/{e['PGDATABASE']}?schema={schema}"
                stores.append(("postgres", lambda schema=schema: PostgresSink(PostgresSettings(schema=schema)),
                               lambda pg=pg: pg, drop))
            for kind, make_sink, make_url, cleanup in stores:
                try:
                    sink = make_sink()
                    _, steps, batches, fill_s = fill([sink], n, args.days)
                    sink.close()
                    r = measure(make_url(), n, args.requests)
                    results.append({"store": kind, "sensors": n, "scores": steps * n, "batches": batches,
                                    "fill_s": round(fill_s, 2), **r})
                finally:
                    cleanup()
    head = (f"{'store':8} {'sensors':>7} {'scores':>8}  {'/api/sensors p50/p95 ms':>24}  {'store only':>14}  "
            f"{'24-h /series p50/p95 ms':>24}  {'store only':>14}  points")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['store']:8} {r['sensors']:>7} {r['scores']:>8}  "
              f"{r['sensors_http']['p50_ms']:>11.1f} / {r['sensors_http']['p95_ms']:>8.1f}  "
              f"{r['sensors_store']['p50_ms']:>6.1f} / {r['sensors_store']['p95_ms']:>5.1f}  "
              f"{r['series_http']['p50_ms']:>11.1f} / {r['series_http']['p95_ms']:>8.1f}  "
              f"{r['series_store']['p50_ms']:>6.1f} / {r['series_store']['p95_ms']:>5.1f}  {r['series_points']:>6}")
    doc = {"benchmark": "api", "days": args.days, "requests": args.requests, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
