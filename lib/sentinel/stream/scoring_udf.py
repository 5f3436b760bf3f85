"""The scoring pandas UDF: every window of a micro-batch scored in large tensors.

The bundle is loaded once per Python worker (``load_bundle`` caches it); the algorithm is
``detect.scoring``, the same code as training and batch scoring.

Only this UDF's Python workers import TensorFlow: its Java function is created with
``SENTINEL_WORKER_ROLE=score`` in the environment its workers get (:func:`bind_worker_role`).
Spark keeps one worker daemon, and one pool of workers, per distinct worker environment, so
the scoring workers are processes of their own, forked from a daemon that imports TensorFlow
before forking (worker_daemon.py), while the parsing and window-state workers never load it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sentinel.stream.chunks import _fixed, decode_table, encode_table, fixed_to_numpy

# Per chunk: windows scored, the flagged ones with their explanation, every score (keep_scores), the
# newest event time scored (ns: the incidents' clock) and, when the batch's bundle failed to
# load in this worker, "<bundle>: <error>" (the worker scored with the fallback instead).
SCORE_SCHEMA = "n_scored long, anomalies binary, scores binary, max_time long, model_error string"
# The environment variable that tells a Python worker (and its daemon) what it is for, and the
# scoring workers' value: worker_daemon.py preloads TensorFlow for this role only.
ROLE_ENV = "SENTINEL_WORKER_ROLE"
SCORING_ROLE = "score"


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


def batch_bundle(default_ref: str, threads: int):
    """The bundle this task's micro-batch is scored with, and the load error if it fell back.

    The driver names the batch's bundle in a Spark local property (``model_switch``); outside a
    Spark task, or when none is set, ``default_ref`` (the bundle the job started with). A bundle
    that fails to load is replaced by the property's fallback (the one the job used before), so
    a corrupt promotion never stops scoring; the error goes back to the driver, which refuses it.
    """
    from sentinel.detect.model import load_bundle
    from sentinel.stream.model_switch import BUNDLE_PROPERTY, FALLBACK_PROPERTY
    ref = fallback = default_ref
    try:
        from pyspark import TaskContext
        tc = TaskContext.get()
    except ImportError:  # pragma: no cover - the UDF always runs under pyspark
        tc = None
    if tc is not None:
        ref = tc.getLocalProperty(BUNDLE_PROPERTY) or default_ref
        fallback = tc.getLocalProperty(FALLBACK_PROPERTY) or default_ref
    try:
        return load_bundle(ref, threads), None
    except Exception as exc:
        if ref == fallback:
            raise
        import logging
        logging.getLogger("sentinel.stream").warning("model %s failed to load (%s): scoring with %s", ref, exc,
                                                     fallback)
        return load_bundle(fallback, threads), f"{ref}: {' '.join(str(exc).split())[:300]}"


def score_chunks(windows: pd.Series, bundle_path: str, threads: int, length: int, n_features: int,
                 keep_scores: bool = False) -> pd.DataFrame:
    """Score every window of a batch of chunks in one model call (the pandas UDF's body).

    ``windows``: the chunks' windows tables (IPC, None for chunks without windows). Returns
    one row per chunk (``SCORE_SCHEMA``): windows scored, the flagged ones (``anomalies``:
    sensor_id, event_time, values, score, threshold, is_anomaly, model_version and the
    explanation columns of ``detect.explain.detail_columns``) and, with ``keep_scores``, every
    scored window (``scores``: the same without the explanation, plus ``expected``). The bundle
    (:func:`batch_bundle`) is loaded once per Python worker (``load_bundle`` caches it) and
    reused by every later batch that worker runs.
    """
    import pyarrow as pa
    from sentinel.detect.explain import detail_columns
    from sentinel.detect.scoring import flag, score_details, score_windows

    tables = [decode_table(b) if b is not None else None for b in windows.tolist()]
    counts = np.array([t.num_rows if t is not None else 0 for t in tables], dtype=np.int64)
    anomalies, scores_out = [None] * len(tables), [None] * len(tables)
    max_time = [None] * len(tables)
    error = None
    if counts.sum():
        table = pa.concat_tables([t for t in tables if t is not None])
        bundle, error = batch_bundle(bundle_path, threads)
        features = bundle.features
        w = fixed_to_numpy(table.column("window"), length * n_features).reshape(-1, length, n_features)
        t = fixed_to_numpy(table.column("window_times"), length).astype(np.int64)
        sids = table.column("sensor_id").to_numpy(zero_copy_only=False)
        # Every score needs its expected value when the scores are kept (the operator's chart);
        # otherwise only the flagged windows are explained, in a second call on those few.
        if keep_scores:
            d = score_details(bundle, w, t, sids)
            s, details = d.scores, d.explain.frame(features)
        else:
            s, details = score_windows(bundle, w, t, sids), None
        _freeze_once(bundle.path)
        thr, flags = flag(bundle, s, sids)
        flagged_idx = np.flatnonzero(flags)
        if details is None and flagged_idx.size:
            sub = score_details(bundle, w[flagged_idx], t[flagged_idx], sids[flagged_idx])
            details = sub.explain.frame(features)
            details.index = flagged_idx
        result = table.select(["sensor_id", "event_time", "values"]).append_column(
            "score", pa.array(s, pa.float64())).append_column(
            "threshold", pa.array(thr, pa.float64())).append_column("is_anomaly", pa.array(flags)).append_column(
            "model_version", pa.array([bundle.version] * len(s), pa.string()))
        explained = None
        if flagged_idx.size:
            rows = details.loc[flagged_idx] if details.index.equals(pd.Index(flagged_idx)) else details.iloc[flagged_idx]
            explained = pa.Table.from_pandas(rows[detail_columns(features)].reset_index(drop=True),
                                             preserve_index=False)
        if keep_scores:
            exp = np.column_stack([details[f"expected_{f}"].to_numpy(dtype=float) for f in features])
            result_scores = result.append_column("expected", _fixed(exp))
        position = np.cumsum(flags) - 1     # a flagged row's index among the flagged rows
        offset = 0
        for i, n in enumerate(counts):
            if n:
                part = result.slice(offset, n)
                max_time[i] = int(pc_max(part.column("event_time")))
                sel = np.flatnonzero(flags[offset:offset + n])
                if sel.size:
                    flagged = part.take(pa.array(sel))
                    extra = explained.take(pa.array(position[offset + sel]))
                    for name in extra.column_names:
                        flagged = flagged.append_column(name, extra.column(name))
                    anomalies[i] = encode_table(flagged)
                scores_out[i] = encode_table(result_scores.slice(offset, n)) if keep_scores else None
                offset += n
    return pd.DataFrame({"n_scored": counts, "anomalies": anomalies, "scores": scores_out, "max_time": max_time,
                         "model_error": [error] * len(tables)})


def pc_max(column) -> int:
    import pyarrow.compute as pc
    return pc.max(column).as_py()


def make_score_udf(bundle_path: str, threads: int, length: int, n_features: int, keep_scores: bool = False):
    """The pandas UDF over the ``windows`` column: :func:`score_chunks`."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(SCORE_SCHEMA)
    def score(windows: pd.Series) -> pd.DataFrame:
        return score_chunks(windows, bundle_path, threads, length, n_features, keep_scores)

    return bind_worker_role(score, SCORING_ROLE)


def bind_worker_role(udf, role: str):
    """Create ``udf``'s Java function now, with ``SENTINEL_WORKER_ROLE=role`` in the
    environment of the Python workers that will run it; returns ``udf``.

    PySpark copies ``SparkContext.environment`` into a UDF's Java function when it creates it
    (on first use, or here), and Spark keys its Python worker daemons and their pools by that
    environment: the UDF then runs in workers of its own, which know their role from the
    variable. Without an active SparkContext nothing happens (the UDF gets no role). ``udf``
    may be a pandas UDF or a function wrapping one (``functools.wraps``, as MLflow's).
    """
    from pyspark import SparkContext
    sc = SparkContext._active_spark_context
    if sc is None:
        return udf
    # pandas_udf returns a plain function whose ``_unwrapped`` is the UserDefinedFunction (its
    # ``__wrapped__`` is the Python body); a wrapper made with functools.wraps has ``__wrapped__``
    target = udf
    for _ in range(4):
        if isinstance(getattr(type(target), "_judf", None), property):
            break
        target = getattr(target, "_unwrapped", None) or getattr(target, "__wrapped__", None)
        if target is None:
            import logging
            logging.getLogger("sentinel.stream").warning(
                "cannot give %r its own Python workers (role %s): it runs in the shared ones", udf, role)
            return udf
    previous = sc.environment.get(ROLE_ENV)
    sc.environment[ROLE_ENV] = role
    try:
        target._judf  # noqa: B018  (the property creates and caches the Java function)
    finally:
        if previous is None:
            sc.environment.pop(ROLE_ENV, None)
        else:
            sc.environment[ROLE_ENV] = previous
    return udf

