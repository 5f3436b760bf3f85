"""End to end on the local Spark standalone cluster (master + 2 workers, no Docker).

One module-scoped run, every step through ``scripts/submit.sh`` (spark-submit with the package
zipped into ``--py-files``):

1. train a tiny model on the cluster (8 sensors x 3 days of simulated history);
2. produce a live stream (same sensors, the days after) to a fresh 4-partition Kafka topic;
3. deploy on that topic on the cluster, then in local mode (``local[2]``) with its own
   checkpoint and SQLite store;
4. check that both runs stored the same anomalies (sensor_id, event_time) and saw the same
   events and windows, and -- through the history server's REST API, not assumed -- that the
   cluster app had two executors on two workers, that both completed tasks, and that the tasks
   which assembled and scored windows ran on both and together consumed every reading.

The cluster is started by ``scripts/services/spark-cluster.sh`` if it is not running (and
stopped again only then). Kafka comes from ``scripts/services/kafka.sh`` (SENTINEL_KAFKA_BOOTSTRAP,
exported by scripts/test.sh). Every wait is bounded; on 2 idle cores the module takes about
4-5 minutes, most of it JVM, executor and TensorFlow start-up.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import ROOT, TINY_OVERRIDES, need_service

pytestmark = [pytest.mark.spark, pytest.mark.services]

CLUSTER_SH = ROOT / "scripts" / "services" / "spark-cluster.sh"
SUBMIT_SH = ROOT / "scripts" / "submit.sh"
MASTER_URL = f"spark://127.0.0.1:{os.environ.get('SPARK_MASTER_PORT', '7077')}"
MASTER_UI = f"http://127.0.0.1:{os.environ.get('SPARK_MASTER_WEBUI_PORT', '8080')}"
HISTORY_UI = f"http://127.0.0.1:{os.environ.get('SPARK_HISTORY_PORT', '18080')}"
# Where spark-cluster.sh's history server reads event logs (same defaults as the script).
EVENTLOG_DIR = Path(os.environ.get("SPARK_EVENTLOG_DIR")
                    or Path(os.environ.get("SENTINEL_CACHE_DIR") or ROOT / ".cache") / "spark-events")

# Same seed and sensor count as the history => same sensors; a later start => readings the
# model never saw. 8 sensors (not 4) so that all 4 shuffle partitions, and so both executors,
# get sensors to score.
HISTORY = dict(sensors=8, days=3, seed=3, anomalies_per_week=3)          # 6912 readings
LIVE = dict(n_sensors=8, days=0.5, interval_s=300, seed=3, start="2026-01-08T00:00:00Z",
            anomalies_per_sensor_week=14.0)                              # 1152 readings
PARTITIONS = 4            # Kafka partitions of the live topic = spark.sql.shuffle.partitions
MAX_OFFSETS = 600         # => the live events arrive in 2 micro-batches

# Bounds (seconds) for each step. On 2 idle cores train takes ~1.5 min and each deploy ~1-1.5
# min (JVMs, executors, and TensorFlow loaded once per Python worker); the bounds leave room
# for a machine shared with other test runs.
CLUSTER_START_S = 180
TRAIN_S = 420
DEPLOY_S = 420
HISTORY_WAIT_S = 60


# ---------------------------------------------------------------- helpers
def _get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


def _worker_of(executor: dict) -> str:
    """host:port of the web UI of the worker that ran ``executor`` (its log links point there)."""
    return urlparse(executor["executorLogs"]["stderr"]).netloc


def _alive_workers() -> list[dict]:
    try:
        return [w for w in _get_json(f"{MASTER_UI}/json/", 5).get("workers", []) if w.get("state") == "ALIVE"]
    except OSError:
        return []


def _run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group, stderr to ``log``, stdout to ``log``.out; on
    timeout, stop that group (only what this call started) and fail with the logs' tails."""
    out_path = log.with_name(log.name + ".out")
    what = " ".join(Path(c).name if i == 0 else str(c) for i, c in enumerate(cmd[:2]))
    with open(log, "w") as err, open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            pytest.fail(f"{what} did not finish within {timeout:.0f} s; stdout {out_path}:\n{_tail(out_path, 10)}\n"
                        f"stderr {log}:\n{_tail(log)}")
    stdout = out_path.read_text()
    if proc.returncode != 0:
        pytest.fail(f"{what} exited {proc.returncode}; stdout {out_path}:\n{_tail(out_path, 10)}\n"
                    f"stderr {log}:\n{_tail(log)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, "")


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])


