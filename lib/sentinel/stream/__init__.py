"""Stream: everything that runs on Spark.

``query`` wires the deploy job (``source`` -> ``chunks`` parse -> ``window_state`` ->
``scoring_udf`` -> ``writer``); ``spark`` builds the session; ``history`` reads and cleans
training history with Spark; ``worker_daemon`` is the Python workers' daemon. The only
sub-package that imports pyspark (lazily, so the pure parts stay testable without it).
"""
