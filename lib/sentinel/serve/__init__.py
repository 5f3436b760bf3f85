"""Serve: the operator web app (``sentinel serve``): an HTTP API over any store and the live page.

Contract:

- Reads go through the store API only (``store.open_store(...)`` -> a ``StoreClient``: sensors,
  sensor states, anomalies, incidents, series, stats, health); SQLite, PostgreSQL and S3 alike.
  Writes (acknowledge, close, label) need ``Authorization: Bearer <token>`` equal to the
  ``SENTINEL_API_TOKEN`` environment variable of the server (compared in constant time, never
  logged); without that variable writes are refused. S3 stores are read-only.
- Every error is a JSON body ``{"detail": "<one sentence>"}``: 400/404/422 for bad input,
  401/403 for auth, 409 for a read-only store, 503 when the store cannot be reached; bad input
  never gives a 500.
- The page (``static/``: index.html, app.js, style.css, and ``vendor/`` built from ``web/``
  by ``scripts/build-web.sh``) is served by the app itself: nothing is fetched from elsewhere.

Never imports ``stream`` or pyspark (``tests/unit/test_layout.py``): the app reads what the
stream wrote, it never runs the query.
"""
from sentinel.serve.app import TOKEN_ENV, create_app

__all__ = ["TOKEN_ENV", "create_app"]