def _submit(job: str, args: list[str], log: Path, master: str, timeout: float,
            submit_opts: str = "") -> subprocess.CompletedProcess:
    env = {"SPARK_MASTER": master, "SPARK_EVENTLOG_DIR": str(EVENTLOG_DIR), "SENTINEL_SUBMIT_OPTS": submit_opts}
    return _run([str(SUBMIT_SH), job, *args], log, timeout, env)


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _produce(bootstrap: str, topic: str, readings) -> int:
    """The live readings as JSON events, keyed by sensor (one sensor = one partition, in time
    order), to a fresh topic of PARTITIONS partitions. Returns the number delivered."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from sentinel.config import DataSettings
    from sentinel.ingest.events import to_event_json

    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep a reference: the futures need it alive
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    errors: list = []
    data = DataSettings()
    for r in readings.itertuples(index=False):
        value = to_event_json(r.sensor_id, r.timestamp, {"pressure": r.pressure}, data)
        producer.produce(topic, key=r.sensor_id, value=value,
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
        producer.poll(0)
    left = producer.flush(60)
    assert left == 0 and not errors, f"{left} messages undelivered, errors: {errors[:3]}"
    return len(readings)


def _delete_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        admin.delete_topics([topic])[topic].result(30)
    except Exception:  # best effort: the broker's retention removes it anyway
        pass


def _anomaly_keys(db: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(db) as con:
        return set(con.execute("SELECT sensor_id, event_time FROM anomalies").fetchall())


def _totals(stdout: str) -> dict:
    """The deploy job's last stdout line: {"totals": {...}, ...}."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)["totals"]
    raise AssertionError(f"deploy printed no totals line; stdout:\n{stdout[-2000:]}")


def _history_app(name: str) -> str:
    """Id of the completed application called ``name`` at the history server (bounded wait:
    the server rescans the event log directory every 2 s)."""
    deadline = time.time() + HISTORY_WAIT_S
    while True:
        try:
            for app in _get_json(f"{HISTORY_UI}/api/v1/applications?status=completed"):
                if app["name"] == name:
                    return app["id"]
        except OSError:
            pass
        if time.time() > deadline:
            pytest.fail(f"application {name!r} not listed as completed at {HISTORY_UI} after "
                        f"{HISTORY_WAIT_S} s (event logs: {EVENTLOG_DIR})")
        time.sleep(1)


def _state_feeds_udf_directly(api: str) -> bool:
    """True if a micro-batch plan (SQL REST API: nodes and edges) feeds the per-sensor state
    operator's output into the scoring pandas UDF with no Exchange in between: then both run
    in the same tasks, the ones that read the shuffle into the state operator."""
    for ex in _get_json(f"{api}/sql?details=true&planDescription=false&length=10000", 60):
        names = {n["nodeId"]: n["nodeName"] for n in ex.get("nodes", [])}
        children: dict[int, list[int]] = {}
        for e in ex.get("edges", []):
            children.setdefault(e["toId"], []).append(e["fromId"])
        for node, name in names.items():
            if name != "ArrowEvalPython":
                continue
            todo = list(children.get(node, []))
            while todo:
                child = todo.pop()
                if names.get(child) == "TransformWithStateInPySpark":
                    return True
                if not names.get(child, "").startswith(("Exchange", "AQEShuffleRead")):
                    todo += children.get(child, [])
    return False


