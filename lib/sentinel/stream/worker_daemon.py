"""PySpark's Python worker daemon, with TensorFlow imported before it forks scoring workers.

Spark starts one daemon per executor and worker environment, which forks a Python worker per
task slot. The scoring UDF's workers have an environment of their own
(``SENTINEL_WORKER_ROLE=score``, set by ``scoring_udf.bind_worker_role``), hence a daemon of
their own: that daemon imports TensorFlow and Keras before forking, so each scoring worker
starts with them imported (copy-on-write) and loads a bundle in about a second. Importing
TensorFlow takes 7 s on an idle core here, and each new worker paid it inside its first
scoring batch (a minute on a loaded 2-core machine: the first micro-batch's alarms came that
late). The other daemons (parsing, window state) import only pandas and pyarrow: their
workers never run the model and stay at ~90 MiB (PSS) each, against ~310 MiB on average when
every worker forked with TensorFlow (docs/sizing.md, "Memory").

PySpark's daemon runs a full ``gc.collect()`` in a worker after every task. With TensorFlow
imported that walks about 400,000 objects: 0.4 s of CPU per task per worker, which was most of
the fixed cost of a micro-batch. ``gc.freeze()`` after the imports moves them out of the
collector's sight (they live as long as the process anyway), and the worker freezes again
after its first model call (``scoring_udf._freeze_once``).

Only the import happens here: TensorFlow's runtime and thread pools start in each worker at
its first model call, so forking stays safe. Enabled by ``spark.preload_tensorflow`` (sets
``spark.python.daemon.module``); it needs the ``sentinel`` package installed in the workers'
Python (the project's venv or the Docker image).
"""
import os

ROLE_ENV = "SENTINEL_WORKER_ROLE"   # = scoring_udf.ROLE_ENV (not imported: that pulls in pyspark.sql)
SCORING_ROLE = "score"

if __name__ == "__main__":
    import gc
    if os.environ.get(ROLE_ENV) == SCORING_ROLE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        try:
            import keras  # noqa: F401  (imports TensorFlow)
        except Exception as exc:  # scoring will report it; the daemon must still serve workers
            import logging
            logging.getLogger("sentinel.stream.worker_daemon").warning("TensorFlow preload failed: %s", exc)
    import pyarrow  # noqa: F401
    import pandas  # noqa: F401
    from pyspark import daemon, worker  # noqa: F401
    from pyspark.sql.pandas import serializers  # noqa: F401
    gc.freeze()
    daemon.manager()
