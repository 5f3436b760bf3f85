# Sourced by the other scripts: the environment every Spark command here runs with.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export PATH="$ROOT/.venv/bin:$PATH"
export PYSPARK_PYTHON="$ROOT/.venv/bin/python"      # Python workers need pandas/pyarrow/TF
export PYSPARK_DRIVER_PYTHON="$ROOT/.venv/bin/python"
export SPARK_CONF_DIR="$ROOT/conf"                  # spark-defaults.conf, log4j2.properties
export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
export TF_CPP_MIN_LOG_LEVEL=2
