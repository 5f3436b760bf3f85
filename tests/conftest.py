"""Shared fixtures: a local Spark session, a tiny trained bundle, and the real services.

Services (Kafka, PostgreSQL, the S3 server) are started by scripts/test.sh, which exports
SENTINEL_KAFKA_BOOTSTRAP, PG* and SENTINEL_S3_ENDPOINT. Run outside it, service tests are
skipped with that reason; under CI (CI=true) a missing service is an error, not a skip.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_OVERRIDES = ["window.length=16", "window.stride=2", "model.units=12", "model.latent=4",
                  "model.epochs=4", "model.batch_size=128", "threshold.quantile=0.999",
                  "threshold.margin=1.5", "train.report=false"]


def need_service(env_var: str, what: str) -> str:
    value = os.environ.get(env_var)
    if not value:
        msg = f"{what} not running: {env_var} unset (make test starts it via scripts/services)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return value


@pytest.fixture(scope="session")
def spark():
    from sentinel.stream import spark as sparkmod
    from sentinel.config import load_settings
    s = load_settings(None, ["spark.master='local[2]'", "spark.shuffle_partitions=2",
                             "spark.conf={\"spark.ui.enabled\" = \"false\"}"])
    session = sparkmod.session(s, "tests", kafka=bool(os.environ.get("SENTINEL_KAFKA_BOOTSTRAP")))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_settings():
    from sentinel.config import load_settings
    return load_settings(None, TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_network():
    """4 sensors, 6 days of 5-minute readings with labelled anomalies (seeded)."""
    from sentinel.ingest.synthetic import simulate
    return simulate(n_sensors=4, days=6, interval_s=300, seed=3, anomalies_per_sensor_week=3.0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_settings, tiny_network):
    """A small GRU bundle trained on the tiny network (about 15 s on 2 cores)."""
    from sentinel.detect.training import fit_bundle
    frame = tiny_network.readings.rename(columns={"timestamp": "event_time"})
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    path, _ = fit_bundle(frame, tiny_settings, out, label_col="is_anomaly")
    return path
