"""Fault injection: what the deploy job survives, each fault measured against an uninterrupted run.

    make bench-faults                                   # every scenario (scripts/bench.sh faults)
    .venv/bin/python benchmarks/faults.py --quick       # the short ones on a tiny feed (make test)
    .venv/bin/python benchmarks/faults.py --only sigkill,disk-full [--keep] [--json FILE]

The runner starts its own Kafka, PostgreSQL and S3 server (``scripts/services/``, on ports the
kernel picks, state in a fresh folder of the system's temp dir or ``--cache-dir``), so it never
meets the suite's services, a developer's, or another run's, and it stops everything it started
at the end, also after an error or a SIGTERM (``--cleanup --cache-dir DIR`` ends what a runner
that was SIGKILLed left). It trains (once, cached in ``models/bench-faults``) a model on the
simulator's network, then, per scenario:

1. produces the feed to a fresh topic: 20 sensors x 2 days of 5-minute readings (``--quick``:
   4 sensors, 1 day, see ``QUICK``) with about 1 % malformed lines mixed in (not JSON, binary, empty, null,
   bad fields), keyed by sensor, 2 partitions;
2. runs the deploy job (``sentinel deploy`` or ``spark-submit jobs/deploy.py``, a subprocess in
   its own process group) with its own checkpoint, SQLite file, PostgreSQL schema, S3 prefix
   and alert topic, injects the fault, and restarts the job from its checkpoint whenever it
   exits with an error (as a supervisor would) until it completes (idle);
3. compares every store and the alert topic with the **reference**: the same events through
   one uninterrupted job (run once, on its own copy of the topic and its own stores).

Scenarios:

- ``sigkill``: SIGKILL of the job's process group twice (``--long``: three times) at random points, one of them
  while the sinks write (a micro-batch already in the SQLite store, not yet committed by Spark);
- ``postgres-down``: PostgreSQL stopped for 30 s (``--long``: 60 s) mid-stream (``postgres.sh stop`` / ``start``):
  the sink's retries appear in the log, the batch fails after them, the job exits with one
  sentence and is restarted until it completes;
- ``s3-down``: the S3 endpoint down for 30 s (60 s), the same way. moto keeps objects in memory only
  (stopping it would delete the store itself, which real S3 or MinIO never do), so the endpoint
  the job uses is a TCP proxy in front of moto, and "down" is the proxy stopped: connections
  refused, data kept;
- ``kafka-restart``: the broker restarted mid-stream (``kafka.sh restart``);
- ``malformed-flood``: a separate producer process sends 5,000 bad lines/s for 30 s (60 s) (not JSON,
  binary, 1 MB lines, NaN/Infinity, hostile sensor ids, timestamps after 2099) while the valid
  feed flows; every bad line must be a reject, the 1 MB ones ``too_large`` and kept truncated
  to ``data.max_line_bytes``, and the job must never stop;
- ``disk-full``: the SQLite store on a small tmpfs, filled mid-stream: the batch fails with one
  sentence naming the store and the fix, nothing of it is in the file (its transaction rolled
  back), and after the space is freed the restarted job completes.

``--quick`` (make test, tests/e2e/test_faults.py) runs one chain on 4 sensors x 1 day: the
reference first (a reference beside the first attempt was tried: on a loaded 2-core machine
both slowed past the attempt timeout), a SIGKILL while the sinks write batch 1, PostgreSQL
down for 5 s (less than the sink's 6 retries: the job carries on), the SQLite disk full (root
only): 3 attempts. Each attempt is a Spark start-up: 12 to 18 minutes in all on a 2-core
machine at load 3 to 12 (docs/faults.md), over the 4 minutes make test would want.

Checked per scenario: events sent = the sum of ``events`` in each store's ``batches`` table,
and there scored + warm-up + rejects = events; in every store the anomaly keys and the
incidents' stream-owned fields (wall-clock fields left out) equal the reference's, no anomaly
twice; rejects equal the reference's (plus, for the flood, exactly the bad lines sent, by
reason); on the alert topic (read_committed) the reference's anomalies each once, and each
incident event once. Printed as a table, written as JSON (``reports/faults.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

SCENARIOS = ("sigkill", "postgres-down", "s3-down", "kafka-restart", "malformed-flood", "disk-full")
# make test (--quick): the three short faults one after the other on one job, on a tiny feed: a
# SIGKILL while the sinks write, PostgreSQL down for 15 s, the disk full (see docs/faults.md)
QUICK_CHAIN = "sigkill+postgres-down+disk-full"
STORES = ("sqlite", "postgres", "s3")
BUCKET = "sentinel-faults"
PARTITIONS = 2
IDLE_S = 5.0
# The incidents' stream-owned fields compared with the reference (detected_at, updated_at: wall
# clock; batch_id: batch boundaries differ when the feed is live).
INCIDENT_FIELDS = ["incident_id", "kind", "status", "zone", "sensors", "first_sensor", "opened_at", "last_seen",
                   "closed_at", "peak_severity", "readings", "explanation", "muted", "model_version"]
# A store outage must fail the batch within this long (the sink's retries, PostgreSQL's 15.5 s of
# back-off or botocore's, plus the batch and the job's shutdown): longer is a hang.
FAILURE_BOUND_S = 120.0


@dataclass(frozen=True)
class Plan:
    """The load and fault sizes of one mode (full or ``--quick``)."""

    name: str
    sensors: int
    days: float
    seed: int
    start: str                 # first event time of the feed
    anomalies_per_week: float  # injected episodes per sensor and week
    bad_rate: float            # malformed lines mixed into the feed
    max_offsets: int           # source.kafka.max_offsets_per_trigger: sets the number of micro-batches
    kills: int                 # SIGKILLs in the sigkill scenario
    outage_s: float            # PostgreSQL / S3 down for this long
    flood_rate: float          # bad lines per second in the flood ...
    flood_s: float             # ... for this long
    big_every: int             # every big_every-th flood line is a 1 MB line
    tmpfs_mb: int              # size of the disk-full scenario's tmpfs
    pg_retries: int            # sinks.postgres.retries (the product default is 5)
    model: str                 # cached bundle under models/
    pg_survive: bool = False   # PostgreSQL back within the sink's retries (no failed batch)
    train: dict = field(default_factory=dict)
    train_overrides: tuple = ()
    attempt_timeout_s: float = 900.0  # an attempt running longer is a hang (killed, scenario fails)


# make bench-faults: every scenario in about 15-25 minutes on 2 cores (each restart is a Spark
# start-up, a minute or more); --long: the sizes of issue 19 (3 SIGKILLs, 60 s outages and flood).
FULL = Plan("full", sensors=20, days=2, seed=7, start="2026-01-19T00:00:00Z", anomalies_per_week=3.0, bad_rate=0.01,
            max_offsets=400, kills=2, outage_s=30, flood_rate=5000, flood_s=30, big_every=5000, tmpfs_mb=64,
            pg_retries=5, model="bench-faults",
            train=dict(n_sensors=20, days=3, interval_s=300, seed=7, start="2026-01-16T00:00:00Z",
                       anomalies_per_sensor_week=0.0),
            train_overrides=("train.report=false", "model.epochs=4", "model.max_train_windows=40000"))
LONG = replace(FULL, kills=3, outage_s=60, flood_s=60)
# --quick: 4 sensors x 1 day in 12 batches of 100; PostgreSQL down 5 s against 6 retries (31.5 s
# of back-off): the sink's retries carry the batch over the outage (the failing path, retries
# exhausted, is the full run's postgres-down and tests/unit/test_sink_errors.py).
QUICK = Plan("quick", sensors=4, days=1, seed=3, start="2026-01-12T00:00:00Z", anomalies_per_week=14.0,
             bad_rate=0.01, max_offsets=100, kills=1, outage_s=5, flood_rate=1000, flood_s=10, big_every=1000,
             tmpfs_mb=16, pg_retries=6, pg_survive=True, model="bench-faults-quick",
             train=dict(n_sensors=4, days=4, interval_s=300, seed=3, start="2026-01-08T00:00:00Z",
                        anomalies_per_sensor_week=0.0),
             train_overrides=("train.report=false", "window.length=16", "window.stride=2", "model.units=12",
                              "model.latent=4", "model.epochs=4", "model.batch_size=128",
                              "threshold.quantile=0.999", "threshold.margin=1.5"),
             attempt_timeout_s=600.0)


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class ScenarioError(RuntimeError):
    """A scenario could not be carried out (a service would not start, the job hung)."""


# ---------------------------------------------------------------- what the runner started
# Every process group the runner starts (deploy attempts, the flood producer, the S3 proxy) is
# noted as a file <state>/children/<pid> holding a text its command line must contain, so that
# ``--cleanup`` (what tests/e2e/test_faults.py runs when the runner itself was killed) ends
# exactly those, and the runner's own ``finally`` ends those still alive.
CHILDREN: Path | None = None
STOPPING = threading.Event()   # set when the runner unwinds: timers and waits give up


def track(proc: subprocess.Popen, marker: str) -> subprocess.Popen:
    if CHILDREN is not None:
        CHILDREN.mkdir(parents=True, exist_ok=True)
        (CHILDREN / str(proc.pid)).write_text(marker)
    return proc


def untrack(proc: subprocess.Popen) -> None:
    if CHILDREN is not None:
        (CHILDREN / str(proc.pid)).unlink(missing_ok=True)


def kill_children(children: Path | None) -> int:
    """SIGKILL every noted process group still alive whose command line still carries its
    marker (a reused pid is left alone); returns how many were killed."""
    n = 0
    for f in sorted(children.glob("*")) if children is not None and children.is_dir() else []:
        try:
            cmd = Path(f"/proc/{int(f.name)}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            cmd = ""
        if cmd and f.read_text() in cmd:
            try:
                os.killpg(int(f.name), signal.SIGKILL)
                n += 1
            except (ProcessLookupError, PermissionError):
                pass
        f.unlink(missing_ok=True)
    return n


def cleanup_main(state: Path) -> int:
    """``--cleanup --cache-dir STATE``: end what a runner using STATE left (its children, its
    services); the safety net of a runner that was itself SIGKILLed."""
    killed = kill_children(state / "children")
    services = Services(state / "services")
    for name in ("kafka", "postgres", "s3"):
        if (state / "services" / name).exists() and services.running(name):
            services.script(name, "stop")
            killed += 1
    log(f"cleanup of {state}: {killed} process group(s) or service(s) stopped")
    return 0


def _terminate(signum, _frame):
    """SIGTERM/SIGHUP: unwind (the ``finally`` blocks stop the job, the producers, the services)."""
    STOPPING.set()
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- services
def free_port(preferred: int = 0) -> int:
    """``preferred`` if nothing listens there (0: none), else a free port the kernel picks."""
    for port in dict.fromkeys((preferred, 0)):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no conflict
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise ScenarioError("no free TCP port on 127.0.0.1")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Services:
    """The runner's own Kafka, PostgreSQL and S3 server (scripts/services/*.sh with its own
    ports and ``SENTINEL_CACHE_DIR``), plus the TCP proxy the jobs reach S3 through."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.ports: dict[str, int] = {}
        self.proxy: subprocess.Popen | None = None
        self.proxy_log = cache / "s3-proxy.log"

    def script_env(self) -> dict:
        env = dict(os.environ)
        for k in ("KAFKA_HOME_DIR", "PG_HOME_DIR", "PG_DATA_DIR", "S3_HOME_DIR", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT",
                  "PGPORT", "S3_PORT"):  # a caller's own services, never touched
            env.pop(k, None)
        env.update(SENTINEL_CACHE_DIR=str(self.cache), SENTINEL_VENV=str(ROOT / ".venv"))
        if self.ports:
            env.update(KAFKA_PORT=str(self.ports["kafka"]), KAFKA_CONTROLLER_PORT=str(self.ports["controller"]),
                       PGPORT=str(self.ports["postgres"]), S3_PORT=str(self.ports["s3"]))
        return env

    def script(self, name: str, action: str, timeout: float = 300) -> float:
        """Run ``scripts/services/<name>.sh <action>``; returns its seconds. Raises ScenarioError."""
        t0 = time.time()
        p = subprocess.run(["bash", str(ROOT / "scripts" / "services" / f"{name}.sh"), action], env=self.script_env(),
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0 and not (action == "status" and p.returncode == 3):
            raise ScenarioError(f"{name}.sh {action} failed ({p.returncode}): {(p.stderr or p.stdout)[-1500:]}")
        return time.time() - t0

    def running(self, name: str) -> bool:
        return subprocess.run(["bash", str(ROOT / "scripts" / "services" / f"{name}.sh"), "status"],
                              env=self.script_env(), capture_output=True).returncode == 0

    def start(self) -> dict:
        """Stop what an earlier run of the runner left behind (these dirs are the runner's own),
        pick ports, start everything. Returns start-up seconds per service."""
        self.cache.mkdir(parents=True, exist_ok=True)
        for name in ("kafka", "postgres", "s3"):
            if self.running(name):
                log(f"stopping the {name} an earlier fault run left running")
                self.script(name, "stop")
        # ports the kernel picks: two runs at once (CI clones, make test beside make bench-faults)
        # never meet, nor the suite's or the developers' services
        self.ports = {k: free_port() for k in ("kafka", "controller", "postgres", "s3", "proxy")}
        self._kafka_fresh()
        took: dict[str, float] = {}
        errors: list[BaseException] = []

        def start(name: str) -> None:  # the three at once: Kafka's JVM start is most of the wait
            try:
                took[name] = round(self.script(name, "start"), 1)
            except BaseException as exc:  # noqa: BLE001 (re-raised below, in the runner's thread)
                errors.append(exc)
        threads = [threading.Thread(target=start, args=(n,)) for n in ("kafka", "postgres", "s3")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        self.start_proxy()
        log("services up: kafka 127.0.0.1:{kafka}, postgres :{postgres}, s3 :{s3} (jobs use the proxy :{proxy})"
            .format(**self.ports))
        return took

    def _kafka_fresh(self) -> None:
        """A fresh broker each run (its log dirs only grow otherwise), reusing the repository's
        downloaded jars when there are some (saves the Maven fetch)."""
        version = os.environ.get("KAFKA_VERSION", "3.9.2")
        home = self.cache / "kafka" / version
        shutil.rmtree(home / "data", ignore_errors=True)
        main_cache = Path(os.environ.get("SENTINEL_CACHE_DIR") or ROOT / ".cache")
        main_libs = main_cache / "kafka" / version / "libs"
        libs = home / "libs"
        if not (main_libs / ".complete").exists() and main_cache.resolve() != self.cache.resolve():
            env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_HOME_DIR",)}
            env["SENTINEL_CACHE_DIR"] = str(main_cache)  # fetched once there, not per run
            subprocess.run(["bash", str(ROOT / "scripts" / "services" / "kafka.sh"), "fetch"], env=env, check=True,
                           timeout=1800)
        if not libs.exists() and (main_libs / ".complete").exists():
            home.mkdir(parents=True, exist_ok=True)
            libs.symlink_to(main_libs)

    def stop(self) -> None:
        self.stop_proxy()
        for name in ("kafka", "postgres", "s3"):
            try:
                self.script(name, "stop")
            except (ScenarioError, subprocess.TimeoutExpired) as exc:
                log(f"could not stop {name}: {exc}")

    # the S3 endpoint the jobs use: a proxy to moto, so that "down" does not wipe moto's memory
    def start_proxy(self) -> None:
        self.proxy = track(subprocess.Popen([sys.executable, __file__, "--proxy", str(self.ports["proxy"]),
                                             str(self.ports["s3"])], stdout=open(self.proxy_log, "ab"),
                                            stderr=subprocess.STDOUT, start_new_session=True),
                           f"--proxy {self.ports['proxy']}")
        deadline = time.time() + 30
        while not listening(self.ports["proxy"]):
            if self.proxy.poll() is not None or time.time() > deadline:
                raise ScenarioError(f"the S3 proxy did not start (log: {self.proxy_log})")
            time.sleep(0.1)

    def stop_proxy(self) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            os.killpg(self.proxy.pid, signal.SIGKILL)  # its connections drop at once, like a dead endpoint
            self.proxy.wait(10)
        if self.proxy is not None:
            untrack(self.proxy)
        self.proxy = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['kafka']}"

    @property
    def s3_direct(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    def pg_env(self) -> dict:
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.ports["postgres"]), "PGUSER": "sentinel",
                "PGDATABASE": "sentinel", "PGPASSWORD": "sentinel"}

    def job_env(self) -> dict:
        """The environment every deploy job gets: the runner's services only, never a caller's."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PG", "SENTINEL_", "AWS_", "KAFKA_", "S3_", "SPARK_"))}
        venv_bin = str(ROOT / ".venv" / "bin")
        env.update(self.pg_env())
        env.update(PATH=f"{venv_bin}:{env.get('PATH', '')}", PYSPARK_PYTHON=str(ROOT / ".venv/bin/python"),
                   PYSPARK_DRIVER_PYTHON=str(ROOT / ".venv/bin/python"), SPARK_CONF_DIR=str(ROOT / "conf"),
                   SPARK_LOCAL_IP="127.0.0.1", TF_CPP_MIN_LOG_LEVEL="2", AWS_ACCESS_KEY_ID="test",
                   AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1", PYTHONUNBUFFERED="1")
        return env


def proxy_main(listen: int, target: int) -> int:
    """A TCP forwarder 127.0.0.1:listen -> 127.0.0.1:target (the S3 endpoint the jobs use)."""
    srv = socket.create_server(("127.0.0.1", listen))

    def pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve(client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", target), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        pump(upstream, client)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------- model and feed
def bundle_for(plan: Plan) -> Path:
    """The cached model of this plan (models/bench-faults[-quick]), trained in a child process
    the first time (TensorFlow never loads in the runner)."""
    from sentinel.detect.model import resolve_bundle
    cache = ROOT / "models" / plan.model
    try:
        return Path(resolve_bundle(str(cache))).resolve()
    except FileNotFoundError:
        pass
    log(f"training the fault runner's model on {plan.train['days']} days of {plan.sensors} sensors (cached in {cache})")
    subprocess.run([sys.executable, __file__, "--train", plan.name], check=True)
    return Path(resolve_bundle(str(cache))).resolve()


def train_main(plan: Plan) -> int:
    from sentinel.config import load_settings
    from sentinel.detect.training import fit_bundle
    from sentinel.ingest.synthetic import simulate
    net = simulate(**plan.train)
    fit_bundle(net.readings.rename(columns={"timestamp": "event_time"}), load_settings(None, list(plan.train_overrides)),
               ROOT / "models" / plan.model / "v1")
    return 0


# Malformed messages mixed into the feed besides the simulator's own (feed.BAD_LINES): binary,
# empty, a null value.
FEED_EXTRA_BAD = [b"\xff\xfe\x00 garbage \x80\x81", b"", None]


def feed_messages(plan: Plan) -> list[tuple]:
    """The feed: (key, value) per message, in time order, malformed lines mixed in."""
    from sentinel.config import load_settings
    from sentinel.ingest.feed import event_lines
    from sentinel.ingest.kafka import keyed_lines
    from sentinel.ingest.synthetic import simulate
    live = simulate(plan.sensors, plan.days, 300, plan.seed, plan.start, plan.anomalies_per_week)
    msgs = list(keyed_lines(event_lines(live.readings, load_settings().data, plan.bad_rate, plan.seed)))
    step = len(msgs) // (len(FEED_EXTRA_BAD) + 1)
    for i, bad in enumerate(FEED_EXTRA_BAD):
        msgs.insert(step * (i + 1), (None, bad))
    return msgs


def flood_pool(seed: int = 19) -> list[bytes]:
    """The flood's bad lines (cycled): not JSON, binary, NaN/Infinity, hostile ids, timestamps
    after 2099. None of them can be scored; each must become a reject."""
    rng = random.Random(seed)
    ok_time = '"timestamp": "2026-01-19T06:00:00Z"'
    pool: list[bytes] = []
    for i in range(120):  # not JSON
        pool += [f"not json {i} {rng.random()}".encode(), b"{" * rng.randint(1, 40),
                 f'{{"sensor_id": "PT-0001", {ok_time}, "pressure": 4{i}'.encode(),
                 b"<html><body>502 Bad Gateway</body></html>", f"sensor=PT-0002;pressure={i}".encode()]
    for _ in range(200):  # binary
        pool.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(8, 300))))
    for v in ("NaN", "Infinity", "-Infinity", "1e999", '"NaN"', "null", "[]"):  # not a finite number
        for s in range(1, 21):
            pool.append(f'{{"sensor_id": "PT-{s:04d}", {ok_time}, "pressure": {v}}}'.encode())
    hostile = ["PT-0001\x00", "../../etc/passwd\x07", "'; DROP TABLE anomalies; --\x1b",
               "PT-0003\u202e", "x" * 129, "\t", "", "   ", "PT\x7f0004", "\ud800"]
    for h in hostile:  # hostile sensor ids (control characters, overlong, empty, not text)
        pool.append(json.dumps({"sensor_id": h, "timestamp": "2026-01-19T06:00:00Z", "pressure": 40.0}).encode())
    for h in ('{"$gt": ""}', '["PT-0001"]', "true", "1.5", "null"):
        pool.append(f'{{"sensor_id": {h}, {ok_time}, "pressure": 40.0}}'.encode())
    for t in ('"2100-01-01T00:00:00Z"', '"9999-12-31T23:59:59Z"', '"+275760-09-13T00:00:00Z"', "4102444800000",
              "1e16", '"2126-01-19T06:00:00+00:00"'):  # in the future beyond what the parser accepts
        for s in range(1, 21):
            pool.append(f'{{"sensor_id": "PT-{s:04d}", "timestamp": {t}, "pressure": 40.0}}'.encode())
    rng.shuffle(pool)
    return pool


def big_line(size: int = 1 << 20) -> bytes:
    """A 1 MiB line that would be a valid event but for its size (it must be too_large)."""
    head = b'{"sensor_id": "PT-0001", "timestamp": "2026-01-19T06:00:00Z", "pressure": 40.0, "pad": "'
    return head + b"A" * (size - len(head) - 2) + b'"}'


def flood_line(i: int, pool: list[bytes], big_every: int) -> bytes:
    return big_line() if big_every and i % big_every == big_every - 1 else pool[i % len(pool)]


def flood_main(bootstrap: str, topic: str, rate: float, seconds: float, big_every: int, out: Path) -> int:
    """The flood producer (its own process): rate x seconds bad lines, no key; writes what it sent."""
    from sentinel.ingest.kafka import produce_lines
    pool, n = flood_pool(), int(rate * seconds)
    t0 = time.time()
    sent = produce_lines(((None, flood_line(i, pool, big_every)) for i in range(n)), bootstrap, topic, rate,
                         partitions=None, progress_every=0, options={"message.max.bytes": 4_000_000})
    took = time.time() - t0
    out.write_text(json.dumps({"sent": sent, "seconds": took, "rate": sent / took if took else 0.0,
                               "big_lines": sum(1 for i in range(n) if big_every and i % big_every == big_every - 1)}))
    return 0


def expected_flood_rejects(n: int, big_every: int, data) -> tuple[Counter, Counter]:
    """Reject reasons (the stable part before ':') and (raw, reason) pairs that ``n`` flood
    lines must give, from the parser's definition (``events.parse_line``)."""
    from sentinel.ingest.events import parse_line
    pool = flood_pool()
    parsed = [parse_line(b, data) for b in pool]
    big = parse_line(big_line(), data)
    for p in parsed + [big]:
        if p[4] is None:
            raise ScenarioError(f"flood line {p[0][:80]!r} is accepted by the parser: it is not a bad line")
    counts = Counter()
    for i in range(n):
        counts[-1 if big_every and i % big_every == big_every - 1 else i % len(pool)] += 1
    reasons, exact = Counter(), Counter()
    for idx, c in counts.items():
        p = big if idx == -1 else parsed[idx]
        reasons[p[4].split(":")[0]] += c
        exact[(p[0], p[4])] += c
    return reasons, exact


