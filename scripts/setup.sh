#!/usr/bin/env bash
# Set up the project on a fresh machine (safe to run again: it only does what is missing).
#   - checks Python 3.11 and Java 17+
#   - creates .venv ($VENV overrides it) and installs exactly the locked, hash-checked set
#     (requirements-dev.lock: the runtime pins of requirements.lock plus the test and bench
#     extras), then the package itself without dependencies (bash scripts/lock.sh relocks)
#   - pre-fetches Spark's Kafka connector jars (once) so the first Kafka job does not stall
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
say() { printf '[setup] %s\n' "$*"; }

"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null \
  || { echo "[setup] error: Python 3.11 is required (found $("$PY" --version 2>&1)); install python3.11 or set PYTHON=/path/to/python3.11" >&2; exit 1; }
if ! command -v java >/dev/null; then
  echo "[setup] error: Java 17+ is required by Spark and Kafka: apt-get install -y openjdk-17-jre-headless" >&2; exit 1
fi
JAVA_MAJOR=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
[[ "${JAVA_MAJOR:-0}" -ge 17 ]] || { echo "[setup] error: Java 17+ required, found ${JAVA_MAJOR:-none}" >&2; exit 1; }

VENV=${VENV:-.venv}
[[ $VENV == /* ]] || VENV=$ROOT/$VENV
LOCK=requirements-dev.lock
# A venv is only complete with its pyvenv.cfg: without it (creation interrupted, or still
# running in another shell) its python is the base interpreter, and pip would install there.
if [[ ! -x $VENV/bin/python || ! -f $VENV/pyvenv.cfg ]]; then
  say "creating $VENV with $("$PY" --version)"
  "$PY" -m venv --clear "$VENV"
fi
STAMP=$VENV/.sentinel-installed
HASH=$(cat $LOCK pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f $STAMP || "$(cat "$STAMP")" != "$HASH" ]]; then
  say "installing the locked dependencies ($LOCK, hash-checked) into $VENV (first time: a few minutes, TensorFlow is large)"
  # Every package from the lock with its sha256 checked; wheels only, except pyspark, which
  # PyPI has only as a source archive (hash-checked too): it builds with the venv's own
  # setuptools (--no-build-isolation), so no unpinned build tool is downloaded. pip itself
  # stays the venv's.
  # The venv's bundled setuptools (65) cannot build a wheel, so the locked setuptools and
  # wheel go in first (hash-checked); a warm pip cache hides this, a fresh machine does not.
  bash scripts/lock-build-tools.sh $LOCK > "$VENV/build-tools.lock"
  "$VENV/bin/python" -m pip install -q --require-virtualenv --require-hashes --only-binary :all: \
    -r "$VENV/build-tools.lock"
  "$VENV/bin/python" -m pip install -q --require-virtualenv --require-hashes --only-binary :all: --no-binary pyspark \
    --no-build-isolation -r $LOCK
  # The package itself: no dependencies (the lock has them all), built with the locked setuptools.
  "$VENV/bin/python" -m pip install -q --require-virtualenv --no-deps --no-build-isolation -e .
  echo "$HASH" > "$STAMP"
else
  say "$VENV is up to date"
fi

# Spark resolves its Kafka connector with Ivy at session start; do it once here, with a
# visible message, rather than in the middle of a test. The connector version must equal
# pyspark's.
SPARK_VERSION=$("$VENV/bin/python" -c 'import pyspark; print(pyspark.__version__)')
IVY_MARK=.cache/ivy-kafka-$SPARK_VERSION.ok
if [[ "${SENTINEL_SKIP_KAFKA_JARS:-0}" != 1 && ! -f $IVY_MARK ]]; then
  say "fetching Spark's Kafka connector org.apache.spark:spark-sql-kafka-0-10_2.13:$SPARK_VERSION (once)"
  mkdir -p .cache
  PYSPARK_PYTHON=$VENV/bin/python "$VENV/bin/python" - "$SPARK_VERSION" <<'PY'
import sys
from pyspark.sql import SparkSession
pkg = f"org.apache.spark:spark-sql-kafka-0-10_2.13:{sys.argv[1]}"
spark = (SparkSession.builder.master("local[1]").appName("fetch-kafka-connector")
         .config("spark.jars.packages", pkg).config("spark.ui.enabled", "false").getOrCreate())
# Resolve the "kafka" source the way a job will (the jars live in Spark's own class loader).
spark._jvm.org.apache.spark.sql.execution.datasources.DataSource.lookupDataSource(
    "kafka", spark._jsparkSession.sessionState().conf())
spark.stop()
PY
  touch "$IVY_MARK"
fi
# The operator page's chart library (sentinel serve): npm ci from web/package-lock.json, copied
# into lib/sentinel/serve/static/vendor/ (git-ignored), only when missing.
if [[ ! -f lib/sentinel/serve/static/vendor/uPlot.iife.min.js ]]; then
  bash scripts/build-web.sh
fi
say "ready: $VENV/bin/sentinel --help"