def _scoring_tasks(api: str) -> list[dict]:
    """Successful tasks that assembled and scored windows, from the REST API.

    In each job of a micro-batch, the source stage reads Kafka (input records, no shuffle read)
    and shuffles chunks of readings by state bucket; the stage that reads exactly those records runs the
    state operator and, pipelined with it, the scoring UDF (see ``_state_feeds_udf_directly``).
    Its tasks with shuffle input are the ones that scored.
    """
    stages: dict[int, list[dict]] = {}
    for st in _get_json(f"{api}/stages?status=complete&details=true", 60):
        stages.setdefault(st["stageId"], []).append(st)
    found: dict[tuple[int, int], list[dict]] = {}
    for job in _get_json(f"{api}/jobs?status=succeeded", 30):
        in_job = [st for sid in job["stageIds"] for st in stages.get(sid, [])]
        for src in in_job:
            if not (src["inputRecords"] > 0 and src["shuffleReadRecords"] == 0 and src["shuffleWriteRecords"] > 0):
                continue
            for st in in_job:
                if st is not src and st["shuffleReadRecords"] == src["shuffleWriteRecords"]:
                    found[(st["stageId"], st["attemptId"])] = [
                        t for t in (st.get("tasks") or {}).values()
                        if t.get("status") == "SUCCESS" and t["taskMetrics"]["shuffleReadMetrics"]["recordsRead"] > 0]
    return [t for tasks in found.values() for t in tasks]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def spark_cluster():
    """The local standalone cluster; started here (and stopped at the end) only if it was
    fully stopped."""
    status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True, timeout=60)
    started = status.returncode == 3  # 3 = stopped; 1 = partly up (someone else's): repair only
    if status.returncode != 0:
        r = subprocess.run([str(CLUSTER_SH), "start"], capture_output=True, text=True, timeout=CLUSTER_START_S)
        if r.returncode != 0:
            pytest.fail(f"spark-cluster.sh start failed ({r.returncode}):\n{r.stderr[-3000:]}")
    workers = _alive_workers()
    assert len(workers) >= 2, f"need 2 ALIVE workers at {MASTER_UI}, found {len(workers)}"
    try:
        yield {"url": MASTER_URL, "worker_uis": {urlparse(w["webuiaddress"]).netloc for w in workers}}
    finally:
        if started:
            subprocess.run([str(CLUSTER_SH), "stop"], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster_run(spark_cluster, tmp_path_factory, request):
    from sentinel.ingest.synthetic import simulate

    bootstrap = need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")
    tag = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("cluster")  # absolute: executors run in their own work dirs
    times: dict[str, float] = {}
    t0 = time.time()

    # 1. train on the cluster
    history = tmp / "history.csv"
    subprocess.run([str(ROOT / ".venv" / "bin" / "sentinel"), "simulate", "--sensors", str(HISTORY["sensors"]),
                    "--days", str(HISTORY["days"]), "--seed", str(HISTORY["seed"]),
                    "--anomalies-per-week", str(HISTORY["anomalies_per_week"]), "--out", str(history)],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)
    bundle = tmp / "bundle"
    train_app = f"e2e-cluster-{tag}"
    _submit("train", ["--input", str(history), "--out", str(bundle), "--label-col", "is_anomaly",
                      *_sets(TINY_OVERRIDES + [f'spark.app_name="{train_app}"'])],
            tmp / "train.log", spark_cluster["url"], TRAIN_S)
    assert (bundle / "manifest.json").is_file()
    times["train"] = time.time() - t0

    # 2. the live stream
    live = simulate(**LIVE)
    topic = f"e2e-cluster-{tag}"
    sent = _produce(bootstrap, topic, live.readings)
    request.addfinalizer(lambda: _delete_topic(bootstrap, topic))

    # 3. deploy on the cluster, then locally, on the same topic
    def deploy(name: str, master: str, submit_opts: str = ""):
        args = ["--model", str(bundle), "--checkpoint", str(tmp / f"ckpt-{name}"), "--idle-timeout", "5",
                *_sets(['source.type="kafka"', f'source.kafka.bootstrap_servers="{bootstrap}"',
                        f'source.kafka.topic="{topic}"', f"source.kafka.max_offsets_per_trigger={MAX_OFFSETS}",
                        f"spark.shuffle_partitions={PARTITIONS}", "stream.trigger_s=1.0",
                        f'sinks.sqlite.path="{tmp / f"{name}.db"}"', f'spark.app_name="e2e-{name}-{tag}"'])]
        t = time.time()
        out = _submit("deploy", args, tmp / f"deploy-{name}.log", master, DEPLOY_S, submit_opts)
        times[f"deploy_{name}"] = time.time() - t
        return _totals(out.stdout)

    # Wait for both executors before the first batch (standalone's default is not to wait) and
    # give a task to whichever executor is free (no 3 s wait for a "local" one), so the check
    # below tests scheduling across workers, not executor start-up races.
    cluster_totals = deploy("cluster", spark_cluster["url"],
                            "--conf spark.scheduler.minRegisteredResourcesRatio=1.0 "
                            "--conf spark.scheduler.maxRegisteredResourcesWaitingTime=120s "
                            "--conf spark.locality.wait=0 --executor-memory 1g")
    local_totals = deploy("local", "local[2]")
    times["total"] = time.time() - t0
    print(f"\n[cluster e2e] sent={sent} cluster={cluster_totals} local={local_totals} "
          f"times={ {k: round(v) for k, v in times.items()} } tmp={tmp}")
    return {"tmp": tmp, "tag": tag, "sent": sent, "live": live, "train_app": train_app,
            "worker_uis": spark_cluster["worker_uis"],
            "cluster": cluster_totals, "local": local_totals,
            "cluster_anomalies": _anomaly_keys(tmp / "cluster.db"), "local_anomalies": _anomaly_keys(tmp / "local.db")}


# ---------------------------------------------------------------- tests
def test_cluster_and_local_find_the_same_anomalies(cluster_run):
    c, lo = cluster_run["cluster"], cluster_run["local"]
    assert c["events"] == lo["events"] == cluster_run["sent"]
    assert c["windows"] == lo["windows"] > 0
    assert c["batches"] >= 2  # several micro-batches, not one lump
    assert cluster_run["cluster_anomalies"], "no anomalies found: the comparison would be empty"
    assert cluster_run["cluster_anomalies"] == cluster_run["local_anomalies"]


def test_train_ran_on_the_cluster(cluster_run):
    app = _history_app(f"{cluster_run['train_app']}-train")
    execs = [e for e in _get_json(f"{HISTORY_UI}/api/v1/applications/{app}/allexecutors") if e["id"] != "driver"]
    assert execs and sum(e["completedTasks"] for e in execs) > 0


def test_scoring_ran_on_both_workers(cluster_run):
    app = _history_app(f"e2e-cluster-{cluster_run['tag']}-deploy")
    api = f"{HISTORY_UI}/api/v1/applications/{app}"
    execs = [e for e in _get_json(f"{api}/allexecutors") if e["id"] != "driver"]
    hosts = {e["id"]: _worker_of(e) for e in execs}  # executor id -> its worker's UI address
    workers = set(hosts.values())
    assert len(execs) >= 2 and len(workers) == len(execs) and workers <= cluster_run["worker_uis"], \
        f"expected one executor on each worker {cluster_run['worker_uis']}, got {hosts}"
    assert all(e["completedTasks"] > 0 for e in execs), {e["id"]: e["completedTasks"] for e in execs}
    # The plan shape the scoring-task lookup relies on.
    assert _state_feeds_udf_directly(api), "no plan with TransformWithStateInPySpark -> ArrowEvalPython"
    scoring = _scoring_tasks(api)
    per_exec: dict[str, int] = {}
    for t in scoring:
        per_exec[t["executorId"]] = per_exec.get(t["executorId"], 0) + t["taskMetrics"]["shuffleReadMetrics"]["recordsRead"]
    print(f"\nchunks scored per executor: {per_exec} (executor -> worker: {hosts})")
    # Both executors took a share of the chunks (state buckets' readings). That every reading
    # was scored once is checked on the job's counts (test_cluster_and_local_find_the_same_anomalies).
    assert set(per_exec) == set(hosts) and all(n > 0 for n in per_exec.values()), per_exec
