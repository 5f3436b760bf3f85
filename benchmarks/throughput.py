"""Throughput, latency and state memory of the deploy job, against the older system's approach.

    make bench                      # starts Kafka + PostgreSQL itself (scripts/bench.sh)
    .venv/bin/python benchmarks/throughput.py [--sensors 1000] [--json reports/throughput.json]
    .venv/bin/python benchmarks/throughput.py --only state --state-sensors 100000   # one stage
    .venv/bin/python benchmarks/throughput.py --only stepped --set spark.driver_memory='"1g"'

Measured in one run, on the same machine and events:

1. model-only: windows/s of the project's scoring function (`scoring.score_windows`) on large
   batches; the practical ceiling of the model on this CPU. `model.predict` for reference.
2. end to end, saturated: a backlog of events from N sensors in Kafka -> deploy job (per-sensor
   state, pandas UDF) -> SQLite + PostgreSQL; events/s at which the backlog drains.
3. end to end, stepped: events offered at `--step-rates` events/s, `--step-seconds` each, 1-second
   trigger; the sustained rate is the highest step kept up with: over the step's last two
   thirds the job read at least 97 % of what was sent and its backlog did not grow (see
   step_verdicts()).
4. latency: after a warm-up (each sensor's first W readings, scored before the clock starts),
   events offered at `--latency-rate` events/s with a 1-second trigger; for every anomaly, the
   time its micro-batch was in every store minus its event's send time (p50/p95/p99).
   Start-up is reported apart.

Producers run in their own process (benchmarks/paced_producer.py) and share the two cores with
the job, as a real one would not: the stepped and latency figures include that cost.

5. baseline: the older system's scoring rebuilt from its description (collect the batch, one
   `model.predict` on single-step windows, then per row two more collects and an SQLite insert
   with a commit), on micro-batches of 1,000 from the same topic, for `--baseline-seconds`.
6. state: state rows and bytes (RocksDB) and the peak memory (PSS) of the job's processes by
   kind (JVM, scoring Python workers, other Python workers, driver Python) and all together,
   with `--state-sensors` sensors, each with a full window and one window scored.
7. serving: the same windows scored by the product's scoring UDF and by the bundle wrapped as
   an MLflow pyfunc model under `mlflow.pyfunc.spark_udf`, in the same session (mlflow_peer.py):
   windows/s of each, their ratio, and whether the scores agree.

`--only` runs some stages (`--only state,serving`); `--set` changes a job setting. `--quick`
runs everything on a tiny load (what `make test` checks). Figures print as a table and go to
JSON. Absolute numbers on a shared 2-core machine are noisy: compare within a run.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sqlite3
import subprocess
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
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from sentinel.detect import scoring
from sentinel.stream import query as stream_query, writer as stream_writer
from sentinel.config import load_settings  # noqa: E402
from sentinel.ingest.events import to_event_json  # noqa: E402
from sentinel.ingest.kafka import ensure_topic, produce_lines  # noqa: E402
from sentinel.detect.model import keras_module, load_bundle, resolve_bundle  # noqa: E402
from sentinel.store.sinks import build_sinks  # noqa: E402
from sentinel.ingest.synthetic import simulate  # noqa: E402
from sentinel.detect.training import build_windows, fit_bundle  # noqa: E402


BOOTSTRAP = ["127.0.0.1:19092"]  # set from --bootstrap in main()
# The benchmark's network: history for training, then the events streamed (same sensors).
HISTORY_START, EVENTS_START = "2026-01-16T00:00:00Z", "2026-01-19T00:00:00Z"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def get_bundle(args):
    """The model under test: ``--model`` if given, else one trained on the benchmark's own
    network (cached in models/bench-<sensors>): a sensor the model never saw falls back to the
    global scaler and flags far too often, and the sinks would then measure that instead."""
    if args.model:
        return load_bundle(str(resolve_bundle(args.model).resolve()))
    cache = ROOT / "models" / f"bench-{args.sensors}{'-quick' if args.quick else ''}"
    try:
        return load_bundle(str(resolve_bundle(str(cache)).resolve()))
    except FileNotFoundError:
        pass
    days = 2 if args.quick else 3
    log(f"training the benchmark's model on {days} days of its {args.sensors} sensors (cached in {cache})")
    s = load_settings(None, ["train.report=false", "model.epochs=4", "model.max_train_windows=40000"]
                      + (["model.epochs=1"] if args.quick else []))
    net = simulate(args.sensors, days, 300, 7, HISTORY_START, 0.0)
    path, _ = fit_bundle(net.readings.rename(columns={"timestamp": "event_time"}), s, cache / "v1")
    return load_bundle(str(path))


def without_model(bundle_dir: str):
    """The bundle as the job's driver uses it (manifest, scaler, threshold, error model: the
    stream's query and writer never call the model), without loading the Keras model, so that
    TensorFlow is never imported in the driver (``--driver-model none``)."""
    from sentinel.detect import error_model as errmod
    from sentinel.detect.model import Bundle
    from sentinel.detect.threshold import Threshold
    from sentinel.detect.windows import Scaler
    p = Path(bundle_dir)
    em = p / errmod.FILE_NAME
    return Bundle(str(p), None, Scaler.from_json((p / "scaler.json").read_text()),
                  Threshold.from_json((p / "threshold.json").read_text()), json.loads((p / "manifest.json").read_text()),
                  errmod.ErrorModel.from_json(em.read_text()) if em.is_file() else None)


def model_only(bundle, n_windows: int) -> dict:
    net = simulate(50, 4, 300, 7, anomalies_per_sensor_week=0)
    ws = build_windows(net.readings.rename(columns={"timestamp": "event_time"}), bundle.features, bundle.length, 1800)
    reps = int(np.ceil(n_windows / len(ws.windows)))
    w = np.concatenate([ws.windows] * reps)[:n_windows]
    t = np.concatenate([ws.times] * reps)[:n_windows]
    sid = np.concatenate([ws.sensors] * reps)[:n_windows]
    scoring.score_windows(bundle, w[:4096], t[:4096], sid[:4096])  # trace once
    t0 = time.perf_counter()
    scoring.score_windows(bundle, w, t, sid)
    fast = n_windows / (time.perf_counter() - t0)
    inputs = scoring.model_inputs(bundle, w, t, sid)
    feed = inputs if len(inputs) > 1 else inputs[0]
    bundle.model.predict(feed[:4096] if not isinstance(feed, list) else [x[:4096] for x in feed], batch_size=4096, verbose=0)
    t0 = time.perf_counter()
    bundle.model.predict(feed, batch_size=4096, verbose=0)
    slow = n_windows / (time.perf_counter() - t0)
    return {"windows": n_windows, "windows_per_s": fast, "predict_windows_per_s": slow}


def parse_only(settings, n_sensors: int, n_lines: int) -> dict:
    """Lines/s of the stream's parser (``events.parse_batch``, Arrow) and of the per-line
    reference (``events.parse_lines``) on the same JSON lines, in Arrow batches as the job gets
    them; ``same_result`` says whether they agreed on every line."""
    from sentinel.ingest import events
    lines = [line for _, _, line in event_lines(n_sensors, n_lines / n_sensors * 300 / 86400 + 0.01, EVENTS_START,
                                                1.0, settings)][:n_lines]
    batch = settings.spark.arrow_max_records
    chunks = [lines[i:i + batch] for i in range(0, len(lines), batch)]
    events.parse_batch(chunks[0][:100], settings.data)  # imports, first calls
    t0 = time.perf_counter()
    fast = [events.parse_batch(c, settings.data) for c in chunks]
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [events.parse_lines(c, settings.data) for c in chunks]
    slow_s = time.perf_counter() - t0
    same = all(f.sensor_id.to_pylist() == r.loc[r["reject_reason"].isna(), "sensor_id"].tolist()
               and f.event_time_ns.tolist() == r.loc[r["reject_reason"].isna(), "event_time"].astype("int64").tolist()
               and f.reject_reason == r["reject_reason"].dropna().tolist() for f, r in zip(fast, slow))
    return {"lines": len(lines), "lines_per_s": len(lines) / fast_s, "per_line_lines_per_s": len(lines) / slow_s,
            "same_result": bool(same)}


def event_lines(n_sensors: int, days: float, start: str, rate_anomalies: float, settings) -> list[tuple[str, str, str]]:
    net = simulate(n_sensors, days, 300, 7, start, rate_anomalies)
    r = net.readings
    return [(sid, ts.isoformat(), to_event_json(sid, ts, {"pressure": p}, settings.data))
            for sid, ts, p in zip(r.sensor_id, r.timestamp, r.pressure)]


def deploy(spark, settings, bundle, topic: str, tmp: Path, name: str, **overrides):
    s = settings.replace(**{"source.type": "kafka", "source.kafka.topic": topic,
                            "source.kafka.bootstrap_servers": BOOTSTRAP[0],
                            "stream.checkpoint": str(tmp / f"ckpt-{name}"),
                            "sinks.sqlite.path": str(tmp / f"{name}.db"), **overrides})
    sinks = build_sinks(s)
    writer_totals = stream_query.run(spark, s, bundle, sinks)
    return s, writer_totals


def saturated(spark, settings, bundle, bootstrap, tmp, n_sensors, days, name: str = "sat", lines=None) -> dict:
    topic = f"bench-sat-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 4)
    lines = lines if lines is not None else event_lines(n_sensors, days, EVENTS_START, 1.0, settings)
    log(f"saturated: producing a backlog of events from {n_sensors} sensors to {topic}")
    sent = produce_lines(((sid, line) for sid, _, line in lines), bootstrap, topic, 0)
    log(f"    {sent:,} events produced")
    del lines  # a generator or a list: either way not held in the driver while the job runs
    t0 = time.time()
    s, totals = deploy(spark, settings, bundle, topic, tmp, name, **{"stream.idle_timeout_s": 8.0})
    prog = [p for p in stream_progress() if p["rows"] > 0]
    steady = prog[1:] if len(prog) > 2 else prog  # the first batch pays Python worker start-up
    rows, ms = sum(p["rows"] for p in steady), sum(p["ms"] for p in steady)
    return {"events": totals["events"], "batches": len(prog), "wall_s": time.time() - t0,
            "steady_events": rows, "steady_events_per_s": rows / (ms / 1000) if ms else float("nan"),
            "batch_ms_median": float(np.median([p["ms"] for p in steady])) if steady else float("nan")}


def plain_lines(n_sensors: int, readings: int):
    """``readings`` 5-minute readings per sensor, generated directly: the state stage needs
    many sensors, not a realistic network (simulating 100,000 sensors takes minutes). A
    generator: the 3.2 million lines of 100,000 sensors held in a list were ~0.5 GiB of the
    driver's memory, which the state stage would have counted as the job's."""
    t0 = pd.Timestamp(EVENTS_START)
    for r in range(readings):
        ts = (t0 + pd.Timedelta(minutes=5 * r)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i in range(n_sensors):
            sid = f"PT-{i + 1:06d}"
            yield sid, ts, f'{{"sensor_id": "{sid}", "timestamp": "{ts}", "pressure": {40 + (i % 7) + r % 3}}}'


def stream_progress():
    return stream_query.LAST_PROGRESS


def offer_after_warmup(pairs: list[tuple[str, str]], topic: str, schedule: list[tuple[float, int]],
                       tmp: Path, name: str) -> tuple[threading.Thread, dict]:
    """Start a thread that waits for the deploy job's first batch with rows (the warm-up),
    then runs ``paced_producer.py`` in its own process to send ``pairs`` at ``schedule``.
    The returned dict gets ``sent`` (each pair's send time) and ``warm_s`` (job start to the
    end of the warm-up batch)."""
    lines_file, times_file = tmp / f"{name}-lines.tsv", tmp / f"{name}-sent.npy"
    with open(lines_file, "w", encoding="utf-8") as f:
        f.writelines(f"{k}\t{line}\n" for k, line in pairs)
    out = {"sent": np.full(len(pairs), np.nan), "warm_s": float("nan")}
    started = time.time()

    def run():
        while not any(p["rows"] > 0 for p in list(stream_progress())):  # the warm-up batch is done
            time.sleep(0.2)
        out["warm_s"] = time.time() - started
        time.sleep(2.0)
        cmd = [sys.executable, str(ROOT / "benchmarks" / "paced_producer.py"), "--lines", str(lines_file),
               "--topic", topic, "--bootstrap", BOOTSTRAP[0], "--times", str(times_file),
               "--schedule", ",".join(f"{r}:{n}" for r, n in schedule)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"paced producer failed: {r.stderr[-2000:]}")
        else:
            out["sent"] = np.load(times_file)

    stream_progress().clear()  # progress of an earlier run in this session must not count as warm
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def written_times() -> dict[int, float]:
    """batch_id -> when its rows were in every store (the deploy job's writer records it)."""
    return dict(list(stream_writer.BATCHES_WRITTEN))


def warm_and_timed(lines, length: int):
    """Each sensor's first ``length`` readings (they fill its window) and the rest."""
    ids = pd.Series([sid for sid, _, _ in lines])
    rank = ids.groupby(ids).cumcount().to_numpy()  # each sensor's n-th reading
    warm = [(sid, line) for (sid, _, line), r in zip(lines, rank) if r < length]
    timed = [x for x, r in zip(lines, rank) if r >= length]
    return warm, timed


def latency(spark, settings, bundle, bootstrap, tmp, n_sensors, rate, seconds) -> dict:
    """Event-to-store latency of anomalies at a steady offered rate, once the job is warm.

    Warm-up first: each sensor's first W readings go to the topic at once, and the timed
    events are only offered after the job has scored a micro-batch (its Python workers then
    hold the compiled model). Start-up is a one-off cost and is reported on its own
    (``startup_s``: job start to the end of the first batch that scored windows). An
    anomaly's latency is the time its micro-batch's rows were in every store minus the time
    its event was sent.
    """
    topic = f"bench-lat-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 4)
    days = (rate * seconds / n_sensors + bundle.length) * 300 / 86400
    warm, timed = warm_and_timed(event_lines(n_sensors, days, EVENTS_START, 6.0, settings), bundle.length)
    produce_lines(warm, bootstrap, topic, 0)
    log(f"latency: {len(warm)} warm-up events, then {len(timed)} events at {rate}/s, 1 s trigger")
    thread, offered = offer_after_warmup([(sid, line) for sid, _, line in timed], topic,
                                         [(rate, len(timed))], tmp, "lat")
    s, totals = deploy(spark, settings, bundle, topic, tmp, "lat",
                       # the idle clock starts at the first batch: long enough for the pause
                       # between the warm-up batch and the timed producer
                       **{"stream.idle_timeout_s": 30.0, "stream.trigger_s": 1.0})
    thread.join(timeout=60)
    keys = pd.to_datetime([ts for _, ts, _ in timed], utc=True).strftime("%Y-%m-%d %H:%M:%S.%f")
    sent = dict(zip(zip([sid for sid, _, _ in timed], keys), offered["sent"]))
    written = written_times()
    with sqlite3.connect(s.sinks.sqlite.path) as con:
        rows = con.execute("SELECT sensor_id, event_time, batch_id FROM anomalies").fetchall()
    lat = np.array([written[b] - sent[(sid, et)] for sid, et, b in rows if (sid, et) in sent and b in written])
    lat = lat[np.isfinite(lat)]
    return {"offered_rate": rate, "events": len(timed), "warmup_events": len(warm), "startup_s": offered["warm_s"],
            "anomalies_timed": int(lat.size),
            "p50_s": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "p95_s": float(np.percentile(lat, 95)) if lat.size else float("nan"),
            "p99_s": float(np.percentile(lat, 99)) if lat.size else float("nan")}


def stepped(spark, settings, bundle, bootstrap, tmp, n_sensors, rates: list[float], step_s: float) -> dict:
    """Offered rate stepped up (``rates``, ``step_s`` seconds each, 1-second trigger) past the
    point where the job falls behind; every step is judged.

    The backlog is measured at every micro-batch: events sent by the time the batch started
    minus events read by the batch before (Kafka offsets). A step is kept up with when its
    backlog does not grow (see step_verdicts). ``sustained_events_per_s`` is the highest step
    kept up with; ``read_events_per_s`` is what the job read during each step (low in a step
    that starts with the previous one's backlog).
    """
    topic = f"bench-step-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 4)
    counts = [int(r * step_s) for r in rates]
    days = (sum(counts) / n_sensors + bundle.length + 1) * 300 / 86400
    warm, timed = warm_and_timed(event_lines(n_sensors, days, EVENTS_START, 1.0, settings), bundle.length)
    timed = timed[:sum(counts)]
    produce_lines(warm, bootstrap, topic, 0)
    log(f"stepped: {len(warm)} warm-up events, then {', '.join(f'{r:,.0f}' for r in rates)} events/s "
        f"for {step_s:.0f} s each")
    thread, offered = offer_after_warmup([(sid, line) for sid, _, line in timed], topic,
                                         list(zip(rates, counts)), tmp, "step")
    deploy(spark, settings, bundle, topic, tmp, "step", **{"stream.idle_timeout_s": 30.0, "stream.trigger_s": 1.0})
    thread.join(timeout=60)
    prog = [p for p in list(stream_progress()) if p.get("consumed") is not None]
    if not np.isfinite(offered["sent"]).all() or len(prog) < 2:
        return {"steps": [], "sustained_events_per_s": float("nan")}
    t_start = np.array([pd.Timestamp(p["timestamp"]).timestamp() for p in prog])
    t_end = t_start + np.array([p["ms"] for p in prog]) / 1000
    consumed = np.array([p["consumed"] for p in prog]) - len(warm)  # timed events read through each batch
    return step_verdicts(rates, counts, offered["sent"], t_start, t_end, consumed)


# A step is kept up with when, over its settled part (the last two thirds), the job read at
# least this share of what was sent ...
KEPT_UP_READ_RATIO = 0.97
# ... and its backlog did not grow: least-squares slope at most this many seconds (of the step's
# rate) per second. 0.02 s/s is half a second over a 36-s step's settled 24 s, under one 1-s
# trigger cycle (the backlog is sampled once per batch, so that is its resolution; slopes of
# steps that kept up measured -0.024 to +0.009), and below the +0.03 s/s of a job reading 97 %:
# the slope rule is never the looser of the two.
KEPT_UP_MAX_SLOPE = 0.02
# ... and the backlog stayed under this many seconds.
KEPT_UP_MAX_BACKLOG_S = 10.0


def step_verdicts(rates, counts, sent: np.ndarray, t_start: np.ndarray, t_end: np.ndarray,
                  consumed: np.ndarray) -> dict:
    """Whether the job kept up with each step of offered rates.

    ``sent``: each event's send time (steps one after the other, ``counts`` events each);
    per micro-batch: start and end time and the events read through it (``consumed``). Each
    step is judged on its settled part (its last two thirds; the first third absorbs the
    change of rate). Kept up only if all hold:

    - the job read at least ``KEPT_UP_READ_RATIO`` (97 %) of what was sent over the settled
      part (``read_to_sent``: events read, interpolated at the part's ends from the batches'
      end times and offsets, over events sent in the same interval);
    - the backlog does not grow: when a batch starts, events sent by then minus those read by
      the batch before, in seconds of the step's rate; its least-squares slope over the
      settled part at most ``KEPT_UP_MAX_SLOPE`` (0.02 s per s). Its size follows the batch
      cycle, which lengthens with the rate even when the job keeps up, so the trend decides;
    - the backlog stays under ``KEPT_UP_MAX_BACKLOG_S`` (10 s).

    ``reason`` says which failed. A step kept up with shows the job read at least that rate,
    whatever came before, so ``sustained_events_per_s`` is the highest such step.
    ``read_events_per_s`` is what the job read over the whole step (low in a step that starts
    with the previous one's backlog).
    """
    consumed = np.maximum(consumed, 0)
    backlog = np.searchsorted(sent, t_start[1:], side="right") - consumed[:-1]
    t_b = t_start[1:]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    steps, sustained = [], float("nan")
    for k, rate in enumerate(rates):
        t0, t1 = sent[bounds[k]], sent[bounds[k + 1] - 1]
        ts = t0 + (t1 - t0) / 3                       # the settled part: [ts, t1]
        settled = (t_b >= ts) & (t_b <= t1)
        x, y = t_b[settled], backlog[settled] / rate
        slope = float(np.polyfit(x - x[0], y, 1)[0]) if x.size >= 3 else float("nan")
        read = np.interp([t0, ts, t1], t_end, consumed)
        sent_settled = np.searchsorted(sent, t1, side="right") - np.searchsorted(sent, ts, side="left")
        ratio = float((read[2] - read[1]) / sent_settled) if sent_settled > 0 else float("nan")
        why = []
        if not ratio >= KEPT_UP_READ_RATIO:
            why.append(f"read {ratio:.1%} of what was sent (< {KEPT_UP_READ_RATIO:.0%})")
        if not slope <= KEPT_UP_MAX_SLOPE:
            why.append(f"backlog growing {slope:+.3f} s/s (> {KEPT_UP_MAX_SLOPE:+.2f})")
        if not (y.size and y.max() < KEPT_UP_MAX_BACKLOG_S):
            why.append(f"backlog over {KEPT_UP_MAX_BACKLOG_S:.0f} s" if y.size else "too few batches to judge")
        ok = not why
        steps.append({"offered_events_per_s": float(rate),
                      "sent_events_per_s": float(counts[k] / (t1 - t0)) if t1 > t0 else float("nan"),
                      "read_events_per_s": float((read[2] - read[0]) / (t1 - t0)) if t1 > t0 else float("nan"),
                      "settled_read_events_per_s": float((read[2] - read[1]) / (t1 - ts)) if t1 > ts else float("nan"),
                      "settled_sent_events_per_s": float(sent_settled / (t1 - ts)) if t1 > ts else float("nan"),
                      "read_to_sent": ratio,
                      "backlog_s_mean": float(y.mean()) if y.size else float("nan"),
                      "backlog_slope_s_per_s": slope, "batches": int(x.size), "kept_up": ok,
                      "reason": "; ".join(why)})
        if ok:
            sustained = float(rate)
    return {"steps": steps, "sustained_events_per_s": sustained,
            "rule": {"read_to_sent_min": KEPT_UP_READ_RATIO, "backlog_slope_max_s_per_s": KEPT_UP_MAX_SLOPE,
                     "backlog_max_s": KEPT_UP_MAX_BACKLOG_S}}


def baseline(spark, settings, bundle, bootstrap, tmp, seconds: float) -> dict:
    """The older system, rebuilt: per row two collects and an SQLite commit (see module doc)."""
    keras = keras_module()
    topic = f"bench-base-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, 1)
    lines = event_lines(50, 2, EVENTS_START, 1.0, settings)
    produce_lines(((sid, line) for sid, _, line in lines), bootstrap, topic, 0)
    # The older model: a GRU autoencoder fed one reading as a window of one step.
    inp = keras.Input((1, 1))
    x = keras.layers.GRU(32)(inp)
    x = keras.layers.RepeatVector(1)(x)
    out = keras.layers.Dense(1)(keras.layers.GRU(32, return_sequences=True)(x))
    model = keras.Model(inp, out)
    db = sqlite3.connect(tmp / "baseline.db", check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS anomalies (sensor_id TEXT, ts TEXT, score REAL)")
    done = {"rows": 0, "t": 0.0}
    deadline = [None]

    def per_batch(df, batch_id):
        from pyspark.sql import functions as F
        if deadline[0] is None:
            deadline[0] = time.time() + seconds
        t0 = time.time()
        parsed = df.select(F.get_json_object("value", "$.sensor_id").alias("sensor_id"),
                           F.get_json_object("value", "$.timestamp").alias("timestamp"),
                           F.get_json_object("value", "$.pressure").cast("double").alias("pressure"))
        rows = parsed.collect()
        x = np.array([r.pressure for r in rows], dtype=np.float32)
        x = ((x - x.mean()) / (x.std() + 1e-6)).reshape(-1, 1, 1)
        scores = ((model.predict(x, verbose=0) - x) ** 2).reshape(-1)
        for i in range(len(rows)):
            if time.time() > deadline[0]:
                break
            sid = parsed.collect()[i].sensor_id
            ts = parsed.collect()[i].timestamp
            db.execute("INSERT INTO anomalies VALUES (?,?,?)", (sid, ts, float(scores[i])))
            db.commit()
            done["rows"] += 1
        done["t"] += time.time() - t0

    raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap).option("subscribe", topic)
           .option("startingOffsets", "earliest").option("maxOffsetsPerTrigger", 1000).load()
           .selectExpr("CAST(value AS STRING) AS value"))
    q = (raw.writeStream.foreachBatch(per_batch).option("checkpointLocation", str(tmp / "ckpt-base"))
         .trigger(processingTime="1 second").start())
    while q.isActive and (deadline[0] is None or time.time() < deadline[0] + 5):
        q.awaitTermination(1)
    q.stop()
    return {"rows": done["rows"], "seconds": done["t"], "events_per_s": done["rows"] / done["t"] if done["t"] else float("nan")}


