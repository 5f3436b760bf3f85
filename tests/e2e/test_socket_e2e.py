"""End to end as a user runs it: spark-submit of both jobs, events over a real TCP socket.

History -> `spark-submit jobs/train.py` -> bundle; a live feed with injected anomalies and
malformed lines served on a socket (like `nc -lk`) -> `spark-submit jobs/deploy.py` -> SQLite.
"""
import json
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from sentinel.config import DataSettings
from sentinel.detect.evaluate import episode_metrics
from sentinel.ingest.events import parse_lines

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
TINY = ["--set", "window.length=16", "--set", "window.stride=2", "--set", "model.units=12",
        "--set", "model.latent=4", "--set", "model.epochs=4", "--set", "model.batch_size=128"]


def env():
    e = dict(os.environ, PYSPARK_PYTHON=str(BIN / "python"), PYSPARK_DRIVER_PYTHON=str(BIN / "python"),
             SPARK_CONF_DIR=str(ROOT / "conf"), SPARK_LOCAL_IP="127.0.0.1", PATH=f"{BIN}:{os.environ['PATH']}")
    return e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    subprocess.run([BIN / "sentinel", "simulate", "--sensors", "4", "--days", "6", "--seed", "3",
                    "--anomalies-per-week", "3", "--out", tmp / "history.csv"], check=True, cwd=ROOT, env=env())
    train = subprocess.run([BIN / "spark-submit", "jobs/train.py", "--input", tmp / "history.csv",
                            "--out", tmp / "model", "--label-col", "is_anomaly", *TINY],
                           cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    port = free_port()
    feed_log = open(tmp / "feed.log", "w")
    feed = subprocess.Popen([BIN / "sentinel", "simulate", "--sensors", "4", "--days", "1.5", "--seed", "3",
                             "--start", "2026-01-11T00:00:00Z", "--anomalies-per-week", "6",
                             "--stream", f"tcp://127.0.0.1:{port}", "--rate", "0", "--bad-rate", "0.01",
                             "--truth", tmp / "truth.csv", "--events-out", tmp / "sent.jsonl"],
                            cwd=ROOT, env=env(), stdout=feed_log, stderr=subprocess.STDOUT)
    for _ in range(300):
        if "listening on" in (tmp / "feed.log").read_text():
            break
        time.sleep(0.1)
    deploy = subprocess.run([BIN / "spark-submit", "jobs/deploy.py", "--model", tmp / "model",
                             "--set", 'source.host="127.0.0.1"', "--set", f"source.port={port}",
                             "--set", f'sinks.sqlite.path="{tmp / "store.db"}"',
                             "--checkpoint", tmp / "ckpt", "--idle-timeout", "10"],
                            cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    feed.wait(timeout=60)
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    # spark-submit merges the Python driver's stderr (our log) into its stdout.
    (tmp / "deploy.log").write_text(deploy.stdout + deploy.stderr)
    totals = json.loads(deploy.stdout.strip().splitlines()[-1])["totals"]
    return tmp, totals, deploy.stdout + deploy.stderr


def test_every_line_sent_was_counted_by_the_job(run):
    tmp, totals, _ = run
    sent = (tmp / "sent.jsonl").read_text().splitlines()
    assert totals["events"] == len(sent)


def test_malformed_lines_land_in_rejects_and_the_job_keeps_running(run):
    tmp, totals, log = run
    sent = (tmp / "sent.jsonl").read_text().splitlines()
    expected_bad = parse_lines(sent, DataSettings())["reject_reason"].notna().sum()
    assert expected_bad > 0
    with sqlite3.connect(tmp / "store.db") as con:
        rejects = pd.read_sql_query("SELECT raw, reason FROM rejects", con)
    assert len(rejects) == expected_bad == totals["rejects"]
    assert set(rejects.reason.str.split(":").str[0]) <= {"not_json", "not_object", "bad_timestamp",
                                                          "non_numeric", "missing_feature", "not_finite"}
    # one log line per micro-batch with the counts
    batch_lines = [line for line in log.splitlines() if "sentinel.stream: batch" in line]
    assert batch_lines, f"no per-batch log line in {tmp / 'deploy.log'}"
    assert all(k in batch_lines[-1] for k in ("events=", "rejects=", "anomalies=", "duration="))


def test_injected_anomalies_land_in_sqlite_and_normal_readings_do_not(run):
    tmp, totals, _ = run
    with sqlite3.connect(tmp / "store.db") as con:
        found = pd.read_sql_query("SELECT sensor_id, event_time AS timestamp, severity FROM anomalies", con)
    truth = pd.read_csv(tmp / "truth.csv")
    assert len(truth) >= 4 and len(found) > 0
    tol = pd.Timedelta(minutes=5 * 16)
    m = episode_metrics(truth, found, tol, tol)
    # Large injected faults against a tiny 4-epoch model: most episodes found, few false alarms.
    assert m["episode_recall"] >= 0.75, m
    assert m["episode_precision"] >= 0.75, m
    assert (found.severity > 1).all()
