"""One APIRouter per resource (FastAPI "Bigger Applications"): sensors, series (series and
stats), anomalies, incidents, ops (health and metrics). Each route is a plain ``def``: FastAPI
runs it in its thread pool, so a slow store read never blocks the event loop."""
