#!/usr/bin/env bash
# S3-compatible endpoint for tests: moto's standalone server from the project venv, no Docker.
# (docker-compose uses MinIO; MinIO binaries cannot be downloaded on this machine.)
# Data lives in memory only: it is gone after stop.
set -euo pipefail
SVC_NAME=s3
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

S3_PORT="${S3_PORT:-19000}"
S3_HOME_DIR="${S3_HOME_DIR:-$CACHE_ROOT/s3}"
S3_START_TIMEOUT="${S3_START_TIMEOUT:-60}"
MOTO_SERVER="${MOTO_SERVER:-$VENV_DIR/bin/moto_server}"

PID_FILE="$S3_HOME_DIR/moto.pid"
LOG_FILE="$S3_HOME_DIR/logs/moto.log"
ENDPOINT="http://127.0.0.1:$S3_PORT"

usage() {
  cat <<EOF
Usage: $(basename "$0") start|stop|status|restart|env|bucket NAME|--help

S3-compatible server (moto_server from $VENV_DIR) on $ENDPOINT.
Stands in for MinIO; state is in memory and lost on stop. Any access key works.

  start         start moto_server and wait until HTTP answers
  stop          SIGTERM, wait up to 15 s, then SIGKILL
  status        running or not, endpoint, buckets
  restart       stop then start
  env           print 'export AWS_...' lines:  eval "\$($0 env)"
  bucket NAME   create bucket NAME (boto3) if missing

Environment (defaults):
  S3_PORT=$S3_PORT
  S3_HOME_DIR=$S3_HOME_DIR   state: moto.pid, logs/moto.log
  S3_START_TIMEOUT=$S3_START_TIMEOUT
  MOTO_SERVER=$MOTO_SERVER
EOF
}

answers() {
  local code
  code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$ENDPOINT/" 2>/dev/null || true)"
  [[ -n "$code" && "$code" != "000" ]]
}

boto_py() {  # run python from the venv with the test credentials/endpoint
  local py
  py="$(venv_python)" || die "no venv python at $VENV_DIR/bin/python"
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
    SENTINEL_S3_ENDPOINT="$ENDPOINT" "$py" - "$@"
}

start() {
  if pid_alive "$PID_FILE"; then
    log "already running (pid $(<"$PID_FILE")), endpoint $ENDPOINT"
    return 0
  fi
  [[ -x "$MOTO_SERVER" ]] || die "$MOTO_SERVER not found; install it: $VENV_DIR/bin/pip install 'moto[server]'"
  command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
  local t0; t0="$(now_s)"
  require_free_port "$S3_PORT" S3_PORT
  mkdir -p "$S3_HOME_DIR/logs"
  log "starting moto_server on $ENDPOINT ..."
  start_daemon "$PID_FILE" "$LOG_FILE" "$MOTO_SERVER" -H 127.0.0.1 -p "$S3_PORT"
  wait_for "$S3_START_TIMEOUT" "$PID_FILE" "$LOG_FILE" "moto_server to answer on $ENDPOINT" answers
  log "S3 (moto) is up (pid $(<"$PID_FILE")) in $(elapsed "$t0")s: endpoint $ENDPOINT"
  log "logs: $LOG_FILE"
}

stop() { stop_pidfile "$PID_FILE" "moto_server" 15; }

status() {
  if pid_alive "$PID_FILE"; then
    echo "s3: running (pid $(<"$PID_FILE")), endpoint $ENDPOINT (moto, in-memory)"
    if answers; then
      boto_py <<'PY' || true
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["SENTINEL_S3_ENDPOINT"])
names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
print("buckets:", " ".join(names) if names else "(none)")
PY
    else
      echo "s3: process is up but does not answer (log: $LOG_FILE)"; return 1
    fi
  else
    echo "s3: stopped (state dir $S3_HOME_DIR)"; return 3
  fi
}

create_bucket() {
  local name="${1:?bucket NAME}"
  pid_alive "$PID_FILE" || die "S3 server is not running (run: $0 start)"
  boto_py "$name" <<'PY'
import os, sys, boto3
name = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=os.environ["SENTINEL_S3_ENDPOINT"])
# us-east-1 (like moto) answers 200 to re-creating an own bucket: ask first
if any(b["Name"] == name for b in s3.list_buckets().get("Buckets", [])):
    print(f"[s3] bucket {name} already exists", file=sys.stderr); sys.exit(0)
try:
    s3.create_bucket(Bucket=name)
    print(f"[s3] created bucket {name}", file=sys.stderr)
except s3.exceptions.BucketAlreadyOwnedByYou:
    print(f"[s3] bucket {name} already exists", file=sys.stderr)
PY
}

print_env() {
  echo "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 SENTINEL_S3_ENDPOINT=$ENDPOINT"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  env) print_env ;;
  bucket) shift; create_bucket "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