# ---------------------------------------------------------------- one job's world
@dataclass
class Run:
    """A deploy job's checkpoint, stores and alert topic (one per scenario, one for the reference)."""

    name: str
    dir: Path
    tag: str
    sqlite: Path | None = None

    def __post_init__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sqlite = self.sqlite or self.dir / "store.db"
        slug = re.sub(r"[^A-Za-z0-9-]", "_", self.name)   # a topic, schema and prefix name
        self.topic, self.alerts = f"faults-{self.tag}-{slug}", f"faults-{self.tag}-{slug}-alerts"
        self.schema, self.prefix = f"faults_{self.tag}_{slug}".replace("-", "_"), f"{self.tag}/{slug}"
        self.checkpoint = self.dir / "checkpoint"

    def config(self, services: Services, plan: Plan, bundle: Path, max_offsets: int | None = None) -> Path:
        q = json.dumps
        path = self.dir / "job.toml"
        path.write_text(f"""
[source]
type = "kafka"
[source.kafka]
bootstrap_servers = {q(services.bootstrap)}
topic = {q(self.topic)}
starting_offsets = "earliest"
max_offsets_per_trigger = {max_offsets or plan.max_offsets}
alerts_topic = {q(self.alerts)}
[stream]
model = {q(str(bundle))}
checkpoint = {q(str(self.checkpoint))}
trigger_s = 0.5
[sinks]
enabled = ["sqlite", "postgres", "s3"]
[sinks.sqlite]
path = {q(str(self.sqlite))}
[sinks.postgres]
schema = {q(self.schema)}
retries = {plan.pg_retries}
[sinks.s3]
bucket = {q(BUCKET)}
prefix = {q(self.prefix)}
endpoint_url = {q(services.s3_endpoint)}
[spark]
master = "local[2]"
shuffle_partitions = 2
conf = {{ "spark.ui.enabled" = "false", "spark.local.dir" = {q(str(self.dir / "spark-local"))} }}
""")
        return path

    def commits(self) -> int:
        """Micro-batches Spark has committed (the newest id + 1; Spark prunes old files)."""
        d = self.checkpoint / "commits"
        ids = [int(p.name) for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []
        return max(ids) + 1 if ids else 0

    def sqlite_newest_batch(self) -> int:
        """Newest batch row in the SQLite store (-1: none), read-only so that the job never waits."""
        try:
            con = sqlite3.connect(f"file:{self.sqlite}?mode=ro", uri=True, timeout=1)
            try:
                v = con.execute("SELECT max(batch_id) FROM batches").fetchone()[0]
                return -1 if v is None else int(v)
            finally:
                con.close()
        except sqlite3.Error:
            return -1


@dataclass
class Attempt:
    entry: str
    log: Path
    started: float
    commits_at_start: int = 0
    rc: int | None = None
    ended: float = 0.0
    killed: bool = False
    error: str = ""      # the job's one-sentence error (its "error: ..." line), if it printed one

    @property
    def seconds(self) -> float:
        return round(self.ended - self.started, 1)

    @property
    def failed(self) -> bool:
        """Exited with an error by itself (not killed by the runner)."""
        return self.rc not in (0, None) and not self.killed


class Job:
    """Start, watch, kill and restart one Run's deploy job (each attempt in its own process group)."""

    def __init__(self, run: Run, cfg: Path, env: dict, plan: Plan, idle_s: float = IDLE_S):
        self.run, self.cfg, self.env, self.plan, self.idle_s = run, cfg, env, plan, idle_s
        self.attempts: list[Attempt] = []
        self.proc: subprocess.Popen | None = None

    def start(self, entry: str = "sentinel") -> None:
        n = len(self.attempts) + 1
        logf = self.run.dir / f"attempt-{n}.log"
        if entry == "spark-submit":
            cmd = [str(ROOT / ".venv/bin/spark-submit"), "jobs/deploy.py"]
        else:
            cmd = [str(ROOT / ".venv/bin/sentinel"), "deploy"]
        cmd += ["--config", str(self.cfg), "--idle-timeout", str(self.idle_s)]
        commits = self.run.commits()
        with open(logf, "wb") as out:
            self.proc = track(subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                               start_new_session=True), str(self.cfg))
        self.attempts.append(Attempt(entry, logf, time.time(), commits))

    def kill(self) -> None:
        """SIGKILL the attempt's whole process group: driver JVM, Python driver, Python workers."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(60)
        self.attempts[-1].killed = True

    def poll(self) -> int | None:
        return self.proc.poll()

    def finish(self, rc: int) -> Attempt:
        untrack(self.proc)
        a = self.attempts[-1]
        a.rc, a.ended = rc, time.time()
        errors = [ln for ln in a.log.read_text(errors="replace").splitlines() if ln.startswith("error: ")]
        a.error = errors[-1][len("error: "):] if errors else ""
        if a.failed:
            log(f"    {self.run.name}: attempt {len(self.attempts)} exited {rc} after {a.seconds:.0f} s: "
                f"{a.error or 'no one-sentence error (see ' + str(a.log) + ')'}"[:300])
        return a

    def logs(self, attempts=None) -> str:
        return "\n".join(a.log.read_text(errors="replace") for a in (self.attempts if attempts is None else attempts))

    def supervise(self, faults: list, entries=("sentinel",), restart_delay: float = 2.0, max_attempts: int = 30,
                  before_restart=None) -> None:
        """Run the job until an attempt exits 0 with every fault over, restarting it from its
        checkpoint after every failure or kill, as a supervisor would. The faults are injected
        one after the other from a tick every 20 ms (each once the one before it is over).
        Raises ScenarioError when an attempt runs past the plan's timeout (a hang), when the stream
        ends before a fault could be injected, or after ``max_attempts``. ``before_restart``: called
        before each restart (``--quick``: waits for the reference running beside the first attempt)."""
        while True:
            if self.attempts and before_restart is not None:
                before_restart()
            self.start(entries[min(len(self.attempts), len(entries) - 1)])
            while self.poll() is None:
                for f in faults:
                    f.watch_recovery()
                current = next((f for f in faults if not f.done), None)
                if current is not None:
                    current.tick(self)
                if self.poll() is not None:
                    break
                if time.time() - self.attempts[-1].started > self.plan.attempt_timeout_s:
                    self.kill()
                    self.finish(self.poll())
                    raise ScenarioError(f"{self.run.name}: attempt {len(self.attempts)} still running after "
                                        f"{self.plan.attempt_timeout_s:.0f} s: the job hangs (log {self.attempts[-1].log})")
                time.sleep(0.02)
            a = self.finish(self.poll())
            for f in faults:
                f.watch_recovery()
                if f.triggered is not None and not f.done:
                    f.after_exit(self, a)
            pending = next((f for f in faults if not f.done), None)
            if a.rc == 0:
                if pending is None:
                    return
                if pending.triggered is None:
                    raise ScenarioError(f"{self.run.name}: the stream ended after {self.run.commits()} batches, before "
                                        f"{pending.label} (planned after {pending.at}) could be injected")
            if len(self.attempts) >= max_attempts:
                raise ScenarioError(f"{self.run.name}: {max_attempts} attempts and still not complete "
                                    f"(last: {a.error or a.log})")
            if not a.killed:
                time.sleep(restart_delay)


# ---------------------------------------------------------------- faults
class Fault:
    """One fault injected into a running job. It arms once ``at`` batches are committed and the
    faults before it are over, is triggered from the supervisor's tick, and is ``done`` when it is
    over (the service back, the space freed). ``checks`` says what it had to show."""

    label = "fault"
    same_batches = True   # the job reads the reference's backlog: batch plans must match it

    def __init__(self, at: int):
        self.at = at
        self.triggered: float | None = None
        self.done = False
        self.info: dict = {"planned_after_commits": at}

    def bind(self, bench: "Bench", run: Run) -> None:
        self.bench, self.run = bench, run

    def ready(self, job: Job) -> bool:
        """Armed: enough committed batches, and this attempt committed one itself (a restarted job
        is not hit again before it made progress)."""
        c = self.run.commits()
        return c >= self.at and c > job.attempts[-1].commits_at_start

    def tick(self, job: Job) -> None:
        if self.triggered is None and self.ready(job):
            self.triggered = time.time()
            self.info["after_commits"] = self.run.commits()
            self.trigger(job)

    over_at: float | None = None  # when the fault ended (the kill, the service back, the space freed)

    def watch_recovery(self) -> None:
        """``recovery_s``: from the fault's end to the job's first commit of a batch it had not
        committed when the fault began (a restart's start-up and replay included)."""
        if self.over_at is not None and "recovery_s" not in self.info and "after_commits" in self.info \
                and self.run.commits() > self.info["after_commits"]:
            self.info["recovery_s"] = round(time.time() - self.over_at, 1)

    def trigger(self, job: Job) -> None:
        raise NotImplementedError

    def after_exit(self, job: Job, attempt: Attempt) -> None:
        """An attempt ended while this fault was on."""

    def cleanup(self) -> None:
        """Wait for what the fault started (timers, threads, processes)."""

    def checks(self, job: Job) -> dict:
        return {}

    def extra(self) -> dict:
        return {}


class Kill(Fault):
    """SIGKILL of the job's process group at a random moment of the batch after ``at`` commits, or
    (``while_sinks``) while the sinks write: a batch already in the SQLite store, not yet committed."""

    label = "sigkill"

    def __init__(self, at: int, while_sinks: bool, rng: random.Random):
        super().__init__(at)
        self.while_sinks, self.rng = while_sinks, rng
        self.armed: float | None = None
        self.info["while_sinks"] = while_sinks

    def tick(self, job: Job) -> None:
        if self.done or not self.ready(job):
            return
        c = self.run.commits()
        if self.while_sinks:
            if self.run.sqlite_newest_batch() >= c and self.run.commits() == c:
                self.kill(job, c, True)
            elif c > self.at + 4:  # the moment was missed five batches in a row: kill anyway
                self.kill(job, c, False)
        elif self.armed is None:
            self.armed = time.time() + self.rng.uniform(0.0, 1.5)  # somewhere in the next batch
        elif time.time() >= self.armed:
            self.kill(job, c, False)

    def kill(self, job: Job, c: int, in_flight: bool) -> None:
        self.triggered = time.time()
        job.kill()
        self.over_at = time.time()
        after = self.run.commits()
        stored = self.run.sqlite_newest_batch()
        self.info.update(after_commits=after, attempt=len(job.attempts), store_newest_batch=stored,
                         in_store_uncommitted=in_flight and after == c and stored >= after)
        log(f"    SIGKILL after {after} committed batches"
            + (f", while the sinks wrote batch {c} (in the SQLite store, not committed)"
               if self.info["in_store_uncommitted"] else ""))
        self.done = True

    def checks(self, job: Job) -> dict:
        if not self.while_sinks:
            return {}
        return {"one SIGKILL while the sinks wrote (batch stored, not committed)": bool(
            self.info.get("in_store_uncommitted"))}


class StoreDown(Fault):
    """PostgreSQL (``postgres.sh stop`` / ``start``) or the S3 endpoint (the proxy) down for
    ``seconds`` mid-stream: the sink's retries show in the log, the batch fails after them, the
    job exits with one sentence; the supervisor restarts it (failing again at start-up while the
    store is down) until it completes.

    ``survive``: an outage shorter than the sink's retries (``--quick``: PostgreSQL down 5 s, 6
    retries over 31.5 s): the retries show in the log and the same attempt carries on, no batch
    fails, no restart."""

    def __init__(self, at: int, service: str, seconds: float, survive: bool = False):
        super().__init__(at)
        self.service, self.seconds, self.survive = service, seconds, survive
        self.label = f"{service}-down"
        self.up_at: float | None = None
        self.timer: threading.Timer | None = None
        self.info["survive"] = survive

    def trigger(self, job: Job) -> None:
        if self.service == "postgres":
            self.bench.services.script("postgres", "stop")
        else:
            self.bench.services.stop_proxy()
        self.triggered = time.time()
        self.job, self.info["attempt"] = job, len(job.attempts)
        log(f"    {self.service} stopped after {self.info['after_commits']} committed batches, for {self.seconds:.0f} s")
        self.timer = threading.Timer(self.seconds, self.restore)
        self.timer.daemon = True  # the runner unwinding (SIGTERM) must not wait for it
        self.timer.start()

    def ready(self, job: Job) -> bool:
        # a reference running beside the job (--quick) must never see the outage
        return super().ready(job) and self.bench.reference_done()

    def restore(self) -> None:
        if STOPPING.is_set():
            return
        if self.service == "postgres":
            self.bench.services.script("postgres", "start")
        else:
            self.bench.services.start_proxy()
        self.up_at = self.over_at = time.time()
        self.info["down_s"] = round(self.up_at - self.triggered, 1)
        self.info["attempt_at_up"] = len(self.job.attempts) if self.job.poll() is None else None
        log(f"    {self.service} back after {self.info['down_s']} s")
        self.done = True

    def cleanup(self) -> None:
        if self.timer is not None:
            if STOPPING.is_set():
                self.timer.cancel()
            self.timer.join()

    def checks(self, job: Job) -> dict:
        if self.triggered is None:
            return {f"{self.label}: injected": False}
        # the attempts the outage hit: running when it began, or started (and failed) while it lasted;
        # a failing one gives up while the store is still down, so ends soon after it is back
        up = self.up_at or time.time()
        during = [a for a in job.attempts if (a.ended or time.time()) >= self.triggered and a.started <= up
                  and (a.ended or time.time()) <= up + 30]
        failed = [a for a in during if a.failed]
        sink = "postgres sink" if self.service == "postgres" else "s3 sink"
        pattern = (r"postgres sink: .* failed \(attempt \d+ of \d+" if self.service == "postgres"
                   else r"s3 sink: .* attempt \d+ of \d+ failed")
        self.info["retry_warnings"] = len(re.findall(pattern, job.logs(during)))
        self.info["errors"] = sorted({a.error for a in failed})
        first = failed[0] if failed else None
        self.info["first_failure_after_s"] = round(first.ended - self.triggered, 1) if first else None
        bound = FAILURE_BOUND_S
        if self.survive:  # the attempt the outage hit ran on (a later fault may end it)
            self.info["retry_warnings"] = len(re.findall(pattern, job.logs([job.attempts[self.info["attempt"] - 1]])))
            sink_errors = [a.error for a in job.attempts if a.error.startswith(sink)]
            self.info["errors"] = sorted(set(sink_errors))
            self.info["attempt_survived"] = self.up_at is not None and not sink_errors \
                and self.info.get("attempt_at_up") == self.info["attempt"]
            return {f"{self.label}: retries visible in the log": self.info["retry_warnings"] >= 1,
                    f"{self.label}: back within the retries, the same attempt carried on (no failed batch)":
                        self.info["attempt_survived"]}
        return {f"{self.label}: retries visible in the log": self.info["retry_warnings"] >= 1,
                f"{self.label}: the batch failed after the retries (job exited with an error)":
                    first is not None and f"{sink}: write of batch" in first.error,
                f"{self.label}: ... within {bound:.0f} s (no hang)": first is not None
                    and self.info["first_failure_after_s"] <= bound,
                f"{self.label}: every failure one sentence naming the {sink}": bool(failed) and all(
                    a.error.startswith(sink) for a in failed),
                f"{self.label}: restarted until it completed": job.attempts[-1].started > self.triggered}


class KafkaRestart(Fault):
    """The broker restarted mid-stream (``kafka.sh restart``: SIGTERM, wait, start)."""

    label = "kafka-restart"

    def __init__(self, at: int):
        super().__init__(at)
        self.thread: threading.Thread | None = None

    def trigger(self, job: Job) -> None:
        log(f"    restarting the Kafka broker after {self.info['after_commits']} committed batches")
        self.thread = threading.Thread(target=self._restart)
        self.thread.start()

    def _restart(self) -> None:
        t = time.time()
        self.bench.services.script("kafka", "restart")
        self.info["restart_s"] = round(time.time() - t, 1)
        self.over_at = time.time()
        log(f"    broker back after {self.info['restart_s']} s")
        self.done = True

    def cleanup(self) -> None:
        if self.thread is not None:
            self.thread.join()

    def checks(self, job: Job) -> dict:
        self.info["errors"] = sorted({a.error for a in job.attempts if a.failed})
        self.info["job_survived_without_restart"] = len(job.attempts) == 1
        return {"kafka-restart: the broker restarted mid-stream": self.triggered is not None
                and self.info.get("after_commits", 10 ** 9) < self.bench.ref_batches and "restart_s" in self.info}


class DiskFull(Fault):
    """The disk holding the SQLite store filled: the batch must fail with one sentence and leave
    nothing of itself in the file; then the space is freed and the job restarted."""

    label = "disk-full"

    def __init__(self, at: int, mnt: Path):
        super().__init__(at)
        self.filler = mnt / "filler"
        self.committed_at_failure = None

    def trigger(self, job: Job) -> None:
        self.info["filler_bytes"] = fill(self.filler)
        log(f"    the disk holding the SQLite store filled after {self.info['after_commits']} committed batches")

    def after_exit(self, job: Job, attempt: Attempt) -> None:
        self.info.update(first_exit=attempt.rc, error=attempt.error)
        m = re.search(r"batch (\d+)", attempt.error)
        self.info["failed_batch"] = int(m.group(1)) if m else None
        self.committed_at_failure = self.run.commits()
        self.filler.unlink(missing_ok=True)   # free the space; the file is checked as the failure left it
        self.over_at = time.time()
        self.info["rows_of_failed_batch"] = half_written(self.run.sqlite, self.info["failed_batch"])
        self.info["integrity"] = integrity(self.run.sqlite)
        log("    space freed; rows of the failed batch in the file: "
            f"{sum(self.info['rows_of_failed_batch'].values()) if self.info['failed_batch'] is not None else '?'}")
        self.done = True

    def checks(self, job: Job) -> dict:
        err, b = self.info.get("error", ""), self.info.get("failed_batch")
        return {"disk-full: the batch failed (the job exited with an error)": self.info.get("first_exit") not in (0, None),
                "disk-full: one sentence naming the SQLite store and the fix": bool(err) and str(self.run.sqlite) in err
                and "free space" in err,
                "disk-full: nothing of the failed batch in the file (rolled back)": b is not None
                and b >= self.committed_at_failure and sum(self.info["rows_of_failed_batch"].values()) == 0,
                "disk-full: the SQLite file intact": self.info.get("integrity") == "ok"}


class Flood(Fault):
    """A producer process of its own sends ``rate`` bad lines/s for ``seconds``, while the rest of
    the valid feed flows (paced over the flood and 10 s more)."""

    label = "malformed-flood"
    same_batches = False  # a live feed: batch boundaries differ from the reference's

    def __init__(self, rest: list, rate: float, seconds: float, big_every: int):
        super().__init__(1)
        self.rest, self.rate, self.seconds, self.big_every = rest, rate, seconds, big_every
        self.proc: subprocess.Popen | None = None
        self.feed: threading.Thread | None = None
        self.valid_sent = 0

    @property
    def done(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None and not self.feed.is_alive()

    @done.setter
    def done(self, value) -> None:  # Fault.__init__ sets it; the producers decide
        pass

    def trigger(self, job: Job) -> None:
        from sentinel.ingest.kafka import produce_lines
        b = self.bench.services.bootstrap
        self.out = self.run.dir / "flood.json"
        feed_rate = len(self.rest) / (self.seconds + 10)
        self.info["valid_rate"] = round(feed_rate, 1)
        log(f"    flood: {self.rate:,.0f} bad lines/s for {self.seconds:.0f} s, the valid feed at {feed_rate:.0f} events/s")
        self.proc = track(subprocess.Popen([sys.executable, __file__, "--flood", b, self.run.topic, str(self.rate),
                                            str(self.seconds), str(self.big_every), str(self.out)],
                                           start_new_session=True, stdout=open(self.run.dir / "flood.log", "wb"),
                                           stderr=subprocess.STDOUT), f"--flood {b} {self.run.topic}")

        def feed():
            self.valid_sent += produce_lines(self.rest, b, self.run.topic, rate=feed_rate, partitions=None,
                                             progress_every=0)
        self.feed = threading.Thread(target=feed)
        self.feed.start()

    def cleanup(self) -> None:
        if self.proc is not None:
            if STOPPING.is_set() and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(self.seconds * 3 + 120)
            untrack(self.proc)
        if self.feed is not None:
            self.feed.join()

    def result(self) -> dict:
        out = getattr(self, "out", None)
        return json.loads(out.read_text()) if out is not None and out.exists() else {
            "sent": 0, "rate": 0.0, "seconds": 0.0, "big_lines": 0}

    def extra(self) -> dict:
        from sentinel.config import load_settings
        r = self.result()
        reasons, pairs = expected_flood_rejects(r["sent"], self.big_every, load_settings().data)
        self.info.update(bad_lines_sent=r["sent"], bad_lines_per_s=round(r["rate"]), flood_s=round(r["seconds"], 1),
                         big_lines=r["big_lines"], expected_reasons=dict(reasons), valid_sent_during=self.valid_sent)
        return {"sent": r["sent"] + self.valid_sent, "extra_reasons": reasons, "extra_pairs": pairs}

    def checks(self, job: Job) -> dict:
        from sentinel.config import load_settings
        r = self.result()
        limit = load_settings().data.max_line_bytes
        lengths = read_sqlite(self.run.sqlite).too_large_lengths
        self.info["too_large_lengths"] = sorted(set(lengths))
        return {"flood: the job never stopped (no restart)": len(job.attempts) == 1,
                "flood: bad lines sent at >= 90 % of the planned rate": r["rate"] >= 0.9 * self.rate,
                "flood: 1 MB lines too_large, kept truncated to data.max_line_bytes":
                    r["big_lines"] > 0 and lengths.count(limit) == r["big_lines"] == len(lengths)}


@contextmanager
def tmpfs(path: Path, mb: int):
    """A ``mb`` MiB tmpfs mounted at ``path`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        raise Skipped("needs root to mount a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise Skipped(f"cannot mount a tmpfs here ({p.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class Skipped(Exception):
    """A scenario this machine cannot run (said why)."""


# ---------------------------------------------------------------- reading the results
def _ts(v) -> str | None:
    import pandas as pd
    if v is None or (isinstance(v, float) and v != v):
        return None
    t = pd.Timestamp(v)
    if pd.isna(t):
        return None
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.isoformat()


def _sensors(v) -> str:
    """An incident's ``sensors`` JSON, canonical (key order, float noise beyond 1e-9)."""
    items = json.loads(v) if isinstance(v, (str, bytes)) else v

    def norm(x):
        if isinstance(x, float):
            return round(x, 9)
        if isinstance(x, dict):
            return {k: norm(x[k]) for k in sorted(x)}
        if isinstance(x, list):
            return [norm(i) for i in x]
        return x
    return json.dumps(norm(items or []), sort_keys=True)


def incident_tuple(row: dict) -> tuple:
    out = []
    for f in INCIDENT_FIELDS:
        v = row.get(f)
        if f in ("opened_at", "last_seen", "closed_at"):
            v = _ts(v)
        elif f == "sensors":
            v = _sensors(v)
        elif f == "peak_severity":
            v = round(float(v), 9)
        elif f == "readings":
            v = int(v)
        elif f == "muted":
            v = bool(v)
        elif v is not None and not (isinstance(v, float) and v != v):
            v = str(v)
        else:
            v = None
        out.append(v)
    return tuple(out)


@dataclass
class StoreView:
    """What one store holds, normalised so that a run compares with its reference."""

    anomalies: list            # (sensor_id, event_time ISO, model_version), one per stored row
    rejects: Counter           # reason (before ':') -> rows
    reject_pairs: Counter      # (raw, reason) -> rows (SQLite only: raw text stored as sent)
    too_large_lengths: list    # len(raw) of each too_large reject
    incidents: dict            # incident_id -> INCIDENT_FIELDS tuple (newest version)
    batches: list              # (batch_id, events, scored, warmup, rejects)

    @property
    def events(self) -> int:
        return sum(b[1] for b in self.batches)

    @property
    def accounted(self) -> int:
        return sum(b[2] + b[3] + b[4] for b in self.batches)


def read_sqlite(path: Path) -> StoreView:
    con = sqlite3.connect(path)
    try:
        a = [(s, _ts(t), v) for s, t, v in con.execute("SELECT sensor_id, event_time, model_version FROM anomalies")]
        rows = con.execute("SELECT raw, reason FROM rejects").fetchall()
        cur = con.execute(f"SELECT {', '.join(INCIDENT_FIELDS)} FROM incidents")
        names = [c[0] for c in cur.description]
        inc = {r["incident_id"]: incident_tuple(r) for r in (dict(zip(names, row)) for row in cur)}
        b = con.execute("SELECT batch_id, events, scored, warmup, rejects FROM batches ORDER BY batch_id").fetchall()
    finally:
        con.close()
    return StoreView(a, Counter(r.split(":")[0] for _, r in rows), Counter(rows),
                     [len(raw) for raw, r in rows if r.startswith("too_large")], inc, [tuple(x) for x in b])


def read_postgres(services: Services, schema: str) -> StoreView:
    import psycopg2
    env = services.pg_env()
    con = psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"],
                           dbname=env["PGDATABASE"], connect_timeout=10)
    try:
        with con.cursor() as cur:
            cur.execute(f'SELECT sensor_id, event_time, model_version FROM "{schema}".anomalies')
            a = [(s, _ts(t), v) for s, t, v in cur.fetchall()]
            cur.execute(f'SELECT reason, length(raw) FROM "{schema}".rejects')
            rows = cur.fetchall()
            cur.execute(f'SELECT {", ".join(INCIDENT_FIELDS)} FROM "{schema}".incidents')
            names = [c[0] for c in cur.description]
            inc = {r["incident_id"]: incident_tuple(r) for r in (dict(zip(names, row)) for row in cur.fetchall())}
            cur.execute(f'SELECT batch_id, events, scored, warmup, rejects FROM "{schema}".batches ORDER BY batch_id')
            b = [tuple(int(x) for x in r) for r in cur.fetchall()]
    finally:
        con.close()
    return StoreView(a, Counter(r.split(":")[0] for r, _ in rows), Counter(),
                     [n for r, n in rows if r.startswith("too_large")], inc, b)


def read_s3(services: Services, prefix: str) -> StoreView:
    from sentinel.config import S3Settings
    from sentinel.store.sinks.s3 import S3Sink
    sink = S3Sink(S3Settings(bucket=BUCKET, prefix=prefix, endpoint_url=services.s3_direct))
    an = sink.read("anomalies")
    a = [(s, _ts(t), v) for s, t, v in zip(an["sensor_id"], an["event_time"], an["model_version"])]
    rj = sink.read("rejects")
    inc_rows = sink.read("incidents")
    inc = {}
    # one version per batch that touched an incident: the newest is the incident's state
    for r in inc_rows.sort_values("batch_id").to_dict("records"):
        inc[r["incident_id"]] = incident_tuple(r)
    bt = sink.read("batches").sort_values("batch_id")
    b = [tuple(int(x) for x in r) for r in bt[["batch_id", "events", "scored", "warmup", "rejects"]].to_numpy()]
    return StoreView(a, Counter(str(r).split(":")[0] for r in rj["reason"]), Counter(),
                     [len(raw) for raw, r in zip(rj["raw"], rj["reason"]) if str(r).startswith("too_large")], inc, b)


@dataclass
class AlertView:
    anomalies: list   # (sensor_id, event_time ISO, model_version) per anomaly message
    events: list      # (incident_id, event, batch_id) per incident message


def read_alerts(services: Services, topic: str) -> AlertView:
    from sentinel.ingest.kafka import consume_all
    a, e = [], []
    for m in consume_all(services.bootstrap, topic, timeout_s=120):  # read_committed
        r = json.loads(m.value())
        if r["type"] == "anomaly":
            a.append((r["sensor_id"], _ts(r["event_time"]), r["model_version"]))
        else:
            e.append((r["incident"]["incident_id"], r["event"], int(r["batch_id"])))
    return AlertView(a, e)


@dataclass
class Outcome:
    """Everything a finished run left behind."""

    stores: dict   # store name -> StoreView
    alerts: AlertView


def collect(services: Services, run: Run) -> Outcome:
    return Outcome({"sqlite": read_sqlite(run.sqlite), "postgres": read_postgres(services, run.schema),
                    "s3": read_s3(services, run.prefix)}, read_alerts(services, run.alerts))


# ---------------------------------------------------------------- comparing
def compare(name: str, sent: int, ref: Outcome, out: Outcome, extra_reasons: Counter | None = None,
            extra_pairs: Counter | None = None, same_batches: bool = True) -> dict:
    """A run against the reference: counts per store, the checks and which failed."""
    extra_reasons, extra_pairs = extra_reasons or Counter(), extra_pairs or Counter()
    checks: dict[str, bool] = {}
    per_store = {}
    for s in STORES:
        r, v = ref.stores[s], out.stores[s]
        keys, ref_keys = set(v.anomalies), set(ref.stores[s].anomalies)
        want_rejects = r.rejects + extra_reasons
        per_store[s] = {
            "events": v.events, "accounted": v.accounted, "scored": sum(b[2] for b in v.batches),
            "warmup": sum(b[3] for b in v.batches), "rejects": sum(v.rejects.values()),
            "rejects_expected": sum(want_rejects.values()), "reject_reasons": dict(v.rejects),
            "anomalies_ref": len(ref_keys), "anomalies": len(v.anomalies), "duplicates": len(v.anomalies) - len(keys),
            "anomalies_missing": len(ref_keys - keys), "anomalies_extra": len(keys - ref_keys),
            "incidents_ref": len(r.incidents), "incidents": len(v.incidents),
            "incidents_differing": sorted(i for i in set(r.incidents) | set(v.incidents)
                                          if r.incidents.get(i) != v.incidents.get(i))[:10],
            "batches": len(v.batches)}
        checks[f"{s}: events stored = sent"] = v.events == sent
        checks[f"{s}: scored + warm-up + rejects = events"] = v.accounted == v.events
        checks[f"{s}: batches' rejects = reject rows"] = sum(b[4] for b in v.batches) == sum(v.rejects.values())
        checks[f"{s}: anomalies = reference"] = keys == ref_keys and len(keys) > 0
        checks[f"{s}: no duplicate anomaly"] = len(v.anomalies) == len(keys)
        checks[f"{s}: incidents = reference"] = v.incidents == r.incidents and len(v.incidents) > 0
        checks[f"{s}: rejects = reference + bad lines sent"] = v.rejects == want_rejects
        if same_batches:  # a backlog feed: the restarts must re-plan exactly the reference's batches
            checks[f"{s}: per-batch events = reference"] = [b[:2] for b in v.batches] == [b[:2] for b in r.batches]
    sq, ref_sq = out.stores["sqlite"], ref.stores["sqlite"]
    checks["sqlite: rejected lines (raw, reason) = reference + bad lines sent"] = \
        sq.reject_pairs == ref_sq.reject_pairs + extra_pairs
    a, ra = out.alerts, ref.alerts
    a_keys, e_keys = Counter(a.anomalies), Counter(a.events)
    opens = Counter(i for i, e, _ in a.events if e == "open")
    closes = Counter(i for i, e, _ in a.events if e == "close")
    closed = {i for i, t in sq.incidents.items() if t[INCIDENT_FIELDS.index("closed_at")] is not None}
    checks["alerts: anomalies = reference, each once"] = set(a_keys) == set(ra.anomalies) and max(a_keys.values(),
                                                                                                 default=1) == 1
    checks["alerts: anomalies = the stores' anomalies"] = set(a_keys) == set(sq.anomalies)
    checks["alerts: each incident event once"] = max(e_keys.values(), default=1) == 1
    checks["alerts: each incident opened once"] = set(opens) == set(sq.incidents) and max(opens.values(),
                                                                                          default=1) == 1
    checks["alerts: each closed incident closed once"] = set(closes) == closed and max(closes.values(), default=1) == 1
    if same_batches:
        checks["alerts: incident events = reference"] = Counter(a.events) == Counter(ra.events)
    dup = sum(p["duplicates"] for p in per_store.values()) + sum(c - 1 for c in a_keys.values()) + \
        sum(c - 1 for c in e_keys.values())
    return {"scenario": name, "sent": sent, "stores": per_store, "duplicates": dup,
            "alerts": {"anomalies": len(a.anomalies), "anomalies_distinct": len(a_keys),
                       "anomalies_ref": len(set(ra.anomalies)), "incident_events": len(a.events),
                       "incident_events_distinct": len(e_keys), "incident_events_ref": len(ra.events)},
            "checks": checks}


# ---------------------------------------------------------------- scenarios
class Bench:
    """Shared state of one invocation: services, plan, model, the feed, the reference."""

    def __init__(self, plan: Plan, services: Services, work: Path, bundle: Path, seed: int):
        self.plan, self.services, self.work, self.bundle = plan, services, work, bundle
        self.rng = random.Random(seed)
        self.tag = uuid.uuid4().hex[:6]
        self.messages = feed_messages(plan)
        self.env = services.job_env()
        self.ref: Outcome | None = None
        self.ref_batches = 0
        self.ref_summary: dict | None = None
        self.runs: list[Run] = []
        self._ref_thread: threading.Thread | None = None
        self._ref_error: BaseException | None = None

    def reference_done(self) -> bool:
        return self._ref_thread is None or not self._ref_thread.is_alive()

    def wait_reference(self) -> dict:
        """The reference's summary, once it has ended; ScenarioError if it failed."""
        if self._ref_thread is not None:
            self._ref_thread.join()
        if self._ref_error is not None:
            raise ScenarioError(f"the reference run failed: {self._ref_error}") from self._ref_error
        return self.ref_summary

    def new_run(self, name: str, sqlite: Path | None = None) -> Run:
        run = Run(name, self.work / re.sub(r"[^A-Za-z0-9-]", "_", name), self.tag, sqlite)
        self.runs.append(run)
        return run

    def produce(self, run: Run, messages=None) -> int:
        from sentinel.ingest.kafka import ensure_topic, produce_lines
        ensure_topic(self.services.bootstrap, run.topic, PARTITIONS)
        # "consistent": keyed messages on the same partitions as librdkafka's default, and the
        # unkeyed (malformed) ones all on one instead of at random, so that every topic of a run
        # holds the same offsets and the batch plans can be compared with the reference's
        return produce_lines(self.messages if messages is None else messages, self.services.bootstrap, run.topic,
                             rate=0, partitions=None, progress_every=0, options={"partitioner": "consistent"})

    def job(self, run: Run, max_offsets: int | None = None, idle_s: float = IDLE_S) -> Job:
        return Job(run, run.config(self.services, self.plan, self.bundle, max_offsets), self.env, self.plan, idle_s)

    def reference(self) -> dict:
        """The feed through one uninterrupted job: what every scenario must end up with."""
        run = self.new_run("reference")
        sent = self.produce(run)
        t0 = time.time()
        log(f"reference: {sent:,} messages, one uninterrupted job")
        job = self.job(run)
        job.supervise([], max_attempts=1)
        self.ref = collect(self.services, run)
        self.ref_batches = len(self.ref.stores["sqlite"].batches)
        sq = self.ref.stores["sqlite"]
        log(f"    reference: {self.ref_batches} batches, {len(set(sq.anomalies))} anomalies, {len(sq.incidents)} "
            f"incidents, {sum(sq.rejects.values())} rejects, {len(self.ref.alerts.anomalies)} anomaly alerts "
            f"({time.time() - t0:.0f} s)")
        if not all(v.events == sent and v.accounted == sent for v in self.ref.stores.values()) \
                or not sq.anomalies or not sq.incidents:
            raise ScenarioError(f"the reference run does not account for the {sent} events it was sent, or found "
                                "no anomaly or incident: nothing to compare with")
        self.ref_summary = {
            "sent": sent, "batches": self.ref_batches, "anomalies": len(set(sq.anomalies)),
            "incidents": len(sq.incidents), "rejects": sum(sq.rejects.values()), "seconds": round(time.time() - t0),
            "alerts": len(self.ref.alerts.anomalies), "incident_events": len(self.ref.alerts.events),
            "startup_s": job.attempts[0].seconds}
        return self.ref_summary

    def scenario(self, name: str, faults: list[Fault], sqlite: Path | None = None, entries=("sentinel",),
                 messages=None, max_offsets: int | None = None, idle_s: float = IDLE_S, min_ref_batches: int = 0) -> dict:
        """Produce the feed (or ``messages``) to a fresh topic, run the job with the faults under
        the supervisor, compare with the reference."""
        run = self.new_run(name, sqlite)
        sent = self.produce(run, messages)
        for f in faults:
            f.bind(self, run)
        t0 = time.time()
        job = self.job(run, max_offsets, idle_s)
        try:
            job.supervise(faults, entries, before_restart=self.wait_reference)
        finally:
            for f in faults:
                f.cleanup()
        self.wait_reference()
        if self.ref_batches < min_ref_batches:
            raise ScenarioError(f"the reference made {self.ref_batches} batches, too few for the faults' points "
                                f"(needs {min_ref_batches}): lower max_offsets")
        extra: dict = {}
        for f in faults:
            e = f.extra()
            sent += e.pop("sent", 0)
            extra.update(e)
        checks: dict[str, bool] = {}
        for f in faults:
            checks.update(f.checks(job))
        out = collect(self.services, run)
        row = compare(name, sent, self.ref, out, same_batches=all(f.same_batches for f in faults), **extra)
        row["checks"].update(checks)
        row["checks"]["the job completed (last attempt exited 0)"] = job.attempts[-1].rc == 0
        row.update(restarts=len(job.attempts) - 1, seconds=round(time.time() - t0),
                   faults=[{"fault": f.label, **f.info} for f in faults],
                   attempts=[{"entry": a.entry, "rc": a.rc, "seconds": a.seconds, "killed": a.killed,
                              "error": a.error} for a in job.attempts])
        row["failed"] = [k for k, v in row["checks"].items() if not v]
        row["verdict"] = "PASS" if not row["failed"] else "FAIL"
        log(f"    {name}: {row['verdict']} ({row['restarts']} restarts, {row['seconds']} s)"
            + (f"; failed: {'; '.join(row['failed'])}" if row["failed"] else ""))
        return row

    def kills(self, n: int) -> list[Fault]:
        """``n`` SIGKILLs at distinct random batches (each leaving work for the restart), one of them
        (chosen at random) while the sinks write."""
        last = self.ref_batches - 2
        if last < n:
            raise ScenarioError(f"{self.ref_batches} reference batches are too few for {n} kills")
        points = sorted(self.rng.sample(range(1, last + 1), n))
        sinks = self.rng.randrange(n)
        return [Kill(p, i == sinks, self.rng) for i, p in enumerate(points)]

    def run_scenario(self, name: str) -> dict:
        T, p = self.ref_batches, self.plan
        if name == "sigkill":
            return self.scenario(name, self.kills(p.kills), entries=("spark-submit", "sentinel"))
        if name in ("postgres-down", "s3-down"):
            return self.scenario(name, [StoreDown(max(2, T // 3), name.split("-")[0], p.outage_s)])
        if name == "kafka-restart":
            return self.scenario(name, [KafkaRestart(max(2, T // 3))])
        if name == "malformed-flood":
            head = max(1, len(self.messages) // 20)  # the job's first batch, before the flood starts
            flood = Flood(self.messages[head:], p.flood_rate, p.flood_s, p.big_every)
            return self.scenario(name, [flood], messages=self.messages[:head],
                                 max_offsets=max(20_000, int(p.flood_rate * 4)), idle_s=15.0)
        if name == "disk-full":
            with tmpfs(self.work / name / "disk", p.tmpfs_mb) as mnt:
                return self.scenario(name, [DiskFull(max(2, T // 2), mnt)], sqlite=mnt / "store.db")
        if name == QUICK_CHAIN:
            # the three short faults on one job, one after the other: a job's start-up (a minute or
            # more on a loaded 2-core machine) is most of an attempt, so the chain has 3 attempts:
            # SIGKILL while the sinks write (restart), PostgreSQL down for less than the sink's
            # retries (carried on), the disk full (restart). Fixed points; min_ref_batches checks
            # that the reference's batches leave room for them.
            faults = [Kill(1, True, self.rng), StoreDown(3, "postgres", p.outage_s, survive=p.pg_survive)]
            try:
                with tmpfs(self.work / "quick-chain-disk", p.tmpfs_mb) as mnt:
                    return self.scenario(name, [*faults, DiskFull(6, mnt)], sqlite=mnt / "store.db", min_ref_batches=9)
            except Skipped as exc:
                log(f"    disk-full left out of the chain: {exc}")
                return {**self.scenario(name, faults, min_ref_batches=5), "left_out": f"disk-full: {exc}"}
        raise ValueError(name)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the disk is full (down to single bytes); returns bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    n = 0
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    n += os.write(fd, chunk)
                except OSError:
                    break
    finally:
        os.close(fd)
    return n


def half_written(db: Path, batch_id: int | None) -> dict:
    """Rows of ``batch_id`` in each table of the SQLite store (all 0 when its transaction rolled back)."""
    if batch_id is None:
        return {}
    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t} WHERE batch_id = ?", (batch_id,)).fetchone()[0]
                for t in ("anomalies", "rejects", "scores", "incidents", "batches")}
    finally:
        con.close()


def integrity(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def skipped(name: str, why: str) -> dict:
    log(f"    {name}: skipped ({why})")
    return {"scenario": name, "verdict": "SKIP", "why": why, "checks": {}, "failed": []}


# ---------------------------------------------------------------- output
def fmt_store_pairs(row: dict, ref_key: str, key: str) -> str:
    return " ".join(f"{row['stores'][s][ref_key]}/{row['stores'][s][key]}" for s in STORES)


def print_table(rows: list[dict], ref: dict) -> None:
    head = ["scenario", "events sent", "scored + warm-up + rejects", "anomalies ref/run (sqlite pg s3)",
            "incidents ref/run (sqlite pg s3)", "dup", "alerts once", "restarts", "s", "verdict"]
    lines = []
    for r in rows:
        if r["verdict"] == "SKIP":
            lines.append([r["scenario"], "-", "-", "-", "-", "-", "-", "-", "-", f"SKIP ({r['why']})"])
            continue
        if "stores" not in r:
            lines.append([r["scenario"], "-", "-", "-", "-", "-", "-", "-", "-", f"FAIL ({r.get('error', '')[:60]})"])
            continue
        sq = r["stores"]["sqlite"]
        al = r["alerts"]
        once = "yes" if not any("alerts" in k for k in r["failed"]) else "NO"
        lines.append([r["scenario"], f"{r['sent']:,}",
                      f"{sq['accounted']:,} = {sq['scored']:,}+{sq['warmup']:,}+{sq['rejects']:,}",
                      fmt_store_pairs(r, "anomalies_ref", "anomalies"), fmt_store_pairs(r, "incidents_ref", "incidents"),
                      str(r["duplicates"]), f"{once} ({al['anomalies']:,}+{al['incident_events']:,})",
                      str(r["restarts"]), str(r["seconds"]), r["verdict"]])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print()
    if ref is None:
        print("reference: FAILED (nothing to compare with)")
    else:
        print(f"reference: {ref['sent']:,} events in {ref['batches']} batches, {ref['anomalies']} anomalies, "
              f"{ref['incidents']} incidents, {ref['rejects']} rejects, {ref['alerts']} anomaly + "
              f"{ref['incident_events']} incident alerts ({ref['seconds']} s)")
    for ln in [head, ["-" * w for w in widths], *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(ln, widths)))
    print()
    print_faults(rows)
    for r in rows:
        for f in r.get("failed", []):
            print(f"  {r['scenario']}: FAILED {f}")
    print()


def fault_outcome(f: dict) -> str:
    """What the job did about one fault, in a few words (from the fault's info)."""
    kind = f["fault"]
    if kind == "sigkill":
        return "killed" + (" with a batch stored, not committed" if f.get("in_store_uncommitted") else "")
    if kind.endswith("-down"):
        if f.get("survive"):
            return f"down {f.get('down_s', '?')} s, {f.get('retry_warnings', 0)} retries, carried on"
        return (f"down {f.get('down_s', '?')} s, {f.get('retry_warnings', 0)} retry warnings, batch failed after "
                f"{f.get('first_failure_after_s', '?')} s, {len(f.get('errors', []))} distinct sentence(s)")
    if kind == "kafka-restart":
        return (f"broker back after {f.get('restart_s', '?')} s, "
                + ("job carried on" if f.get("job_survived_without_restart") else "job restarted"))
    if kind == "disk-full":
        rows = f.get("rows_of_failed_batch") or {}
        return f"batch {f.get('failed_batch')} failed, {sum(rows.values())} of its rows kept, file {f.get('integrity')}"
    if kind == "malformed-flood":
        return (f"{f.get('bad_lines_sent', 0):,} bad lines at {f.get('bad_lines_per_s', 0):,}/s "
                f"({f.get('big_lines', 0)} of 1 MiB), job never stopped")
    return ""


def print_faults(rows: list[dict]) -> None:
    """One line per injected fault: after which batch, recovery time, what happened."""
    head = ["scenario", "fault", "after batch", "recovery s", "what happened"]
    lines = [[r["scenario"], f["fault"], str(f.get("after_commits", "-")), str(f.get("recovery_s", "-")),
              fault_outcome(f)] for r in rows for f in r.get("faults", [])]
    if not lines:
        return
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print("per fault (recovery: from the fault's end, or the kill, to the first new batch committed):")
    for ln in [head, ["-" * w for w in widths], *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(ln, widths)))


def drop_schemas(services: Services, runs: list[Run]) -> None:
    import psycopg2
    env = services.pg_env()
    try:
        con = psycopg2.connect(host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], password=env["PGPASSWORD"],
                               dbname=env["PGDATABASE"], connect_timeout=10)
        con.autocommit = True
        with con.cursor() as cur:
            for r in runs:
                cur.execute(f'DROP SCHEMA IF EXISTS "{r.schema}" CASCADE')
        con.close()
    except psycopg2.Error as exc:
        log(f"could not drop the runs' schemas: {exc}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"tiny feed, scenario {QUICK_CHAIN} (make test)")
    ap.add_argument("--long", action="store_true", help="issue 19's sizes: 3 SIGKILLs, PostgreSQL/S3 down 60 s, "
                    "a 60 s flood (default: 2, 30 s, 30 s)")
    ap.add_argument("--only", default="", help=f"comma-separated scenarios (default: all of {', '.join(SCENARIOS)}; "
                    f"also {QUICK_CHAIN})")
    ap.add_argument("--json", type=Path, default=None, help="where to write the figures (default "
                    "reports/faults.json, --quick: reports/faults-quick.json)")
    ap.add_argument("--seed", type=int, default=1, help="chooses the SIGKILL points (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the services running and the runs' files")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="the run's state: services/ (Kafka, PostgreSQL, S3), runs/ (checkpoints, stores, logs), "
                    "children/ (default: a fresh folder in the system's temp dir, deleted at the end)")
    ap.add_argument("--cleanup", action="store_true",
                    help="only end what a runner using --cache-dir left running (its jobs and services)")
    # internal modes (child processes of the runner)
    ap.add_argument("--proxy", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--flood", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--train", choices=("full", "quick"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.proxy:
        return proxy_main(*args.proxy)
    if args.flood:
        b, topic, rate, secs, big, out = args.flood
        return flood_main(b, topic, float(rate), float(secs), int(big), Path(out))
    if args.train:
        return train_main(QUICK if args.train == "quick" else FULL)
    if args.cleanup:
        if args.cache_dir is None:
            ap.error("--cleanup needs --cache-dir (the state folder of the run to clean up)")
        return cleanup_main(args.cache_dir)

    if args.quick and args.long:
        ap.error("--quick and --long exclude each other")
    plan = QUICK if args.quick else LONG if args.long else FULL
    names = [n.strip() for n in args.only.split(",") if n.strip()] or ([QUICK_CHAIN] if args.quick else list(SCENARIOS))
    unknown = sorted(set(names) - set(SCENARIOS) - {QUICK_CHAIN})
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}: choose from {', '.join(SCENARIOS)}")
    out_json = args.json or ROOT / "reports" / ("faults-quick.json" if args.quick else "faults.json")
    # One folder holds everything the run starts and writes (services' state, runs, children):
    # nothing is shared with another run, the suite's services or the developers' own.
    if args.cache_dir is not None:
        state = args.cache_dir.resolve()
        state.mkdir(parents=True, exist_ok=True)
        kill_children(state / "children")   # an earlier runner's leftovers in this folder
    else:
        state = Path(tempfile.mkdtemp(prefix="sentinel-faults-"))
    os.chmod(state, 0o755)  # the postgres user must reach services/postgres
    global CHILDREN
    CHILDREN = state / "children"
    cache, work = state / "services", state / "runs"
    work.mkdir(parents=True, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    log(f"state: {state}")
    services = Services(cache)
    t_all = time.time()
    rows: list[dict] = []
    result = {"plan": asdict(plan), "scenarios": rows, "state": str(state)}
    bench = None
    try:
        bundle = bundle_for(plan)
        result["services_start_s"] = services.start()
        result["services"] = dict(services.ports)
        bench = Bench(plan, services, work, bundle, args.seed)
        result["reference"] = bench.reference()
        for n in names:
            log(f"scenario {n}")
            try:
                rows.append(bench.run_scenario(n))
            except Skipped as exc:
                rows.append(skipped(n, str(exc)))
            except ScenarioError as exc:
                log(f"    {n}: FAIL ({exc})")
                rows.append({"scenario": n, "verdict": "FAIL", "error": str(exc), "checks": {}, "failed": [str(exc)]})
            out_json.parent.mkdir(parents=True, exist_ok=True)  # what is done so far, should the run be cut short
            out_json.write_text(json.dumps(result, indent=2, default=str))
            if not services.running("postgres"):  # a scenario that failed half-way leaves no service down
                services.script("postgres", "start")
            if services.proxy is None:
                services.start_proxy()
        try:
            result["reference"] = ref = bench.wait_reference()
        except ScenarioError as exc:
            result["reference"], ref = {"error": str(exc)}, None
        result["seconds"] = round(time.time() - t_all)
        print_table(rows, ref)
        print(f"total {result['seconds']} s; JSON: {out_json}")
        if not args.keep:
            drop_schemas(services, bench.runs)
    finally:
        STOPPING.set()
        result.setdefault("seconds", round(time.time() - t_all))
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2, default=str))
        if not args.keep:
            kill_children(CHILDREN)   # a job, producer or proxy still running (an error, a signal)
            services.stop()
            shutil.rmtree(state, ignore_errors=True)
        else:
            log(f"kept: runs in {work}, services running (state in {cache}; "
                f"stop them with: benchmarks/faults.py --cleanup --cache-dir {state})")
    return 0 if rows and all(r["verdict"] in ("PASS", "SKIP") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
