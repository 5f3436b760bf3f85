"""Incidents: flagged readings -> a few incidents an operator can act on (pure; never pyspark).

In: each micro-batch's flagged readings with their explanation columns (``score_table(details=True)``
or ``scoring.score_details``), the event-time clock, the sensor registry and active mutes.
Out: alarmed anomaly rows (after persistence) and incident open/update/close events with the
stream-owned incident record; plus sentences, kinds, lifecycle checks, alarm-load KPIs, metrics.
Deterministic: rows are processed in (event_time, sensor_id) order, ids derive from the first
reading, and the tracker's state round-trips exactly through JSON, so a replayed batch gives the
same records (wall-clock fields aside).
"""
from sentinel.incidents.ids import incident_id

__all__ = ["incident_id"]
