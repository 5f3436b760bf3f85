#!/usr/bin/env bash
# Local Spark standalone cluster (master + N workers + history server) from pip's pyspark, no Docker.
# Uses spark-class directly (pip's pyspark has no start-master.sh / start-worker.sh).
set -euo pipefail
SVC_NAME=spark
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPARK_MASTER_PORT="${SPARK_MASTER_PORT:-7077}"
SPARK_MASTER_WEBUI_PORT="${SPARK_MASTER_WEBUI_PORT:-8080}"
SPARK_WORKERS="${SPARK_WORKERS:-2}"
SPARK_WORKER_CORES="${SPARK_WORKER_CORES:-1}"
SPARK_WORKER_MEMORY="${SPARK_WORKER_MEMORY:-2g}"
SPARK_WORKER_WEBUI_BASE="${SPARK_WORKER_WEBUI_BASE:-8081}"    # worker i (0-based) -> BASE+i
SPARK_HISTORY_PORT="${SPARK_HISTORY_PORT:-18080}"
SPARK_CLUSTER_HOME_DIR="${SPARK_CLUSTER_HOME_DIR:-$CACHE_ROOT/spark-cluster}"
SPARK_EVENTLOG_DIR="${SPARK_EVENTLOG_DIR:-$CACHE_ROOT/spark-events}"
SPARK_START_TIMEOUT="${SPARK_START_TIMEOUT:-120}"
SPARK_MASTER_REST_PORT="${SPARK_MASTER_REST_PORT:-6066}"
export SPARK_DAEMON_MEMORY="${SPARK_DAEMON_MEMORY:-512m}"
# C1-only JIT + serial GC for the daemon JVMs (and the spark-class launcher JVM): on 2 cores the
# cluster comes up in ~17 s instead of ~43 s. Executors and drivers are not affected.
export SPARK_DAEMON_JAVA_OPTS="${SPARK_DAEMON_JAVA_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"
export SPARK_LAUNCHER_OPTS="${SPARK_LAUNCHER_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"
SPARK_CLASS="${SPARK_CLASS:-$VENV_DIR/bin/spark-class}"

MASTER_URL="spark://127.0.0.1:$SPARK_MASTER_PORT"
MASTER_UI="http://127.0.0.1:$SPARK_MASTER_WEBUI_PORT"
HISTORY_UI="http://127.0.0.1:$SPARK_HISTORY_PORT"
RUN_DIR="$SPARK_CLUSTER_HOME_DIR/run"
LOG_DIR="$SPARK_CLUSTER_HOME_DIR/logs"

