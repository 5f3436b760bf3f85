"""The incident tracker: a micro-batch's flagged readings in, alarms and incident events out.

Called once per micro-batch on the stream's driver (pure Python, no Spark)::

    tracker = IncidentTracker.from_settings(settings, features, window_length, registry=sensors)
    # or, after a restart: IncidentTracker.from_json(saved, settings=settings, features=..., ...)
    result = tracker.update(flagged, now, batch_id=batch_id, mutes=active_mutes)
    # result.alarms: the flagged rows that alarm (persistence applied) + incident_id, expected, explanation
    # result.incidents: one incident record per incident this batch opened, updated or closed
    # result.events: incident_id, event (open | update | close), at (event time)
    saved = tracker.to_json()   # checkpoint it with the batch id; reload it to replay batch N+1

Rules (times are event times, ``[incidents]`` settings):

* **Persistence** (``threshold.persistence_m`` of ``_n``): a flag of a sensor at t alarms when at
  least m flags of that sensor fall in (t - n * interval, t]; 1 of 1 = every flag alarms.
* **Extend**: an alarm of a sensor whose open incident saw it at most ``merge_gap_s`` before
  joins that incident.
* **Join** (network incident): otherwise the alarm joins the earliest-opened open incident that
  is still active (its newest alarm at most ``merge_gap_s`` before) and that has a sensor of the
  same zone, or one within ``merge_distance_m`` (0 = no distance rule), provided the sensor's
  episode starts within ``merge_onset_s`` of the incident's opening, before or after it (0 = any
  time while it is active). A sensor back after a gap longer than ``merge_gap_s`` counts as a
  new episode too. Unrelated events that merely overlap in one zone, and chains of them, stay
  apart.
* **Open**: otherwise the alarm starts (or continues, gaps up to ``merge_gap_s``) the sensor's
  *pending* run, which opens an incident once it is severe enough (a reading of at least
  ``open_severity``), long enough (``open_readings`` alarms; 0 = no length rule) or a flat line
  (``kinds.FLAT_MIN_STEPS`` unchanged readings): the alarm-management on-delay that keeps
  one-off blips of severity just above 1 from paging anyone. The incident's id and
  ``opened_at`` are its run's first alarm (``incident_id(sensor, event_time)``), so "since when"
  is the onset; pending runs of related sensors join it at once. ``open_severity`` = 1 and
  ``open_readings`` = 1 open an incident on every alarm.
* **Close**: an incident whose newest alarm is more than ``quiet_s`` behind the clock closes,
  ``closed_at`` = its last alarm + ``quiet_s``. The clock is the event time of the alarm being
  processed and, at the end of the batch, ``now`` (the newest event time the batch saw). A
  sensor's reading that arrives more than ``quiet_s`` behind the newest event time of the feed
  therefore opens a new incident rather than extending a closed one.
* **Mutes**: a reading is muted when a mute covers its sensor (or zone) at its time; an incident
  is muted while all its readings are.

Rows are processed in (event_time, sensor_id) order. The state holds only the open incidents,
the pending runs and the persistence flags still inside their window (closed incidents leave
it), and :meth:`to_json` / :meth:`from_json` round-trip it exactly, so replaying a batch from the
state saved before it gives the same records (only ``detected_at``/``updated_at``, the wall
clock, differ). Alarms of a run still pending carry no incident id; when the run opens an
incident in a later batch, only that batch's alarms carry its id.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from sentinel.incidents import explain as sentences
from sentinel.incidents import kinds
from sentinel.incidents.ids import from_ns, incident_id, iso, to_ns, wall_clock
from sentinel.incidents.lifecycle import Mute, mutes_from

STATE_VERSION = 1
NS = 1_000_000_000
# How many alarms from its onset describe a sensor's onset shape (jump, error steps). The onset
# is the sensor's first *clear* alarm (severity >= open_severity), or its first alarm while none
# is: a blip just above the threshold that a burst happens to continue does not describe it.
ONSET_READINGS = 3
# A reading "sustains" the deviation when it is at least this fraction of the sensor's largest
# deviation so far: a spike has one or two such readings, a burst or leak many.
SUSTAIN_FRACTION = 0.3
EARTH_RADIUS_M = 6_371_000.0

INCIDENT_COLUMNS = ["incident_id", "kind", "status", "zone", "sensors", "first_sensor", "opened_at",
                    "last_seen", "closed_at", "peak_severity", "readings", "explanation", "muted",
                    "model_version", "detected_at", "updated_at", "batch_id"]
EVENT_COLUMNS = ["incident_id", "event", "at"]


@dataclass
class SensorTrack:
    """One sensor's part of an incident: what the ranking, the kind rules and the sentence need."""

    readings: int = 0
    severity_sum: float = 0.0
    peak_severity: float = 0.0
    first_seen: int = 0
    last_seen: int = 0
    muted_readings: int = 0
    drops: int = 0
    rises: int = 0
    sustained: int = 0
    dev_first: float = 0.0
    dev_last: float = 0.0
    dev_peak: float = 0.0          # signed deviation of the largest |deviation| so far
    dev_peak_at: int = 0
    observed_peak: float | None = None
    expected_peak: float | None = None
    peak_feature: str | None = None
    abs_dev_sum: float = 0.0
    clear: bool = False            # an alarm of at least open_severity was seen
    onset_at: int = 0              # the onset alarm's time (see ONSET_READINGS)
    onset_readings: int = 0        # alarms since the onset
    onset_jump: float = 0.0        # signed, the largest |jump| of the first ONSET_READINGS alarms
    onset_jump_ratio: float = 0.0
    onset_error_steps: int = 0     # error_steps of the onset alarm
    onset_recent_share: float = 0.0
    onset_frac_max: float = 0.0    # |deviation| / |expected| within kinds.ONSET_HORIZON_S of the onset:
    onset_frac_sum: float = 0.0    #   largest, and sum and count over the horizon's second half
    onset_frac_n: int = 0
    onset_dev_sum: float = 0.0     # signed deviations within the onset horizon: its direction
    onset_drops: int = 0
    onset_rises: int = 0

    @property
    def onset_dev_fraction(self) -> float:
        """How far below/above expected the reading settled in its first hour (fraction of it):
        the mean over the hour's second half (robust to one noisy reading), else the largest."""
        return self.onset_frac_sum / self.onset_frac_n if self.onset_frac_n else self.onset_frac_max
    max_flat_steps: int = 0
    max_roughness: float = 0.0
    features: dict = field(default_factory=dict)  # feature -> severity-weighted error share sum


