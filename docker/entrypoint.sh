#!/usr/bin/env bash
# Entry point of the Pressure Sentinel image (Dockerfile). The first argument picks the role:
#
#   master            Spark standalone master  (spark://$SPARK_MASTER_HOST:7077, UI :8080)
#   worker            Spark worker registering at $SPARK_MASTER; scale with --scale spark-worker=N
#   history           Spark history server (UI :18080) reading $SPARK_EVENTLOG_DIR
#   submit JOB ARGS   scripts/submit.sh JOB ARGS (driver in this container)
#   help              this text
#   anything else     run as a command, e.g. `sentinel simulate --stream kafka://kafka:9092/...`
#
# Spark binds and advertises SPARK_LOCAL_IP. scripts/env.sh defaults it to 127.0.0.1 (right on
# one machine, wrong between containers), so it is set to this container's address first,
# unless the compose file sets it (the master sets it to its service name).
set -euo pipefail
ROOT=/opt/sentinel
cd "$ROOT"

if [[ -z "${SPARK_LOCAL_IP:-}" ]]; then
  SPARK_LOCAL_IP="$(hostname -i | awk '{print $1}')"
fi
export SPARK_LOCAL_IP
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
SPARK_HOME="${SPARK_HOME:-$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME

SPARK_MASTER_HOST="${SPARK_MASTER_HOST:-spark-master}"
SPARK_MASTER_PORT="${SPARK_MASTER_PORT:-7077}"
SPARK_MASTER_WEBUI_PORT="${SPARK_MASTER_WEBUI_PORT:-8080}"
SPARK_WORKER_WEBUI_PORT="${SPARK_WORKER_WEBUI_PORT:-8081}"
SPARK_HISTORY_PORT="${SPARK_HISTORY_PORT:-18080}"
SPARK_EVENTLOG_DIR="${SPARK_EVENTLOG_DIR:-$ROOT/.cache/spark-events}"

role="${1:-help}"
case "$role" in
  master)
    exec spark-class org.apache.spark.deploy.master.Master \
      --host "$SPARK_MASTER_HOST" --port "$SPARK_MASTER_PORT" --webui-port "$SPARK_MASTER_WEBUI_PORT"
    ;;
  worker)
    exec spark-class org.apache.spark.deploy.worker.Worker \
      --cores "${SPARK_WORKER_CORES:-1}" --memory "${SPARK_WORKER_MEMORY:-2g}" \
      --webui-port "$SPARK_WORKER_WEBUI_PORT" --work-dir "$ROOT/.cache/spark-work" \
      "${SPARK_MASTER:-spark://$SPARK_MASTER_HOST:$SPARK_MASTER_PORT}"
    ;;
  history)
    mkdir -p "$SPARK_EVENTLOG_DIR"
    export SPARK_HISTORY_OPTS="-Dspark.history.fs.logDirectory=file://$SPARK_EVENTLOG_DIR -Dspark.history.ui.port=$SPARK_HISTORY_PORT -Dspark.history.fs.update.interval=5s ${SPARK_HISTORY_OPTS:-}"
    exec spark-class org.apache.spark.deploy.history.HistoryServer
    ;;
  submit)
    shift
    exec "$ROOT/scripts/submit.sh" "$@"
    ;;
  help|-h|--help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    exec "$@"
    ;;
esac
