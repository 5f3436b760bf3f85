#!/usr/bin/env bash
# Set up the project on a fresh machine (safe to run again: it only does what is missing).
#   - checks Python 3.11 and Java 17+
#   - creates .venv and installs the pinned package (pyproject.toml) with test extras
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

if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
STAMP=.venv/.sentinel-installed
HASH=$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -f $STAMP || "$(cat $STAMP)" != "$HASH" ]]; then
  say "installing pinned dependencies into .venv (first time: a few minutes, TensorFlow is large)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$HASH" > $STAMP
else
  say ".venv is up to date"
fi

# Spark resolves its Kafka connector with Ivy at session start; do it once here, with a
# visible message, rather than in the middle of a test. The connector version must equal
# pyspark's.
SPARK_VERSION=$(.venv/bin/python -c 'import pyspark; print(pyspark.__version__)')
IVY_MARK=.cache/ivy-kafka-$SPARK_VERSION.ok
if [[ "${SENTINEL_SKIP_KAFKA_JARS:-0}" != 1 && ! -f $IVY_MARK ]]; then
  say "fetching Spark's Kafka connector org.apache.spark:spark-sql-kafka-0-10_2.13:$SPARK_VERSION (once)"
  mkdir -p .cache
  PYSPARK_PYTHON=$ROOT/.venv/bin/python .venv/bin/python - "$SPARK_VERSION" <<'PY'
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
say "ready: .venv/bin/sentinel --help"