ROLE_ENV = "SENTINEL_WORKER_ROLE"  # set by scoring_udf for the scoring workers' daemon


def process_tree_pss() -> dict:
    """PSS (bytes) of this job's processes by kind, from /proc: ``driver`` (this Python, the
    job's driver), ``jvm`` (driver + executor in local mode) and the JVM's Python processes
    (worker daemons and the workers they fork) by role: ``python_score`` for those whose
    environment carries ``SENTINEL_WORKER_ROLE=score`` (the scoring UDF's), ``python_other``
    for the rest (parsing, window state, and all of them when there are no roles); ``total``
    is their sum. PSS, not RSS: workers fork from a daemon and share its pages (TensorFlow);
    RSS would count those once per worker. Also how many Python processes have TensorFlow
    loaded (``tf_processes``) and how many there are (``python_processes``)."""
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            exe = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        procs[int(d)] = (ppid, exe)

    def descendants(pid):
        kids = [p for p, (pp, _) in procs.items() if pp == pid]
        return kids + [d for k in kids for d in descendants(k)]

    def pss(pid) -> int:
        try:
            return next((int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                         if line.startswith("Pss:")), 0)
        except OSError:
            return 0

    def role(pid) -> str:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return "other"
        return "score" if f"{ROLE_ENV}=score".encode() in env else "other"

    def has_tf(pid) -> bool:
        try:
            return "libtensorflow" in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            return False

    me = os.getpid()
    jvms = [p for p in descendants(me) if procs[p][1].endswith("java")]
    pythons = [d for j in jvms for d in descendants(j) if "python" in procs[d][1]]
    out = {"driver": pss(me), "jvm": sum(pss(j) for j in jvms), "python_score": 0, "python_other": 0,
           "python_processes": len(pythons), "tf_processes": 0}
    for w in pythons:
        out[f"python_{role(w)}"] += pss(w)
        out["tf_processes"] += has_tf(w)
    out["total"] = out["driver"] + out["jvm"] + out["python_score"] + out["python_other"]
    return out


