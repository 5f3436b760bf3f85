#!/usr/bin/env bash
# make bench / make bench-quality: set up, start the services a benchmark needs, run it.
#   scripts/bench.sh throughput [ARGS]   Kafka + PostgreSQL, then benchmarks/throughput.py
#   scripts/bench.sh quality [ARGS]      benchmarks/quality.py (no services)
#   scripts/bench.sh api [ARGS]          benchmarks/api.py: the web app's response times (SQLite)
#   scripts/bench.sh faults [ARGS]       benchmarks/faults.py: fault injection (starts its own services)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh
source scripts/env.sh
what=${1:-throughput}; shift || true
case "$what" in
  quality) exec .venv/bin/python benchmarks/quality.py "$@" ;;
  api) exec .venv/bin/python benchmarks/api.py "$@" ;;            # SQLite; --postgres adds PostgreSQL when PG* is set
  faults) exec .venv/bin/python benchmarks/faults.py "$@" ;;      # own Kafka/PostgreSQL/S3 on own ports (it stops them)
  throughput)
    started=()
    trap 'for s in "${started[@]}"; do bash scripts/services/$s.sh stop >/dev/null 2>&1 || true; done' EXIT
    for s in kafka postgres; do
      bash scripts/services/$s.sh status >/dev/null 2>&1 || started+=("$s")
      bash scripts/services/$s.sh start
    done
    eval "$(bash scripts/services/postgres.sh env)"
    export SENTINEL_KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-19092}
    .venv/bin/python benchmarks/throughput.py "$@" ;;
  *) echo "usage: scripts/bench.sh throughput|quality|api|faults [ARGS]" >&2; exit 2 ;;
esac
