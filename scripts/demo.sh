#!/usr/bin/env bash
# make demo: on embedded defaults (local Spark, socket source, SQLite store)
#   1. simulate 14 days of labelled history for 20 sensors
#   2. spark-submit jobs/train.py  -> models/pressure/<version>
#   3. spark-submit jobs/deploy.py, fed a live 2-day synthetic stream with injected anomalies
#      (and a few malformed lines) over a local TCP socket
#   4. print anomalies found against anomalies injected, by episode and by incident, and each injected
#      event beside the incident the stream opened for it (kind, zone, sensors, opened, severity, why)
# Env: DEMO_SEED (7: the simulated network, its history and its live feed; another seed simulates and
#      trains again), DEMO_PORT (9999), DEMO_RATE (events/s, 1000), DEMO_RETRAIN=1 to retrain,
#      DEMO_SERVE=1 to keep the operator page up at the end (http://127.0.0.1:8000/, Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
scripts/setup.sh
source scripts/env.sh
PORT=${DEMO_PORT:-9999}
RATE=${DEMO_RATE:-1000}
SEED=${DEMO_SEED:-7}
[[ $SEED =~ ^[0-9]+$ ]] || { echo "[demo] error: DEMO_SEED=$SEED is not a whole number: set e.g. DEMO_SEED=11" >&2; exit 2; }
say() { printf '\n[demo] %s\n' "$*"; }

mkdir -p data
# The seed draws the network (each sensor's level, swing, noise): history, model and feed go together.
RETRAIN=${DEMO_RETRAIN:-0}
if [[ ! -f data/history.csv || "$(cat data/history.seed 2>/dev/null)" != "$SEED" ]]; then
  say "1/4 simulating 14 days of history for 20 sensors (seed $SEED) -> data/history.csv"
  sentinel simulate --sensors 20 --days 14 --seed "$SEED" --out data/history.csv \
    --truth data/history_truth.csv --sensors-out data/sensors.csv
  echo "$SEED" > data/history.seed
else
  say "1/4 history exists: data/history.csv (seed $SEED)"
fi
# models/pressure/.demo-seed: "SEED VERSION" of the bundle the demo trained. The stream runs that
# version, not the registry's newest: anything else that trains into models/pressure stays out.
read -r MODEL_SEED VERSION 2>/dev/null < models/pressure/.demo-seed || true
[[ "${MODEL_SEED:-}" == "$SEED" && -n "${VERSION:-}" && -f models/pressure/${VERSION:-}/manifest.json ]] || RETRAIN=1

if [[ "$RETRAIN" == 1 ]]; then
  VERSION=$(date -u +%Y%m%dT%H%M%S%6NZ)
  say "2/4 training (spark-submit jobs/train.py) -> models/pressure/$VERSION"
  spark-submit jobs/train.py --config conf/sentinel.toml --input data/history.csv --label-col is_anomaly \
    --out "models/pressure/$VERSION"
  echo "$SEED $VERSION" > models/pressure/.demo-seed
else
  say "2/4 model exists: models/pressure/$VERSION (seed $SEED; DEMO_RETRAIN=1 to retrain)"
fi

say "3/4 streaming a live 3-day feed over tcp://127.0.0.1:$PORT into spark-submit jobs/deploy.py"
rm -rf checkpoints/demo data/demo.db data/demo.db-*
sentinel simulate --sensors 20 --days 3 --seed "$SEED" --start 2026-01-19T00:00:00Z --anomalies-per-week 4 \
  --stream "tcp://127.0.0.1:$PORT" --rate "$RATE" --bad-rate 0.002 \
  --truth data/live_truth.csv > data/feed.log 2>&1 &
FEED=$!
trap 'kill $FEED 2>/dev/null || true' EXIT
# Wait until the feed listens (a probe connection would be taken for the deploy job).
for _ in $(seq 100); do grep -q "listening on" data/feed.log 2>/dev/null && break; sleep 0.2; done
spark-submit jobs/deploy.py --config conf/sentinel.toml --model "models/pressure/$VERSION" \
  --set source.host='"127.0.0.1"' --set source.port=$PORT \
  --set sinks.sqlite.path='"data/demo.db"' --set sinks.sensors_file='"data/sensors.csv"' \
  --checkpoint checkpoints/demo --idle-timeout 20 \
  2> >(grep -v "^$\|TransformWithStateInPandas Python worker" >&2)
wait $FEED || { echo "[demo] the feed failed: see data/feed.log" >&2; exit 1; }
trap - EXIT

say "4/4 anomalies found vs injected (by episode, by incident, and each injected event beside its incident)"
sentinel compare --truth data/live_truth.csv --db data/demo.db --json data/demo_metrics.json
echo "demo took $(( $(date +%s) - T0 )) s; query it: sqlite3 data/demo.db 'SELECT * FROM anomalies LIMIT 5'"
# The operator page over the demo's store: printed always, kept up with DEMO_SERVE=1 (or make serve).
echo "operator page: sentinel serve --store sqlite:///data/demo.db  ->  http://127.0.0.1:${SERVE_PORT:-8000}/ (make serve)"
if [[ "${DEMO_SERVE:-0}" == 1 ]]; then
  exec bash scripts/serve.sh
fi
