"""The serving peer of benchmarks/throughput.py: the same bundle served the MLflow way.

Someone who would reach for MLflow wraps the model as a pyfunc model and scores a DataFrame of
windows with ``mlflow.pyfunc.spark_udf``. :class:`BundleModel` does exactly that with the
product's own code (``load_bundle`` in ``load_context``, ``scoring.score_windows`` in
``predict``), so the comparison is of the serving path, not of the model or the scoring
arithmetic: the product scores chunks (Arrow IPC tables of many windows, as the stream's window
state emits them) with one cached bundle per Python worker; MLflow gets one row per window
(array columns) and, in local mode, loads the model again for every task.

Both read the same windows: :func:`window_frames` builds them once and returns them both ways.
Needs the ``[bench]`` extra (mlflow-skinny: pyfunc and spark_udf without the tracking server),
imported only by the benchmark's serving stage.
"""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def mlflow_version() -> str:
    return mlflow.__version__


def windows(bundle, n_windows: int):
    """``n_windows`` windows of a simulated network (sensors the bundle knows or not: the
    scaler falls back to its global rule), as the window state assembles them."""
    from sentinel.detect.training import build_windows
    from sentinel.ingest.synthetic import simulate
    net = simulate(50, 4, 300, 7, anomalies_per_sensor_week=1.0)
    ws = build_windows(net.readings.rename(columns={"timestamp": "event_time"}), bundle.features, bundle.length,
                       int(bundle.manifest["window"]["max_gap_s"]))
    reps = int(np.ceil(n_windows / len(ws.windows)))
    w = np.concatenate([ws.windows] * reps)[:n_windows]
    t = np.concatenate([ws.times] * reps)[:n_windows].astype(np.int64)
    sid = np.concatenate([ws.sensors] * reps)[:n_windows].astype(object)
    # repeated copies become other sensors, so (sensor_id, event_time) stays a key
    copy = np.repeat(np.arange(reps), len(ws.windows))[:n_windows]
    sid = np.array([f"{s}-{c}" for s, c in zip(sid, copy)], dtype=object)
    return w, t, sid


def window_frames(spark, bundle, n_windows: int, buckets: int, partitions: int):
    """The same windows twice, cached in Spark: ``rows`` (one row per window: sensor_id,
    event_time, window array<double>, window_times array<bigint>: what a pyfunc model gets)
    and ``chunks`` (one row per state bucket, a ``windows`` IPC table in the window state's
    format: what the product's scoring UDF gets)."""
    import pyarrow as pa
    from zlib import crc32
    from sentinel.stream.chunks import _fixed, encode_table
    w, t, sid = windows(bundle, n_windows)
    length, n_f = bundle.length, len(bundle.features)
    flat = w.reshape(len(w), length * n_f)
    rows = pd.DataFrame({"sensor_id": sid, "event_time": t[:, -1], "window": list(flat), "window_times": list(t)})
    bucket = np.array([crc32(s.encode()) % buckets for s in sid])
    chunk_rows = []
    for b in range(buckets):
        idx = np.flatnonzero(bucket == b)
        if idx.size:
            table = pa.table({"sensor_id": pa.array(sid[idx], pa.string()),
                              "event_time": pa.array(t[idx, -1], pa.int64()),
                              "values": _fixed(w[idx, -1, :]), "window": _fixed(flat[idx]),
                              "window_times": _fixed(t[idx])})
            chunk_rows.append((b, encode_table(table)))
    rows_df = spark.createDataFrame(rows).repartition(partitions).cache()
    chunks_df = spark.createDataFrame(chunk_rows, "bucket int, windows binary").repartition(partitions, "bucket").cache()
    rows_df.count(), chunks_df.count()
    return rows_df, chunks_df


def product_scorer(bundle, threads: int):
    """The product's path: its scoring UDF (stream.scoring_udf) over the chunks, every score
    kept; returns (sensor_id, event_time, score)."""
    from pyspark.sql import functions as F
    from sentinel.stream.chunks import decode_tables
    from sentinel.stream.scoring_udf import make_score_udf
    udf = make_score_udf(bundle.path, threads, bundle.length, len(bundle.features), keep_scores=True)

    def run(chunks):
        out = chunks.select(udf(F.col("windows")).alias("s")).select("s.scores").collect()
        table = decode_tables([r.scores for r in out])
        return (table.select(["sensor_id", "event_time", "score"]).to_pandas() if table is not None
                else pd.DataFrame(columns=["sensor_id", "event_time", "score"]))

    return run


def mlflow_scorer(spark, model_dir: Path):
    """MLflow's path: ``mlflow.pyfunc.spark_udf`` of the pyfunc model over the rows; returns
    (sensor_id, event_time, score)."""
    from pyspark.sql import functions as F
    from sentinel.stream.scoring_udf import bind_worker_role
    # workers of its own (not the product's scoring workers, whose daemon preloads TensorFlow,
    # nor the window state's): a pool that only MLflow's UDF uses, as in a job of its own
    udf = bind_worker_role(mlflow.pyfunc.spark_udf(spark, str(model_dir), result_type="double",
                                                   env_manager="local"), "mlflow")

    def run(rows):
        out = rows.select("sensor_id", "event_time",
                          udf(F.struct("sensor_id", "window", "window_times")).alias("score"))
        return out.toPandas()

    return run


class BundleModel(mlflow.pyfunc.PythonModel):
    """A Pressure Sentinel bundle as an MLflow pyfunc model: one score per window row. Pickled
    by reference: this file travels with the model (``code_paths``), so workers import it."""

    def __init__(self, threads: int = 1):
        self.threads = threads

    def load_context(self, context):
        from sentinel.detect.model import load_bundle
        # the product's loader (cached per process): what is left to measure is MLflow's own
        # per-task cost and its row-per-window input, the most favourable case for MLflow
        self.bundle = load_bundle(context.artifacts["bundle"], self.threads)

    def predict(self, context, model_input, params=None):
        from sentinel.detect.scoring import score_windows
        b = self.bundle
        w = np.stack(model_input["window"].to_numpy()).reshape(-1, b.length, len(b.features))
        t = np.stack(model_input["window_times"].to_numpy()).astype(np.int64)
        return pd.Series(score_windows(b, w, t, model_input["sensor_id"].to_numpy()), dtype="float64")


def save_pyfunc(bundle, out: Path, threads: int) -> Path:
    """Save the bundle as an MLflow pyfunc model at ``out`` (the bundle directory is its
    artifact; this file travels with it in ``code_paths`` so workers can load the class)."""
    from mlflow.models import infer_signature
    w, t, sid = windows(bundle, 4)
    example = pd.DataFrame({"sensor_id": sid, "window": list(w.reshape(len(w), -1)), "window_times": list(t)})
    signature = infer_signature(example, pd.Series(np.zeros(len(example)), dtype="float64"))
    model = BundleModel(threads)
    mlflow.pyfunc.save_model(str(out), python_model=model, artifacts={"bundle": bundle.path},
                             signature=signature, pip_requirements=[], code_paths=[__file__])
    return out
