"""The commands behind ``sentinel ...`` and ``spark-submit jobs/*.py``.

Each command is an ``add_*_args(parser)`` plus a ``run_*(args, settings)``; ``cli`` and the
job scripts only assemble parsers and call these, so both entry points run the same code.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sentinel.config import ConfigError, Settings, load_settings

log = logging.getLogger("sentinel")


class EnvDefaultHelp(argparse.RawDescriptionHelpFormatter):
    """Keeps description layout; each option states its default in its own help text."""


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None,
                   help="TOML settings file (documented defaults: conf/sentinel.toml); if not given, "
                        "built-in defaults are used")
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one setting, e.g. --set window.length=64 (repeatable; value parsed as TOML)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def settings_from(args, extra: dict | None = None) -> Settings:
    overrides = list(args.overrides)
    for key, value in (extra or {}).items():
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return load_settings(args.config, overrides)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)
    for noisy in ("py4j", "matplotlib", "urllib3", "botocore", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _column_overrides(args) -> dict:
    feats = getattr(args, "features", None)
    return {"data.features": [f.strip() for f in feats.split(",") if f.strip()] if feats else None,
            "data.time_field": getattr(args, "time_col", None),
            "data.sensor_field": getattr(args, "sensor_col", None)}


def _add_column_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", metavar="A,B,C", help="numeric columns to model (default: data.features)")
    p.add_argument("--time-col", help="timestamp column (default: data.time_field)")
    p.add_argument("--sensor-col", help="sensor id column; absent column = one sensor (default: data.sensor_field)")


# ---------------------------------------------------------------- simulate
def add_simulate_args(p):
    p.add_argument("--kind", choices=["pressure", "air-quality"], default="pressure",
                   help="pressure network (default) or the older system's air-quality sensors (history only)")
    p.add_argument("--sensors", type=int, default=20, help="number of sensors")
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
    from sentinel.synthetic import simulate, simulate_air_quality
    if not (args.out or args.stream):
        raise ConfigError("sentinel simulate needs --out FILE (history) or --stream URL (live feed)")
    if args.kind == "air-quality":
        if not args.out or args.stream:
            raise ConfigError("--kind air-quality writes history only: pass --out FILE")
        _write_table(simulate_air_quality(min(args.sensors, 3), args.days), args.out)
        log.info("air-quality history written to %s", args.out)
        return 0
    net = simulate(args.sensors, args.days, args.interval, args.seed, args.start, args.anomalies_per_week)
    log.info("simulated %d readings from %d sensors over %.1f days; %d anomaly episodes (%s)",
             len(net.readings), args.sensors, args.days, len(net.episodes),
             ", ".join(f"{k}: {v}" for k, v in net.episodes["anomaly_type"].value_counts().sort_index().items()))
    if args.truth:
        _write_table(net.episodes, args.truth)
        log.info("ground truth written to %s", args.truth)
    if args.sensors_out:
        _write_table(net.sensors, args.sensors_out)
    if args.out:
        _write_table(net.readings, args.out)
        log.info("readings written to %s", args.out)
    if args.stream:
        from sentinel import feed
        scheme, host, port, topic = feed.parse_target(args.stream)
        lines = _event_lines(net.readings, settings, args.bad_rate, args.seed)
        if args.events_out:
            lines = list(lines)
            Path(args.events_out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.events_out).write_text("\n".join(lines) + "\n")
        if scheme == "tcp":
            feed.send_tcp(lines, host, port, args.rate, args.wait)
        else:
            from sentinel.kafka import client_options, produce_lines
            produce_lines(_keyed(lines), f"{host}:{port}", topic, args.rate,
                          options=client_options(settings.source.kafka.options))
    return 0


BAD_LINES = ["this is not json", '{"sensor_id": "PT-X", "timestamp": "yesterday", "pressure": 1}',
             '{"sensor_id": "PT-X", "timestamp": "2026-01-01T00:00:00Z", "pressure": "high"}',
             '{"sensor_id": "PT-X", "timestamp": "2026-01-01T00:00:00Z"}', "[1, 2, 3]",
             '{"sensor_id": "PT-X", "timestamp": "2026-01-01T00:00:00Z", "pressure": NaN}', "{"]


def _event_lines(readings: pd.DataFrame, settings: Settings, bad_rate: float, seed: int):
    """Events as JSON lines in time order, with malformed lines mixed in at ``bad_rate``."""
    from sentinel.events import to_event_json
    rng = np.random.default_rng([seed, 99])
    feats = [f for f in settings.data.features if f in readings]
    for row in readings.itertuples(index=False):
        if bad_rate and rng.random() < bad_rate:
            yield BAD_LINES[int(rng.integers(len(BAD_LINES)))]
        yield to_event_json(row.sensor_id, row.timestamp, {f: getattr(row, f) for f in feats}, settings.data)


def _keyed(lines):
    for line in lines:
        try:
            key = json.loads(line).get("sensor_id")
        except (ValueError, AttributeError):
            key = None
        yield key, line


def _write_table(frame: pd.DataFrame, path: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix in (".parquet", ".pq"):
        frame.to_parquet(p, index=False)
    else:
        out = frame.copy()
        for c in out.columns:
            if isinstance(out[c].dtype, pd.DatetimeTZDtype):
                out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.to_csv(p, index=False)


def read_table(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"input file {path} does not exist: check the path")
    if p.suffix in (".parquet", ".pq") or p.is_dir():
        return pd.read_parquet(p)
    if p.suffix in (".jsonl", ".json", ".ndjson"):
        return pd.read_json(p, lines=True)
    return pd.read_csv(p)


# ---------------------------------------------------------------- train
def add_train_args(p):
    p.add_argument("--input", metavar="FILE", help="history CSV/Parquet/JSON lines (default: train.input)")
    p.add_argument("--out", metavar="MODEL_DIR", help="bundle directory (default: model.dir/model.name/<version>)")
    p.add_argument("--label-col", help="0/1 anomaly label column; labelled windows are left out of training")
    p.add_argument("--format", choices=["auto", "csv", "parquet", "json"], help="input format (default: by extension)")
    _add_column_args(p)


def run_train(args, settings: Settings) -> int:
    from sentinel import history, spark as sparkmod
    from sentinel.training import fit_bundle
    s = settings
    path = args.input or s.train.input
    spark = sparkmod.session(s, "train")
    try:
        frame, cleaning = history.load_clean(spark, s, path, args.format or s.train.format, args.label_col)
    finally:
        spark.stop()
    target = args.out or s.train.out or None
    from sentinel.storage import is_s3_url, upload_dir
    if target and is_s3_url(target):  # train into a local folder, then upload the bundle
        import tempfile
        local = Path(tempfile.mkdtemp(prefix="sentinel-bundle-"))
        out, report = fit_bundle(frame, s, local, args.label_col, cleaning)
        upload_dir(out, target)
        log.info("bundle uploaded to %s", target)
    else:
        out, report = fit_bundle(frame, s, target, args.label_col, cleaning)
    v = report["validation"]
    print(f"model bundle: {out}\nthreshold: {report['threshold']['value']:.5g} ({report['threshold']['method']})\n"
          f"validation windows: {v['windows']}, false alarm rate on them: {v['false_alarm_rate']:.4f}\n"
          f"report: {out / 'training_report.png'}  ({report['seconds']} s)")
    return 0


# ---------------------------------------------------------------- score / evaluate
def add_score_args(p):
    p.add_argument("--model", required=True, help="bundle directory, or models/<name> for its newest version")
    p.add_argument("--input", required=True, metavar="FILE", help="readings CSV/Parquet/JSON lines")
    p.add_argument("--out", metavar="SCORES.csv", help="write one row per input row here (default: stdout)")
    _add_column_args(p)


def table_windows(frame: pd.DataFrame, settings: Settings, features: list[str], length: int,
                  max_gap_s: int) -> tuple[pd.DataFrame, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """An input table's windows, as the streaming job cuts them (``windows.assemble_many``).

    Returns the output frame's base columns (sensor_id, timestamp, features; one row per input
    row) and ``(windows, window_times, sensor_ids, rows)``: every window with the input row it
    scores, sorted by sensor and then event time. Rows with a bad time or value, and the first
    W-1 readings of a sensor (or after a gap), have no window.
    """
    from sentinel.windows import NO_TIME, NS_PER_S, assemble_many
    d = settings.data
    missing = [c for c in [d.time_field] + features if c not in frame]
    if missing:
        raise ConfigError(f"input lacks column(s) {', '.join(missing)}: pass --time-col/--features to match it")
    sensors = frame[d.sensor_field].astype(str) if d.sensor_field in frame else pd.Series("sensor", index=frame.index)
    times = _to_utc(frame[d.time_field])
    values = frame[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    ok_rows = np.nonzero(times.notna().to_numpy() & np.isfinite(values).all(axis=1))[0]
    t_ns = times.astype("int64").to_numpy()
    # All sensors in one call, as the stream assembles a bucket (sorted codes: windows come
    # out by sensor id, then event time).
    codes, ids = pd.factorize(sensors.to_numpy()[ok_rows], sort=True)
    none = np.empty(0, dtype=np.int64)
    res = assemble_many(codes, t_ns[ok_rows], values[ok_rows], none, none, np.empty((0, len(features))),
                        np.full(len(ids), NO_TIME, dtype=np.int64), length, max_gap_s * NS_PER_S)
    has = np.nonzero(res.window_row >= 0)[0]
    has = has[np.argsort(res.window_row[has])]  # window order: sensor, then event time
    base = pd.DataFrame({"sensor_id": sensors.to_numpy(), "timestamp": times.dt.strftime("%Y-%m-%dT%H:%M:%SZ")})
    for i, f in enumerate(features):
        base[f] = values[:, i]
    return base, (res.windows, res.window_times, np.asarray(ids, dtype=object)[codes[has]], ok_rows[has])


def score_table(bundle, frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One row per input row: sensor_id, timestamp, features, score, threshold, is_anomaly.

    Windows come from ``table_windows`` (``windows.assemble``), scores and flags from
    ``scoring.score_windows`` and ``scoring.flag``, exactly as in the streaming UDF; rows without a full window get no score and is_anomaly 0. With
    ``threshold.persistence_n`` > 1, is_anomaly is the alarm of ``scoring.persist_groups``: at
    least m of the sensor's last n scored windows (event-time order) flagged.
    """
    from sentinel import scoring
    out, (w, wt, sids, rows) = table_windows(frame, settings, bundle.features, bundle.length,
                                             int(bundle.manifest["window"]["max_gap_s"]))
    n = len(frame)
    score = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    flags = np.zeros(n, dtype=np.int8)
    if len(rows):
        sc = scoring.score_windows(bundle, w, wt, sids)
        th, fl = scoring.flag(bundle, sc, sids)
        p = settings.threshold
        if p.persistence_n > 1:
            fl, _ = scoring.persist_groups(fl, sids, p.persistence_m, p.persistence_n)
        score[rows], threshold[rows], flags[rows] = sc, th, fl
    out["score"], out["threshold"], out["is_anomaly"] = score, threshold, flags
    return out


