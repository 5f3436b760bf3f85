#!/usr/bin/env bash
# make test: set up, start the real services the tests use (Kafka, PostgreSQL, S3 server),
# run unit + integration + end-to-end tests, stop the services again.
#   scripts/test.sh            everything
#   scripts/test.sh unit       unit tests only (no Spark, no services; seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh
source scripts/env.sh
if [[ "${1:-all}" == unit ]]; then
  exec .venv/bin/python -m pytest tests/unit -q
fi
# The browser test (tests/e2e/test_serve_browser.py) drives Debian's chromium with Playwright
# (Playwright's own browser download cannot be used here).
if [[ ! -x /usr/bin/chromium ]]; then
  echo "[test] installing Debian's chromium for the browser test (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
started=()
cleanup() {
  for svc in "${started[@]}"; do bash scripts/services/$svc.sh stop >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
for svc in kafka postgres s3; do
  bash scripts/services/$svc.sh status >/dev/null 2>&1 || started+=("$svc")  # stop only what we start
  bash scripts/services/$svc.sh start
done
eval "$(bash scripts/services/postgres.sh env)"
eval "$(bash scripts/services/s3.sh env)"
export SENTINEL_KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-19092}
.venv/bin/python -m pytest tests -q --durations=15 "${@:2}"
