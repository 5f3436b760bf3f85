# syntax=docker/dockerfile:1
# The one Pressure Sentinel image: Python 3.11 + Java 17 + the pinned package (pyspark, Keras/
# TensorFlow, ...) in /opt/sentinel/.venv, laid out like the repository so scripts/env.sh and
# scripts/submit.sh work unchanged. docker-compose.yml runs it as Spark master, workers,
# history server, job driver (docker compose exec spark-master scripts/submit.sh ...) and
# sensor simulator; docker/entrypoint.sh picks the role.
#
# bookworm, not the newer default: Debian bookworm still ships openjdk-17 (Spark 4.2 runs on 17/21).
FROM python:3.11-slim-bookworm

# Must equal pyproject.toml's pyspark pin (checked below and by tests/unit/test_compose.py):
# Spark's Kafka connector is fetched for exactly this version.
ARG SPARK_VERSION=4.2.0
ARG SENTINEL_UID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    SENTINEL_HOME=/opt/sentinel

RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid "${SENTINEL_UID}" --shell /bin/bash sentinel \
 && mkdir -p /opt/sentinel && chown sentinel:sentinel /opt/sentinel

USER sentinel
WORKDIR /opt/sentinel

# Same interpreter path as on a developer machine (.venv), so scripts/env.sh needs no change.
ENV PATH=/opt/sentinel/.venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/sentinel/.venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/sentinel/.venv/bin/python \
    SPARK_CONF_DIR=/opt/sentinel/conf \
    TF_CPP_MIN_LOG_LEVEL=2

# 1. The third-party dependencies, exactly the locked set (requirements.lock: the runtime
#    pins of pyproject.toml and everything they pull in, each file's sha256 checked; bash
#    scripts/lock.sh regenerates it). Wheels only, except pyspark (PyPI has only its source
#    archive, hash-checked as well), built with the venv's setuptools: nothing unpinned is
#    downloaded. Own layer: code changes do not re-download TensorFlow.
COPY --chown=sentinel:sentinel requirements.lock scripts/lock-build-tools.sh ./
# The locked setuptools and wheel first: the venv's bundled setuptools cannot build a wheel.
RUN python -m venv .venv \
 && bash lock-build-tools.sh requirements.lock > build-tools.lock \
 && .venv/bin/pip install --require-hashes --only-binary :all: -r build-tools.lock \
 && .venv/bin/pip install --require-hashes --only-binary :all: --no-binary pyspark --no-build-isolation \
      -r requirements.lock \
 && .venv/bin/python -c "import pyspark, sys; v = pyspark.__version__; sys.exit(0 if v == '${SPARK_VERSION}' else f'pyspark {v} != SPARK_VERSION ${SPARK_VERSION}: update the Dockerfile ARG')"

# 2. Spark's Kafka connector (and its dependencies) into the Ivy cache, once, at build time.
RUN .venv/bin/python - <<PY
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").appName("fetch-kafka-connector")
         .config("spark.jars.packages", "org.apache.spark:spark-sql-kafka-0-10_2.13:${SPARK_VERSION}")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext._jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider")
spark.stop()
PY

# 3. The project itself (see .dockerignore): package, jobs, scripts, conf, entrypoint.
COPY --chown=sentinel:sentinel . .
# No dependencies (the lock has them all), built with the locked setuptools (no isolated
# build environment fetching unpinned ones).
RUN .venv/bin/pip install --no-deps --no-build-isolation . \
 && mkdir -p data models checkpoints build .cache/spark-events .cache/spark-work \
 && chmod +x docker/*.sh scripts/*.sh \
 && .venv/bin/sentinel --help >/dev/null

ENTRYPOINT ["/opt/sentinel/docker/entrypoint.sh"]
CMD ["help"]
