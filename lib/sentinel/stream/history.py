"""Reading and cleaning training history with Spark (CSV, Parquet, JSON lines; local or s3a://).

The training job's first step; it lives with the other modules that run on Spark. Cleaning
never drops silently: rows with a null or unparsable sensor, time or feature, readings outside a
feature's valid range and duplicate (sensor, time) rows are counted per reason, and the counts
go into the training report and the bundle manifest. Valid ranges are per feature: those
configured in ``data.valid_ranges`` are applied by Spark, the others are learned from the history
itself (``detect.ranges``: wide, from trimmed quantiles, so garbage cannot stretch them) and
applied after collection; the ranges used go into the report (``valid_ranges``) and the bundle.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from sentinel.config import Settings
from sentinel.ingest.history import HistoryError, detect_format

log = logging.getLogger("sentinel.history")


def read_history(spark, path: str, fmt: str = "auto"):
    if "://" not in path and not Path(path).exists():
        raise HistoryError(f"history file {path} does not exist: run `sentinel simulate --out {path}` "
                           f"or pass --input with your own CSV/Parquet/JSON-lines file")
    fmt = detect_format(path, fmt)
    reader = spark.read
    if fmt == "csv":
        # Everything as strings; typed below with try_cast so a bad cell is counted, not fatal.
        return reader.option("header", True).option("inferSchema", False).csv(path)
    if fmt == "json":
        return reader.json(path)
    return reader.parquet(path)


def load_clean(spark, settings: Settings, path: str, fmt: str = "auto",
               label_col: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Read, type and clean history -> (pandas frame, cleaning report).

    The frame has ``sensor_id`` (string), ``event_time`` (UTC), the features (float) and the
    label column if given; sorted by sensor and time.
    """
    from pyspark.sql import functions as F

    d = settings.data
    df = read_history(spark, path, fmt)
    cols = set(df.columns)
    needed = [d.time_field] + list(d.features)
    missing = [c for c in needed if c not in cols]
    if missing:
        raise HistoryError(f"history {path} has no column(s) {', '.join(missing)} (it has "
                           f"{', '.join(sorted(cols))}): pass --time-col/--features, or set data.time_field/data.features")
    sensor = F.col(d.sensor_field).cast("string") if d.sensor_field in cols else F.lit("sensor")
    if d.sensor_field not in cols:
        log.warning("no sensor column '%s': treating the file as one sensor", d.sensor_field)
    tcol = F.col(d.time_field)
    if dict(df.dtypes)[d.time_field] == "timestamp":
        ts = tcol
    else:
        text = tcol.cast("string")
        # ISO-8601 text, or epoch milliseconds.
        ts = F.coalesce(F.expr(f"try_cast(`{d.time_field}` as timestamp)"),
                        F.timestamp_millis(F.expr(f"try_cast(`{d.time_field}` as bigint)")))
        del text
    select = [sensor.alias("sensor_id"), ts.alias("event_time")]
    select += [F.expr(f"try_cast(`{f}` as double)").alias(f) for f in d.features]
    if label_col:
        if label_col not in cols:
            raise HistoryError(f"label column '{label_col}' is not in {path}: drop --label-col or fix its name")
        select.append(F.coalesce(F.expr(f"try_cast(`{label_col}` as int)"), F.lit(0)).alias(label_col))
    typed = df.select(*select)

    null_cond = F.col("sensor_id").isNull() | F.col("event_time").isNull()
    for f in d.features:
        null_cond = null_cond | F.col(f).isNull() | F.isnan(F.col(f))
    from sentinel.detect import ranges as vr
    try:
        configured = vr.parse_configured(d.valid_ranges)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None
    range_cond = F.lit(False)
    for f, (lo, hi) in configured.items():
        if f in d.features and lo is not None:
            range_cond = range_cond | (F.col(f) < lo)
        if f in d.features and hi is not None:
            range_cond = range_cond | (F.col(f) > hi)
    flagged = typed.withColumn("_null", null_cond).withColumn("_range", ~F.col("_null") & range_cond)
    counts = flagged.agg(F.count("*").alias("rows"), F.sum(F.col("_null").cast("int")).alias("null"),
                         F.sum(F.col("_range").cast("int")).alias("range")).collect()[0]
    good = flagged.filter(~F.col("_null") & ~F.col("_range")).drop("_null", "_range")
    deduped = good.dropDuplicates(["sensor_id", "event_time"])
    pdf = deduped.orderBy("sensor_id", "event_time").toPandas()
    report = {"rows_read": int(counts["rows"]), "null_or_unparsable": int(counts["null"] or 0),
              "out_of_range": int(counts["range"] or 0)}
    n_good = int(counts["rows"]) - report["null_or_unparsable"] - report["out_of_range"]
    report["duplicates"] = n_good - len(pdf)
    # Features without a configured range: a wide range learned from this history (detect.ranges).
    try:
        pdf, learned, n_learned = vr.clean_frame(pdf, list(d.features), d.valid_ranges)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None
    report["out_of_learned_range"] = n_learned
    report["valid_ranges"] = learned
    report["rows_kept"] = len(pdf)
    pdf["event_time"] = pd.to_datetime(pdf["event_time"]).dt.tz_localize("UTC")
    log.info("history %s: %d rows read, %d null/unparsable, %d out of a configured range, %d out of a learned "
             "range (%s), %d duplicates, %d kept", path, report["rows_read"], report["null_or_unparsable"],
             report["out_of_range"], n_learned,
             ", ".join(f"{f} [{lo:.4g}, {hi:.4g}]" for f, (lo, hi) in learned.items()), report["duplicates"],
             report["rows_kept"])
    return pdf, report
