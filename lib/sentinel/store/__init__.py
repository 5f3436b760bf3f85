"""Store: where results go and how they are read back.

``sinks/`` holds one module per destination behind one small contract (``sinks/base.py``:
``setup()``, ``write(BatchRecords)``, ``close()``). :func:`open_store` (``client.py``) is the API
readers and operators use on any store (``sql_store.py`` for SQLite and PostgreSQL,
``s3_store.py`` for S3, read-only); ``query`` parses store URLs and filters anomalies, ``report``
draws them; ``registry`` is the sensor registry; ``storage`` the object-store helpers. Never
imports detect, incidents, stream or pyspark: the incident rules reach the writes as
``open_store(..., rules=sentinel.incidents.lifecycle)``.
"""
from sentinel.store.client import IncidentFilters, StoreClient, open_store
from sentinel.store.errors import NotFound, StoreError
from sentinel.store.query import Filters, Store

__all__ = ["Filters", "IncidentFilters", "NotFound", "Store", "StoreClient", "StoreError", "open_store"]