def _to_utc(col: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(col):
        return pd.to_datetime(col, unit="ms", utc=True, errors="coerce")
    return pd.to_datetime(col, utc=True, errors="coerce", format="mixed")


def run_score(args, settings: Settings) -> int:
    from sentinel.model import load_bundle
    bundle = load_bundle(args.model)
    frame = read_table(args.input)
    t0 = time.time()
    out = score_table(bundle, frame, settings)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(args.out, index=False)
        log.info("scored %d rows (%d windows, %d anomalies) in %.1f s -> %s", len(out),
                 int(out["score"].notna().sum()), int(out["is_anomaly"].sum()), time.time() - t0, args.out)
    else:
        out.to_csv(sys.stdout, index=False)
    return 0


def add_evaluate_args(p):
    add_score_args(p)
    p.add_argument("--label-col", default="is_anomaly", help="0/1 label column")
    p.add_argument("--type-col", default="anomaly_type", help="anomaly type column (optional)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")


def run_evaluate(args, settings: Settings) -> int:
    from sentinel import evaluate
    from sentinel.model import load_bundle
    bundle = load_bundle(args.model)
    frame = read_table(args.input)
    if args.label_col not in frame:
        raise ConfigError(f"input has no label column '{args.label_col}': pass --label-col")
    scored = score_table(bundle, frame, settings)
    scored["label"] = frame[args.label_col].fillna(0).astype(int).to_numpy()
    scored["anomaly_type"] = frame[args.type_col].fillna("").to_numpy() if args.type_col in frame else ""
    interval = pd.Timedelta(seconds=int(bundle.manifest["window"]["interval_s"]))
    tol = interval * bundle.length
    scored["timestamp"] = pd.to_datetime(scored["timestamp"], utc=True)
    truth = evaluate.episodes_from_labels(scored, "label", "anomaly_type")
    flags = scored.loc[scored["is_anomaly"] == 1, ["sensor_id", "timestamp"]]
    days = (scored["timestamp"].max() - scored["timestamp"].min()) / pd.Timedelta(days=1)
    metrics = {"points": evaluate.point_metrics(scored["label"], scored["is_anomaly"]),
               "episodes": evaluate.episode_metrics(truth, flags, tol, tol, days * scored["sensor_id"].nunique()),
               "model": bundle.path}
    if args.json:
        print(json.dumps(metrics, indent=1, default=float))
    else:
        pm = metrics["points"]
        print(evaluate.format_table(metrics["episodes"]))
        print(f"point-wise: precision {pm['precision']:.3f} recall {pm['recall']:.3f} F1 {pm['f1']:.3f} "
              f"false-alarm rate {pm['false_alarm_rate']:.4f}")
    return 0


# ---------------------------------------------------------------- deploy
def add_deploy_args(p):
    p.add_argument("--model", help="bundle directory or models/<name> (default: stream.model)")
    p.add_argument("--checkpoint", help="checkpoint folder (default: stream.checkpoint)")
    p.add_argument("--max-batches", type=int, help="stop after N micro-batches (default: stream.max_batches, 0 = never)")
    p.add_argument("--idle-timeout", type=float, help="stop after S seconds without input (default: stream.idle_timeout_s)")


def run_deploy(args, settings: Settings) -> int:
    from sentinel import spark as sparkmod, stream
    from sentinel.model import load_bundle, resolve_bundle
    from sentinel.sinks import build_sinks
    s = settings.replace(**{k: v for k, v in {
        "stream.model": args.model, "stream.checkpoint": args.checkpoint,
        "stream.max_batches": args.max_batches, "stream.idle_timeout_s": args.idle_timeout}.items() if v is not None})
    model_ref = s.stream.model
    from sentinel.storage import is_s3_url, newest_bundle_url
    if is_s3_url(model_ref):  # pin one version so every worker loads the same bundle
        model_ref = newest_bundle_url(model_ref)
    bundle_dir = resolve_bundle(model_ref)  # fails fast with a clear sentence
    bundle = load_bundle(str(bundle_dir.resolve()))
    if list(s.data.features) != bundle.features:
        raise ConfigError(f"model {bundle_dir} was trained on features {bundle.features} but data.features is "
                          f"{list(s.data.features)}: set data.features to match or deploy another model")
    if s.threshold.persistence_n > 1:
        # The UDF sees one micro-batch, not a sensor's earlier flags; carrying them would need
        # a second stateful step after scoring, which is not built (measured: it lost spikes
        # and removed almost no false alarms, see README "How detection works").
        raise ConfigError("threshold.persistence_n > 1 is applied by `sentinel score`/`evaluate` only; the "
                          "deploy job does not carry flags between micro-batches yet: set persistence_n = 1")
    sinks = build_sinks(s)
    if s.sinks.sensors_file:
        from sentinel.registry import read_registry
        registry = read_registry(s.sinks.sensors_file)
        for sink in sinks:
            if hasattr(sink, "load_sensors"):
                sink.load_sensors(registry)
    spark = sparkmod.session(s, "deploy", kafka=s.source.type == "kafka")
    try:
        totals = stream.run(spark, s, bundle, sinks, bundle_ref=model_ref if is_s3_url(model_ref) else None)
    finally:
        for sink in sinks:
            sink.close()
        spark.stop()
    print(json.dumps({"totals": totals, "sinks": list(s.sinks.enabled), "sqlite": s.sinks.sqlite.path}))
    return 0


# ---------------------------------------------------------------- compare (demo)
def add_compare_args(p):
    p.add_argument("--truth", required=True, help="ground truth episodes CSV written by `sentinel simulate --truth`")
    p.add_argument("--db", help="SQLite anomaly store (default: sinks.sqlite.path)")
    p.add_argument("--interval", type=int, help="sampling interval in seconds (default: window.interval_s)")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")


def run_compare(args, settings: Settings) -> int:
    import sqlite3
    from sentinel import evaluate
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
