"""Lifecycle: keep the model right while it runs.

- ``registry``: a model registry is a ``models/<name>/`` folder (local or ``s3://``) of bundle
  versions plus the pointer file ``promoted`` (format and readers in ``detect.model``) and the
  promotion history ``promotions.jsonl``; promote = one atomic pointer write, rollback = the
  version promoted before.
- ``periods`` / ``sources``: which readings of a data window are normal (incident labels,
  mutes) and where the window comes from (a store's scores, or a history file).
- ``compare``: champion vs challenger on the newest held-out days, and the promotion policy.
- ``retrain``: window -> exclusions -> challenger (``detect.training.fit_bundle``) ->
  comparison and lineage in its manifest -> registry (promoted when the policy says so).
- ``drift``: per sensor, recent scores against the bundle's validation scores.

Pure pandas/numpy plus ``detect`` and ``store``; never imports cli, and never pyspark.
"""