PSS_KINDS = ("jvm", "driver", "python_score", "python_other", "total")


def state_memory(spark, settings, bundle, bootstrap, tmp, n_sensors: int) -> dict:
    """Fill the window state of ``n_sensors`` and score one window of each (W readings per
    sensor: the first W-1 fill its state, the W-th completes a window, so the model is loaded
    and run as in a real job), sampling the processes' memory (PSS, by kind: see
    process_tree_pss) twice a second while it runs. ``*_pss_peak`` are each kind's peak;
    ``total_pss_peak`` is the peak of their sum (at one sample)."""
    peaks = {k: 0 for k in PSS_KINDS}
    counts = {"python_processes": 0, "tf_processes": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            now = process_tree_pss()
            for k in PSS_KINDS:
                peaks[k] = max(peaks[k], now[k])
            for k in counts:
                counts[k] = max(counts[k], now[k])
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        st = saturated(spark, settings.replace(**{"sinks.enabled": ("sqlite",)}), bundle, bootstrap, tmp,
                       n_sensors, 0, name=f"state-{n_sensors}", lines=plain_lines(n_sensors, bundle.length))
    finally:
        done.set()
        sampler.join()
    prog = [p for p in stream_query.LAST_PROGRESS if p["rows"] > 0] or stream_query.LAST_PROGRESS
    last = prog[-1] if prog else {}
    return {"sensors": n_sensors, "events": st["events"], "state_rows": last.get("state_rows"),
            "state_memory_bytes": last.get("state_bytes"), "rocksdb_sst_bytes": last.get("rocksdb_sst_bytes", 0),
            "rocksdb_pinned_bytes": last.get("rocksdb_pinned_bytes", 0),
            **{f"{k}_pss_peak": v for k, v in peaks.items()},
            # the figure: every Python worker together
            "workers_pss_peak": peaks["python_score"] + peaks["python_other"],
            "driver_pss_peak": peaks["driver"], "python_processes_max": counts["python_processes"],
            "tf_processes_max": counts["tf_processes"], "events_per_s": st["steady_events_per_s"]}


def serving(spark, settings, bundle, tmp, n_windows: int, repeats: int) -> dict:
    """The product's scoring UDF against the same bundle served the MLflow way, on the same
    windows in the same Spark session (see mlflow_peer.py): windows/s of each (best of
    ``repeats`` timed runs after an untimed one), their ratio, and whether every window got
    the same score from both (to 1e-6 relative: the model runs on batches of other sizes)."""
    import mlflow_peer
    rows, chunks = mlflow_peer.window_frames(spark, bundle, n_windows, settings.stream.state_buckets,
                                             settings.spark.shuffle_partitions)
    model_dir = mlflow_peer.save_pyfunc(bundle, tmp / "mlflow-model", settings.spark.python_threads)
    product = mlflow_peer.product_scorer(bundle, settings.spark.python_threads)
    peer = mlflow_peer.mlflow_scorer(spark, model_dir)
    times = {"product": [], "mlflow": []}
    scores = {}
    # warm-up, untimed: every partition once, so each path's workers have started, loaded the
    # model and compiled it before the clock runs
    product(chunks), peer(rows)
    for _ in range(repeats):  # interleaved, so a busy moment on the machine hits both alike
        for name, run, df in (("product", product, chunks), ("mlflow", peer, rows)):
            t0 = time.perf_counter()
            scores[name] = run(df)
            times[name].append(time.perf_counter() - t0)
    a, b = scores["product"], scores["mlflow"]
    joined = a.merge(b, on=["sensor_id", "event_time"], how="outer", suffixes=("_product", "_mlflow"))
    diff = (joined["score_product"] - joined["score_mlflow"]).abs()
    scale = joined[["score_product", "score_mlflow"]].abs().max(axis=1).clip(lower=1e-12)
    product_wps = n_windows / min(times["product"])
    mlflow_wps = n_windows / min(times["mlflow"])
    return {"windows": n_windows, "repeats": repeats,
            "product_windows_per_s": product_wps, "mlflow_windows_per_s": mlflow_wps,
            "product_to_mlflow": product_wps / mlflow_wps,
            "product_seconds": times["product"], "mlflow_seconds": times["mlflow"],
            "scored_product": int(len(a)), "scored_mlflow": int(len(b)),
            "max_abs_score_diff": float(diff.max()) if len(diff) else float("nan"),
            "max_rel_score_diff": float((diff / scale).max()) if len(diff) else float("nan"),
            "same_scores": bool(len(a) == len(b) == len(joined) == n_windows and (diff <= 1e-6 * scale).all()),
            "mlflow_version": mlflow_peer.mlflow_version()}


def step_line(st: dict) -> str:
    """One stepped-run step, with its verdict and the read/sent ratio behind it."""
    verdict = "kept up" if st["kept_up"] else f"behind ({st['reason']})"
    return (f"offered {st['offered_events_per_s']:,.0f}/s (sent {st['sent_events_per_s']:,.0f}/s): read "
            f"{st['read_events_per_s']:,.0f}/s over the step, {st['settled_read_events_per_s']:,.0f}/s settled = "
            f"{st['read_to_sent']:.1%} of sent; backlog {st['backlog_s_mean']:.1f} s changing "
            f"{st['backlog_slope_s_per_s']:+.3f} s/s: {verdict}")


# serving last: its MLflow workers must not linger in the state stage's memory figures
STAGES = ("model", "parse", "saturated", "stepped", "latency", "baseline", "state", "serving")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="bundle to benchmark (default: one trained on the benchmark's network, cached)")
    ap.add_argument("--bootstrap", default=os.environ.get("SENTINEL_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    ap.add_argument("--sensors", type=int, default=1000, help="sensors in the end-to-end runs")
    ap.add_argument("--days", type=float, default=2.0,
                    help="days of 5-minute readings per sensor in the saturated backlog (2: 576,000 events at 1,000 sensors)")
    ap.add_argument("--step-rates", type=lambda v: [float(x) for x in v.split(",")],
                    default=[12000.0, 16000.0, 20000.0, 24000.0, 28000.0],
                    help="comma-separated offered rates (events/s) of the stepped run, ascending")
    ap.add_argument("--step-seconds", type=float, default=36.0,
                    help="seconds per offered rate (a longer step tells a backlog that settles from one that grows)")
    ap.add_argument("--latency-rate", type=float, default=5000.0)
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--baseline-seconds", type=float, default=60.0)
    ap.add_argument("--serving-windows", type=int, default=65536,
                    help="windows scored by the product's UDF and by MLflow's spark_udf (serving stage)")
    ap.add_argument("--serving-repeats", type=int, default=2, help="timed runs of each serving path (best counts)")
    ap.add_argument("--state-sensors", type=lambda v: [int(x) for x in v.split(",")], default=[10000, 100000],
                    help="comma-separated sensor counts whose full window state is measured")
    ap.add_argument("--only", type=lambda v: [x.strip() for x in v.split(",") if x.strip()], default=list(STAGES),
                    help=f"comma-separated stages to run (default all: {','.join(STAGES)}); e.g. "
                         f"--only state --state-sensors 100000")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for the job (repeatable), e.g. --set spark.driver_memory='\"1g\"'")
    ap.add_argument("--driver-model", choices=("load", "none"),
                    help="none: the driver reads the bundle without the Keras model (no TensorFlow in the "
                         "driver), as `sentinel deploy` does; only with stages that run no model in the driver "
                         "(not model, baseline) and a cached bundle; load: the driver loads the whole bundle "
                         "(what the job did before it read the manifest only). Default: none when the stages "
                         "allow it and a bundle is cached, else load")
    ap.add_argument("--sinks", default="sqlite,postgres", help="sinks for the end-to-end runs")
    ap.add_argument("--json", default="reports/throughput.json")
    ap.add_argument("--quick", action="store_true", help="tiny load (smoke test)")
    args = ap.parse_args(argv)
    unknown = [x for x in args.only if x not in STAGES]
    if unknown:
        ap.error(f"--only: unknown stage {', '.join(unknown)}: use any of {', '.join(STAGES)}")
    BOOTSTRAP[0] = args.bootstrap
    if args.quick:
        args.sensors, args.days, args.latency_rate, args.latency_seconds = 20, 0.3, 200.0, 10.0
        args.baseline_seconds, args.state_sensors = 10.0, [200]
        args.step_rates, args.step_seconds = [100.0, 200.0], 8.0
        args.serving_windows, args.serving_repeats = 3000, 1
    run = [st for st in STAGES if st in args.only]
    cache = ROOT / "models" / f"bench-{args.sensors}{'-quick' if args.quick else ''}"
    if args.driver_model is None:   # the product's driver, unless a stage needs the model there or none is cached
        args.driver_model = "load" if {"model", "baseline"} & set(run) or not (args.model or cache.is_dir()) else "none"
    from sentinel.stream import spark as sparkmod
    settings = load_settings(None, [f"sinks.enabled={json.dumps(args.sinks.split(','))}", "spark.log_level='ERROR'",
                                    "source.kafka.max_offsets_per_trigger=100000", *args.overrides])
    if args.driver_model == "none":
        if {"model", "baseline"} & set(run):
            ap.error("--driver-model none: the model and baseline stages run a model in the driver; "
                     "leave them out with --only")
        bundle = without_model(str(resolve_bundle(args.model or str(cache))))
    else:
        bundle = get_bundle(args)
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "load_1min_at_start": os.getloadavg()[0]},
                     "sensors": args.sensors, "stages": run, "settings": list(args.overrides),
                     "driver_model": args.driver_model}
    n_steps = len(run) + (len(args.state_sensors) - 1 if "state" in run else 0)  # one state step per count
    k = iter(range(1, n_steps + 1))

    def stage(name: str, what: str) -> bool:
        if name in run:
            log(f"{next(k)}/{n_steps} {what}")
        return name in run

    if stage("model", "model-only scoring"):
        results["model_only"] = m = model_only(bundle, 8192 if args.quick else 65536)
        log(f"    {m['windows_per_s']:,.0f} windows/s (model.predict: {m['predict_windows_per_s']:,.0f})")
    if stage("parse", "parsing"):
        results["parse"] = p = parse_only(settings, args.sensors, 20_000 if args.quick else 200_000)
        log(f"    parsing: {p['lines_per_s']:,.0f} lines/s (per-line parser: {p['per_line_lines_per_s']:,.0f}; "
            f"same result: {p['same_result']})")

    spark = sparkmod.session(settings, "bench", kafka=True) if set(run) - {"model", "parse"} else None
    try:
        if stage("saturated", f"end to end, saturated: {args.sensors} sensors, sinks {args.sinks}"):
            results["saturated"] = sat = saturated(spark, settings, bundle, args.bootstrap, tmp, args.sensors, args.days)
            log(f"    {sat['steady_events_per_s']:,.0f} events/s sustained over {sat['batches']} batches "
                f"(median batch {sat['batch_ms_median']:.0f} ms)")
        if stage("stepped", f"end to end, offered rate stepped up: {args.sensors} sensors, sinks {args.sinks}"):
            results["stepped"] = stp = stepped(spark, settings, bundle, args.bootstrap, tmp, args.sensors,
                                               args.step_rates, args.step_seconds)
            for st in stp["steps"]:
                log("    " + step_line(st))
        if stage("latency", f"latency at {args.latency_rate:.0f} events/s"):
            results["latency"] = lat = latency(spark, settings, bundle, args.bootstrap, tmp, args.sensors,
                                               args.latency_rate, args.latency_seconds)
            log(f"    p50 {lat['p50_s']:.2f} s, p95 {lat['p95_s']:.2f} s, p99 {lat['p99_s']:.2f} s over "
                f"{lat['anomalies_timed']} anomalies (start-up {lat['startup_s']:.0f} s)")
        if stage("baseline", f"baseline (older system's per-row approach) for {args.baseline_seconds:.0f} s"):
            results["baseline"] = base = baseline(spark, settings, bundle, args.bootstrap, tmp, args.baseline_seconds)
            log(f"    {base['events_per_s']:.1f} events/s")
        if "state" in run:
            results["state"] = []
        for n in args.state_sensors if "state" in run else []:
            stage("state", f"state: {n} sensors x {bundle.length} readings (each sensor's window state full, "
                           f"one window scored)")
            results["state"].append(st := state_memory(spark, settings, bundle, args.bootstrap, tmp, n))
            log("    " + state_line(st))
        if stage("serving", f"serving peer: {args.serving_windows:,} windows, the product's scoring UDF and "
                            f"MLflow's spark_udf"):
            results["serving"] = sv = serving(spark, settings, bundle, tmp, args.serving_windows, args.serving_repeats)
            log(f"    product {sv['product_windows_per_s']:,.0f} windows/s, MLflow {sv['mlflow_windows_per_s']:,.0f} "
                f"windows/s ({sv['product_to_mlflow']:.1f}x); same scores: {sv['same_scores']} "
                f"(max relative difference {sv['max_rel_score_diff']:.1e})")
    finally:
        if spark is not None:
            spark.stop()
    print_table(results, args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    print(f"figures written to {args.json}")
    return 0


def state_line(st: dict) -> str:
    mib = 2 ** 20
    return (f"{st['sensors']:,} sensors: RocksDB SST {st['rocksdb_sst_bytes'] / mib:.1f} MiB; peak PSS: JVM (driver + "
            f"executor) {st['jvm_pss_peak'] / mib:,.0f} MiB, Python scoring workers {st['python_score_pss_peak'] / mib:,.0f} "
            f"MiB, other Python workers {st['python_other_pss_peak'] / mib:,.0f} MiB, driver Python "
            f"{st['driver_pss_peak'] / mib:,.0f} MiB; all together {st['total_pss_peak'] / mib:,.0f} MiB "
            f"({st['python_processes_max']} Python processes, {st['tf_processes_max']} with TensorFlow)")


def print_table(results: dict, args) -> None:
    """The figures of the stages that ran, with the ratios the JSON keeps."""
    def get(*path):
        return functools.reduce(lambda d, key: (d or {}).get(key), path, results)

    ceiling, drain = get("model_only", "windows_per_s"), get("saturated", "steady_events_per_s")
    e2e, base = get("stepped", "sustained_events_per_s"), get("baseline", "events_per_s")
    r = results["ratios"] = {}
    if e2e is not None and ceiling:
        r["stepped_to_model_only"] = e2e / ceiling
    if drain is not None and ceiling:
        r["drain_to_model_only"] = drain / ceiling
    if e2e is not None and base:
        r["stepped_to_baseline"] = e2e / base
    if drain is not None and base:
        r["drain_to_baseline"] = drain / base
    print("\nfigure                                         value        target")
    if ceiling is not None:
        print(f"model-only scoring (windows/s)          {ceiling:>12,.0f}")
    if "parse" in results:
        print(f"parsing (lines/s; per-line parser)      {results['parse']['lines_per_s']:>12,.0f}     "
              f"({results['parse']['per_line_lines_per_s']:,.0f})")
    if e2e is not None:
        rule = results["stepped"].get("rule", {})
        print(f"end to end sustained (events/s)         {e2e:>12,.0f}     >= 20,000")
        print(f"  (highest offered rate kept up with, of {', '.join(f'{x:,.0f}' for x in args.step_rates)}: read "
              f">= {rule.get('read_to_sent_min', float('nan')):.0%} of what was sent and backlog growing at most "
              f"{rule.get('backlog_slope_max_s_per_s', float('nan')):+.2f} s/s over the step's last two thirds"
              + (f"; a backlog drains at {drain:,.0f}" if drain is not None else "") + ")")
        for st in results["stepped"]["steps"]:
            print(f"    {st['offered_events_per_s']:>8,.0f}/s: read/sent {st['read_to_sent']:6.1%}, backlog "
                  f"{st['backlog_s_mean']:4.1f} s {st['backlog_slope_s_per_s']:+.3f} s/s: "
                  + ("kept up" if st["kept_up"] else f"behind ({st['reason']})"))
    elif drain is not None:
        print(f"end to end, draining a backlog (events/s) {drain:>10,.0f}")
    if "stepped_to_model_only" in r:
        print(f"end to end / model-only                 {r['stepped_to_model_only']:>12.0%}     >= 75 %   "
              f"(backlog drain: {r.get('drain_to_model_only', float('nan')):.0%})")
    if "latency" in results:
        lat = results["latency"]
        print(f"latency p50 / p95 / p99 (s) at {lat['offered_rate']:.0f}/s  "
              f"{lat['p50_s']:.2f} / {lat['p95_s']:.2f} / {lat['p99_s']:.2f}   p95 <= 3 s")
        print(f"  (timed once warm; start-up to the first scored batch {lat['startup_s']:.0f} s)")
    if base is not None:
        print(f"baseline (events/s)                     {base:>12,.1f}")
    if "stepped_to_baseline" in r:
        print(f"speed-up over baseline                  {r['stepped_to_baseline']:>12,.0f}x    >= 500x   "
              f"(backlog drain: {r.get('drain_to_baseline', float('nan')):,.0f}x)")
    if "serving" in results:
        sv = results["serving"]
        print(f"serving, product's scoring UDF (windows/s) {sv['product_windows_per_s']:>9,.0f}")
        print(f"serving, MLflow {sv['mlflow_version']} spark_udf (windows/s) {sv['mlflow_windows_per_s']:>7,.0f}")
        print(f"  product / MLflow                      {sv['product_to_mlflow']:>12.1f}x    >= 1.5x   "
              f"(same {sv['windows']:,} windows, same session; same scores: {sv['same_scores']})")
    for st in results.get("state", []):
        print(f"state, {st['sensors']:,} sensors: RocksDB SST {st['rocksdb_sst_bytes'] / 2**20:.1f} MiB; peak PSS "
              f"all processes {st['total_pss_peak'] / 2**20:,.0f} MiB    <= 2,560 MiB at 100,000")
        print(f"  JVM {st['jvm_pss_peak'] / 2**20:,.0f}, Python scoring workers {st['python_score_pss_peak'] / 2**20:,.0f}, "
              f"other Python workers {st['python_other_pss_peak'] / 2**20:,.0f}, driver Python "
              f"{st['driver_pss_peak'] / 2**20:,.0f} MiB ({st['tf_processes_max']} of {st['python_processes_max']} "
              f"Python processes with TensorFlow)")


if __name__ == "__main__":
    sys.exit(main())
