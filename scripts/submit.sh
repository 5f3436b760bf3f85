#!/usr/bin/env bash
# Launch a job (jobs/JOB.py) with spark-submit on any master: local[*] by default, the local
# standalone cluster (make cluster-up) or a real one.
#
#   scripts/submit.sh train  --config conf/sentinel.toml --input data/history.csv
#   SPARK_MASTER=spark://127.0.0.1:7077 SPARK_EVENTLOG_DIR=$PWD/.cache/spark-events \
#     scripts/submit.sh deploy --config conf/sentinel.toml --model "$PWD/models/pressure"
#
# What it does:
#   1. zips lib/sentinel into build/sentinel.zip and ships it with --py-files, so every
#      executor imports the same package as the driver (no install needed on the workers;
#      their Python still needs the pinned third-party packages: pandas, pyarrow, TensorFlow);
#   2. sources scripts/env.sh: PYSPARK_PYTHON (the venv's interpreter, also used by the Python
#      workers of the local cluster), SPARK_CONF_DIR=conf (spark-defaults.conf brings Spark's
#      Kafka connector), SPARK_LOCAL_IP;
#   3. spark-submit --master ${SPARK_MASTER:-local[*]} --py-files build/sentinel.zip
#      [event log settings if SPARK_EVENTLOG_DIR is set] [$SENTINEL_SUBMIT_OPTS] jobs/JOB.py ARGS.
#
# Paths: the driver runs in the project root, but executors run in their own work directories.
# Give the model bundle and the checkpoint as absolute paths (or s3a://, hdfs://) that every
# executor can reach: the local cluster shares this machine's filesystem; on a real cluster
# use shared storage.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

jobs() {  # the job names: jobs/*.py without the extension
  local f names=()
  for f in "$ROOT"/jobs/*.py; do names+=("$(basename "$f" .py)"); done
  echo "${names[*]}"
}

usage() {
  cat <<EOF
Usage: $(basename "$0") JOB [JOB ARGS...]      JOB: $(jobs)

spark-submit jobs/JOB.py with the project package shipped to every executor.

Environment:
  SPARK_MASTER          master URL (default local[*]); the local cluster: spark://127.0.0.1:7077
  SPARK_EVENTLOG_DIR    if set, event logs go there (path or URI) for the history server;
                        the local cluster's history server reads \$ROOT/.cache/spark-events
  SENTINEL_SUBMIT_OPTS  extra spark-submit options, split on spaces, e.g.
                        "--executor-memory 1g --total-executor-cores 2"
Run 'scripts/submit.sh JOB --help' for the job's own options.
EOF
}

job="${1:-}"
case "$job" in
  "") usage >&2; exit 2 ;;
  -h|--help|help) usage; exit 0 ;;
esac
shift
if [[ ! -f "$ROOT/jobs/$job.py" ]]; then
  echo "[submit] error: no job named '$job' (jobs/$job.py does not exist); choose one of: $(jobs)" >&2
  exit 2
fi

cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
command -v spark-submit >/dev/null || { echo "[submit] error: spark-submit not found in $ROOT/.venv/bin: run make setup" >&2; exit 1; }

# 1. The package as a zip for --py-files. Rebuilt on every submit (a few ms); written to a
#    temporary name first so concurrent submits never read a half-written zip.
mkdir -p build
tmp="build/.sentinel.zip.$$"
python - "$tmp" <<'PY'
import pathlib, sys, zipfile
out = pathlib.Path(sys.argv[1])
src = pathlib.Path("lib")
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for f in sorted((src / "sentinel").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
            z.write(f, f.relative_to(src).as_posix())
PY
mv -f "$tmp" build/sentinel.zip

args=(--master "${SPARK_MASTER:-local[*]}" --py-files "$ROOT/build/sentinel.zip")

# 2. Event logs for the history server (spark.eventLog.dir must exist beforehand).
if [[ -n "${SPARK_EVENTLOG_DIR:-}" ]]; then
  if [[ "$SPARK_EVENTLOG_DIR" == *://* ]]; then
    eventlog_uri="$SPARK_EVENTLOG_DIR"
  else
    mkdir -p "$SPARK_EVENTLOG_DIR"
    eventlog_uri="file://$(cd "$SPARK_EVENTLOG_DIR" && pwd)"
  fi
  args+=(--conf spark.eventLog.enabled=true --conf "spark.eventLog.dir=$eventlog_uri")
fi

extra=()
if [[ -n "${SENTINEL_SUBMIT_OPTS:-}" ]]; then
  read -r -a extra <<<"$SENTINEL_SUBMIT_OPTS"
fi

echo "[submit] spark-submit ${args[*]} ${extra[*]} jobs/$job.py $*" >&2
exec spark-submit "${args[@]}" "${extra[@]}" "jobs/$job.py" "$@"
