#!/usr/bin/env bash
# make serve: the operator page (sentinel serve) over a store, by default the demo's.
#   scripts/serve.sh [sentinel serve flags]
# Env: SERVE_STORE (sqlite:///data/demo.db), SERVE_HOST (127.0.0.1), SERVE_PORT (8000),
#      SENTINEL_API_TOKEN (writes: acknowledge, close, label; unset = read-only page).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh >/dev/null
source scripts/env.sh
STORE=${SERVE_STORE:-sqlite:///data/demo.db}
if [[ $STORE == sqlite:///* && ! -f ${STORE#sqlite:///} ]]; then
  echo "[serve] error: ${STORE#sqlite:///} does not exist: run make demo first, or set SERVE_STORE=URL" >&2
  exit 2
fi
HOST=${SERVE_HOST:-127.0.0.1}
PORT=${SERVE_PORT:-8000}
echo "[serve] open http://$HOST:$PORT/ (API docs http://$HOST:$PORT/docs); Ctrl-C stops"
[[ -n "${SENTINEL_API_TOKEN:-}" ]] || echo "[serve] SENTINEL_API_TOKEN is unset: the page is read-only (export it to acknowledge, close and label)"
exec sentinel serve --store "$STORE" --host "$HOST" --port "$PORT" "$@"
