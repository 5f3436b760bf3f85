"""What kind of incident: leak, burst, sensor fault, operational change, or unknown.

Rules on an incident's aggregates (``tracker.Incident``: per sensor its deviations, onset shape
and flatness) and on its neighbours (how many sensors of the zone moved, when, in which
direction). :func:`evidence` gathers the numbers, :func:`classify_evidence` applies the rules in
this order and returns the kind with a short reason:

1. **Flat line** (a stuck sensor, or a dropout to a constant): the leading sensor repeated its
   value for ``FLAT_MIN_STEPS`` readings -> sensor_fault.
2. **Several sensors at once** (sensors holding at least ``NETWORK_MIN_SHARE`` of the
   incident's severity count; at least ``OPERATIONAL_MIN_SENSORS``, first alarms within
   ``OPERATIONAL_ONSET_S``): a step that rises somewhere, or moves most of the zone alike
   (``OPERATIONAL_ZONE_FRACTION`` of it, deviations within ``UNIFORM_RATIO`` of each other),
   is a pump or valve change -> operational. Otherwise a shared drop is a burst when sudden and
   a leak when gradual; a shared rise of two sensors is operational.
   Spikes on every sensor (each gone after at most ``SPIKE_MAX_SUSTAINED`` readings) are
   sensor faults however many sensors show them: unrelated spikes that happen to coincide.
   Two sensors moving in opposite directions are the leading sensor's shape (rules 3.): the
   zone model predicts each sensor from the others, so a drop at one drags its neighbour's
   prediction down and the neighbour reads above it, a mirror residual.
3. **One sensor** (its neighbours did not move with it):
   - a sudden move (onset step ``SUDDEN_JUMP_RATIO`` times the usual change) gone again after
     at most ``SPIKE_MAX_SUSTAINED`` readings -> sensor_fault (spike); with fewer than
     ``SPIKE_MIN_READINGS`` alarms only once the incident is closed (a burst stays for hours);
   - noisy readings (``NOISE_ROUGHNESS`` times the usual change, up and down: at least
     ``NOISE_MIXED_FRACTION`` of them on each side, where a leak or burst only pulls one way)
     -> sensor_fault;
   - a sudden rise -> sensor_fault; a sudden drop that stays -> burst;
   - a gradual rise -> sensor_fault (drift: pressure does not rise at one sensor alone);
   - a gradual drop is a leak when, within ``ONSET_HORIZON_S`` of its first alarm, the reading
     fell ``LEAK_MIN_DEV_FRACTION`` below its expected value: the model cannot follow a leak's
     fall, while it follows a slow calibration drift, whose deviation stays a few percent ->
     sensor_fault (drift). Until that hour has passed (and the incident is still open) the
     kind stays unknown rather than guessing.

The constants were tuned on the synthetic benchmark's seed 7 only; benchmarks/incidents_synthetic.py
reports held-out seeds apart. The closed-spike, noise-share and mirror rules were chosen on the
network benchmark's tuning seeds (benchmarks/quality.py --scenarios network --seeds tuning).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

KINDS = ("leak", "burst", "sensor_fault", "operational", "unknown")

FLAT_MIN_STEPS = 6               # readings unchanged in a row: a stuck sensor (30 min at 5 min)
SUDDEN_JUMP_RATIO = 10.0         # onset step / usual step change: a burst or spike, not a leak
SPIKE_MAX_SUSTAINED = 2          # readings at >= 30 % of the peak deviation: a spike has 1-2
SPIKE_MIN_READINGS = 3           # fewer alarms than this cannot tell a spike from a burst yet
NOISE_ROUGHNESS = 4.0            # newest steps' change over the usual: a noise burst ...
NOISE_MIXED_FRACTION = 0.2       # ... with at least this share of its readings on each side
#                                  (a leak or burst only pulls one way: its share is 0)
ONSET_HORIZON_S = 3600.0         # how long after its first alarm a gradual drop is judged
LEAK_MIN_DEV_FRACTION = 0.06     # a leak falls this far below the expected value in that hour
OPERATIONAL_MIN_SENSORS = 3      # sensors moving together before it can be a pump/valve change
OPERATIONAL_ONSET_S = 900.0      # ... whose first alarms lie within this time
OPERATIONAL_ZONE_FRACTION = 0.8  # ... covering this share of their zone ...
UNIFORM_RATIO = 0.6              # ... with deviations this alike (smallest / largest |deviation|)
NETWORK_MIN_SHARE = 0.1          # a sensor below this share of the incident does not count as moved


@dataclass(frozen=True)
class Evidence:
    """The numbers the rules read (leading sensor = the one with the largest share)."""

    n_sensors: int
    zone_size: int | None
    onset_spread_s: float       # between the first and the last sensor's first alarm
    drop_sensors: int
    rise_sensors: int
    uniformity: float           # smallest / largest |peak deviation| over the sensors
    readings: int               # the leading sensor's alarms
    direction: int              # -1 drop, +1 rise, 0 unknown: the leading sensor's deviations in
    #                             its onset horizon (after an event ends the reading often swings
    #                             the other way while the model catches up: not its direction)
    onset_jump_ratio: float
    sustained: int
    flat_steps: int
    roughness: float
    mixed_fraction: float       # the smaller of its drop and rise reading shares (onset horizon)
    onset_dev_fraction: float   # largest |deviation| / |expected| within ONSET_HORIZON_S
    watched_s: float            # the leading sensor's onset to its last alarm
    final: bool                 # the incident is closed: no more readings will come
    has_deviation: bool
    all_spikes: bool = False    # every counted sensor jumped and was back within SPIKE_MAX_SUSTAINED readings


def evidence(inc, zone_size: int | None = None) -> Evidence:
    """The rules' inputs from an incident (duck-typed: ``sensors`` {id: track}, ``ranked()``,
    ``closed_at``)."""
    ranked = inc.ranked()
    lead = ranked[0][1]
    # Sensors with a tiny share (a blip that joined) do not make it a network incident.
    tracks = [t for _, t, share in ranked if share >= NETWORK_MIN_SHARE] or [lead]
    firsts = [t.first_seen for t in tracks]
    peaks = [abs(t.dev_peak) for t in tracks]
    signs = [_onset_direction(t) for t in tracks]
    drops, rises = lead.onset_drops, lead.onset_rises
    total = max(drops + rises, 1)
    final = getattr(inc, "closed_at", None) is not None
    return Evidence(
        n_sensors=len(tracks), zone_size=zone_size,
        onset_spread_s=(max(firsts) - min(firsts)) / 1e9,
        drop_sensors=sum(1 for d in signs if d < 0), rise_sensors=sum(1 for d in signs if d > 0),
        uniformity=(min(peaks) / max(peaks)) if max(peaks) > 0 else 0.0,
        readings=lead.readings,
        direction=_onset_direction(lead),
        onset_jump_ratio=lead.onset_jump_ratio, sustained=lead.sustained,
        flat_steps=lead.max_flat_steps, roughness=lead.max_roughness,
        mixed_fraction=min(drops, rises) / total,
        onset_dev_fraction=lead.onset_dev_fraction,
        watched_s=(lead.last_seen - getattr(lead, "onset_at", lead.first_seen)) / 1e9,
        final=final,
        has_deviation=lead.observed_peak is not None or lead.dev_peak != 0,
        all_spikes=all(_spike(t, final) for t in tracks))


def _spike(track, final: bool = False) -> bool:
    """A sudden move that was gone again after at most SPIKE_MAX_SUSTAINED readings (fewer than
    SPIKE_MIN_READINGS alarms only tell once the incident is closed: no more can come)."""
    return (track.onset_jump_ratio >= SUDDEN_JUMP_RATIO and track.sustained <= SPIKE_MAX_SUSTAINED
            and (track.readings >= SPIKE_MIN_READINGS or final))


def _onset_direction(track) -> int:
    """-1 / +1 / 0: the sign of a track's deviations in its onset horizon (its peak's if none)."""
    d = track.onset_dev_sum if (track.onset_drops or track.onset_rises) else track.dev_peak
    return -1 if d < 0 else (1 if d > 0 else 0)


def classify(inc, zone_size: int | None = None) -> tuple[str, str]:
    """``(kind, reason)`` for an incident; see the module docstring for the rules."""
    return classify_evidence(evidence(inc, zone_size))


def classify_evidence(e: Evidence) -> tuple[str, str]:
    """The rules on gathered :class:`Evidence` (hand-made cases test them one by one)."""
    if e.flat_steps >= FLAT_MIN_STEPS:
        return "sensor_fault", f"flat line, {e.flat_steps} readings unchanged"
    if not e.has_deviation:
        return "unknown", "no expected values to compare the readings with"
    sudden = e.onset_jump_ratio >= SUDDEN_JUMP_RATIO
    jump = f"{e.onset_jump_ratio:.0f}x the usual step"
    if e.n_sensors >= 2:
        if e.all_spikes:  # a burst does not vanish after a reading or two on every sensor
            return "sensor_fault", f"spikes on {e.n_sensors} sensors, each gone after at most {SPIKE_MAX_SUSTAINED} readings"
        return _network(e, sudden, jump)
    if sudden and e.sustained <= SPIKE_MAX_SUSTAINED and (e.readings >= SPIKE_MIN_READINGS or e.final):
        # closed after one or two readings: a spike however few it had (a burst stays for hours)
        way = "rise" if e.direction > 0 else "drop"
        return "sensor_fault", f"spike: a sudden {way} ({jump}) gone after {e.sustained} reading(s)"
    if e.roughness >= NOISE_ROUGHNESS and e.mixed_fraction >= NOISE_MIXED_FRACTION:
        return "sensor_fault", f"noisy readings ({e.roughness:.0f}x the usual change), up and down"
    if sudden:
        if e.direction > 0:
            return "sensor_fault", f"sudden rise ({jump}) on one sensor, its neighbours unmoved"
        return "burst", f"sudden drop ({jump}) that stays"
    if e.direction > 0:
        return "sensor_fault", "gradual rise on one sensor, its neighbours unmoved (drift)"
    if e.direction < 0:
        pct = f"{100 * e.onset_dev_fraction:.0f} %"
        if e.onset_dev_fraction >= LEAK_MIN_DEV_FRACTION:
            return "leak", f"gradual drop, {pct} below the expected pressure within the first hour"
        if e.watched_s < ONSET_HORIZON_S and not e.final:
            return "unknown", (f"gradual drop of {pct} so far on one sensor: an hour of readings "
                               f"tells a leak from a drifting sensor")
        return "sensor_fault", (f"slow drift on one sensor, at most {pct} off in its first hour "
                                f"and its neighbours unmoved")
    return "unknown", "no clear shape"


def _network(e: Evidence, sudden: bool, jump: str) -> tuple[str, str]:
    """Rules for incidents with several sensors."""
    if e.n_sensors >= OPERATIONAL_MIN_SENSORS and e.onset_spread_s <= OPERATIONAL_ONSET_S:
        if e.drop_sensors and e.rise_sensors:
            return "operational", f"{e.n_sensors} sensors moved at once, {e.rise_sensors} up and {e.drop_sensors} down"
        if e.rise_sensors and not e.drop_sensors:
            return "operational", f"{e.n_sensors} sensors rose at once"
        if (e.zone_size and e.n_sensors >= OPERATIONAL_ZONE_FRACTION * e.zone_size
                and e.uniformity >= UNIFORM_RATIO):
            return "operational", (f"{e.n_sensors} of the zone's {e.zone_size} sensors dropped alike at once "
                                   f"(a pump or valve, not a local loss)")
    if e.drop_sensors and not e.rise_sensors:
        if sudden:
            return "burst", f"sudden drop ({jump}) seen by {e.n_sensors} sensors"
        return "leak", f"gradual drop seen by {e.n_sensors} sensors"
    if e.rise_sensors and not e.drop_sensors:
        return "operational", f"{e.n_sensors} sensors rose together"
    if e.n_sensors == 2 and e.drop_sensors and e.rise_sensors:
        # The zone model predicts each sensor from the others: a drop at one sensor drags its
        # neighbour's prediction down, so the neighbour reads above it (a mirror residual, the
        # other way). Two sensors in opposite directions are the leading sensor's shape.
        kind, reason = classify_evidence(replace(e, n_sensors=1, all_spikes=False))
        return kind, f"leading sensor: {reason}; the other sensor moved the other way (mirror of the zone model)"
    return "unknown", f"{e.n_sensors} sensors moved in different directions"