usage() {
  cat <<EOF
Usage: $(basename "$0") start|stop|status|restart|--help

Spark standalone cluster on 127.0.0.1: master $MASTER_URL (UI $MASTER_UI),
\$SPARK_WORKERS workers, history server $HISTORY_UI reading $SPARK_EVENTLOG_DIR.

  start     start whatever is not running; wait until all workers are ALIVE at the master
            and the history server answers; print the workers
  stop      stop history server, workers, master (SIGTERM, wait, SIGKILL)
  status    processes and the workers registered at the master
  restart   stop then start

Submit jobs with:
  PYSPARK_PYTHON=$VENV_DIR/bin/python $VENV_DIR/bin/spark-submit --master $MASTER_URL \\
    --conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://$SPARK_EVENTLOG_DIR app.py

Environment (defaults):
  SPARK_MASTER_PORT=$SPARK_MASTER_PORT  SPARK_MASTER_WEBUI_PORT=$SPARK_MASTER_WEBUI_PORT
  SPARK_WORKERS=$SPARK_WORKERS  SPARK_WORKER_CORES=$SPARK_WORKER_CORES  SPARK_WORKER_MEMORY=$SPARK_WORKER_MEMORY
  SPARK_WORKER_WEBUI_BASE=$SPARK_WORKER_WEBUI_BASE (worker i gets BASE+i)  SPARK_HISTORY_PORT=$SPARK_HISTORY_PORT
  SPARK_MASTER_REST_PORT=$SPARK_MASTER_REST_PORT (REST submission server of the master)
  SPARK_DAEMON_MEMORY=$SPARK_DAEMON_MEMORY (heap of master/worker/history JVMs)
  SPARK_DAEMON_JAVA_OPTS="$SPARK_DAEMON_JAVA_OPTS"
  SPARK_LAUNCHER_OPTS="$SPARK_LAUNCHER_OPTS"
  SPARK_START_TIMEOUT=$SPARK_START_TIMEOUT
  SPARK_CLUSTER_HOME_DIR=$SPARK_CLUSTER_HOME_DIR
            state: run/*.pid, logs/{master,worker-N,history}.log, worker-N/ (work dirs)
  SPARK_EVENTLOG_DIR=$SPARK_EVENTLOG_DIR
  SPARK_CLASS=$SPARK_CLASS
EOF
}

setup_env() {
  [[ -x "$SPARK_CLASS" ]] || die "$SPARK_CLASS not found; install pyspark into $VENV_DIR"
  local py; py="$(venv_python)" || die "no venv python at $VENV_DIR/bin/python"
  # Resolve SPARK_HOME with the venv python (find-spark-home would use the system python3).
  if [[ -z "${SPARK_HOME:-}" ]]; then
    SPARK_HOME="$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
  fi
  export SPARK_HOME
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$py}"
  # Binds the web UIs (which default to 0.0.0.0) and RPC to loopback.
  export SPARK_LOCAL_IP=127.0.0.1
  export SPARK_MASTER_HOST=127.0.0.1
  export SPARK_MASTER_OPTS="-Dspark.master.rest.port=$SPARK_MASTER_REST_PORT ${SPARK_MASTER_OPTS:-}"
  export SPARK_HISTORY_OPTS="-Dspark.history.fs.logDirectory=file://$SPARK_EVENTLOG_DIR -Dspark.history.ui.port=$SPARK_HISTORY_PORT -Dspark.history.fs.update.interval=2s ${SPARK_HISTORY_OPTS:-}"
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$SPARK_EVENTLOG_DIR"
}

http_ok() { curl -sf -o /dev/null -m 3 "$1"; }

# alive_workers: number of ALIVE workers registered at the master
alive_workers() {
  curl -sf -m 3 "$MASTER_UI/json/" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(1 for w in d.get("workers", []) if w.get("state") == "ALIVE"))' 2>/dev/null || echo 0
}
all_workers_alive() { [[ "$(alive_workers)" -ge "$SPARK_WORKERS" ]]; }

print_workers() {
  curl -sf -m 5 "$MASTER_UI/json/" | python3 -c "$(cat <<'PY'
import json, sys
d = json.load(sys.stdin)
ws = [w for w in d.get("workers", []) if w.get("state") != "DEAD"]
print("master %s status %s: %s alive worker(s), %s cores, %s MB; apps running %d, completed %d" % (
    d.get("url"), d.get("status"), d.get("aliveworkers", 0), d.get("cores"), d.get("memory"),
    len(d.get("activeapps", [])), len(d.get("completedapps", []))))
print("  %-45s %5s %9s  %s" % ("worker id", "cores", "memory", "state"))
for w in ws:
    print("  %-45s %5s %9s  %s" % (w["id"], w["cores"], "%sMB" % w["memory"], w["state"]))
PY
)"
}

start_master() {
  local pidf="$RUN_DIR/master.pid" logf="$LOG_DIR/master.log"
  if pid_alive "$pidf"; then log "master already running (pid $(<"$pidf"))"; return 0; fi
  STARTED=1
  require_free_port "$SPARK_MASTER_PORT" SPARK_MASTER_PORT
  require_free_port "$SPARK_MASTER_WEBUI_PORT" SPARK_MASTER_WEBUI_PORT
  log "starting master $MASTER_URL (UI $MASTER_UI) ..."
  start_daemon "$pidf" "$logf" "$SPARK_CLASS" org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$SPARK_MASTER_PORT" --webui-port "$SPARK_MASTER_WEBUI_PORT"
  wait_for "$SPARK_START_TIMEOUT" "$pidf" "$logf" "Spark master UI $MASTER_UI" http_ok "$MASTER_UI/json/"
}

start_worker() {
  local i="$1" n=$(( $1 + 1 ))
  local pidf="$RUN_DIR/worker-$n.pid" logf="$LOG_DIR/worker-$n.log" ui=$(( SPARK_WORKER_WEBUI_BASE + i ))
  if pid_alive "$pidf"; then log "worker-$n already running (pid $(<"$pidf"))"; return 0; fi
  STARTED=1
  require_free_port "$ui" "worker-$n web UI (SPARK_WORKER_WEBUI_BASE+$i)"
  mkdir -p "$SPARK_CLUSTER_HOME_DIR/worker-$n"
  log "starting worker-$n ($SPARK_WORKER_CORES cores, $SPARK_WORKER_MEMORY, UI http://127.0.0.1:$ui) ..."
  start_daemon "$pidf" "$logf" "$SPARK_CLASS" org.apache.spark.deploy.worker.Worker \
    --host 127.0.0.1 --cores "$SPARK_WORKER_CORES" --memory "$SPARK_WORKER_MEMORY" \
    --webui-port "$ui" --work-dir "$SPARK_CLUSTER_HOME_DIR/worker-$n" "$MASTER_URL"
}

start_history() {
  local pidf="$RUN_DIR/history.pid" logf="$LOG_DIR/history.log"
  if pid_alive "$pidf"; then log "history server already running (pid $(<"$pidf"))"; return 0; fi
  STARTED=1
  require_free_port "$SPARK_HISTORY_PORT" SPARK_HISTORY_PORT
  log "starting history server $HISTORY_UI (event logs: $SPARK_EVENTLOG_DIR) ..."
  start_daemon "$pidf" "$logf" "$SPARK_CLASS" org.apache.spark.deploy.history.HistoryServer
}

start() {
  setup_env
  local t0 i; t0="$(now_s)"
  STARTED=0
  start_master
  for (( i = 0; i < SPARK_WORKERS; i++ )); do
    start_worker "$i"
  done
  start_history
  if (( STARTED == 0 )); then
    log "already running: master $MASTER_URL, history $HISTORY_UI"
  fi
  wait_for "$SPARK_START_TIMEOUT" "$RUN_DIR/history.pid" "$LOG_DIR/history.log" \
    "history server $HISTORY_UI" http_ok "$HISTORY_UI/api/v1/applications"
  local start_s; start_s="$(date +%s)"
  until all_workers_alive; do
    for (( i = 1; i <= SPARK_WORKERS; i++ )); do
      pid_alive "$RUN_DIR/worker-$i.pid" || { tail -n 30 "$LOG_DIR/worker-$i.log" >&2; die "worker-$i died (log: $LOG_DIR/worker-$i.log)"; }
    done
    pid_alive "$RUN_DIR/master.pid" || { tail -n 30 "$LOG_DIR/master.log" >&2; die "master died (log: $LOG_DIR/master.log)"; }
    if (( $(date +%s) - start_s >= SPARK_START_TIMEOUT )); then
      die "only $(alive_workers)/$SPARK_WORKERS workers ALIVE after ${SPARK_START_TIMEOUT}s (logs: $LOG_DIR/worker-*.log, $LOG_DIR/master.log)"
    fi
    sleep 0.5
  done
  (( STARTED == 0 )) || log "Spark cluster is up in $(elapsed "$t0")s: $(alive_workers)/$SPARK_WORKERS workers ALIVE"
  print_workers
  echo "history server: $HISTORY_UI  event log dir: file://$SPARK_EVENTLOG_DIR"
}

stop() {
  local f name
  stop_pidfile "$RUN_DIR/history.pid" "history server" 30
  shopt -s nullglob
  for f in "$RUN_DIR"/worker-*.pid; do
    name="$(basename "$f" .pid)"
    stop_pidfile "$f" "$name" 30
  done
  shopt -u nullglob
  stop_pidfile "$RUN_DIR/master.pid" "master" 30
}

status() {
  local f name any=0 rc=0 lines=()
  shopt -s nullglob
  for f in "$RUN_DIR/master.pid" "$RUN_DIR"/worker-*.pid "$RUN_DIR/history.pid"; do
    name="$(basename "$f" .pid)"
    if pid_alive "$f"; then lines+=("$name: running (pid $(<"$f"))"); any=1
    else lines+=("$name: stopped"); rc=1; fi
  done
  shopt -u nullglob
  if (( any == 0 )); then
    echo "spark cluster: stopped (state dir $SPARK_CLUSTER_HOME_DIR)"; return 3
  fi
  printf '%s\n' "${lines[@]}"
  if http_ok "$MASTER_UI/json/"; then print_workers; else echo "master UI $MASTER_UI not answering"; rc=1; fi
  if http_ok "$HISTORY_UI/api/v1/applications"; then
    echo "history server: $HISTORY_UI  event log dir: file://$SPARK_EVENTLOG_DIR"
  else
    echo "history server: not answering at $HISTORY_UI"; rc=1
  fi
  return "$rc"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
