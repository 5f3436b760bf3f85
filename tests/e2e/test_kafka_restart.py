"""Kill -9 the deploy job mid-stream and restart it from its checkpoint: nothing lost, nothing
doubled, on the SQLite store and on the alert topic.

Three deploy runs over one Kafka topic, one after the other:

1. reference: ``sentinel.stream.run`` in this process (pytest's Spark session), own
   checkpoint and store, uninterrupted until idle;
2. ``spark-submit jobs/deploy.py`` (SPARK_CONF_DIR=conf supplies the Kafka connector) with its
   own checkpoint, store and alert topic, SIGKILLed (whole process group: driver JVM, Python
   driver, Python workers) mid-stream, ideally after the sinks wrote a micro-batch that Spark
   had not committed yet;
3. ``sentinel deploy`` resuming from (2)'s checkpoint until idle (both entry points share
   checkpoints).

(2)+(3) must hold exactly the reference's anomalies, rejects and incidents, every event
accounted for once, and the alert topic exactly the stored anomalies and each incident event,
each once.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, need_service

pytestmark = [pytest.mark.spark, pytest.mark.services]

LIVE = dict(n_sensors=4, days=1, interval_s=300, seed=3, start="2026-01-12T00:00:00Z",
            anomalies_per_sensor_week=14.0)
BAD = [b"not json", b"\xff\xfe\x00 garbage", b"", b'{"sensor_id": "PT-0001", "timestamp": "x", "pressure": 1}']
MAX_OFFSETS = 300          # 4 micro-batches for 1156 messages
BATCH_RE = re.compile(r"batch (\d+): events=(\d+) scored=(\d+) warmup=(\d+) rejects=(\d+) anomalies=(\d+)")


def _env() -> dict:
    env = dict(os.environ)
    venv_bin = str(ROOT / ".venv" / "bin")
    env.update(PATH=f"{venv_bin}:{env.get('PATH', '')}", PYSPARK_PYTHON=str(ROOT / ".venv/bin/python"),
               PYSPARK_DRIVER_PYTHON=str(ROOT / ".venv/bin/python"), SPARK_CONF_DIR=str(ROOT / "conf"),
               SPARK_LOCAL_IP="127.0.0.1", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _config(path: Path, bootstrap: str, topic: str, bundle: Path, work: Path, alerts: str = "") -> Path:
    q = json.dumps
    path.write_text(f"""
[source]
type = "kafka"
[source.kafka]
bootstrap_servers = {q(bootstrap)}
topic = {q(topic)}
starting_offsets = "earliest"
max_offsets_per_trigger = {MAX_OFFSETS}
alerts_topic = {q(alerts)}
[stream]
model = {q(str(bundle))}
checkpoint = {q(str(work / "checkpoint"))}
trigger_s = 0.5
[sinks.sqlite]
path = {q(str(work / "store.db"))}
[spark]
master = "local[2]"
shuffle_partitions = 2
conf = {{ "spark.ui.enabled" = "false", "spark.local.dir" = {q(str(work / "spark-local"))} }}
""")
    return path


def _batches(text: str) -> dict[int, tuple[int, ...]]:
    """Per-batch counts logged by the job; a batch re-run after the restart overwrites its entry."""
    return {int(m[0]): tuple(int(x) for x in m[1:]) for m in BATCH_RE.findall(text)}


def _store(db: Path):
    with sqlite3.connect(db) as con:
        a = con.execute("SELECT sensor_id, event_time, model_version FROM anomalies").fetchall()
        dup = con.execute("SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT sensor_id, event_time, "
                          "model_version FROM anomalies)) FROM anomalies").fetchone()[0]
        r = con.execute("SELECT raw, reason FROM rejects").fetchall()
    return a, dup, r


def _incidents(db: Path) -> set:
    """The stream-owned, deterministic fields of every incident (wall-clock fields left out)."""
    with sqlite3.connect(db) as con:
        return set(con.execute("SELECT incident_id, kind, status, zone, sensors, first_sensor, opened_at, last_seen, "
                               "closed_at, peak_severity, readings, explanation FROM incidents").fetchall())


def _max_batch(db: Path) -> int:
    """Newest micro-batch with rows in the store (-1: none), read-only so the job never waits."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            v = con.execute("SELECT max(b) FROM (SELECT max(batch_id) b FROM anomalies "
                            "UNION ALL SELECT max(batch_id) FROM rejects)").fetchone()[0]
            return -1 if v is None else int(v)
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def _commits(ckpt: Path) -> int:
    d = ckpt / "commits"
    return len([p for p in d.iterdir() if p.name.isdigit()]) if d.exists() else 0


