"""Labelled pressure data from a hydraulic model of a real water network (WNTR / EPANET 2.2).

``simulate_network("Net6", days=42, clean_days=21)`` loads a network WNTR ships (see
:func:`list_networks`) or any EPANET ``.inp`` file, drives it with realistic demand, injects leaks,
bursts, operational events and sensor faults, and returns the synthetic simulator's three frames
(``readings``, ``episodes``, ``sensors``) plus ``events`` and ``impacts`` (:class:`NetworkSim`).

Engine and timings
------------------
The EPANET 2.2 toolkit bundled in wntr (``wntr.epanet.toolkit.ENepanet``), stepped from Python
(``EN_runH``/``EN_nextH``) with hydraulic = pattern = report step = ``interval_s``. Measured on
this 2-core machine (idle): 8 days of Net6 (3323 junctions, 61 pumps) 13.6 s, Net1 2 days 0.1 s
with everything. A full benchmark dataset (6 weeks at 5 min, 9 leaks, 3 operational events, 9
faults) took 2.8-4.1 min wall / 160-180 s CPU for Net6 and 17-19 s for ky4 while other jobs
loaded the machine (load 3-7), and 0.1 s from the cache. wntr's ``WNTRSimulator`` (the one
with ``Junction.add_leak``) needed 0.5 s for Net1 two days and 30 s for ky10 (920 junctions)
*one day*: ~20 min per 6-week run, and every event needs runs of its own. ``EpanetSimulator`` is
as fast as the toolkit but runs an INP as it is: it cannot
grow an emitter during the run or take a pump out of service for a few hours. Stepping the
toolkit gives both at EpanetSimulator speed (EpanetSimulator is still used for two short runs).

Hydraulic model
---------------
* Pressure-dependent demand (EPANET's PDA): full demand at ``required_pressure_m`` (15 m), none
  at 0 m, exponent 0.5. Convergence accuracy 1e-4 (EPANET's default 1e-3 is 20 % faster but
  leaves mm-level jitter against impacts of a few cm).
* Demand: each junction's own pattern from the INP as a 24-h shape (smoothed to ``interval_s``;
  a flat dominant pattern becomes a residential double peak), times a weekly cycle (Saturday
  -4 %, Sunday -7 %, weekend peaks 1 h later and 15 % flatter), a day-to-day multiplier
  (network-wide AR(1) over days, sd 4 %, plus 2.5 % per group), a slow intra-day wander (AR(1),
  90 min, sd 2 % network-wide + 3 % per group) and 2 % white noise per step. Junctions are
  grouped by (zone, original pattern) and each group has its own seeded pattern over the horizon,
  so demand noise is spatially correlated as in a real city. ``demand_shift`` (e.g. 0.15) then
  multiplies every group's pattern by 1 + shift from ``shift_at`` on: a lasting, unlabelled change
  (growth, a new district) that a retrained model should absorb.
* Pumps, tanks and valves follow the network's controls, with two repairs. Absolute-time
  controls that repeat a daily schedule (Net3's pump 10, written for one week) become clock-time
  controls. A tank-level control set exactly at a tank's max (min) level can never fire, since
  EPANET holds a full tank at its max: Net6's pump 3870 then runs on for good once tank 3347 dips,
  and the zone jumps 2.6 m weeks into a run (seen at day 24 and day 29 of two 6-week runs); such
  thresholds move 2 % of the tank's range inside (4 controls in Net6). Tanks start at the levels
  of a ``settle_days`` (7) hourly pre-run instead of the INP's guesses, then ``spinup_s`` (1 day)
  at ``interval_s`` runs before ``start`` and is not output.
* Leaks are emitters whose coefficient changes every step (flow = C sqrt(p): more loss at night,
  as real leaks). ``burst``: full size at once for 2-8 h; ``leak`` (incipient): C grows linearly
  over 2-12 h, then holds 6-24 h; both stop at repair. Leaks sit on junctions with >= 10 m that
  carry no sensor. Size: a target visibility V is drawn log-uniform in ``leak_visibility``
  (1-40), and C is calibrated (event-alone runs, bracketing secant in log-log, 15 %, usually 2-3
  runs) so that the largest impact at any sensor is V times that sensor's noise sd; the flow is
  capped at 25 % of the mean system demand and 60 L/s, so a leak far from every sensor can stay
  below its target. ``size`` in ``events`` is the mean leak flow (L/s) once at full size.
* ``pump_schedule``: a pump switched by controls is forced to the opposite of its state at the
  start (on -> off: maintenance; off -> on: an early run) for 2-6 h with its controls
  suspended. ``valve_closure``: an isolation valve closes a pipe for 2-8 h (not a bridge of the
  graph, at least median diameter, above-median flow, no control of its own, not at a tank or
  reservoir). An operator keeps supply: if a tank runs dry, a sensor with >= 10 m falls below 5 m
  or any sensor drops > 25 m, the event is shortened (pumps: 1/2, 1/4) or moved to another
  pump or pipe (up to 5), and one that no sensor can see (< 2 x noise) is moved too; if nothing
  qualifies the least severe is kept and ``detail`` says so.

Event-alone runs, impacts and readings
--------------------------------------
Each hydraulic event is simulated alone from the baseline's exact state at its start (tank
levels, pump/pipe status and speed, pattern and clock offset, timer controls shifted), started two
steps early with the tank levels pinned to the baseline's (a cold start can put a PRV into another
status for one step), and with the baseline's switching of pumps and controlled pipes *replayed*
as timer controls at the exact (sub-step) times. So an event's impact is its own hydraulic effect
at the same operations, not a pump cycle shifted by a few minutes, and calibration sees a smooth
response. Measured: with no event such a run reproduces the baseline to < 5e-6 m (Net6, own
controls) and < 3 mm (replayed operations). The run goes on 6 h past the end.

Readings = baseline + each event's event-alone effect (events never overlap); after the end the
effect fades linearly to zero over those 6 h (the pumps making up the tanks' deficit). The impact
table therefore describes the readings exactly; the price is that pumps do not react to a leak
during it (they keep the baseline's schedule). A combined run with the controls acting was
tried first: a small leak could shift a pump cycle and leave a different operating regime for
weeks, unlabelled.

Sensors
-------
``sensors`` pressure loggers (default ``round(sqrt(junctions)/2)`` clipped to 6..30) on junctions
whose pressure stays >= 10 m, placed by farthest-point sampling on pipe-length graph distance
from a seeded random start; ids ``PT-0001`` ... in placement order, the junction in ``node``.
``zone``: Louvain communities (seeded) of the pipe graph without pumps and valves (so zones do not
straddle a pump station or PRV), merged into their best-connected neighbour down to
``round(sqrt(junctions)/4)`` zones (2..8, at most sensors/3), named ``Z1`` ... north to south.
Latitude/longitude: the EPANET coordinates (arbitrary units) scaled, aspect kept, to an area of
total pipe length / 12 km per km2 (side 0.5..30 km) around a seeded city centre. Noise: Gaussian
with a per-sensor sd log-uniform in ``noise_sd_m`` (0.03-0.08 m: the repeatability of a 0.1 %
class logger on a 0-100 m range at 5-min sampling plus local fluctuation); readings are then
rounded to ``resolution_m`` (0.01 m) and clipped at 0 (a gauge transducer reads no vacuum).

Sensor faults (post-processing of one sensor's series)
-------------------------------------------------------
``stuck`` (2-12 h, repeats the last good reading exactly), ``spike`` (1-2 readings off by
+-20-60 % of the sensor's mean pressure, at least 2 m), ``drift`` (12-30 h, an offset growing
linearly to +-1-4 m, then reset), ``dropout`` (1-12 h, rows absent), ``noise_burst`` (1-2 h,
noise sd x 5-10). ``size``: offset in m (spike, drift), the frozen value in m (stuck), the noise
multiplier (noise_burst), hours missing (dropout).

Labelling rule
--------------
Events never overlap (a hydraulic event keeps 2 h before and 6 h after it free, a fault 2 h), so
a reading has at most one label.

* Hydraulic event (leak, burst, pump_schedule, valve_closure): sensor s is *affected* if its
  max |impact| during the event exceeds ``label_noise_factor`` (2) x its noise sd. Each affected
  sensor gets one ``episodes`` row (``event_id``, ``anomaly_type`` = kind) from its first reading
  with |impact| > 2 x noise to the event's end, and those readings are labelled (``is_anomaly``
  1, ``anomaly_type`` = kind) - contiguous, even where a leak's impact dips at night. Unaffected
  sensors stay normal; an event that affects none has no episode (``max_impact_noise`` < 2: not
  detectable by definition). ``events.detectable_from`` = the earliest episode start: measure
  detection delay from it (an incipient leak is invisible at its physical start).
  ``events.settle_end`` = when every sensor is back within 2 x noise after the end (<= 6 h): an
  alarm in (end, settle_end] should not count as false.
* Sensor fault: one episode on its sensor over the fault, all its readings labelled with the
  fault kind (a dropout's episode has no rows to label).

Frames
------
* ``readings``: sensor_id, timestamp (UTC), pressure (m), is_anomaly (int8), anomaly_type
  ('' when normal); sorted by (timestamp, sensor_id).
* ``episodes``: sensor_id, anomaly_type, start, end (inclusive, UTC), event_id.
* ``sensors``: sensor_id, latitude, longitude, zone, type ('pressure'), elevation_m, node,
  noise_sd_m, mean_pressure_m.
* ``events``: event_id (E001... by start), kind, target (node, link or sensor), target_type,
  zone, start, end, growth_h, size, size_unit, target_visibility, max_impact_m,
  max_impact_noise, top_sensor, nearest_sensor, n_affected, affected_sensors (comma-separated),
  detectable_from, settle_end, detail.
* ``impacts``: event_id, sensor_id, max_abs_impact_m, mean_impact_m, noise_sd_m, impact_noise,
  affected, first_exceed; every sensor for hydraulic events, the faulty sensor for faults.

Training history: ``clean_days`` keeps the first days free of events (same network, sensors and
continuous time) and ``NetworkSim.split()`` cuts there; rates of 0 give a clean run.

Caching
-------
The hydraulic stage (pre-run, probe, baseline, event-alone runs: all that takes time) is pickled
to ``cache_dir`` (default ``.cache/network-sims/``) as ``<network>-<key>.pkl``, the key a SHA-256
of the network file's bytes, every parameter that affects it, the wntr version and
``CACHE_VERSION``. Noise and faults are recomputed each call (well under a second) with their own
random streams, so ``faults_per_week`` or ``resolution_m`` changes reuse the cache.

Progress goes to the ``sentinel.network`` logger. Needs numpy, pandas and wntr (and networkx,
which wntr requires).
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import pickle
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import wntr
from wntr.epanet.toolkit import ENepanet
from wntr.network.controls import (Control, ControlAction, SimTimeCondition, TankLevelCondition,
                                   TimeOfDayCondition)

log = logging.getLogger("sentinel.network")

CACHE_VERSION = 2
DEFAULT_CACHE_DIR = ".cache/network-sims"
HYDRAULIC_KINDS = ("leak", "burst", "pump_schedule", "valve_closure")
LEAK_KINDS = ("leak", "burst")
OPERATIONAL_KINDS = ("pump_schedule", "valve_closure")
FAULT_KINDS = ("stuck", "spike", "drift", "dropout", "noise_burst")
EVENT_KINDS = HYDRAULIC_KINDS + FAULT_KINDS

# EPANET 2.2 toolkit codes (epanet2_enums.h)
_EN_EMITTER, _EN_TANKLEVEL, _EN_HEAD, _EN_PRESSURE = 3, 8, 10, 11
_EN_ELEVATION, _EN_MINLEVEL, _EN_MAXLEVEL = 0, 20, 21
_EN_INITSTATUS, _EN_INITSETTING, _EN_STATUS, _EN_SETTING = 4, 5, 11, 12
_EN_DURATION, _EN_PATTERNSTART, _EN_STARTTIME = 0, 4, 10
_EN_CONTROLCOUNT, _EN_TIMER = 5, 2
_EN_PUMP = 2
_PIPE_TYPES = (0, 1)  # CV pipe, pipe

_SETTLE_S = 6 * 3600          # event-alone runs continue this long after the event
_GUARD_BEFORE_S = 2 * 3600    # free time before a hydraulic event
_GUARD_AFTER_S = 6 * 3600     # free time after a hydraulic event (tanks refill)
_FAULT_GUARD_S = 2 * 3600
_MIN_SENSOR_PRESSURE_M = 10.0
_ACCURACY = 1e-4              # EPANET convergence (relative flow change); its default is 1e-3
_WARM_STEPS = 2               # a continued run starts this many steps early (see _Engine.run)

_CITIES = (  # plausible reference points (city centres)
    (40.4168, -3.7038), (39.4699, -0.3763), (41.6488, -0.8891), (37.3891, -5.9845),
    (43.2630, -2.9350), (41.1579, -8.6291), (45.7640, 4.8357), (45.0703, 7.6869),
    (38.7223, -9.1393), (43.6047, 1.4442),
)


class NetworkSimError(ValueError):
    """A network simulation cannot be set up or run; the message is one sentence."""


@dataclass(frozen=True)
class NetworkSim:
    """Simulated data of one network: the synthetic simulator's three frames plus the truth."""
    readings: pd.DataFrame   # sensor_id, timestamp, pressure, is_anomaly, anomaly_type
    episodes: pd.DataFrame   # sensor_id, anomaly_type, start, end (inclusive), event_id
    sensors: pd.DataFrame    # sensor_id, latitude, longitude, zone, type, elevation_m, node, noise_sd_m, ...
    events: pd.DataFrame     # one row per injected event
    impacts: pd.DataFrame    # event_id, sensor_id, max_abs_impact_m, mean_impact_m, ...
    info: dict = field(default_factory=dict)

    @property
    def events_from(self) -> pd.Timestamp:
        """First time at which events may occur (end of the clean training history)."""
        return self.info["events_from"]

    def split(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(readings before ``events_from``: normal history, readings from it on)."""
        cut = self.readings["timestamp"] < self.events_from
        return (self.readings[cut].reset_index(drop=True), self.readings[~cut].reset_index(drop=True))


# --------------------------------------------------------------------------------------------
# Networks


def _library() -> dict[str, Path]:
    d = Path(wntr.__file__).parent / "library" / "networks"
    return {p.stem: p for p in sorted(d.glob("*.inp"))}


def list_networks() -> list[str]:
    """Names of the networks shipped with wntr (usable as ``network=``)."""
    return sorted(_library(), key=str.lower)


def _resolve_network(network: str | os.PathLike) -> tuple[str, Path]:
    lib = _library()
    s = str(network)
    for name, path in lib.items():
        if s.lower() == name.lower():
            return name, path
    p = Path(s).expanduser()
    if p.suffix.lower() == ".inp":
        if not p.is_file():
            raise NetworkSimError(f"network file {s!r} does not exist")
        return p.stem, p
    raise NetworkSimError(f"unknown network {s!r}: use one of {', '.join(list_networks())} "
                          f"or a path to an .inp file")


# --------------------------------------------------------------------------------------------
# Public entry point


def simulate_network(network: str | os.PathLike = "Net1", days: float = 14, interval_s: int = 300,
                     seed: int = 7, start: str = "2026-01-05T00:00:00Z", sensors: int | None = None,
                     clean_days: float = 0.0, leaks_per_week: float = 2.0, faults_per_week: float = 2.0,
                     operational_per_week: float = 1.0, burst_fraction: float = 0.4,
                     leak_visibility: tuple[float, float] = (1.0, 40.0),
                     noise_sd_m: tuple[float, float] = (0.03, 0.08), resolution_m: float = 0.01,
                     label_noise_factor: float = 2.0, required_pressure_m: float = 15.0,
                     warmup_s: int = 6 * 3600, spinup_s: int = 86400, settle_days: float = 7.0,
                     demand_shift: float = 0.0, shift_at: str | pd.Timestamp | float | None = None,
                     cache_dir: str | os.PathLike | None = None, cache: bool = True,
                     workers: int | None = None) -> NetworkSim:
    """Simulate pressure sensors on a real network with leaks, operational events and faults.

    Args:
        network: a network wntr ships (``list_networks()``: Net1, Net3, Net6, ky10 ...) or a path
            to an EPANET ``.inp`` file.
        days: length of the output series (after ``start``).
        interval_s: sampling interval = hydraulic step in seconds (60..3600, divides a day).
        seed: random seed: the same arguments give identical output.
        start: first timestamp (UTC); demand follows its clock and weekday.
        sensors: number of pressure sensors (default from the network's size, 6..30).
        clean_days: no event starts in the first ``clean_days`` (normal training history).
        leaks_per_week, faults_per_week, operational_per_week: expected events per week of the
            event period, network-wide; 0 disables a family.
        burst_fraction: share of leaks that are bursts (full size at once).
        leak_visibility: range of the target max impact of a leak at its most affected sensor,
            in multiples of that sensor's noise sd (drawn log-uniform).
        noise_sd_m: range of the sensors' Gaussian noise sd in metres (drawn log-uniform).
        resolution_m: readings are rounded to this.
        label_noise_factor: a sensor is affected by a hydraulic event where |impact| exceeds this
            many noise sds (see the module docstring for the labelling rule).
        required_pressure_m: pressure for full demand under pressure-dependent demand.
        warmup_s: no event starts within this time after the event period begins.
        spinup_s: hydraulic spin-up at ``interval_s`` simulated before ``start`` and not output.
        settle_days: length of the hourly-step pre-run that sets the tanks' initial levels (0: the
            INP's levels).
        demand_shift: a lasting change of every junction's demand, as a fraction (0.15: +15 %;
            default 0, none): demand is multiplied by ``1 + demand_shift`` from ``shift_at`` on.
            Unlabelled (it is not an anomaly). The readings before ``shift_at`` are those of the
            unshifted run (leaks are sized on the unshifted demand, spikes on the pressures before
            the shift), except around an event still running at ``shift_at``, which is calibrated
            on what it sees.
        shift_at: when the shift starts: a timestamp (UTC if naive) or days from ``start`` as a
            number, within the output series (default: ``start``).
        cache_dir: where hydraulic results are cached (default ``.cache/network-sims``).
        cache: False to neither read nor write the cache.
        workers: threads for the event-alone runs (default: CPU count).
    """
    t_total = time.perf_counter()
    label, path = _resolve_network(network)
    interval_s = int(interval_s)
    if interval_s < 60 or interval_s > 3600 or 86400 % interval_s:
        raise NetworkSimError(f"interval_s must divide a day and lie in 60..3600, not {interval_s}")
    if days <= 0:
        raise NetworkSimError(f"days must be positive, not {days}")
    if not 0 <= clean_days <= days:
        raise NetworkSimError(f"clean_days must lie in 0..days ({days}), not {clean_days}")
    if min(leaks_per_week, faults_per_week, operational_per_week) < 0:
        raise NetworkSimError("event rates must not be negative")
    if spinup_s % interval_s or warmup_s < 0:
        raise NetworkSimError("spinup_s must be a multiple of interval_s and warmup_s not negative")
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    shift = _demand_shift(demand_shift, shift_at, t0, days)
    data = path.read_bytes()
    params = dict(days=float(days), interval_s=interval_s, seed=int(seed), start=t0.isoformat(),
                  sensors=None if sensors is None else int(sensors), clean_days=float(clean_days),
                  leaks_per_week=float(leaks_per_week), operational_per_week=float(operational_per_week),
                  burst_fraction=float(burst_fraction), leak_visibility=[float(v) for v in leak_visibility],
                  noise_sd_m=[float(v) for v in noise_sd_m], label_noise_factor=float(label_noise_factor),
                  required_pressure_m=float(required_pressure_m), warmup_s=int(warmup_s),
                  spinup_s=int(spinup_s), settle_days=float(settle_days))
    if shift is not None:  # only then: cache files of unshifted runs keep their keys
        params.update(demand_shift=shift[1], shift_at=shift[0].isoformat())
    key = hashlib.sha256(json.dumps({"net": hashlib.sha256(data).hexdigest(), "params": params,
                                     "wntr": wntr.__version__, "v": CACHE_VERSION},
                                    sort_keys=True).encode()).hexdigest()[:24]
    cdir = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR)
    cfile = cdir / f"{label}-{key}.pkl"
    hyd = None
    if cache and cfile.is_file():
        try:
            with cfile.open("rb") as f:
                hyd = pickle.load(f)
            log.info("%s: hydraulics from cache %s", label, cfile)
        except Exception as exc:  # a damaged cache file is recomputed
            log.warning("%s: ignoring unreadable cache %s (%s)", label, cfile, exc)
            hyd = None
    cache_hit = hyd is not None
    if hyd is None:
        hyd = _hydraulics(label, path, t0, params, workers)
        if cache:
            cdir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cdir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(hyd, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.chmod(tmp, 0o644)
            os.replace(tmp, cfile)
    t_post = time.perf_counter()
    sim = _assemble(hyd, params, faults_per_week, resolution_m)
    info = dict(hyd["info"])
    info.update(demand_shift=shift[1] if shift else 0.0, shift_at=shift[0] if shift else None,
                cache_hit=cache_hit, cache_file=str(cfile) if cache else None,
                post_s=round(time.perf_counter() - t_post, 3),
                total_s=round(time.perf_counter() - t_total, 3))
    log.info("%s: %d readings from %d sensors, %d events (%s) in %.1f s%s", label, len(sim.readings),
             len(sim.sensors), len(sim.events),
             ", ".join(f"{k} {v}" for k, v in sim.events["kind"].value_counts().sort_index().items()),
             info["total_s"], " (cached hydraulics)" if cache_hit else "")
    return NetworkSim(sim.readings, sim.episodes, sim.sensors, sim.events, sim.impacts, info)


def _demand_shift(demand_shift, shift_at, t0: pd.Timestamp, days: float) -> tuple[pd.Timestamp, float] | None:
    """(when, fraction) of a validated demand shift, or None when there is none."""
    try:
        frac = float(demand_shift)
    except (TypeError, ValueError):
        raise NetworkSimError(f"demand_shift must be a number (0.15 = +15 %), not {demand_shift!r}") from None
    if not math.isfinite(frac) or frac <= -1.0:
        raise NetworkSimError(f"demand_shift must be a fraction above -1 (0.15 = +15 %), not {demand_shift!r}")
    if frac == 0.0:
        return None
    end = t0 + pd.Timedelta(days=float(days))
    if shift_at is None:
        at = t0
    elif isinstance(shift_at, (int, float)) and not isinstance(shift_at, bool):
        at = t0 + pd.Timedelta(days=float(shift_at))
    else:
        try:
            at = pd.Timestamp(shift_at)
        except (TypeError, ValueError):
            raise NetworkSimError(f"shift_at must be a timestamp or days from start, not {shift_at!r}") from None
        at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    if not t0 <= at < end:
        raise NetworkSimError(f"shift_at must lie within the simulated series ({t0.isoformat()} to "
                              f"{end.isoformat()}), not {at.isoformat()}")
    return at, frac


def _shifted(p: dict, times: pd.DatetimeIndex) -> int:
    """Index of the first of ``times`` under the demand shift (len(times) when there is none)."""
    if not p.get("demand_shift"):
        return len(times)
    return int(times.searchsorted(pd.Timestamp(p["shift_at"])))


# --------------------------------------------------------------------------------------------
# Model preparation


def _load_model(label: str, path: Path) -> wntr.network.WaterNetworkModel:
    try:
        return wntr.network.WaterNetworkModel(str(path))
    except Exception as exc:
        raise NetworkSimError(f"could not read network {label!r} from {path}: {exc}") from exc


def _periodic_time_controls(wn) -> int:
    """Replace absolute-time controls that repeat a daily schedule by clock-time controls."""
    c0 = wn.options.time.start_clocktime
    by_link: dict[str, list] = {}
    for name in wn.control_name_list:
        c = wn.get_control(name)
        if isinstance(c, Control) and isinstance(c._condition, SimTimeCondition) and len(c.actions()) == 1:
            by_link.setdefault(c.actions()[0].target()[0].name, []).append((name, c))
    converted = 0
    for link, items in by_link.items():
        days = {int(c._condition._threshold // 86400) for _, c in items}
        pairs = {((c0 + c._condition._threshold) % 86400, c.actions()[0].target()[1], c.actions()[0]._value)
                 for _, c in items}
        if len(days) < 2 or len(pairs) > 6:
            continue
        for name, _ in items:
            wn.remove_control(name)
        for i, (tod, attr, value) in enumerate(sorted(pairs, key=lambda p: p[0])):
            tod = int(tod)
            cond = TimeOfDayCondition(wn, None, f"{tod // 3600:02d}:{tod % 3600 // 60:02d}:{tod % 60:02d}")
            wn.add_control(f"snt_clock_{link}_{i}", Control(cond, ControlAction(wn.get_link(link), attr, value)))
        converted += len(items)
    return converted


def _reachable_tank_controls(wn) -> int:
    """Move tank-level thresholds that sit at a tank's max (min) level 2 % of its range inside.

    EPANET stops a full tank at its max level, so "IF TANK T ABOVE <max> THEN PUMP P CLOSED" never
    fires and the pump runs on for good once started (Net6's pump 3870 at tank 3347): the network
    flips weeks into a run to another regime. A float switch just below the top is what is meant.
    """
    fixed = 0
    for name in wn.control_name_list:
        c = wn.get_control(name)
        cond = getattr(c, "_condition", None)
        if not isinstance(cond, TankLevelCondition):
            continue
        tank = cond._source_obj
        span = tank.max_level - tank.min_level
        rel = str(cond._relation).lower()
        if span <= 0:
            continue
        if (">" in rel or "gt" in rel or "ge" in rel or "above" in rel) and cond._threshold >= tank.max_level - 1e-3:
            cond._threshold = tank.max_level - 0.02 * span
            fixed += 1
        elif ("<" in rel or "lt" in rel or "le" in rel or "below" in rel) and cond._threshold <= tank.min_level + 1e-3:
            cond._threshold = tank.min_level + 0.02 * span
            fixed += 1
    return fixed


def _resample(mult, old_step: int, new_step: int) -> np.ndarray:
    m = np.asarray(mult, dtype=float)
    if m.size == 0:
        return m
    n_new = max(1, int(round(m.size * old_step / new_step)))
    idx = np.floor(np.arange(n_new) * new_step / old_step).astype(int) % m.size
    return m[idx]


def _residential_profile(n: int) -> np.ndarray:
    """Mean-1 daily profile of a residential area (night low, morning and evening peaks)."""
    h = np.arange(n) * 24.0 / n
    p = (0.35 + 0.9 * np.exp(-0.5 * ((h - 7.5) / 1.4) ** 2) + 0.7 * np.exp(-0.5 * ((h - 20.0) / 1.9) ** 2)
         + 0.35 * np.exp(-0.5 * ((h - 13.5) / 2.2) ** 2))
    return p / p.mean()


def _daily_profile(mult: np.ndarray, old_step: int, new_step: int) -> np.ndarray | None:
    """A pattern's 24-h shape at ``new_step`` (linear between the original steps' centres), or None
    when the pattern does not span whole days."""
    period = mult.size * old_step
    if period % 86400 or old_step > 86400:
        return None
    per_day = 86400 // old_step
    day = mult.reshape(-1, per_day).mean(axis=0)
    n = 86400 // new_step
    centres = (np.arange(per_day) + 0.5) * old_step
    x = np.arange(n) * new_step + new_step / 2.0
    xp = np.concatenate([centres - 86400, centres, centres + 86400])
    prof = np.interp(x, xp, np.tile(day, 3))
    if prof.mean() > 0:
        prof *= day.mean() / prof.mean()
    return prof


def _ar1(rng, n: int, phi: float, sd: float) -> np.ndarray:
    e = rng.normal(0.0, sd * math.sqrt(1 - phi * phi), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _demand_patterns(wn, zone_of: dict[str, int], times: pd.DatetimeIndex, dt: int, seed: int,
                     demand_shift: tuple[int, float] | None = None) -> int:
    """Give every junction demand a (zone, original pattern) group pattern over the horizon;
    ``demand_shift`` = (first step, fraction) multiplies it by 1 + fraction from that step on."""
    old_step = int(wn.options.time.pattern_timestep)
    default = wn.options.hydraulic.pattern
    originals = {name: np.asarray(wn.get_pattern(name).multipliers, float) for name in wn.pattern_name_list}
    # Every existing pattern moves to the new pattern step (reservoir heads, pump speeds ...).
    for name, m in originals.items():
        wn.get_pattern(name).multipliers = list(_resample(m, old_step, dt))
    demand_by_pat: dict[str | None, float] = {}
    for jname in wn.junction_name_list:
        for ts in wn.get_node(jname).demand_timeseries_list:
            pn = ts.pattern_name if ts.pattern_name in originals else (default if default in originals else None)
            demand_by_pat[pn] = demand_by_pat.get(pn, 0.0) + abs(ts.base_value)
    dominant = max(demand_by_pat, key=demand_by_pat.get) if demand_by_pat else None
    n = len(times)
    per_day = 86400 // dt
    tod = ((times.hour * 3600 + times.minute * 60 + times.second) // dt).to_numpy() % per_day
    dow = times.dayofweek.to_numpy()
    day_no = ((times - times[0].normalize()).days).to_numpy()
    shift = 3600 // dt
    base: dict[str | None, np.ndarray] = {}
    for pn in demand_by_pat:
        m = originals.get(pn, np.ones(1))
        prof = _daily_profile(m, old_step, dt)
        if prof is None:
            base[pn] = _resample(m, old_step, dt)[np.arange(n) % max(1, round(m.size * old_step / dt))]
            continue
        if pn == dominant and prof.max() <= 1.05 * prof.min():
            prof = _residential_profile(per_day) * prof.mean()
        mean = prof.mean()
        weekend = mean + 0.85 * (np.roll(prof, shift) - mean)
        level = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.96, 0.93])[dow]
        base[pn] = np.where(dow >= 5, weekend[tod], prof[tod]) * level
    rng = np.random.default_rng([seed, 21])
    n_days = int(day_no.max()) + 1
    common_day = _ar1(rng, n_days, 0.6, 0.04)
    common_wander = _ar1(rng, n, math.exp(-dt / 5400.0), 0.02)
    names: dict[tuple, str] = {}
    pat_index = {pn: i for i, pn in enumerate(sorted(demand_by_pat, key=str))}
    for jname in wn.junction_name_list:
        junc = wn.get_node(jname)
        for ts in junc.demand_timeseries_list:
            pn = ts.pattern_name if ts.pattern_name in originals else (default if default in originals else None)
            g = (zone_of.get(jname, 0), pn)
            if g not in names:
                grng = np.random.default_rng([seed, 22, g[0], pat_index[pn]])
                day = common_day + grng.normal(0.0, 0.025, n_days)
                wander = common_wander + _ar1(grng, n, math.exp(-dt / 5400.0), 0.03)
                white = np.clip(1.0 + grng.normal(0.0, 0.02, n), 0.0, None)
                values = np.round(np.clip(base[pn] * np.exp(day[day_no] + wander) * white, 0.0, None), 5)
                if demand_shift is not None:  # after the noise draws: the steps before are unchanged
                    values[demand_shift[0]:] *= 1.0 + demand_shift[1]
                names[g] = f"SNT{pat_index[pn]}Z{g[0]}"
                wn.add_pattern(names[g], list(values))
            ts.pattern_name = names[g]
    return len(names)


def _graph(wn) -> tuple[nx.Graph, nx.Graph]:
    """(undirected graph of all links weighted by length, the same with pipes only)."""
    full, pipes = nx.Graph(), nx.Graph()
    full.add_nodes_from(wn.node_name_list)
    pipes.add_nodes_from(wn.node_name_list)
    for name, link in wn.links():
        u, v = link.start_node_name, link.end_node_name
        w = float(getattr(link, "length", 1.0)) if link.link_type == "Pipe" else 1.0
        for g in (full, pipes) if link.link_type == "Pipe" else (full,):
            if not g.has_edge(u, v) or g[u][v]["weight"] > w:
                g.add_edge(u, v, weight=max(w, 0.1), link=name)
    return full, pipes


def _zones(wn, full: nx.Graph, pipes: nx.Graph, k: int, seed: int) -> dict[str, int]:
    comms = [set(c) for c in nx.community.louvain_communities(pipes, seed=seed)]
    owner = {n: i for i, c in enumerate(comms) for n in c}
    coords = {n: wn.get_node(n).coordinates for n in wn.node_name_list}
    alive = set(range(len(comms)))
    while len(alive) > max(1, k):
        c = min(alive, key=lambda i: (len(comms[i]), i))
        links: dict[int, int] = {}
        for n in comms[c]:
            for m in full.neighbors(n):
                o = owner[m]
                if o != c:
                    links[o] = links.get(o, 0) + 1
        if links:
            d = max(links, key=lambda o: (links[o], -o))
        else:
            cx = np.mean([coords[n] for n in comms[c]], axis=0)
            d = min((o for o in alive if o != c),
                    key=lambda o: float(np.linalg.norm(np.mean([coords[n] for n in comms[o]], axis=0) - cx)))
        comms[d] |= comms[c]
        for n in comms[c]:
            owner[n] = d
        comms[c] = set()
        alive.discard(c)
    order = sorted(alive, key=lambda i: (-np.mean([coords[n][1] for n in comms[i]]),
                                         np.mean([coords[n][0] for n in comms[i]])))
    rank = {c: r + 1 for r, c in enumerate(order)}
    return {n: rank[owner[n]] for n in wn.node_name_list}


def _latlon(wn, seed: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng([seed, 31])
    names = wn.node_name_list
    xy = np.array([wn.get_node(n).coordinates for n in names], dtype=float)
    lat0, lon0 = _CITIES[int(rng.integers(len(_CITIES)))]
    lat0 += rng.normal(0, 0.01)
    lon0 += rng.normal(0, 0.01)
    length_km = sum(wn.get_link(p).length for p in wn.pipe_name_list) / 1000.0
    area = max(length_km / 12.0, 0.25)
    w, h = np.ptp(xy[:, 0]), np.ptp(xy[:, 1])
    if w <= 0 and h <= 0:
        w = h = 1.0
    if w > 0 and h > 0:
        scale = math.sqrt(area / (w * h))
    else:
        scale = math.sqrt(area) / max(w, h)
    side = max(w, h) * scale
    scale *= min(max(side, 0.5), 30.0) / side
    km = (xy - xy.mean(axis=0)) * scale
    lat = lat0 + km[:, 1] / 111.32
    lon = lon0 + km[:, 0] / (111.32 * math.cos(math.radians(lat0)))
    return {n: (round(float(a), 6), round(float(b), 6)) for n, a, b in zip(names, lat, lon)}


def _farthest_points(full: nx.Graph, candidates: list[str], k: int, rng) -> list[str]:
    cand = set(candidates)
    first = candidates[int(rng.integers(len(candidates)))]
    dist = nx.single_source_dijkstra_path_length(full, first, weight="weight")
    best = {n: dist.get(n, math.inf) for n in cand}
    chosen: list[str] = []
    for _ in range(k):
        # farthest from everything chosen so far (from the random start for the first pick)
        n = max(sorted(best), key=lambda m: best[m])
        chosen.append(n)
        d = nx.single_source_dijkstra_path_length(full, n, weight="weight")
        for m in best:
            best[m] = min(best[m], d.get(m, math.inf))
        best[n] = -1.0
    return chosen


# --------------------------------------------------------------------------------------------
# EPANET toolkit stepping


_OPEN_LOCK = threading.Lock()


class _Toolkit:
    """One EPANET 2.2 project stepped from Python with cheap direct ctypes calls."""

    def __init__(self, inp: str, rpt: str):
        self.en = ENepanet(version=2.2)
        with _OPEN_LOCK:  # EPANET's INP parser uses strtok(): opening is not thread-safe, running is
            self.en.ENopen(inp, rpt, "")
        self.lib, self.ph = self.en.ENlib, self.en._project
        self._v = ctypes.c_double()
        self.warnings = 0

    def _check(self, code: int, what: str) -> None:
        if code > 100:
            from wntr.epanet.exceptions import EN_ERROR_CODES
            raise NetworkSimError(f"EPANET error {code} in {what}: {EN_ERROR_CODES.get(code, 'unknown error')}")
        if code:
            self.warnings += 1

    def node(self, i: int, code: int) -> float:
        self._check(self.lib.EN_getnodevalue(self.ph, i, code, ctypes.byref(self._v)), "getnodevalue")
        return self._v.value

    def link(self, i: int, code: int) -> float:
        self._check(self.lib.EN_getlinkvalue(self.ph, i, code, ctypes.byref(self._v)), "getlinkvalue")
        return self._v.value

    def set_node(self, i: int, code: int, value: float) -> None:
        self._check(self.lib.EN_setnodevalue(self.ph, i, code, ctypes.c_double(value)), "setnodevalue")

    def set_link(self, i: int, code: int, value: float) -> None:
        self._check(self.lib.EN_setlinkvalue(self.ph, i, code, ctypes.c_double(value)), "setlinkvalue")

    def set_control(self, c: dict, link: int | None = None, level: float | None = None) -> None:
        self._check(self.lib.EN_setcontrol(self.ph, c["index"], c["type"], c["linkindex"] if link is None else link,
                                           ctypes.c_double(c["setting"]), c["nodeindex"],
                                           ctypes.c_double(c["level"] if level is None else level)), "setcontrol")

    def close(self) -> None:
        try:
            self.en.ENclose()
        except Exception:  # closing never masks the run's own error
            pass


@dataclass
class _HydEvent:
    event_id: str
    kind: str
    target: str
    i0: int                 # first output step of the event
    i1: int                 # last output step (inclusive)
    ramp: int = 1           # steps to full size (leaks)
    coef: float = 0.0       # emitter coefficient at full size (L/s/m^0.5)
    status: int = 0         # forced pump status
    visibility: float = float("nan")
    alternatives: tuple = ()  # other targets to try if this one disrupts service (operational events)


@dataclass
class _Run:
    pressure: np.ndarray    # report steps x recorded nodes
    tank_level: np.ndarray  # report steps x tanks
    states: dict            # sim time -> state
    changes: list           # (sim time, link, status, setting) of controlled links, when recorded


class _Engine:
    """The prepared network written as an LPS/metre INP and everything needed to step it.

    Two modes: *physical* (the network's own controls act: the baseline run) and *replay*
    (event-alone runs: the controls of pumps and pipes are switched off and the baseline's exact
    switching times are replayed as timer controls, so an event's impact is its own hydraulic
    effect at the same operations, not a pump cycle shifted by a few minutes).
    """

    def __init__(self, wn, inp: str, tmpdir: str, dt: int, ns: int, label: str):
        self.wn, self.inp, self.tmpdir, self.dt, self.ns, self.label = wn, inp, tmpdir, dt, ns, label
        self.clock0 = int(wn.options.time.start_clocktime)
        self.tanks = list(wn.tank_name_list)
        self.tank_min = np.array([wn.get_node(t).min_level for t in self.tanks])
        ctrl_links = set()
        for name in wn.control_name_list:
            c = wn.get_control(name)
            if isinstance(c, Control):
                for act in c.actions():
                    ctrl_links.add(act.target()[0].name)
        self.valves = set(wn.valve_name_list)
        self.controlled = sorted(x for x in ctrl_links if x in wn.link_name_list and x not in self.valves)
        self.tracked = sorted(set(wn.pump_name_list) | {x for x in ctrl_links if x in wn.link_name_list})
        self.pumps = set(wn.pump_name_list)
        self.warnings = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def run(self, t_start: int, t_end: int, base: _Run | None, events: list[_HydEvent], nodes: list[str],
            capture: set[int] = frozenset(), replay: list | None = None, record_changes: bool = False) -> _Run:
        """Step from sim time ``t_start`` to ``t_end`` (inclusive), recording ``nodes``' pressure.

        ``t_start`` > 0 continues the ``base`` run: it starts ``_WARM_STEPS`` steps earlier from the
        base's state and resets the tank levels to the base's at every step up to ``t_start``, so
        that EPANET's valve and pump statuses are warm (a cold start can settle a PRV into another
        status for one step) and the run matches the base run exactly until something differs.
        """
        resets: dict[int, list] = {}
        state, t_begin = None, 0
        if t_start:
            t_begin = max(0, t_start - _WARM_STEPS * self.dt)
            state = base.states[t_begin]
            resets = {t: base.states[t]["tank"] for t in range(t_begin + self.dt, t_start + 1, self.dt)}
        tk = _Toolkit(self.inp, os.path.join(self.tmpdir, f"run{next(self._ids)}.rpt"))
        try:
            r = self._run(tk, t_begin, t_end, state, events, nodes, capture, replay, record_changes, resets)
        finally:
            with self._lock:
                self.warnings += tk.warnings
            tk.close()
        k = (t_start - t_begin) // self.dt
        return _Run(r.pressure[k:], r.tank_level[k:], r.states, r.changes)

    def _run(self, tk, t_begin, t_end, state, events, nodes, capture, replay, record_changes, resets):
        en, dt = tk.en, self.dt
        node_ix = [en.ENgetnodeindex(n) for n in nodes]
        tank_ix = [en.ENgetnodeindex(t) for t in self.tanks]
        tank_el = [tk.node(i, _EN_ELEVATION) for i in tank_ix]
        link_ix = [en.ENgetlinkindex(x) for x in self.tracked]
        ctrl_ix = {en.ENgetlinkindex(x): x for x in self.controlled}
        controls = [en.ENgetcontrol(i) for i in range(1, en.ENgetcount(_EN_CONTROLCOUNT) + 1)]
        tank_lo = [tk.node(i, _EN_MINLEVEL) for i in tank_ix]
        tank_hi = [tk.node(i, _EN_MAXLEVEL) for i in tank_ix]
        en.ENsettimeparam(_EN_DURATION, int(t_end - t_begin))
        if replay is not None:
            for c in controls:
                if c["linkindex"] in ctrl_ix:
                    tk.set_control(c, link=0)
                    c["linkindex"] = 0
        if t_begin:
            if state is None:
                raise RuntimeError("a run that does not start at 0 needs the baseline state")
            en.ENsettimeparam(_EN_PATTERNSTART, int(t_begin))
            en.ENsettimeparam(_EN_STARTTIME, int((self.clock0 + t_begin) % 86400))
            for c in controls:
                if c["type"] == _EN_TIMER and c["linkindex"]:
                    if c["level"] < t_begin:
                        tk.set_control(c, link=0)
                        c["linkindex"] = 0
                    else:
                        c["level"] -= t_begin
                        tk.set_control(c)
            for i, lvl, mn, mx in zip(tank_ix, state["tank"], tank_lo, tank_hi):
                tk.set_node(i, _EN_TANKLEVEL, min(max(lvl, mn), mx))
            for name, i, (st, se) in zip(self.tracked, link_ix, state["links"]):
                if name in self.valves:
                    if st == 0:
                        tk.set_link(i, _EN_INITSTATUS, 0)
                    continue
                tk.set_link(i, _EN_INITSTATUS, st)
                if name in self.pumps and st and se > 0:
                    tk.set_link(i, _EN_INITSETTING, se)
        if replay is not None:
            idx = {x: en.ENgetlinkindex(x) for x in self.controlled}
            new = ctypes.c_int()
            for t, name, st, se in replay:
                if t_begin < t <= t_end and name in idx:
                    setting = (se if se > 0 else 1.0) if (st and name in self.pumps) else float(st)
                    tk._check(tk.lib.EN_addcontrol(tk.ph, _EN_TIMER, idx[name], ctypes.c_double(setting), 0,
                                                   ctypes.c_double(t - t_begin), ctypes.byref(new)), "addcontrol")
        # event bookkeeping
        leaks, pumps, pipes = [], [], []
        for ev in events:
            s0, s1 = self.ns + ev.i0, self.ns + ev.i1
            if ev.kind in LEAK_KINDS:
                leaks.append([en.ENgetnodeindex(ev.target), s0, s1, ev.coef, max(1, ev.ramp), 0.0])
            elif ev.kind == "pump_schedule":
                li = en.ENgetlinkindex(ev.target)
                pumps.append([li, s0, s1, ev.status, [c for c in controls if c["linkindex"] == li], 0, 1.0])
            elif ev.kind == "valve_closure":
                pipes.append([en.ENgetlinkindex(ev.target), s0, s1, 0])
        n_rep = (t_end - t_begin) // dt + 1
        pressure = np.full((n_rep, len(node_ix)), np.nan)
        levels = np.full((n_rep, len(tank_ix)), np.nan)
        states, changes = {}, []
        last = {}
        en.ENopenH()
        en.ENinitH(0)
        lib, ph, byref = tk.lib, tk.ph, ctypes.byref
        v, v2, tt, ts = ctypes.c_double(), ctypes.c_double(), ctypes.c_long(), ctypes.c_long()
        t_next = 0
        while True:
            s = (t_begin + t_next) // dt
            if resets and t_begin + t_next in resets:
                for i, lvl, mn, mx in zip(tank_ix, resets[t_begin + t_next], tank_lo, tank_hi):
                    tk.set_node(i, _EN_TANKLEVEL, min(max(lvl, mn), mx))
            for lk in leaks:
                c = lk[3] * min(1.0, (s - lk[1] + 1) / lk[4]) if lk[1] <= s <= lk[2] else 0.0
                if c != lk[5]:
                    tk.set_node(lk[0], _EN_EMITTER, c)
                    lk[5] = c
            for pm in pumps:
                if pm[5] == 0 and pm[1] <= s <= pm[2]:
                    pm[6] = tk.link(pm[0], _EN_STATUS)
                    for c in pm[4]:
                        tk.set_control(c, link=0)
                    tk.set_link(pm[0], _EN_STATUS, pm[3])
                    pm[5] = 1
                elif pm[5] == 1 and s > pm[2]:
                    if replay is None:  # back to automatic: the state before, then the controls
                        tk.set_link(pm[0], _EN_STATUS, pm[6])
                        for c in pm[4]:
                            tk.set_control(c)
                    pm[5] = 2
            for pp in pipes:
                if pp[3] == 0 and pp[1] <= s <= pp[2]:
                    tk.set_link(pp[0], _EN_STATUS, 0)
                    pp[3] = 1
                elif pp[3] == 1 and s > pp[2]:
                    tk.set_link(pp[0], _EN_STATUS, 1)
                    pp[3] = 2
            tk._check(lib.EN_runH(ph, byref(tt)), f"a hydraulic step of {self.label}")
            t = t_begin + tt.value
            if record_changes:
                for i, name in ctrl_ix.items():
                    lib.EN_getlinkvalue(ph, i, _EN_STATUS, byref(v))
                    lib.EN_getlinkvalue(ph, i, _EN_SETTING, byref(v2))
                    cur = (int(round(v.value)), round(v2.value, 6) if name in self.pumps else 0.0)
                    if last.get(name) != cur:
                        changes.append((t, name) + cur)
                        last[name] = cur
            if tt.value % dt == 0:
                k = tt.value // dt
                row = pressure[k]
                for j, i in enumerate(node_ix):
                    lib.EN_getnodevalue(ph, i, _EN_PRESSURE, byref(v))
                    row[j] = v.value
                lrow = levels[k]
                for j, i in enumerate(tank_ix):
                    lib.EN_getnodevalue(ph, i, _EN_HEAD, byref(v))
                    lrow[j] = v.value - tank_el[j]
                if t in capture:
                    states[t] = {"tank": lrow.tolist(),
                                 "links": [(int(round(tk.link(i, _EN_STATUS))), tk.link(i, _EN_SETTING))
                                           for i in link_ix]}
            tk._check(lib.EN_nextH(ph, byref(ts)), f"a hydraulic step of {self.label}")
            if ts.value <= 0:
                break
            t_next = tt.value + ts.value
        en.ENcloseH()
        return _Run(pressure, levels, states, changes)


# --------------------------------------------------------------------------------------------
# Hydraulic stage (cached)


def _stochastic_round(x: float, rng) -> int:
    return int(math.floor(x + rng.random()))


class _Schedule:
    """Non-overlapping placement of events on the output step grid."""

    def __init__(self, n: int, first: int):
        self.busy = np.zeros(n, dtype=bool)
        self.first = first

    def place(self, rng, length: int, before: int, after: int) -> int | None:
        n = self.busy.size
        hi = n - length - 1
        if hi <= self.first:
            return None
        for _ in range(300):
            i0 = int(rng.integers(self.first, hi))
            lo, up = max(0, i0 - before), min(n, i0 + length + after)
            if not self.busy[lo:up].any():
                self.busy[lo:up] = True
                return i0
        return None


@dataclass
class _Prepared:
    wn: object
    juncs: list
    n_sensors: int
    full: nx.Graph
    zone_of: dict
    k_zones: int
    n_groups: int
    converted: int
    sim_times: pd.DatetimeIndex
    fixed_tank_controls: int


def _prepare(label: str, path: Path, t0: pd.Timestamp, p: dict) -> _Prepared:
    """Load the network and set it up: times, pressure-dependent demand, zones, demand patterns."""
    dt, seed = p["interval_s"], p["seed"]
    n = int(round(p["days"] * 86400 / dt))
    ns = p["spinup_s"] // dt
    wn = _load_model(label, path)
    juncs = list(wn.junction_name_list)
    if not juncs:
        raise NetworkSimError(f"network {label!r} has no junctions to put sensors on")
    n_sensors = p["sensors"] if p["sensors"] is not None else int(min(30, max(6, round(0.5 * math.sqrt(len(juncs))))))
    n_sensors = max(1, min(n_sensors, len(juncs)))
    o = wn.options
    sim_start = t0 - pd.Timedelta(seconds=p["spinup_s"])
    o.time.duration = (ns + n - 1) * dt
    o.time.hydraulic_timestep = dt
    o.time.quality_timestep = dt
    o.time.rule_timestep = dt
    o.time.report_timestep = dt
    o.time.report_start = 0
    converted = _periodic_time_controls(wn)
    fixed = _reachable_tank_controls(wn)
    o.time.start_clocktime = int((sim_start - sim_start.normalize()).total_seconds())
    o.time.pattern_start = 0
    o.hydraulic.demand_model = "PDD"
    o.hydraulic.required_pressure = p["required_pressure_m"]
    o.hydraulic.minimum_pressure = 0.0
    o.hydraulic.pressure_exponent = 0.5
    o.hydraulic.emitter_exponent = 0.5
    o.hydraulic.accuracy = _ACCURACY
    o.hydraulic.unbalanced = "CONTINUE"
    o.hydraulic.unbalanced_value = 10
    o.quality.parameter = "NONE"
    full, pipes = _graph(wn)
    k_zones = int(min(8, max(2, round(math.sqrt(len(juncs)) / 4)), max(1, n_sensors // 3)))
    k_zones = max(1, min(k_zones, len(juncs)))
    zone_of = _zones(wn, full, pipes, k_zones, seed)
    sim_times = pd.date_range(sim_start, periods=ns + n, freq=pd.Timedelta(seconds=dt))
    k_shift = _shifted(p, sim_times)
    n_groups = _demand_patterns(wn, zone_of, sim_times, dt, seed,
                                (k_shift, p["demand_shift"]) if k_shift < len(sim_times) else None)
    o.time.pattern_timestep = dt
    return _Prepared(wn, juncs, n_sensors, full, zone_of, k_zones, n_groups, converted, sim_times, fixed)


def _hydraulics(label: str, path: Path, t0: pd.Timestamp, p: dict, workers: int | None) -> dict:
    timings = {}
    tic = time.perf_counter()
    cpu = time.process_time()
    dt, seed = p["interval_s"], p["seed"]
    n = int(round(p["days"] * 86400 / dt))
    ns = p["spinup_s"] // dt
    prep = _prepare(label, path, t0, p)
    wn, juncs, n_sensors, full, zone_of = prep.wn, prep.juncs, prep.n_sensors, prep.full, prep.zone_of
    k_zones, n_groups, sim_times, o = prep.k_zones, prep.n_groups, prep.sim_times, prep.wn.options
    timings["prepare_s"] = round(time.perf_counter() - tic, 3)
    log.info("%s: %d junctions, %d tanks, %d pumps, %d valves; %d demand groups, %d zones%s; "
             "simulating %.1f days at %d s", label, len(juncs), wn.num_tanks, wn.num_pumps, wn.num_valves,
             n_groups, k_zones,
             f", {prep.converted} daily time controls made clock-time" if prep.converted else "", p["days"], dt)

    with tempfile.TemporaryDirectory(prefix="sentinel-net-") as tmpdir:
        # Tanks start where weeks of operation take them, not at the INP's initial levels.
        tic = time.perf_counter()
        settled = (_settle_tanks(label, path, prep.sim_times[0], p, tmpdir)
                   if p["settle_days"] > 0 and wn.num_tanks else {})
        for tname, lvl in settled.items():
            tank = wn.get_node(tname)
            tank.init_level = float(min(max(lvl, tank.min_level), tank.max_level))
        timings["settle_s"] = round(time.perf_counter() - tic, 3)
        inp = os.path.join(tmpdir, "model.inp")
        wntr.network.io.write_inpfile(wn, inp, units="LPS")
        engine = _Engine(wn, inp, tmpdir, dt, ns, label)

        # Probe: a short run of every junction to choose sensors, leak nodes and operational targets.
        tic = time.perf_counter()
        o.time.duration = min(ns + n - 1, max(ns, 86400 // dt)) * dt
        res = wntr.sim.EpanetSimulator(wn).run_sim(file_prefix=os.path.join(tmpdir, "probe"))
        o.time.duration = (ns + n - 1) * dt
        pres = res.node["pressure"]
        pmin = pres[juncs].min()
        flow = res.link["flowrate"].abs().mean()
        pstat = res.link["status"]
        timings["probe_s"] = round(time.perf_counter() - tic, 3)

        rng_s = np.random.default_rng([seed, 1])
        cand = [j for j in juncs if pmin[j] >= _MIN_SENSOR_PRESSURE_M]
        if len(cand) < n_sensors:
            cand = [j for j in juncs if pmin[j] > 0] if sum(pmin > 0) >= n_sensors else juncs
        nodes = _farthest_points(full, cand, n_sensors, rng_s)
        lo, hi = p["noise_sd_m"]
        noise = np.exp(rng_s.uniform(math.log(lo), math.log(hi), n_sensors))
        latlon = _latlon(wn, seed)
        sensor_ids = [f"PT-{i + 1:04d}" for i in range(n_sensors)]
        sensors = pd.DataFrame({
            "sensor_id": sensor_ids,
            "latitude": [latlon[x][0] for x in nodes],
            "longitude": [latlon[x][1] for x in nodes],
            "zone": [f"Z{zone_of[x]}" for x in nodes],
            "type": "pressure",
            "elevation_m": [round(float(wn.get_node(x).elevation), 2) for x in nodes],
            "node": nodes,
            "noise_sd_m": np.round(noise, 4),
        })
        _, paths = nx.multi_source_dijkstra(full, set(nodes), weight="weight")
        sid_of = dict(zip(nodes, sensor_ids))
        nearest = {m: sid_of[path[0]] for m, path in paths.items()}

        # Event schedule (hydraulic events only here; faults are placed later in the gaps).
        rng_e = np.random.default_rng([seed, 2])
        first = int(math.ceil((p["clean_days"] * 86400 + p["warmup_s"]) / dt))
        weeks = max(0, n - first) * dt / 604800.0
        sched = _Schedule(n, first)
        per_h = 3600 / dt
        leak_nodes = [j for j in juncs if pmin[j] >= _MIN_SENSOR_PRESSURE_M and j not in set(nodes)] or \
                     [j for j in juncs if j not in set(nodes)] or juncs
        n_leaks = _stochastic_round(p["leaks_per_week"] * weeks, rng_e)
        n_bursts = int(round(n_leaks * p["burst_fraction"]))
        kinds = ["burst"] * n_bursts + ["leak"] * (n_leaks - n_bursts)
        # scheduled pumps (switched by controls) that ran in the probe
        pump_cand = [q for q in engine.controlled if q in engine.pumps and q in pstat and (pstat[q] > 0).mean() > 0]
        pipe_cand = _closable_pipes(wn, full, flow)
        n_op = _stochastic_round(p["operational_per_week"] * weeks, rng_e)
        op_kinds = []
        for i in range(n_op):
            want = OPERATIONAL_KINDS[i % 2] if pump_cand and pipe_cand else (
                "pump_schedule" if pump_cand else "valve_closure" if pipe_cand else None)
            if want:
                op_kinds.append(want)
        kinds = list(rng_e.permutation(kinds + op_kinds)) if kinds or op_kinds else []
        hyd_events: list[_HydEvent] = []
        vlo, vhi = p["leak_visibility"]
        drawn = []
        for kind in kinds:
            kind = str(kind)
            if kind == "leak":
                ramp = int(rng_e.uniform(2, 12) * per_h)
                length = ramp + int(rng_e.uniform(6, 24) * per_h)
            else:
                hours = {"burst": (2, 8), "pump_schedule": (2, 6), "valve_closure": (2, 8)}[kind]
                ramp, length = 1, int(rng_e.uniform(*hours) * per_h)
            vis = float(math.exp(rng_e.uniform(math.log(vlo), math.log(vhi))))
            alternatives: tuple = ()
            if kind in LEAK_KINDS:
                target = leak_nodes[int(rng_e.integers(len(leak_nodes)))]
            else:
                pool = pump_cand if kind == "pump_schedule" else pipe_cand
                order = [pool[int(i)] for i in rng_e.permutation(len(pool))[:6]]
                target, alternatives = order[0], tuple(order[1:])
            drawn.append(_HydEvent("", kind, str(target), 0, max(1, length) - 1, ramp=ramp,
                                   visibility=vis if kind in LEAK_KINDS else float("nan"), alternatives=alternatives))
        for ev in sorted(drawn, key=lambda e: -e.i1):  # longest first: they need the room
            i0 = sched.place(rng_e, ev.i1 + 1, int(_GUARD_BEFORE_S / dt), int(_GUARD_AFTER_S / dt))
            if i0 is None:
                log.warning("%s: no room for another %s event; skipped", label, ev.kind)
                continue
            ev.i0, ev.i1 = i0, i0 + ev.i1
            hyd_events.append(ev)
        hyd_events.sort(key=lambda e: e.i0)

        # Baseline: the whole horizon without events, with the state at every event start.
        tic = time.perf_counter()
        rec_nodes = nodes + sorted({e.target for e in hyd_events if e.kind in LEAK_KINDS})
        starts = {(ns + e.i0 - k) * dt for e in hyd_events for k in range(_WARM_STEPS + 1)}
        base = engine.run(0, (ns + n - 1) * dt, None, [], rec_nodes, capture=starts, record_changes=True)
        timings["baseline_s"] = round(time.perf_counter() - tic, 3)
        log.info("%s: baseline %.1f days in %.1f s", label, (ns + n) * dt / 86400, timings["baseline_s"])
        empty = (base.tank_level[ns:] <= engine.tank_min + 0.01).mean(axis=0) if engine.tanks else np.zeros(0)
        for tname, frac in zip(engine.tanks, empty):
            if frac > 0.2:
                log.warning("%s: tank %s is empty %.0f%% of the time: the network's own operation does not keep it "
                            "filled, pressures around it are not realistic", label, tname, 100 * frac)

        # Event-alone runs (parallel threads: EPANET 2.2 projects are independent; ctypes drops the GIL).
        tic = time.perf_counter()
        mean_demand = _mean_system_demand(wn, _shifted(p, sim_times), p.get("demand_shift", 0.0))
        q_cap = min(0.25 * mean_demand, 60.0) if mean_demand > 0 else 60.0
        jobs = [(e, base, rec_nodes, noise, q_cap, 0.01 * mean_demand, n, p["label_noise_factor"])
                for e in hyd_events]
        with ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1)) as pool:
            alone = list(pool.map(lambda j: _event_alone(engine, *j), jobs))
        timings["events_s"] = round(time.perf_counter() - tic, 3)
        if hyd_events:
            log.info("%s: %d event-alone runs (%d steps) in %.1f s", label, sum(a["runs"] for a in alone),
                     sum(a["steps"] for a in alone), timings["events_s"])

        # Readings = baseline + each event's own effect (events never overlap); after the end the
        # effect fades to zero over the settle time (the pumps make up the tanks' deficit).
        P = base.pressure[ns:, :n_sensors].copy()
        tail = _SETTLE_S // dt
        for a in alone:
            ev, d = a["event"], a["delta"]
            m = ev.i1 - ev.i0 + 1
            fade = np.ones(d.shape[0])
            fade[m:] = 1.0 - np.arange(1, d.shape[0] - m + 1) / (tail + 1)
            a["delta"] = d * fade[:, None]
            P[ev.i0:ev.i0 + d.shape[0]] += a["delta"]
        timings["hydraulics_s"] = round(sum(v for k, v in timings.items() if k.endswith("_s")), 3)
        timings["hydraulics_cpu_s"] = round(time.process_time() - cpu, 3)
        log.info("%s: hydraulics %.1f s in all", label, timings["hydraulics_s"])
        warnings = engine.warnings

    sensors["mean_pressure_m"] = np.round(np.nanmean(base.pressure[ns:, :n_sensors], axis=0), 2)
    times = pd.date_range(t0, periods=n, freq=pd.Timedelta(seconds=dt))
    k_out = _shifted(p, times) or n  # spike sizes from the pressures before a demand shift
    info = dict(network=label, network_file=str(path), seed=seed, start=t0, end=times[-1], days=p["days"],
                interval_s=dt, clean_days=p["clean_days"],
                events_from=t0 + pd.Timedelta(seconds=p["clean_days"] * 86400),
                junctions=len(juncs), tanks=wn.num_tanks, pumps=wn.num_pumps, valves=wn.num_valves,
                zones=k_zones, demand_groups=n_groups, clock_controls=prep.converted,
                tank_controls_moved=prep.fixed_tank_controls, demand_model="PDD",
                required_pressure_m=p["required_pressure_m"], mean_demand_lps=round(mean_demand, 2),
                leak_cap_lps=round(q_cap, 2), wntr_version=wntr.__version__, engine="EPANET 2.2 toolkit",
                epanet_warnings=int(warnings), tank_empty_max_frac=round(float(empty.max()) if empty.size else 0.0, 3),
                timings=timings)
    link_node = {e.target: wn.get_link(e.target).start_node_name for e in hyd_events if e.kind in OPERATIONAL_KINDS}
    return dict(times=times, sensors=sensors, pressure=P, nearest=nearest, zone_of=zone_of, link_node=link_node,
                # plain dicts and arrays only: the cache must not depend on this module's classes
                alone=[dict(a, event=dataclasses.asdict(a["event"])) for a in alone], dt=dt, n=n, seed=seed, info=info,
                sensor_mean=np.nanmean(base.pressure[ns:ns + k_out, :n_sensors], axis=0))


def _settle_tanks(label: str, path: Path, sim_start: pd.Timestamp, p: dict, tmpdir: str) -> dict[str, float]:
    """Tank levels after ``settle_days`` of hourly-step operation ending at ``sim_start``.

    A network's INP initial levels are rarely on its operating cycle: some tanks take weeks to
    fill or drain to where the controls hold them, which would show as a regime change in the
    middle of the output. An hourly pre-run (its own demand noise) is cheap and removes that.
    """
    q = dict(p, interval_s=3600, days=p["settle_days"] + 1 / 24, spinup_s=0)
    prep = _prepare(label, path, sim_start - pd.Timedelta(days=p["settle_days"]), q)
    res = wntr.sim.EpanetSimulator(prep.wn).run_sim(file_prefix=os.path.join(tmpdir, "settle"))
    tanks = prep.wn.tank_name_list
    return {t: float(v) for t, v in res.node["pressure"][tanks].iloc[-1].items()}


def _mean_system_demand(wn, k_shift: int, shift: float = 0.0) -> float:
    """Mean total junction demand in L/s over the horizon (from the patterns, full service)
    without a demand shift from step ``k_shift`` on: leaks are sized as in the unshifted run."""
    total = 0.0
    for j in wn.junction_name_list:
        for ts in wn.get_node(j).demand_timeseries_list:
            pat = wn.get_pattern(ts.pattern_name) if ts.pattern_name in wn.pattern_name_list else None
            m = np.asarray(pat.multipliers, float) if pat is not None else np.ones(1)
            if k_shift < m.size:
                m = np.concatenate([m[:k_shift], m[k_shift:] / (1.0 + shift)])
            mult = float(np.mean(m))
            total += ts.base_value * mult
    return total * 1000.0 * float(wn.options.hydraulic.demand_multiplier)


def _closable_pipes(wn, full: nx.Graph, flow: pd.Series) -> list[str]:
    """Pipes an operator might isolate: not a bridge, large, busy, uncontrolled, away from sources."""
    bridges = {full[u][v]["link"] for u, v in nx.bridges(full)}
    controlled = set()
    for name in wn.control_name_list:
        for a in wn.get_control(name).actions():
            controlled.add(a.target()[0].name)
    sources = set(wn.tank_name_list) | set(wn.reservoir_name_list)
    rows = []
    for name in wn.pipe_name_list:
        pipe = wn.get_link(name)
        if (name in bridges or name in controlled or pipe.check_valve or str(pipe.initial_status) != "Open"
                or pipe.start_node_name in sources or pipe.end_node_name in sources):
            continue
        rows.append((name, pipe.diameter, float(flow.get(name, 0.0))))
    if not rows:
        return []
    d_med = np.median([r[1] for r in rows])
    big = [r for r in rows if r[1] >= d_med] or rows
    q75 = np.quantile([r[2] for r in big], 0.5)
    return sorted(r[0] for r in big if r[2] >= q75 and r[2] > 0)


def _event_alone(engine: _Engine, ev: _HydEvent, base: _Run, rec_nodes: list[str], noise: np.ndarray,
                 q_cap: float, q_start: float, n: int, factor: float) -> dict:
    """Run one hydraulic event alone from the baseline state (replaying the baseline's operations);
    calibrate a leak's size first, and keep an operational event from cutting off supply."""
    dt, ns = engine.dt, engine.ns
    S = noise.size
    tb = (ns + ev.i0) * dt
    state = base.states[tb]
    runs = steps = 0

    def once(e: _HydEvent, replay: list):
        nonlocal runs, steps
        i_end = min(n - 1, e.i1 + _SETTLE_S // dt)
        r = engine.run(tb, (ns + i_end) * dt, base, [e], rec_nodes, replay=replay)
        runs += 1
        steps += r.pressure.shape[0]
        k0 = ns + e.i0
        delta = r.pressure[:, :S] - base.pressure[k0:k0 + r.pressure.shape[0], :S]
        return r, delta

    if ev.kind in LEAK_KINDS:
        j = rec_nodes.index(ev.target)
        m = ev.i1 - ev.i0 + 1
        p_node = float(np.nanmean(np.clip(base.pressure[ns + ev.i0:ns + ev.i1 + 1, j], 0.1, None)))
        c_cap = q_cap / math.sqrt(p_node)
        target = ev.visibility
        c = min(c_cap, max(q_start, 0.01) / math.sqrt(p_node))  # start at 1 % of the mean demand
        hist, best, lo, hi = [], None, None, None
        for _ in range(8):
            ev.coef = c
            r, delta = once(ev, base.changes)
            v = float(np.nanmax(np.abs(delta[:m]) / noise))
            hist.append((c, v))
            err = abs(math.log(max(v, 1e-9) / target))
            if best is None or err < best[0]:
                best = (err, c, r, delta)
            if err < math.log(1.15) or (c >= c_cap and v < target):
                break
            if v < target:
                lo = (c, v) if lo is None or c > lo[0] else lo
            else:
                hi = (c, v) if hi is None or c < hi[0] else hi
            if lo is not None and hi is not None:  # bracketed: secant in log-log, else bisect
                c_new = math.sqrt(lo[0] * hi[0])
                if lo[1] > 1e-9:
                    f = math.log(target / lo[1]) / math.log(hi[1] / lo[1])
                    if 0.05 < f < 0.95:
                        c_new = lo[0] * (hi[0] / lo[0]) ** f
                if hi[0] / lo[0] < 1.01:
                    break
            elif v <= 1e-6:
                c_new = c * 30
            else:
                c_new = c * target / v
            c = min(c_new, c_cap)
        _, ev.coef, r, delta = best
        full_from = min(m - 1, ev.ramp - 1)
        q = ev.coef * np.sqrt(np.clip(r.pressure[full_from:m, j], 0.0, None))
        size = float(np.mean(q))
        detail = (f"{'burst' if ev.kind == 'burst' else 'incipient leak'} at junction {ev.target}: "
                  f"{size:.2f} L/s at full size (emitter C={ev.coef:.4g} L/s/m^0.5)"
                  + (f", growing over {ev.ramp * dt / 3600:.1f} h" if ev.kind == "leak" else ""))
        return dict(event=ev, delta=delta, size=size, unit="L/s", detail=detail, runs=runs, steps=steps,
                    calibration=hist, severe=False)

    def severity(r, delta, e) -> float:
        """0 when supply holds; otherwise how badly it fails (tank dry, sensors below 5 m, > 25 m drop)."""
        m = e.i1 - e.i0 + 1
        k0 = ns + e.i0
        lvl = base.tank_level[k0:k0 + m]
        dry = ((r.tank_level[:m] <= engine.tank_min + 0.01) & (lvl > engine.tank_min + 0.01)).any()
        bp = base.pressure[k0:k0 + m, :S]
        cut = ((r.pressure[:m, :S] < 5.0) & (bp >= 10.0)).any()
        drop = float(np.nanmax(np.abs(delta[:m])))
        return (100.0 if dry else 0.0) + (100.0 if cut else 0.0) + max(0.0, drop - 25.0)

    def pump_replay(e):
        """The baseline's switching with the target pump left to the event, then back to the baseline."""
        t_in, t_out = (ns + e.i0) * dt, (ns + e.i1 + 1) * dt
        li = engine.tracked.index(e.target)
        st, se = state["links"][li]
        for t, name, s_, e_ in base.changes:
            if name == e.target and t <= t_out:
                st, se = s_, e_
        kept = [c for c in base.changes if not (c[1] == e.target and t_in < c[0] <= t_out)]
        return kept + [(t_out, e.target, st, se)]

    tried = []
    length = ev.i1 - ev.i0 + 1
    if ev.kind == "pump_schedule":
        plan = []
        for target in (ev.target,) + tuple(ev.alternatives):
            on = 1 if state["links"][engine.tracked.index(target)][0] else 0
            plan += [(target, 1 - on, max(1, int(length * f))) for f in (1.0, 0.5, 0.25)]
    else:
        plan = [(target, 0, length) for target in (ev.target,) + tuple(ev.alternatives)]
    for target, status, L in plan:
        ev.target, ev.status, ev.i1 = target, status, ev.i0 + L - 1
        replay = pump_replay(ev) if ev.kind == "pump_schedule" else base.changes
        r, delta = once(ev, replay)
        sev = severity(r, delta, ev)
        # an operational event nobody can see is no test: prefer one visible at some sensor
        invisible = float(np.nanmax(np.abs(delta[:L]) / noise)) <= factor
        tried.append((sev, invisible, target, status, L, r, delta))
        if sev == 0 and not invisible:
            break
    sev, _, ev.target, ev.status, L, r, delta = min(tried, key=lambda x: (x[0] > 0, x[1], x[0]))
    ev.i1 = ev.i0 + L - 1
    hours = L * dt / 3600
    if ev.kind == "pump_schedule":
        size, unit = float(ev.status), "status"
        detail = f"pump {ev.target} forced {'on' if ev.status else 'off'} for {hours:.1f} h, controls suspended"
    else:
        size, unit = hours, "h"
        detail = f"pipe {ev.target} closed (isolation valve) for {hours:.1f} h"
    if sev > 0:
        detail += "; supply not fully kept (tank dry, low pressure or > 25 m drop)"
    return dict(event=ev, delta=delta, size=size, unit=unit, detail=detail, runs=runs, steps=steps,
                calibration=[], severe=sev > 0)


# --------------------------------------------------------------------------------------------
# Post-processing: noise, faults, labels, frames


@dataclass(frozen=True)
class _Frames:
    readings: pd.DataFrame
    episodes: pd.DataFrame
    sensors: pd.DataFrame
    events: pd.DataFrame
    impacts: pd.DataFrame


def _assemble(hyd: dict, p: dict, faults_per_week: float, resolution_m: float) -> _Frames:
    times, sensors, dt, n, seed = hyd["times"], hyd["sensors"].copy(), hyd["dt"], hyd["n"], hyd["seed"]
    ids = sensors["sensor_id"].tolist()
    S = len(ids)
    noise = sensors["noise_sd_m"].to_numpy(float)
    factor = p["label_noise_factor"]
    true = hyd["pressure"]
    zone_of, nearest, link_node = hyd["zone_of"], hyd["nearest"], hyd["link_node"]
    obs = true + np.random.default_rng([seed, 3]).normal(0.0, 1.0, true.shape) * noise
    kind = np.full((n, S), "", dtype=object)
    present = np.ones((n, S), dtype=bool)
    events, impacts, episodes = [], [], []   # rows keyed by a provisional id, renumbered by start below

    # hydraulic events: labels from the event-alone impact
    sched = _Schedule(n, int(math.ceil((p["clean_days"] * 86400 + p["warmup_s"]) / dt)))
    for a in hyd["alone"]:
        ev, delta = _HydEvent(**a["event"]), a["delta"]
        key = len(events)
        sched.busy[max(0, ev.i0 - _GUARD_BEFORE_S // dt):min(n, ev.i1 + 1 + _GUARD_AFTER_S // dt)] = True
        m = ev.i1 - ev.i0 + 1
        ratio = np.abs(delta) / noise
        maxabs = np.nanmax(np.abs(delta[:m]), axis=0)
        meani = np.nanmean(delta[:m], axis=0)
        affected = np.nanmax(ratio[:m], axis=0) > factor
        first = []
        for s in range(S):
            f = pd.NaT
            if affected[s]:
                k = int(np.argmax(ratio[:m, s] > factor))
                f = times[ev.i0 + k]
                kind[ev.i0 + k:ev.i1 + 1, s] = ev.kind
                episodes.append((ids[s], ev.kind, f, times[ev.i1], key))
            first.append(f)
            impacts.append((key, ids[s], maxabs[s], meani[s], noise[s], maxabs[s] / noise[s], bool(affected[s]), f))
        tail = ratio[m:]
        late = np.nonzero(np.nanmax(tail, axis=1) > factor)[0] if tail.shape[0] else np.zeros(0, int)
        settle = ev.i1 + (int(late.max()) + 1 if late.size else 0)
        top = int(np.nanargmax(maxabs / noise))
        node = ev.target if ev.kind in LEAK_KINDS else link_node[ev.target]
        seen = [f for f in first if f is not pd.NaT]
        events.append(dict(
            key=key, kind=ev.kind, target=ev.target, target_type="node" if ev.kind in LEAK_KINDS else "link",
            zone=f"Z{zone_of[node]}", start=times[ev.i0], end=times[ev.i1],
            growth_h=round(ev.ramp * dt / 3600, 2) if ev.kind == "leak" else 0.0,
            size=round(a["size"], 4), size_unit=a["unit"], target_visibility=round(ev.visibility, 2),
            max_impact_m=round(float(maxabs[top]), 4), max_impact_noise=round(float(maxabs[top] / noise[top]), 2),
            top_sensor=ids[top], nearest_sensor=nearest.get(node, ""), n_affected=int(affected.sum()),
            affected_sensors=",".join(i for i, f in zip(ids, affected) if f),
            detectable_from=min(seen) if seen else pd.NaT, settle_end=times[min(n - 1, settle)],
            detail=a["detail"]))

    # sensor faults in the gaps between hydraulic events (own random stream)
    rng = np.random.default_rng([seed, 4])
    weeks = max(0, n - sched.first) * dt / 604800.0
    n_faults = _stochastic_round(faults_per_week * weeks, rng)
    kinds = [str(k) for k in rng.permutation([FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(n_faults)])]
    per_h = 3600 / dt
    guard = int(_FAULT_GUARD_S / dt)
    mean_p = hyd["sensor_mean"]
    lengths = {"stuck": (2, 12), "drift": (12, 30), "dropout": (1, 12), "noise_burst": (1, 2)}
    drawn = []
    for fk in kinds:
        s = int(rng.integers(S))
        length = int(rng.integers(1, 3)) if fk == "spike" else max(1, int(rng.uniform(*lengths[fk]) * per_h))
        drawn.append((fk, s, length, float(rng.choice([-1.0, 1.0])), float(rng.random())))
    faults = []
    for fk, s, length, sign, u in sorted(drawn, key=lambda d: -d[2]):  # longest first: they need the room
        i0 = sched.place(rng, length, guard, guard)
        if i0 is None or i0 == 0:
            log.warning("no room for another %s fault; skipped", fk)
            continue
        i1 = i0 + length - 1
        sl = slice(i0, i1 + 1)
        size = unit = detail = None
        if fk == "spike":
            size = sign * max(2.0, (0.2 + 0.4 * u) * abs(mean_p[s]))
            unit, detail = "m", f"{length} reading(s) off by {size:+.1f} m"
        elif fk == "drift":
            size = sign * (1.0 + 3.0 * u)
            unit, detail = "m", f"calibration drift to {size:+.2f} m over {length / per_h:.1f} h, then reset"
        elif fk == "noise_burst":
            size = 5.0 + 5.0 * u
            unit, detail = "x noise", f"noise sd x{size:.1f} for {length / per_h:.1f} h"
        faults.append([fk, s, i0, i1, size, unit, detail, sl])
    digits = max(0, -int(math.floor(math.log10(resolution_m)))) if resolution_m > 0 else 6
    quant = (lambda x: np.clip(np.round(np.round(x / resolution_m) * resolution_m, digits), 0.0, None)) \
        if resolution_m > 0 else (lambda x: np.clip(x, 0.0, None))
    clean = quant(obs)
    for fk, s, i0, i1, size, _unit, _detail, sl in faults:
        if fk == "spike":
            obs[sl, s] += size
        elif fk == "drift":
            obs[sl, s] += size * np.arange(1, i1 - i0 + 2) / (i1 - i0 + 1)
        elif fk == "noise_burst":
            obs[sl, s] += rng.normal(0.0, noise[s] * math.sqrt(size ** 2 - 1), i1 - i0 + 1)
    obs = quant(obs)
    for f in faults:
        fk, s, i0, i1, sl = f[0], f[1], f[2], f[3], f[7]
        if fk == "stuck":
            obs[sl, s] = obs[i0 - 1, s]
            f[4:7] = [float(obs[i0 - 1, s]), "m", f"stuck at {obs[i0 - 1, s]:.2f} m for {(i1 - i0 + 1) / per_h:.1f} h"]
        elif fk == "dropout":
            present[sl, s] = False
            f[4:7] = [(i1 - i0 + 1) / per_h, "h", f"no readings for {(i1 - i0 + 1) / per_h:.1f} h"]
    for fk, s, i0, i1, size, unit, detail, sl in faults:
        key = len(events)
        kind[sl, s] = fk
        if fk == "dropout":
            mx = mn = float("nan")
        else:
            diff = obs[sl, s] - clean[sl, s]
            mx, mn = float(np.max(np.abs(diff))), float(np.mean(diff))
        episodes.append((ids[s], fk, times[i0], times[i1], key))
        impacts.append((key, ids[s], mx, mn, noise[s], mx / noise[s], True, times[i0]))
        events.append(dict(
            key=key, kind=fk, target=ids[s], target_type="sensor", zone=sensors["zone"].iloc[s],
            start=times[i0], end=times[i1], growth_h=0.0, size=round(float(size), 4), size_unit=unit,
            target_visibility=float("nan"), max_impact_m=round(mx, 4), max_impact_noise=round(mx / noise[s], 2),
            top_sensor=ids[s], nearest_sensor=ids[s], n_affected=1, affected_sensors=ids[s],
            detectable_from=times[i0], settle_end=times[i1], detail=detail))

    # event ids in order of start
    ev = pd.DataFrame(events, columns=["key"] + _EVENT_COLUMNS[1:])
    ev = ev.sort_values(["start", "key"], kind="stable").reset_index(drop=True)
    eid = {k: f"E{i + 1:03d}" for i, k in enumerate(ev["key"])}
    ev.insert(0, "event_id", ev.pop("key").map(eid))
    ep = pd.DataFrame(episodes, columns=["sensor_id", "anomaly_type", "start", "end", "event_id"])
    ep["event_id"] = ep["event_id"].map(eid)
    ep = ep.sort_values(["start", "sensor_id"], kind="stable").reset_index(drop=True)
    imp = pd.DataFrame(impacts, columns=["event_id", "sensor_id", "max_abs_impact_m", "mean_impact_m",
                                         "noise_sd_m", "impact_noise", "affected", "first_exceed"])
    imp["event_id"] = imp["event_id"].map(eid)
    imp = imp.sort_values(["event_id", "sensor_id"], kind="stable").reset_index(drop=True)
    for col in ("max_abs_impact_m", "mean_impact_m", "impact_noise"):
        imp[col] = imp[col].astype(float).round(4)
    for frame, cols in ((ev, ("start", "end", "detectable_from", "settle_end")), (ep, ("start", "end")),
                        (imp, ("first_exceed",))):
        for c in cols:
            frame[c] = pd.to_datetime(frame[c], utc=True)

    mask = present.ravel()
    stamps = np.repeat(times.tz_convert(None).to_numpy(), S)[mask]
    labels = kind.ravel()[mask]
    readings = pd.DataFrame({
        "sensor_id": np.tile(np.array(ids, dtype=object), n)[mask],
        "timestamp": pd.DatetimeIndex(stamps).tz_localize("UTC"),
        "pressure": obs.ravel()[mask],
        "is_anomaly": (labels != "").astype(np.int8),
        "anomaly_type": labels,
    })
    return _Frames(readings, ep, sensors, ev, imp)


_EVENT_COLUMNS = ["event_id", "kind", "target", "target_type", "zone", "start", "end", "growth_h", "size",
                  "size_unit", "target_visibility", "max_impact_m", "max_impact_noise", "top_sensor",
                  "nearest_sensor", "n_affected", "affected_sensors", "detectable_from", "settle_end", "detail"]
