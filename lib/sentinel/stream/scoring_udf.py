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


def _list_rows(column, rows: np.ndarray, width: int) -> np.ndarray:
    """Rows of an Arrow list column whose lists all have ``width`` items -> (len(rows), width)."""
    col = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return values[offsets[rows][:, None] + np.arange(width)[None, :]]


def score_zone_chunks(windows: pd.Series, bundle_path: str, threads: int, length: int,
                      keep_scores: bool = False) -> pd.DataFrame:
    """Score the zone windows of a batch of chunks (zone bundles' pandas UDF body).

    ``windows``: the chunks' zone windows tables (``window_state.process_zone_bucket``; IPC,
    None for chunks without windows). Each zone's windows are scored in one call
    (``scoring.score_windows``, or ``score_details`` with ``keep_scores``), which scores every
    member of every window (``scoring.scored_rows``); a member's row is kept only where it is
    real (it reported at that time step), as ``batch.score_table`` does. The rows then look like
    a per-sensor bundle's (``SCORE_SCHEMA``, one row per chunk): ``sensor_id`` = the member,
    ``event_time`` = its own reading's time, ``values`` = its reading, so the writer, incidents
    and stores take them unchanged. ``n_scored`` counts the members whose reading arrived in
    this batch (``fresh``): a reading that waited in the state for its zone was counted as
    warm-up in the batch it came in.
    """
    import pyarrow as pa
    from sentinel.detect.explain import detail_columns
    from sentinel.detect.scoring import flag, score_details, score_windows, scored_rows

    tables = [decode_table(b) if b is not None else None for b in windows.tolist()]
    counts = np.array([t.num_rows if t is not None else 0 for t in tables], dtype=np.int64)
    n_chunks = len(tables)
    n_scored = np.zeros(n_chunks, dtype=np.int64)
    anomalies, scores_out, max_time = [None] * n_chunks, [None] * n_chunks, [None] * n_chunks
    error = None
    if counts.sum():
        table = pa.concat_tables([t for t in tables if t is not None])
        bundle, error = batch_bundle(bundle_path, threads)
        features = bundle.features
        cols = detail_columns(features)
        zones = table.column("zone").to_numpy(zero_copy_only=False).astype(object)
        wt_all = fixed_to_numpy(table.column("window_times"), length).astype(np.int64)
        chunk_of = np.repeat(np.arange(n_chunks), counts)
        info, parts = {}, []
        for z in sorted(set(zones.tolist())):
            rows = np.flatnonzero(zones == z)
            s_n = len(table.column("real")[int(rows[0])])
            members = bundle.model.channels.get(z) if hasattr(bundle.model, "channels") else None
            if members is None or len(members) != s_n:
                raise ValueError(f"model {bundle.version} does not have zone {z} with the {s_n} members the window "
                                 f"state aligned: deploy a model with the same zones (or a new stream.checkpoint)")
            w = _list_rows(table.column("window"), rows, length * s_n).astype(np.float64).reshape(-1, length, s_n)
            wt = wt_all[rows]
            zid = np.full(len(rows), z, dtype=object)
            if keep_scores:
                d = score_details(bundle, w, wt, zid)
                sc, frame = d.scores, d.explain.frame(features)
            else:
                sc, frame = score_windows(bundle, w, wt, zid), None
            win, sen = scored_rows(bundle, zid)
            mem = np.arange(len(win)) % s_n
            keep = _list_rows(table.column("real"), rows, s_n).astype(bool).reshape(-1)
            fresh = _list_rows(table.column("fresh"), rows, s_n).astype(bool).reshape(-1)
            own = _list_rows(table.column("times"), rows, s_n).astype(np.int64).reshape(-1)
            info[z] = (w, wt, s_n, frame)
            k = np.flatnonzero(keep)
            parts.append({"zone": zid[win[k]], "lw": win[k], "mem": mem[k], "g": rows[win[k]], "sensor": sen[k],
                          "t": own[k], "value": w[win[k], -1, mem[k]], "score": np.asarray(sc, dtype=np.float64)[k],
                          "fresh": fresh[k]})
        r = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        order = np.lexsort((r["mem"], r["g"]))          # window order = chunk order
        r = {key: v[order] for key, v in r.items()}
        _freeze_once(bundle.path)
        thr, flags = flag(bundle, r["score"], r["sensor"])
        flags = np.asarray(flags, dtype=bool)

        def details_of(idx: np.ndarray) -> pd.DataFrame:
            """The explanation columns of member rows ``idx``, in that order."""
            out = []
            for z in sorted(set(r["zone"][idx].tolist())):
                sel = idx[r["zone"][idx] == z]
                w, wt, s_n, frame = info[z]
                if frame is None:  # only the flagged rows are explained: their windows, once each
                    uw, inv = np.unique(r["lw"][sel], return_inverse=True)
                    frame = score_details(bundle, w[uw], wt[uw], np.full(len(uw), z, dtype=object)).explain.frame(
                        features)
                    pos = np.asarray(inv).ravel() * s_n + r["mem"][sel]
                else:
                    pos = r["lw"][sel] * s_n + r["mem"][sel]
                part = frame.iloc[pos][cols].copy()
                part.index = sel
                out.append(part)
            return pd.concat(out).loc[idx].reset_index(drop=True)

        result = pa.table({"sensor_id": pa.array(r["sensor"].tolist(), pa.string()),
                           "event_time": pa.array(r["t"], pa.int64()),
                           "values": _fixed(r["value"].reshape(-1, 1)),
                           "score": pa.array(r["score"], pa.float64()),
                           "threshold": pa.array(np.asarray(thr, dtype=np.float64), pa.float64()),
                           "is_anomaly": pa.array(flags),
                           "model_version": pa.array([bundle.version] * len(flags), pa.string())})
        if keep_scores:
            every = details_of(np.arange(len(flags)))
            exp = np.column_stack([every[f"expected_{f}"].to_numpy(dtype=float) for f in features])
            result_scores = result.append_column("expected", _fixed(exp))
        flagged_idx = np.flatnonzero(flags)
        explained = None
        if flagged_idx.size:
            explained = pa.Table.from_pandas(details_of(flagged_idx), preserve_index=False)
        position = np.cumsum(flags) - 1
        chunk = chunk_of[r["g"]]
        for i in range(n_chunks):
            sel = np.flatnonzero(chunk == i)
            if not sel.size:
                continue
            n_scored[i] = int(r["fresh"][sel].sum())
            max_time[i] = int(r["t"][sel].max())
            hit = sel[flags[sel]]
            if hit.size:
                flagged = result.take(pa.array(hit, pa.int64()))
                extra = explained.take(pa.array(position[hit], pa.int64()))
                for name in extra.column_names:
                    flagged = flagged.append_column(name, extra.column(name))
                anomalies[i] = encode_table(flagged)
            if keep_scores:
                scores_out[i] = encode_table(result_scores.take(pa.array(sel, pa.int64())))
    return pd.DataFrame({"n_scored": n_scored, "anomalies": anomalies, "scores": scores_out, "max_time": max_time,
                         "model_error": [error] * n_chunks})


def pc_max(column) -> int:
    import pyarrow.compute as pc
    return pc.max(column).as_py()


def make_score_udf(bundle_path: str, threads: int, length: int, n_features: int, keep_scores: bool = False,
                   zones: bool = False):
    """The pandas UDF over the ``windows`` column: :func:`score_chunks`, or for zone bundles
    (``zones``) :func:`score_zone_chunks`."""
    from pyspark.sql.functions import pandas_udf

    if zones:
        # Residual zone models are plain numpy and a hot swap keeps the zones (model.check_compatible),
        # so this UDF never needs TensorFlow: it runs in the shared Python workers (no scoring role,
        # no daemon of its own that would preload TensorFlow, no extra processes).
        @pandas_udf(SCORE_SCHEMA)
        def score_zones(windows: pd.Series) -> pd.DataFrame:
            return score_zone_chunks(windows, bundle_path, threads, length, keep_scores)

        return score_zones

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

