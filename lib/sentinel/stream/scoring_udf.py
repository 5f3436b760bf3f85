"""The scoring pandas UDF: every window of a micro-batch scored in large tensors.

The bundle is loaded once per Python worker (``load_bundle`` caches it); the algorithm is
``detect.scoring``, the same code as training and batch scoring.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sentinel.stream.chunks import decode_table, encode_table, fixed_to_numpy

SCORE_SCHEMA = "n_scored long, anomalies binary, scores binary"


_FROZEN: set[str] = set()


def _freeze_once(key: str) -> None:
    """Hide a Python worker's long-lived objects (the model, its compiled functions) from the
    garbage collector, once, after their first use: PySpark runs a full ``gc.collect()`` after
    every task, and walking them cost about 0.4 s per task (see worker_daemon.py)."""
    if key not in _FROZEN:
        import gc
        gc.collect()
        gc.freeze()
        _FROZEN.add(key)


def score_chunks(windows: pd.Series, bundle_path: str, threads: int, length: int, n_features: int,
                 keep_scores: bool = False) -> pd.DataFrame:
    """Score every window of a batch of chunks in one model call (the pandas UDF's body).

    ``windows``: the chunks' windows tables (IPC, None for chunks without windows). Returns
    one row per chunk (``SCORE_SCHEMA``): windows scored, the flagged ones (``anomalies``:
    sensor_id, event_time, values, score, threshold, is_anomaly) and, with ``keep_scores``,
    every scored window (``scores``, same columns). The bundle is loaded once per Python
    worker (``load_bundle`` caches it) and reused by every later batch that worker runs.
    """
    import pyarrow as pa
    from sentinel.detect.model import load_bundle
    from sentinel.detect.scoring import flag, score_windows

    tables = [decode_table(b) if b is not None else None for b in windows.tolist()]
    counts = np.array([t.num_rows if t is not None else 0 for t in tables], dtype=np.int64)
    anomalies, scores_out = [None] * len(tables), [None] * len(tables)
    if counts.sum():
        table = pa.concat_tables([t for t in tables if t is not None])
        bundle = load_bundle(bundle_path, threads)
        w = fixed_to_numpy(table.column("window"), length * n_features).reshape(-1, length, n_features)
        t = fixed_to_numpy(table.column("window_times"), length).astype(np.int64)
        sids = table.column("sensor_id").to_numpy(zero_copy_only=False)
        s = score_windows(bundle, w, t, sids)
        _freeze_once(bundle_path)
        thr, flags = flag(bundle, s, sids)
        result = table.select(["sensor_id", "event_time", "values"]).append_column(
            "score", pa.array(s, pa.float64())).append_column(
            "threshold", pa.array(thr, pa.float64())).append_column("is_anomaly", pa.array(flags))
        offset = 0
        for i, n in enumerate(counts):
            if n:
                part = result.slice(offset, n)
                flagged = part.filter(part.column("is_anomaly"))
                anomalies[i] = encode_table(flagged) if flagged.num_rows else None
                scores_out[i] = encode_table(part) if keep_scores else None
                offset += n
    return pd.DataFrame({"n_scored": counts, "anomalies": anomalies, "scores": scores_out})


def make_score_udf(bundle_path: str, threads: int, length: int, n_features: int, keep_scores: bool = False):
    """The pandas UDF over the ``windows`` column: :func:`score_chunks`."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(SCORE_SCHEMA)
    def score(windows: pd.Series) -> pd.DataFrame:
        return score_chunks(windows, bundle_path, threads, length, n_features, keep_scores)

    return score

