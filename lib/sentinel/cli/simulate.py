"""``sentinel simulate``: labelled history to a file, or a live feed to a socket or Kafka."""
from __future__ import annotations

import logging
from pathlib import Path

from sentinel.config import ConfigError, Settings
from sentinel.ingest.history import write_table

log = logging.getLogger("sentinel")


def add_simulate_args(p):
    p.add_argument("--kind", choices=["pressure", "network", "air-quality"], default="pressure",
                   help="pressure: the fast synthetic generator (default); network: a hydraulic simulation of an "
                        "EPANET network with WNTR (leaks, bursts, sensor faults, pump/valve events; cached); "
                        "air-quality: the older system's sensors (history only)")
    p.add_argument("--network", default="Net1", metavar="NAME|FILE.inp",
                   help="--kind network: a network WNTR ships (Net1, Net2, Net3, Net6, ky4, ky10) or an .inp file "
                        "(default: Net1)")
    p.add_argument("--clean-days", type=float, default=0.0,
                   help="--kind network: the first N days hold no events (normal history to train on)")
    p.add_argument("--leaks-per-week", type=float, default=3.0, help="--kind network: leaks and bursts per week")
    p.add_argument("--faults-per-week", type=float, default=3.0, help="--kind network: sensor faults per week")
    p.add_argument("--operational-per-week", type=float, default=1.0,
                   help="--kind network: pump schedule changes and valve closures per week")
    p.add_argument("--events-table", dest="network_events_out", metavar="FILE",
                   help="--kind network: write one row per injected event and each sensor's impact (CSV)")
    p.add_argument("--sensors", type=int, default=None,
                   help="number of sensors (default: 20; --kind network: chosen for the network's size)")
    p.add_argument("--days", type=float, default=14, help="days of readings per sensor")
    p.add_argument("--interval", type=int, default=300, help="sampling interval in seconds")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed = same network)")
    p.add_argument("--start", default="2026-01-05T00:00:00Z", help="first timestamp (UTC)")
    p.add_argument("--anomalies-per-week", type=float, default=2.0,
                   help="expected anomaly episodes per sensor and week (0 = clean)")
    p.add_argument("--out", metavar="FILE", help="write readings to FILE (.csv or .parquet)")
    p.add_argument("--truth", metavar="FILE", help="write the injected episodes (CSV)")
    p.add_argument("--sensors-out", metavar="FILE", help="write the sensor registry (CSV: id, lat, lon, zone)")
    p.add_argument("--stream", metavar="URL", help="send live events to tcp://HOST:PORT (listens like nc -lk) "
                                                   "or kafka://HOST:PORT/TOPIC")
    p.add_argument("--rate", type=float, default=1000.0, help="events per second when streaming (0 = max)")
    p.add_argument("--bad-rate", type=float, default=0.0, help="fraction of malformed lines mixed into a stream")
    p.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the deploy job to connect (tcp)")
    p.add_argument("--events-out", metavar="FILE", help="also write the exact lines streamed (JSON lines) to FILE")


def run_simulate(args, settings: Settings) -> int:
    from sentinel.ingest.synthetic import simulate, simulate_air_quality
    if not (args.out or args.stream):
        raise ConfigError("sentinel simulate needs --out FILE (history) or --stream URL (live feed)")
    if args.kind == "air-quality":
        if not args.out or args.stream:
            raise ConfigError("--kind air-quality writes history only: pass --out FILE")
        write_table(simulate_air_quality(min(args.sensors, 3), args.days), args.out)
        log.info("air-quality history written to %s", args.out)
        return 0
    if args.kind == "network":
        net = _simulate_network(args)
    else:
        net = simulate(args.sensors or 20, args.days, args.interval, args.seed, args.start, args.anomalies_per_week)
    log.info("simulated %d readings from %d sensors over %.1f days; %d anomaly episodes (%s)",
             len(net.readings), len(net.sensors), args.days, len(net.episodes),
             ", ".join(f"{k}: {v}" for k, v in net.episodes["anomaly_type"].value_counts().sort_index().items()))
    if args.truth:
        write_table(net.episodes, args.truth)
        log.info("ground truth written to %s", args.truth)
    if args.sensors_out:
        write_table(net.sensors, args.sensors_out)
    if args.out:
        write_table(net.readings, args.out)
        log.info("readings written to %s", args.out)
    if args.stream:
        from sentinel.ingest import feed
        scheme, host, port, topic = feed.parse_target(args.stream)
        lines = feed.event_lines(net.readings, settings.data, args.bad_rate, args.seed)
        if args.events_out:
            lines = list(lines)
            Path(args.events_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.events_out).write_text("\n".join(lines) + "\n")
        if scheme == "tcp":
            feed.send_tcp(lines, host, port, args.rate, args.wait)
        else:
            from sentinel.ingest.kafka import client_options, keyed_lines, produce_lines
            produce_lines(keyed_lines(lines, settings.data.sensor_field), f"{host}:{port}", topic, args.rate,
                          options=client_options(settings.source.kafka.options))
    return 0


def _simulate_network(args):
    from sentinel.ingest.network import simulate_network
    sim = simulate_network(args.network, days=args.days, clean_days=args.clean_days, interval_s=args.interval,
                           seed=args.seed, start=args.start, sensors=args.sensors,
                           leaks_per_week=args.leaks_per_week, faults_per_week=args.faults_per_week,
                           operational_per_week=args.operational_per_week)
    if args.network_events_out:
        events = sim.events.merge(sim.impacts, on="event_id", how="left") if len(sim.impacts) else sim.events
        write_table(events, args.network_events_out)
        log.info("events and their impacts written to %s", args.network_events_out)
    return sim