def _run(cmd, env, log: Path, timeout: float) -> subprocess.CompletedProcess:
    with open(log, "wb") as err:
        p = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, timeout=timeout)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}); log tail:\n" + log.read_text(errors="replace")[-3000:]
    return p


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _reference(spark, cfg: Path, bundle) -> tuple[dict, dict]:
    from sentinel.stream import query as stream_query
    from sentinel.config import load_settings
    from sentinel.detect.model import load_bundle
    from sentinel.store.sinks import build_sinks
    settings = load_settings(cfg, ["stream.idle_timeout_s=5.0"])
    sinks = build_sinks(settings)
    handler, logger = _Lines(), logging.getLogger("sentinel.stream")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        totals = stream_query.run(spark, settings, load_bundle(str(bundle)), sinks)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        for s in sinks:
            s.close()
    return _batches("\n".join(handler.lines)), totals


def test_sigkill_and_restart_neither_loses_nor_duplicates(spark, tmp_path, tiny_bundle):
    from sentinel.config import load_settings
    from sentinel.ingest.feed import event_lines
    from sentinel.ingest.kafka import consume_all, keyed_lines, produce_lines
    from sentinel.ingest.synthetic import simulate
    bootstrap = need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")
    tag = uuid.uuid4().hex[:10]
    topic, alerts = f"e2e-events-{tag}", f"e2e-alerts-{tag}"
    live = simulate(**LIVE)
    lines = list(event_lines(live.readings, load_settings().data, 0.0, 0))  # what `sentinel simulate` sends
    cut = len(lines) // 4
    msgs = list(keyed_lines(lines[:cut])) + [(None, b) for b in BAD] + list(keyed_lines(lines[cut:]))
    sent = produce_lines(msgs, bootstrap, topic, rate=0, partitions=2)
    env = _env()
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    ref_cfg = _config(tmp_path / "ref.toml", bootstrap, topic, Path(tiny_bundle), ref_dir)
    run_cfg = _config(tmp_path / "run.toml", bootstrap, topic, Path(tiny_bundle), run_dir, alerts)
    t0 = time.time()

    # 1. reference, uninterrupted, in-process
    ref_batches, ref_totals = _reference(spark, ref_cfg, tiny_bundle)
    t_ref = time.time() - t0

    # 2. spark-submit, SIGKILLed mid-stream (the driver's log lines come out on its stdout)
    submit = [str(ROOT / ".venv/bin/spark-submit"), "jobs/deploy.py", "--config", str(run_cfg), "--idle-timeout", "5"]
    with open(tmp_path / "run1.log", "wb") as err:
        p = subprocess.Popen(submit, env=env, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        # Kill once two batches are committed and the store already holds the next one, which
        # Spark has not committed yet: the restart must re-run it on top of rows (and alerts)
        # already written. If that moment is missed, kill when only the last batch is left.
        total, deadline, in_store_uncommitted = len(ref_batches), time.time() + 300, False
        while True:
            assert p.poll() is None, "deploy exited before it could be killed:\n" + \
                (tmp_path / "run1.log").read_text(errors="replace")[-3000:]
            assert time.time() < deadline, "no two committed micro-batches within 300 s"
            n = _commits(run_dir / "checkpoint")
            if n >= 2 and _max_batch(run_dir / "store.db") >= n:
                in_store_uncommitted = True
                break
            if n >= max(2, total - 1):
                break
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    killed_commits = _commits(run_dir / "checkpoint")
    in_store_uncommitted = in_store_uncommitted and killed_commits == n   # not committed in between
    killed_offsets = len([x for x in (run_dir / "checkpoint" / "offsets").iterdir() if x.name.isdigit()])
    log1 = (tmp_path / "run1.log").read_text(errors="replace")
    a_killed, _, _ = _store(run_dir / "store.db")

    # 3. restart from the same checkpoint with the other entry point, until idle
    deploy = [str(ROOT / ".venv/bin/sentinel"), "deploy", "--config", str(run_cfg), "--idle-timeout", "5"]
    _run(deploy, env, tmp_path / "run2.log", 300)
    log2 = (tmp_path / "run2.log").read_text(errors="replace")
    elapsed = time.time() - t0

    ref_anoms, ref_dup, ref_rejects = _store(ref_dir / "store.db")
    anoms, dup, rejects = _store(run_dir / "store.db")
    run_batches = _batches(log1) | _batches(log2)     # per batch id: a replayed batch counts once
    sums = [sum(v[i] for v in run_batches.values()) for i in range(5)]
    messages = [json.loads(m.value()) for m in consume_all(bootstrap, alerts)]
    alert_keys = [(r["sensor_id"], pd.Timestamp(r["event_time"]), r["model_version"])
                  for r in messages if r["type"] == "anomaly"]
    incident_msgs = [(r["incident"]["incident_id"], r["event"], r["batch_id"]) for r in messages
                     if r["type"] == "incident"]
    ref_incidents, incidents = _incidents(ref_dir / "store.db"), _incidents(run_dir / "store.db")
    store_keys = {(s, pd.Timestamp(t, tz="UTC"), v) for s, t, v in anoms}
    replay_skipped = "already published" in log2
    print(f"\n[kafka restart] events sent={sent}; reference: batches={len(ref_batches)} totals={ref_totals} "
          f"({t_ref:.0f}s)\n[kafka restart] SIGKILL after {killed_commits} committed / {killed_offsets} planned "
          f"batches, {len(a_killed)} anomalies stored, in-flight batch already in the store: {in_store_uncommitted}; "
          f"restart re-ran batch(es) {list(range(killed_commits, killed_offsets))} from the offset log, "
          f"alert re-publish skipped: {replay_skipped}\n"
          f"[kafka restart] anomalies expected={len(ref_anoms)} found={len(anoms)} duplicated={dup} "
          f"missing={len(set(ref_anoms) - set(anoms))} extra={len(set(anoms) - set(ref_anoms))}; "
          f"events accounted={sums[0]} (scored={sums[1]} warmup={sums[2]} rejects={sums[3]}); "
          f"alert messages={len(alert_keys)} distinct={len(set(alert_keys))}; incidents expected="
          f"{len(ref_incidents)} found={len(incidents)}, incident messages={len(incident_msgs)}; total {elapsed:.0f}s")

    assert 2 <= killed_commits < len(ref_batches), "the kill must land mid-stream"
    assert ref_totals["events"] == sent and ref_dup == 0
    # no duplicates, nothing lost, nothing extra: the same anomalies as the uninterrupted run
    assert dup == 0 and len(anoms) == len(set(anoms))
    assert set(anoms) == set(ref_anoms) and len(anoms) > 0
    assert Counter(rejects) == Counter(ref_rejects) and len(rejects) == len(BAD)
    # every event in exactly one (possibly replayed) batch: same per-batch counts as the reference
    assert sums[0] == sent
    assert sums[1:4] == [ref_totals["windows"], ref_totals["events"] - ref_totals["windows"] - ref_totals["rejects"],
                         ref_totals["rejects"]]
    assert run_batches == ref_batches
    # alert topic (read_committed): exactly the stored anomalies, each once
    assert len(alert_keys) == len(set(alert_keys)) and set(alert_keys) == store_keys
    # incidents: exactly the uninterrupted run's (the driver's tracker state is checkpointed per
    # batch), and on the alert topic each incident opened once, each event once
    assert incidents == ref_incidents and len(incidents) > 0
    assert len(incident_msgs) == len(set(incident_msgs))
    assert sorted(i for i, e, _ in incident_msgs if e == "open") == sorted(r[0] for r in incidents)