def _track_dict(track: "SensorTrack") -> dict:
    """A SensorTrack as a plain dict for JSON (its containers copied one level deep)."""
    return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in vars(track).items()}


@dataclass
class Incident:
    """An open incident as the tracker keeps it (times in ns UTC)."""

    incident_id: str
    first_sensor: str
    zone: str | None
    opened_at: int
    last_seen: int
    model_version: str
    detected_at: str
    updated_at: str
    batch_id: int | None
    sensors: dict = field(default_factory=dict)      # sensor_id -> SensorTrack
    kind: str = "unknown"
    kind_reason: str = ""
    explanation: str = ""
    closed_at: int | None = None
    raised_at: int = 0            # event time of the alarm that opened it (its run began at opened_at)

    @property
    def readings(self) -> int:
        return sum(s.readings for s in self.sensors.values())

    @property
    def peak_severity(self) -> float:
        return max((s.peak_severity for s in self.sensors.values()), default=0.0)

    @property
    def muted(self) -> bool:
        return all(s.muted_readings == s.readings for s in self.sensors.values())

    def ranked(self) -> list[tuple[str, SensorTrack, float]]:
        """Sensors by share of the incident's severity (largest first, then sensor id)."""
        total = sum(s.severity_sum for s in self.sensors.values()) or 1.0
        rows = [(sid, s, s.severity_sum / total) for sid, s in self.sensors.items()]
        return sorted(rows, key=lambda r: (-r[2], r[0]))

    def to_dict(self) -> dict:
        # Shallow copies (dataclasses.asdict deep-copies every field: it was most of a batch's
        # state-saving time with hundreds of open incidents); the result is only serialised.
        d = dict(vars(self))
        d["sensors"] = {k: _track_dict(v) for k, v in sorted(self.sensors.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Incident":
        d = dict(d)
        d["sensors"] = {k: SensorTrack(**v) for k, v in d["sensors"].items()}
        return cls(**d)


@dataclass
class Update:
    """What one :meth:`IncidentTracker.update` call returns."""

    alarms: pd.DataFrame      # the input's alarming rows + incident_id (None while pending), muted,
    #                           expected (JSON), explanation
    incidents: pd.DataFrame   # INCIDENT_COLUMNS, one row per incident opened/updated/closed
    events: pd.DataFrame      # EVENT_COLUMNS: open / update / close, in that order per incident
    dropped: int = 0          # flags persistence held back


class IncidentTracker:
    """Groups alarms into incidents across micro-batches (see the module docstring for the rules).

    Args:
        features: the model's features (reading columns, ``expected_<f>``, ``share_<f>``).
        window_length: W, for "error in the newest k of W steps".
        interval_s: sampling interval (persistence counts in it).
        merge_gap_s, quiet_s, merge_distance_m, merge_onset_s: the ``[incidents]`` rules.
        persistence_m, persistence_n: alarm when m of a sensor's last n intervals are flagged.
        open_severity, open_readings: when a pending run opens an incident (see above).
        registry: sensor_id, zone, latitude, longitude (``store.registry`` frame); sensors not in
            it have no zone and no position (they never join by zone or distance).
        mutes: active maintenance windows (``lifecycle.Mute`` list or a ``mutes`` frame).
        units: the features' units (the bundle manifest's ``units``; "mca" is shown as "m").
        model_version: for rows without a ``model_version`` column.
    """

    def __init__(self, features: list[str], window_length: int, interval_s: int = 300,
                 merge_gap_s: float = 3600, quiet_s: float = 3600, merge_distance_m: float = 0.0,
                 merge_onset_s: float = 0.0, persistence_m: int = 1, persistence_n: int = 1,
                 open_severity: float = 1.0, open_readings: int = 0,
                 registry: pd.DataFrame | None = None, mutes=None, units: str = "mca",
                 model_version: str = ""):
        if not 1 <= persistence_m <= persistence_n:
            raise ValueError(f"alarm persistence needs 1 <= m <= n, got m={persistence_m}, n={persistence_n}")
        self.features = list(features)
        self.window_length = int(window_length)
        self.interval_ns = int(interval_s * NS)
        self.merge_gap_ns = int(merge_gap_s * NS)
        self.quiet_ns = int(quiet_s * NS)
        self.merge_distance_m = float(merge_distance_m)
        self.merge_onset_ns = int(merge_onset_s * NS)
        self.m, self.n = int(persistence_m), int(persistence_n)
        self.open_severity = float(open_severity)
        self.open_readings = int(open_readings)
        self.units = units
        self.model_version = model_version
        self.set_registry(registry)
        self.mutes: list[Mute] = mutes_from(mutes)
        # state
        self.clock: int | None = None
        self.last_batch_id: int | None = None
        self.open: dict[str, Incident] = {}
        self.sensor_open: dict[str, str] = {}
        self.pending: dict[str, SensorTrack] = {}
        self.flags: dict[str, list[int]] = {}
        self._owner: dict[int, str] = {}   # within one update: id(track) -> its incident id

    @classmethod
    def from_settings(cls, settings, features: list[str], window_length: int, registry=None, mutes=None,
                      units: str | None = None, model_version: str = "") -> "IncidentTracker":
        """A tracker with the ``[incidents]``, ``[threshold]`` persistence and window settings."""
        inc, th = settings.incidents, settings.threshold
        return cls(features, window_length, settings.window.interval_s, inc.merge_gap_s, inc.quiet_s,
                   inc.merge_distance_m, inc.merge_onset_s, th.persistence_m, th.persistence_n,
                   inc.open_severity, inc.open_readings, registry, mutes, units or settings.data.units,
                   model_version)

    # -- registry -------------------------------------------------------------------------
    def set_registry(self, registry: pd.DataFrame | None) -> None:
        """Replace the sensor registry (zone and position per sensor)."""
        self.zone_of: dict[str, str | None] = {}
        self.pos_of: dict[str, tuple[float, float]] = {}
        self.zone_size: dict[str, int] = {}
        if registry is None or len(registry) == 0:
            return
        for r in registry.to_dict("records"):
            sid = str(r["sensor_id"])
            zone = r.get("zone")
            zone = None if zone is None or (isinstance(zone, float) and math.isnan(zone)) or not str(zone).strip() else str(zone)
            self.zone_of[sid] = zone
            lat, lon = r.get("latitude"), r.get("longitude")
            if lat is not None and lon is not None and np.isfinite(lat) and np.isfinite(lon):
                self.pos_of[sid] = (float(lat), float(lon))
            if zone is not None:
                self.zone_size[zone] = self.zone_size.get(zone, 0) + 1

    # -- state ------------------------------------------------------------------------------
    def to_json(self) -> str:
        """The tracker's state as JSON text (sorted keys: equal states give equal text)."""
        state = {"version": STATE_VERSION, "clock": self.clock, "last_batch_id": self.last_batch_id,
                 "open": {k: v.to_dict() for k, v in sorted(self.open.items())},
                 "sensor_open": dict(sorted(self.sensor_open.items())),
                 "pending": {k: _track_dict(v) for k, v in sorted(self.pending.items())},
                 "flags": {k: v for k, v in sorted(self.flags.items())}}
        return json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def load_json(self, text: str) -> "IncidentTracker":
        """Replace this tracker's state with one saved by :meth:`to_json`; returns self."""
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"incident state version {state.get('version')!r} is not {STATE_VERSION}: "
                             f"start without the saved incident state")
        self.clock = state["clock"]
        self.last_batch_id = state["last_batch_id"]
        self.open = {k: Incident.from_dict(v) for k, v in state["open"].items()}
        self.sensor_open = dict(state["sensor_open"])
        self.pending = {k: SensorTrack(**v) for k, v in state["pending"].items()}
        self.flags = {k: list(v) for k, v in state["flags"].items()}
        return self

    @classmethod
    def from_json(cls, text: str, *args, **kwargs) -> "IncidentTracker":
        """A tracker holding the state saved by :meth:`to_json`, built with ``args``/``kwargs``
        as :meth:`from_settings` (when a ``settings`` keyword is given) or the constructor."""
        build = cls.from_settings if "settings" in kwargs else cls
        return build(*args, **kwargs).load_json(text)

    # -- the batch ----------------------------------------------------------------------------
    def update(self, flags: pd.DataFrame, now=None, batch_id: int | None = None, mutes=None,
               wall: datetime | None = None) -> Update:
        """Process one micro-batch's flagged readings.

        Args:
            flags: the batch's flagged readings: ``sensor_id``, ``event_time`` (tz-aware),
                ``severity`` (or ``score`` and ``threshold``), the readings (a column per feature,
                or ``values`` as a dict/JSON/sequence per row) and, when the scorer gave them,
                the explanation columns (``explain.detail_columns``) and ``model_version``.
            now: the newest event time the batch saw (tz-aware or ns): closes quiet incidents.
                If not given, the newest flag's time.
            batch_id: the micro-batch id, written into the records. It must increase: a batch
                id not above the last one means the caller did not reload the state saved
                before that batch (ValueError).
            mutes: if given, replaces the active mutes (``lifecycle.Mute`` list or frame).
            wall: the wall clock for detected_at/updated_at; if not given, now (UTC).

        Returns:
            :class:`Update`.
        """
        if batch_id is not None and self.last_batch_id is not None and batch_id <= self.last_batch_id:
            raise ValueError(f"incident state is already past batch {self.last_batch_id}, got batch {batch_id}: "
                             f"reload the state saved after batch {batch_id - 1} before replaying it")
        if mutes is not None:
            self.mutes = mutes_from(mutes)
        stamp = wall_clock(wall)
        rows = self._rows(flags)
        self._owner = {}
        opened, touched, closed = [], {}, []
        alarm_rows, dropped = [], 0           # (row, track) of every alarm
        last_t = None
        for r in rows:
            t, sid = r["t"], r["sensor_id"]
            if t != last_t:  # rows come in time order: the clock only moves between distinct times
                closed += self._close_quiet(t, stamp, batch_id)
                last_t = t
            if not self._persist(sid, t):
                dropped += 1
                continue
            r["muted"] = any(m.covers(sid, self.zone_of.get(sid), t) for m in self.mutes)
            track, inc, new = self._assign(sid, t, r, stamp, batch_id)
            alarm_rows.append((r, track))
            if inc is not None:
                inc.updated_at, inc.batch_id = stamp, batch_id
                touched[inc.incident_id] = inc
                if new:
                    inc.raised_at = t
                    opened.append(inc.incident_id)
        if rows:
            newest = rows[-1]["t"]
            now_ns = newest if now is None else max(to_ns(now), newest)
        else:
            now_ns = None if now is None else to_ns(now)
        if now_ns is not None:
            self.clock = now_ns if self.clock is None else max(self.clock, now_ns)
            closed += self._close_quiet(self.clock, stamp, batch_id)
        for inc in touched.values():
            self._describe(inc)
        self._prune()
        if batch_id is not None:
            self.last_batch_id = batch_id
        alarms = self._alarm_frame(flags, alarm_rows)
        self._owner = {}
        return self._result(alarms, opened, touched, closed, dropped)

    # -- rules ---------------------------------------------------------------------------------
    def _persist(self, sid: str, t: int) -> bool:
        if self.n == 1:
            return True
        lo = t - self.n * self.interval_ns
        kept = [x for x in self.flags.get(sid, []) if x > lo] + [t]
        self.flags[sid] = kept[-self.n:]
        return len(kept) >= self.m

    def _related(self, sid: str, inc: Incident) -> bool:
        zone = self.zone_of.get(sid)
        if zone is not None and any(self.zone_of.get(o) == zone for o in inc.sensors):
            return True
        if self.merge_distance_m > 0 and sid in self.pos_of:
            here = self.pos_of[sid]
            return any(o in self.pos_of and _haversine_m(here, self.pos_of[o]) <= self.merge_distance_m
                       for o in inc.sensors)
        return False

    def _assign(self, sid: str, t: int, r: dict, stamp: str, batch_id) -> tuple[SensorTrack, Incident | None, bool]:
        """Place an alarm: ``(track it went into, its incident or None while pending, opened now)``."""
        own = self.open.get(self.sensor_open.get(sid, ""))
        if own is not None and t - own.sensors[sid].last_seen <= self.merge_gap_ns:
            track = own.sensors[sid]
            self._add(track, t, r)
            own.last_seen = max(own.last_seen, t)
            self._owner[id(track)] = own.incident_id
            return track, own, False
        pend = self.pending.get(sid)
        if pend is not None and t - pend.last_seen > self.merge_gap_ns:
            pend = None                           # too old to continue: a new run starts here
        start = pend.first_seen if pend is not None else t
        candidates = []
        for inc in self.open.values():
            if t - inc.last_seen > self.merge_gap_ns or t < inc.opened_at:
                continue
            # the sensor's run must start near the incident's opening, before or after it: a run
            # that began hours earlier, or a sensor back after its own gap, is another event
            if self.merge_onset_ns and abs(start - inc.opened_at) > self.merge_onset_ns:
                continue
            if sid in inc.sensors or self._related(sid, inc):
                candidates.append(inc)
        if candidates:
            inc = min(candidates, key=lambda i: (i.opened_at, i.incident_id))
            self.pending.pop(sid, None)
            track = self._join(inc, sid, pend if pend is not None else SensorTrack(first_seen=t, last_seen=t))
            self._add(track, t, r)
            inc.last_seen = max(inc.last_seen, t)
            return track, inc, False
        if pend is None:
            pend = self.pending[sid] = SensorTrack(first_seen=t, last_seen=t)
        self._add(pend, t, r)
        if not self._ready(pend):
            return pend, None, False
        del self.pending[sid]
        iid = incident_id(sid, pend.first_seen)
        inc = Incident(iid, sid, self.zone_of.get(sid), pend.first_seen, pend.last_seen,
                       r["model_version"] or self.model_version, stamp, stamp, batch_id)
        self.open[iid] = inc
        self._join(inc, sid, pend)
        # Related sensors whose own runs are still pending join the new incident at once.
        for other in sorted(self.pending):
            p = self.pending[other]
            if t - p.last_seen > self.merge_gap_ns or not self._related(other, inc):
                continue
            if self.merge_onset_ns and abs(p.first_seen - inc.opened_at) > self.merge_onset_ns:
                continue
            self._join(inc, other, p)
            del self.pending[other]
        return pend, inc, True

    def _ready(self, track: SensorTrack) -> bool:
        """A pending run opens an incident once it is severe enough, long enough, or a flat line."""
        return (track.peak_severity >= self.open_severity
                or (self.open_readings > 0 and track.readings >= self.open_readings)
                or track.max_flat_steps >= kinds.FLAT_MIN_STEPS)

    def _join(self, inc: Incident, sid: str, track: SensorTrack) -> SensorTrack:
        """Put a sensor's run into an incident (folded into its earlier track there, if any)."""
        old = inc.sensors.get(sid)
        if old is not None and old is not track:
            self._owner[id(track)] = inc.incident_id   # this batch's alarms in the folded run
            _merge_tracks(old, track)
            track = old
        inc.sensors[sid] = track
        self._owner[id(track)] = inc.incident_id
        inc.last_seen = max(inc.last_seen, track.last_seen)
        self.sensor_open[sid] = inc.incident_id
        return track

    def _add(self, s: SensorTrack, t: int, r: dict) -> None:
        """Fold one alarm into a sensor's track."""
        first = s.readings == 0
        s.readings += 1
        s.muted_readings += int(r["muted"])
        sev = r["severity"]
        s.severity_sum += sev
        s.peak_severity = max(s.peak_severity, sev)
        s.last_seen = max(s.last_seen, t)
        dev = r["deviation"]
        if dev is not None:
            if first:
                s.dev_first = dev
            s.dev_last = dev
            s.abs_dev_sum += abs(dev)
            if dev < 0:
                s.drops += 1
            elif dev > 0:
                s.rises += 1
            if first or abs(dev) > abs(s.dev_peak):
                s.dev_peak, s.dev_peak_at = dev, t
                s.observed_peak, s.expected_peak, s.peak_feature = r["observed"], r["expected"], r["feature"]
            if abs(dev) >= SUSTAIN_FRACTION * abs(s.dev_peak):
                s.sustained += 1
        if first or (not s.clear and sev >= self.open_severity):
            # the onset: the first alarm, and again at the first clear one
            s.onset_at, s.onset_readings, s.onset_jump_ratio, s.onset_jump = t, 0, 0.0, 0.0
            s.onset_frac_max, s.onset_frac_sum, s.onset_frac_n = 0.0, 0.0, 0
            s.onset_dev_sum, s.onset_drops, s.onset_rises = 0.0, 0, 0
            s.onset_error_steps = r["error_steps"] or 0
            s.onset_recent_share = r["recent_share"] or 0.0
        s.clear = s.clear or sev >= self.open_severity
        s.onset_readings += 1
        if s.onset_readings <= ONSET_READINGS and r["jump_ratio"] is not None and r["jump_ratio"] > s.onset_jump_ratio:
            s.onset_jump_ratio, s.onset_jump = r["jump_ratio"], r["jump"]
        since = t - s.onset_at
        if dev is not None and since <= kinds.ONSET_HORIZON_S * NS:
            s.onset_dev_sum += dev
            s.onset_drops += int(dev < 0)
            s.onset_rises += int(dev > 0)
        if dev is not None and r["expected"] and since <= kinds.ONSET_HORIZON_S * NS:
            frac = abs(dev) / abs(r["expected"])
            s.onset_frac_max = max(s.onset_frac_max, frac)
            if since >= kinds.ONSET_HORIZON_S * NS / 2:
                s.onset_frac_sum += frac
                s.onset_frac_n += 1
        s.max_flat_steps = max(s.max_flat_steps, r["flat_steps"] or 0)
        s.max_roughness = max(s.max_roughness, r["roughness"] or 0.0)
        for f, share in r["shares"].items():
            s.features[f] = s.features.get(f, 0.0) + sev * share

    def _close_quiet(self, clock: int, stamp: str, batch_id) -> list[Incident]:
        """Close the incidents quiet for longer than quiet_s; forget pending runs that can no
        longer continue (their last alarm more than merge_gap_s behind)."""
        for sid in [k for k, p in self.pending.items() if clock - p.last_seen > self.merge_gap_ns]:
            del self.pending[sid]
        done = [inc for inc in self.open.values() if clock - inc.last_seen > self.quiet_ns]
        for inc in sorted(done, key=lambda i: (i.last_seen, i.incident_id)):
            inc.closed_at = inc.last_seen + self.quiet_ns
            inc.updated_at, inc.batch_id = stamp, batch_id
            self._describe(inc)
            del self.open[inc.incident_id]
            for sid in list(inc.sensors):
                if self.sensor_open.get(sid) == inc.incident_id:
                    del self.sensor_open[sid]
        return done

    def _prune(self) -> None:
        """Bound the state: persistence flags older than their window go."""
        if self.n == 1 or self.clock is None:
            return
        lo = self.clock - self.n * self.interval_ns
        for sid in list(self.flags):
            kept = [x for x in self.flags[sid] if x > lo]
            if kept:
                self.flags[sid] = kept
            else:
                del self.flags[sid]

    def _describe(self, inc: Incident) -> None:
        zone_size = self.zone_size.get(inc.zone) if inc.zone is not None else None
        inc.kind, inc.kind_reason = kinds.classify(inc, zone_size)
        inc.explanation = sentences.incident_sentence(inc, self.units)

    # -- input and output ---------------------------------------------------------------------
    def _rows(self, flags: pd.DataFrame) -> list[dict]:
        """The batch's flags as plain dicts, sorted by (event_time, sensor_id), duplicates dropped."""
        if flags is None or len(flags) == 0:
            return []
        df = flags
        t = pd.to_datetime(df["event_time"], utc=True).astype("int64").to_numpy()
        sid = df["sensor_id"].astype(str).to_numpy()
        if "severity" in df:
            sev = pd.to_numeric(df["severity"], errors="coerce").to_numpy(dtype=float)
        else:
            sev = (pd.to_numeric(df["score"], errors="coerce") / pd.to_numeric(df["threshold"], errors="coerce")).to_numpy(dtype=float)
        values = _reading_matrix(df, self.features)
        expected = _column_matrix(df, [f"expected_{f}" for f in self.features])
        shares = _column_matrix(df, [f"share_{f}" for f in self.features])

        def col(name, cast=float):
            if name not in df:
                return [None] * len(df)
            out = []
            for v in df[name].tolist():
                out.append(None if v is None or (isinstance(v, float) and math.isnan(v)) else cast(v))
            return out

        dev, jump, ratio = col("deviation"), col("jump"), col("jump_ratio")
        rough, rshare = col("roughness"), col("recent_share")
        esteps, flat = col("error_steps", int), col("flat_steps", int)
        top = col("top_feature", str)
        mv = col("model_version", str)
        order = sorted(range(len(df)), key=lambda i: (int(t[i]), sid[i]))
        rows, seen = [], set()
        for i in order:
            key = (sid[i], int(t[i]))
            if key in seen:
                continue
            seen.add(key)
            k = self.features.index(top[i]) if top[i] in self.features else _top_index(None if shares is None else shares[i])
            obs = values[i][k] if values is not None else None
            exp = expected[i][k] if expected is not None else None
            d = dev[i]
            if d is None and obs is not None and exp is not None and np.isfinite(obs) and np.isfinite(exp):
                d = float(obs - exp)
            share_map = ({f: float(shares[i][j]) for j, f in enumerate(self.features)}
                         if shares is not None and np.all(np.isfinite(shares[i])) else {self.features[k]: 1.0})
            rows.append({"index": i, "sensor_id": sid[i], "t": int(t[i]),
                         "severity": float(sev[i]) if np.isfinite(sev[i]) else 0.0,
                         "deviation": d, "observed": _num(obs), "expected": _num(exp), "feature": self.features[k],
                         "jump": jump[i], "jump_ratio": ratio[i], "roughness": rough[i],
                         "recent_share": rshare[i], "error_steps": esteps[i], "flat_steps": flat[i],
                         "shares": share_map, "model_version": mv[i],
                         "values": None if values is None else [_num(v) for v in values[i]],
                         "expected_all": None if expected is None else [_num(v) for v in expected[i]]})
        return rows

    def _alarm_frame(self, flags, alarm_rows) -> pd.DataFrame:
        cols = ("incident_id", "muted", "expected", "explanation")
        if not alarm_rows:
            out = flags.iloc[0:0].copy() if flags is not None else pd.DataFrame()
            for c in cols:
                out[c] = pd.Series(dtype=object)
            return out.reset_index(drop=True)
        out = flags.iloc[[r["index"] for r, _ in alarm_rows]].copy().reset_index(drop=True)
        out["incident_id"] = [self._owner.get(id(track)) for _, track in alarm_rows]
        out["muted"] = [r["muted"] for r, _ in alarm_rows]
        exp_json, text = [], []
        for r, _ in alarm_rows:
            if r["expected_all"] is None or any(v is None for v in r["expected_all"]):
                exp_json.append(None)
            else:
                exp_json.append(json.dumps(dict(zip(self.features, r["expected_all"]))))
            text.append(sentences.anomaly_sentence(r, self.features, self.units, self.window_length))
        out["expected"] = exp_json
        out["explanation"] = text
        return out

    def record(self, inc: Incident) -> dict:
        """The stream-owned incident record (CONTRACTS.md) of ``inc``."""
        ranked = [{"sensor_id": sid, "share": round(share, 4), "peak_severity": round(s.peak_severity, 4),
                   "readings": s.readings, "first_seen": iso(s.first_seen), "last_seen": iso(s.last_seen)}
                  for sid, s, share in inc.ranked()]
        return {"incident_id": inc.incident_id, "kind": inc.kind,
                "status": "closed" if inc.closed_at is not None else "new",
                "zone": inc.zone, "sensors": json.dumps(ranked, separators=(",", ":")),
                "first_sensor": inc.first_sensor, "opened_at": from_ns(inc.opened_at),
                "last_seen": from_ns(inc.last_seen), "closed_at": from_ns(inc.closed_at),
                "peak_severity": inc.peak_severity, "readings": inc.readings,
                "explanation": inc.explanation, "muted": inc.muted, "model_version": inc.model_version,
                "detected_at": pd.Timestamp(inc.detected_at), "updated_at": pd.Timestamp(inc.updated_at),
                "batch_id": inc.batch_id}

    def _result(self, alarms, opened, touched, closed, dropped) -> Update:
        final: dict[str, Incident] = dict(touched)
        for inc in closed:
            final[inc.incident_id] = inc
        events = []
        opened_set = set(opened)
        closed_ids = {inc.incident_id for inc in closed}
        order = sorted(final.values(), key=lambda i: (i.opened_at, i.incident_id))
        for inc in order:
            iid = inc.incident_id
            if iid in opened_set:
                events.append((iid, "open", from_ns(inc.raised_at or inc.opened_at)))
            elif iid in touched:  # new readings: an update (at most one per batch)
                events.append((iid, "update", from_ns(inc.last_seen)))
            if iid in closed_ids:
                events.append((iid, "close", from_ns(inc.closed_at)))
        records = pd.DataFrame([self.record(i) for i in order], columns=INCIDENT_COLUMNS)
        ev = pd.DataFrame(events, columns=EVENT_COLUMNS)
        return Update(alarms, records, ev, dropped)

    # -- reading the state ---------------------------------------------------------------------
    def open_records(self) -> pd.DataFrame:
        """The open incidents' records (for ``incidents_open`` and the live page)."""
        order = sorted(self.open.values(), key=lambda i: (i.opened_at, i.incident_id))
        return pd.DataFrame([self.record(i) for i in order], columns=INCIDENT_COLUMNS)


def _merge_tracks(into: SensorTrack, other: SensorTrack) -> None:
    """Fold a sensor's later run into its earlier track of the same incident (a rejoin)."""
    into.readings += other.readings
    into.muted_readings += other.muted_readings
    into.severity_sum += other.severity_sum
    into.peak_severity = max(into.peak_severity, other.peak_severity)
    into.first_seen = min(into.first_seen, other.first_seen)
    into.last_seen = max(into.last_seen, other.last_seen)
    into.drops += other.drops
    into.rises += other.rises
    into.sustained += other.sustained
    into.abs_dev_sum += other.abs_dev_sum
    into.dev_last = other.dev_last
    if abs(other.dev_peak) > abs(into.dev_peak):
        into.dev_peak, into.dev_peak_at = other.dev_peak, other.dev_peak_at
        into.observed_peak, into.expected_peak, into.peak_feature = other.observed_peak, other.expected_peak, other.peak_feature
    into.max_flat_steps = max(into.max_flat_steps, other.max_flat_steps)
    into.max_roughness = max(into.max_roughness, other.max_roughness)
    for f, v in other.features.items():
        into.features[f] = into.features.get(f, 0.0) + v


def _top_index(shares) -> int:
    if shares is None:
        return 0
    a = np.asarray(shares, dtype=float)
    if not np.all(np.isfinite(a)):
        return 0
    return int(a.argmax())


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _column_matrix(df: pd.DataFrame, cols: list[str]) -> np.ndarray | None:
    if not all(c in df for c in cols):
        return None
    try:
        return df[cols].to_numpy(dtype=float)
    except (TypeError, ValueError):  # text or mixed columns: what is not a number becomes NaN
        return df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)


def _reading_matrix(df: pd.DataFrame, features: list[str]) -> np.ndarray | None:
    """(n, F) readings: a column per feature, or a ``values`` column (dict, JSON text or sequence)."""
    direct = _column_matrix(df, features)
    if direct is not None:
        return direct
    if "values" not in df:
        return None
    out = np.full((len(df), len(features)), np.nan)
    for i, v in enumerate(df["values"].tolist()):
        if isinstance(v, str):
            v = json.loads(v)
        if isinstance(v, dict):
            out[i] = [float(v.get(f, np.nan)) for f in features]
        elif v is not None:
            out[i] = np.asarray(v, dtype=float).reshape(-1)[:len(features)]
    return out


def _haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
