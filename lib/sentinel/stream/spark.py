"""SparkSession from settings: the one place Spark is configured."""
from __future__ import annotations

import os
import re
import sys

from sentinel.config import Settings

KAFKA_CONNECTOR = "org.apache.spark:spark-sql-kafka-0-10_2.13"


def spark_version() -> str:
    import pyspark
    return pyspark.__version__


def kafka_package() -> str:
    """Spark's Kafka connector for the installed Spark: the versions must match exactly."""
    return f"{KAFKA_CONNECTOR}:{spark_version()}"


def session(settings: Settings, app_suffix: str = "", kafka: bool = False):
    """Get or create the SparkSession.

    Under ``spark-submit`` the JVM already exists and ``conf/spark-defaults.conf`` (via
    ``SPARK_CONF_DIR``) supplies jars; from ``sentinel ...`` this starts the JVM and adds the
    Kafka connector when ``kafka`` is true.
    """
    from pyspark.sql import SparkSession

    sp = settings.spark
    # Python workers must run this interpreter (it has pandas, pyarrow and TensorFlow).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    threads = str(sp.python_threads)
    b = (SparkSession.builder.appName(sp.app_name + (f"-{app_suffix}" if app_suffix else ""))
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.shuffle.partitions", str(sp.shuffle_partitions))
         .config("spark.sql.execution.arrow.pyspark.enabled", "true")
         .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(sp.arrow_max_records))
         .config("spark.sql.streaming.stopTimeout", "60s")
         .config("spark.ui.showConsoleProgress", "false")
         # One TensorFlow/OpenMP thread per Python worker: Spark already runs a worker per core.
         .config("spark.executorEnv.OMP_NUM_THREADS", threads)
         .config("spark.executorEnv.TF_NUM_INTRAOP_THREADS", threads)
         .config("spark.executorEnv.TF_NUM_INTEROP_THREADS", threads)
         .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "2"))
    if sp.malloc_arena_max:
        # glibc gives every thread that allocates its own arena (up to 8 per core) and keeps
        # what is freed there: the JVM's many threads (RocksDB, Netty, tasks) and TensorFlow's
        # held hundreds of MiB they no longer used. Executors' Python workers get it here; the
        # JVM inherits it from this process when the job starts its own (below).
        b = b.config("spark.executorEnv.MALLOC_ARENA_MAX", str(sp.malloc_arena_max))
    # PySpark sets SPARK_SIMPLIFIED_TRACEBACK in the environment of the Python workers of most
    # SQL UDFs (the parser's mapInArrow, the scoring UDF) but not of transformWithStateInPandas,
    # and Spark keeps one worker daemon and pool per environment: parsing and window state had a
    # daemon and workers each (~300 MiB at 100,000 sensors). Off, they share one pool; errors
    # raised in a UDF then show PySpark's frames too.
    b = b.config("spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled", "false")
    merged = {"spark.executor.extraJavaOptions"}   # the GC flag goes in front of what spark.conf gives
    if java_options := _java_options(sp, "spark.executor.extraJavaOptions"):
        b = b.config("spark.executor.extraJavaOptions", java_options)
    if sp.preload_tensorflow:  # workers fork with TensorFlow already imported (worker_daemon.py)
        b = b.config("spark.python.daemon.module", "sentinel.stream.worker_daemon")
    if sp.executor_memory:
        b = b.config("spark.executor.memory", sp.executor_memory)
    if sp.state_store == "rocksdb":
        b = b.config("spark.sql.streaming.stateStore.providerClass",
                     "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        if sp.rocksdb_max_memory_mb:
            # One block cache and write-buffer budget for every RocksDB instance of the executor
            # (each state partition and version opens one), instead of a cache and up to two
            # 64 MiB memtables each; the state itself is small (W-1 readings per sensor).
            b = b.config("spark.sql.streaming.stateStore.rocksdb.boundedMemoryUsage", "true")
            b = b.config("spark.sql.streaming.stateStore.rocksdb.maxMemoryUsageMB", str(sp.rocksdb_max_memory_mb))
        # Commit writes only the changed entries (a changelog) instead of a RocksDB snapshot
        # per batch; snapshots follow in the background. Halved the state commit and took
        # about 0.5 s off p95 latency in benchmarks/throughput.py. Existing checkpoints keep
        # working; spark.conf may turn it off.
        b = b.config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
    if not under_spark_submit():
        b = b.master(sp.master)
        if sp.malloc_arena_max:  # read by glibc at process start: the JVM launched below
            os.environ.setdefault("MALLOC_ARENA_MAX", str(sp.malloc_arena_max))
        if sp.driver_memory:  # the JVM starts here, so its heap can still be chosen
            b = b.config("spark.driver.memory", sp.driver_memory)
        merged.add("spark.driver.extraJavaOptions")
        if java_options := _java_options(sp, "spark.driver.extraJavaOptions"):
            b = b.config("spark.driver.extraJavaOptions", java_options)
        if kafka:
            b = b.config("spark.jars.packages", kafka_package())
    for key, value in sp.conf.items():
        if key not in merged:
            b = b.config(key, value)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel(sp.log_level)
    return spark


def _java_options(sp, key: str) -> str:
    """JVM flags for ``key`` (driver or executor extraJavaOptions): ``spark.jvm_gc``'s, ahead
    of what ``spark.conf`` gives for that key; a collector chosen there wins (the JVM refuses two).

    Serial GC by default: under local[*] on a small host the job's JVM is driver and executor,
    its live heap is ~200 MiB, and G1's remembered sets and eager heap growth cost ~350 MiB of
    PSS at 100,000 sensors (1,414-1,460 -> 1,027-1,085 MiB, docs/sizing.md). Young pauses stay
    at 7-30 ms there. Executors with many cores and large heaps want "parallel" or "g1"."""
    from sentinel.config import JVM_GC_FLAGS
    extra = sp.conf.get(key, "")
    flag = "" if re.search(r"-XX:\+Use\w+GC\b", extra) else JVM_GC_FLAGS[sp.jvm_gc]
    return " ".join(x for x in (flag, extra) if x)


def under_spark_submit() -> bool:
    """True when spark-submit launched this Python (the JVM exists and owns master/jars)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ
