"""Zone alignment: readings of a zone's sensors gathered per time step into windows of vectors.

A network-aware model judges each sensor against the others of its zone at the same time, so it
scores a *zone window*: the zone's member readings at the newest ``length`` time steps (slots),
one vector per slot. :func:`align` builds those windows from readings in arrival order,
continuing from the zone's carried :class:`AlignState`; the batch path (``batch.score_table``,
training) calls it once with ``flush=True``, the stream's window state once per micro-batch.
Same function, so streamed windows equal batch windows.

Rules (``interval_ns`` = the sampling interval, ``wait_slots`` = the bounded wait):

* a reading belongs to slot ``round(t / interval)`` (jitter around the grid is fine); its zone is
  the one its sensor is a member of in the :class:`ZoneLayout`; a sensor outside the layout is
  ``unknown_sensor``;
* a zone emits its slots strictly in slot order. The oldest pending slot is emitted when every
  member reported, or once the zone has seen a reading ``wait_slots`` slots later (a late sensor
  holds its zone back by at most that); ``flush=True`` emits every pending slot (end of a batch run);
* at an emitted slot a member that did not report is filled with its last value when that is at
  most ``max_gap_ns`` old, else with its training mean (``ZoneLayout.means``); either way it is
  *not real* there (the ``real`` mask): it is not scored at that slot;
* a reading for a slot the zone already emitted is ``late``, unless the same sensor already
  reported that slot (``duplicate``); a second reading of a sensor for a pending slot is a
  ``duplicate`` too;
* the window of an emitted slot is the zone's previous ``length - 1`` emitted slot vectors plus
  this one, when they follow each other without a gap longer than ``max_gap_ns``; before that the
  slot only warms the window up (``warmup``), as ``windows.assemble`` does for one sensor.

Within one call readings are processed in (event time, sensor id) order, so the result does not
depend on the order rows arrive in a batch; calls on consecutive batches, the state carried, give
what one call over all of them gives. The state holds at most the pending slots within the wait,
the newest ``length - 1`` slot vectors and the last value and time per member (JSON-serialisable:
:meth:`AlignState.to_dict`). Pure Python and numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NO_TIME = np.iinfo(np.int64).min
NO_SLOT = np.iinfo(np.int64).min

# Per-reading status codes returned by align().
ALIGNED, WARMUP, PENDING, LATE, DUPLICATE, UNKNOWN = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {ALIGNED: "aligned", WARMUP: "warmup", PENDING: "pending", LATE: "late",
                DUPLICATE: "duplicate", UNKNOWN: "unknown_sensor"}


@dataclass
class ZoneLayout:
    """Zones of a network bundle: zone -> ordered member sensor ids (the model's channels).

    ``means``: each member's training mean (fills a member missing longer than the max gap);
    a member without one is filled with NaN.
    """

    zones: dict[str, list[str]]
    means: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.zones = {str(z): [str(m) for m in members] for z, members in self.zones.items()}
        self.zone_of: dict[str, tuple[str, int]] = {}
        for z, members in self.zones.items():
            if not members:
                raise ValueError(f"zone {z} has no member sensors: drop it from the layout")
            for i, m in enumerate(members):
                if m in self.zone_of:
                    raise ValueError(f"sensor {m} is a member of zones {self.zone_of[m][0]} and {z}: "
                                     f"a sensor belongs to one zone")
                self.zone_of[m] = (z, i)

    def fill_values(self, zone: str) -> np.ndarray:
        return np.array([float(self.means.get(m, np.nan)) for m in self.zones[zone]], dtype=np.float64)

    def to_dict(self) -> dict:
        return {"zones": self.zones, "means": {k: float(v) for k, v in sorted(self.means.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "ZoneLayout":
        return cls({z: list(m) for z, m in d["zones"].items()}, {k: float(v) for k, v in d.get("means", {}).items()})


@dataclass
class AlignState:
    """One zone's carried state (bounded; :meth:`to_dict` / :meth:`from_dict` round-trip it).

    Attributes:
        pending: slot -> {member index: (value, event time ns)}: slots not emitted yet.
        tail_slots: the newest emitted slots of the current gap-free run (at most length - 1).
        tail_values: their slot vectors (same order), each a list of S floats.
        last_value, last_time: per member, its newest real reading (value, ns; NO_TIME if none).
        last_emitted: the newest emitted slot (NO_SLOT if none).
        max_seen: the newest slot any reading of the zone fell in (NO_SLOT if none).
    """

    n_members: int
    pending: dict[int, dict[int, tuple[float, int]]] = field(default_factory=dict)
    tail_slots: list[int] = field(default_factory=list)
    tail_values: list[list[float]] = field(default_factory=list)
    last_value: list[float] = field(default_factory=list)
    last_time: list[int] = field(default_factory=list)
    last_emitted: int = NO_SLOT
    max_seen: int = NO_SLOT

    def __post_init__(self) -> None:
        if not self.last_value:
            self.last_value = [float("nan")] * self.n_members
        if not self.last_time:
            self.last_time = [int(NO_TIME)] * self.n_members

    def to_dict(self) -> dict:
        return {"n_members": self.n_members,
                "pending": [[int(s), [[int(i), float(v), int(t)] for i, (v, t) in sorted(p.items())]]
                            for s, p in sorted(self.pending.items())],
                "tail_slots": [int(s) for s in self.tail_slots],
                "tail_values": [[float(v) for v in row] for row in self.tail_values],
                "last_value": [float(v) for v in self.last_value], "last_time": [int(t) for t in self.last_time],
                "last_emitted": int(self.last_emitted), "max_seen": int(self.max_seen)}

    @classmethod
    def from_dict(cls, d: dict) -> "AlignState":
        return cls(int(d["n_members"]),
                   {int(s): {int(i): (float(v), int(t)) for i, v, t in p} for s, p in d["pending"]},
                   [int(s) for s in d["tail_slots"]], [[float(v) for v in row] for row in d["tail_values"]],
                   [float(v) for v in d["last_value"]], [int(t) for t in d["last_time"]],
                   int(d["last_emitted"]), int(d["max_seen"]))


@dataclass
class ZoneWindows:
    """The windows one zone emitted in a call, in slot order (m windows, S members)."""

    windows: np.ndarray       # (m, length, S) member values, oldest slot first
    window_times: np.ndarray  # (m, length) slot times, ns
    real: np.ndarray          # (m, S) bool: the member reported at the newest slot
    times: np.ndarray         # (m, S) int64: the real members' own event times there (NO_TIME otherwise)

    def __len__(self) -> int:
        return int(self.window_times.shape[0])


@dataclass
class Aligned:
    """Result of :func:`align`.

    ``status[i]``, ``zone[i]`` and ``row[i]`` are the fate of input reading ``i`` (input order):
    an ``aligned`` reading is real at row ``row[i]`` of ``zones[zone[i]]``, column = its member
    index; the other statuses have ``row`` -1. Readings ``pending`` now are emitted by a later
    call (their windows carry them in ``real``/``times``).
    """

    status: np.ndarray                 # (n,) int8
    zone: np.ndarray                   # (n,) object, None for unknown sensors
    member: np.ndarray                 # (n,) int64 member index in its zone (-1 unknown)
    row: np.ndarray                    # (n,) int64
    zones: dict[str, ZoneWindows]
    state: dict[str, AlignState]


def _slot(t_ns: int, interval_ns: int) -> int:
    # round half up on the grid, in integers (no float rounding for large ns values)
    return int((t_ns + interval_ns // 2) // interval_ns)


def align(sensor_ids, t_ns, values, state: dict[str, AlignState] | None, layout: ZoneLayout,
          interval_ns: int, wait_slots: int, length: int, max_gap_ns: int, flush: bool = False) -> Aligned:
    """Align readings into zone windows, continuing from ``state`` (see the module docstring).

    Args:
        sensor_ids: (n,) sensor of each reading.
        t_ns: (n,) int64 event times in ns, any order.
        values: (n,) float readings (the model's one feature).
        state: each zone's state from the previous call; missing zones start empty. Not mutated.
        layout: the bundle's zones and member means.
        interval_ns: sampling interval (slot width).
        wait_slots: bounded wait, in slots (0 = emit a slot at its first reading).
        length: window length W in slots.
        max_gap_ns: a member's last value is carried at most this long; a longer gap between
            emitted slots restarts the zone's window.
        flush: emit every pending slot at the end (the batch path's last call).

    Returns:
        :class:`Aligned`; its ``state`` is new (the input state is left as it was).
    """
    ids = np.asarray(sensor_ids).astype(str)
    times = np.asarray(t_ns, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    n = ids.size
    if times.size != n or vals.size != n:
        raise ValueError("align needs one time and one value per sensor id")
    if interval_ns <= 0 or length < 1 or wait_slots < 0:
        raise ValueError("align needs a positive interval, length >= 1 and wait_slots >= 0")
    status = np.full(n, PENDING, dtype=np.int8)
    zone_of = np.full(n, None, dtype=object)
    member_of = np.full(n, -1, dtype=np.int64)
    row = np.full(n, -1, dtype=np.int64)
    states = {z: AlignState.from_dict(s.to_dict()) for z, s in (state or {}).items()}
    out: dict[str, dict[str, list]] = {}
    where: dict[tuple[str, int, int], int] = {}   # (zone, slot, member) -> input index, this call
    fills = {z: layout.fill_values(z) for z in layout.zones}

    def zstate(z: str) -> AlignState:
        st = states.get(z)
        if st is None:
            st = states[z] = AlignState(len(layout.zones[z]))
        return st

    def emit(z: str, st: AlignState, slot: int) -> None:
        members = st.pending.pop(slot, {})
        s_n = st.n_members
        slot_t = slot * interval_ns
        vec = np.empty(s_n, dtype=np.float64)
        real = np.zeros(s_n, dtype=bool)
        own_t = np.full(s_n, NO_TIME, dtype=np.int64)
        for j in range(s_n):
            if j in members:
                v, t = members[j]
                vec[j], real[j], own_t[j] = v, True, t
                st.last_value[j], st.last_time[j] = v, t
            elif st.last_time[j] != NO_TIME and slot_t - st.last_time[j] <= max_gap_ns:
                vec[j] = st.last_value[j]
            else:
                vec[j] = fills[z][j]
        if st.tail_slots and (slot - st.tail_slots[-1]) * interval_ns > max_gap_ns:
            st.tail_slots, st.tail_values = [], []   # a gap: the window starts again
        has_window = len(st.tail_slots) >= length - 1
        if has_window:
            o = out.setdefault(z, {"w": [], "t": [], "real": [], "times": []})
            prev = st.tail_values[len(st.tail_values) - (length - 1):] if length > 1 else []
            o["w"].append(np.vstack([np.asarray(prev, dtype=np.float64).reshape(-1, s_n), vec[None, :]]))
            prev_slots = st.tail_slots[len(st.tail_slots) - (length - 1):] if length > 1 else []
            o["t"].append(np.array(prev_slots + [slot], dtype=np.int64) * interval_ns)
            o["real"].append(real)
            o["times"].append(own_t)
            r = len(o["w"]) - 1
        for j in members:
            i = where.pop((z, slot, j), None)
            if i is not None:
                status[i] = ALIGNED if has_window else WARMUP
                row[i] = r if has_window else -1
        if length > 1:
            st.tail_slots.append(slot)
            st.tail_values.append(vec.tolist())
            if len(st.tail_slots) > length - 1:
                del st.tail_slots[0], st.tail_values[0]
        st.last_emitted = slot

    def drain(z: str, st: AlignState, everything: bool) -> None:
        while st.pending:
            oldest = min(st.pending)
            complete = len(st.pending[oldest]) == st.n_members
            waited = st.max_seen != NO_SLOT and st.max_seen - oldest >= wait_slots
            if not (everything or complete or waited):
                break
            emit(z, st, oldest)

    order = np.lexsort((np.arange(n), ids, times))
    for i in order.tolist():
        zm = layout.zone_of.get(ids[i])
        if zm is None:
            status[i] = UNKNOWN
            continue
        z, j = zm
        zone_of[i], member_of[i] = z, j
        st = zstate(z)
        slot = _slot(int(times[i]), interval_ns)
        if st.last_emitted != NO_SLOT and slot <= st.last_emitted:
            same = st.last_time[j] != NO_TIME and _slot(st.last_time[j], interval_ns) == slot
            status[i] = DUPLICATE if same else LATE
            continue
        pend = st.pending.setdefault(slot, {})
        if j in pend:
            status[i] = DUPLICATE
            continue
        pend[j] = (float(vals[i]), int(times[i]))
        where[(z, slot, j)] = i
        st.max_seen = slot if st.max_seen == NO_SLOT else max(st.max_seen, slot)
        drain(z, st, False)
    if flush:
        for z in sorted(states):
            drain(z, states[z], True)

    zones = {}
    for z, o in out.items():
        zones[z] = ZoneWindows(np.stack(o["w"]), np.stack(o["t"]), np.stack(o["real"]), np.stack(o["times"]))
    return Aligned(status, zone_of, member_of, row, zones, states)
