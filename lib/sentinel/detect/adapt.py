"""Bounded online adaptation of a sensor's normal level (drift tracking), and score smoothing.

:class:`DriftAdapter` (in the spirit of DSPOT, Siffer et al. 2017, which tracks a drifting
local level before thresholding) keeps, per sensor and channel, a *level* and a *slope* (a
bounded Holt linear-trend tracker) that are subtracted from the detector's standardised
residual before scoring. It moves only on readings judged normal, and only a bounded amount:

* without an open alarm, a reading teaches only when its score is below
  ``normal_ratio * threshold`` (default 0.5), and a feature only when its own residual is
  below ``channel_limit`` (default 2.5): the grey zone teaches nothing;
* an alarm (the caller's verdict: score over threshold, stuck rule, ...) opens on any
  alarming reading and closes only after ``holdoff`` consecutive readings without one
  (default 32), so learning never resumes inside an episode that dips under the threshold;
  while it is open nothing learns (``freeze="sensor"``, the default), or only the features
  not implicated in it (``freeze="implicated"``: a feature is implicated when the caller
  says so or its residual exceeded ``channel_limit`` during the alarm);
* level update ``gain * e`` and slope update ``slope_gain * e`` (``e`` = residual minus the
  predicted level), the level step clipped to ``max_step`` per reading, the slope to
  ``max_slope`` and the level to ``max_offset`` in size; ``gain = 0`` for a feature = never
  adapts (the cross-channel detector adapts only channels whose training record is a trend);
* frozen levels *coast* along their slope (at most ``max_coast`` readings per alarm): a
  motor that was warming up keeps warming up while an unrelated alarm is open, so its level
  is still right when the alarm clears. A feature without a trend has slope ~0 and stands.

Consequences (tests/unit/test_adapt.py): a sustained step drop (a leak) freezes the level at its
value before the drop and alarms for as long as the drop lasts; a ramp faster than the
tracker alarms once it crosses the threshold and stays alarmed; a drift slow enough that
the score never leaves the ``normal_ratio`` zone is absorbed, up to ``max_offset`` (a drift
that slow cannot be told from a normal level change by this detector: cap ``max_offset``
where that matters). An alarm that stays open stays open: re-baselining after a real change
is an operator's decision. The flip side, measured on the small-data benchmark (docs/detection.md): a level that
learned during an *undetected* anomaly, or normal wander that accumulates during a long
freeze, can leave the sensor alarmed for good ("lock-in") - the reason the tracker is on
only for trend channels by default and the stuck rule feeds it.

State is small (level, slope, frozen mask, counters per sensor) and JSON-serialisable
(:meth:`DriftAdapter.to_dict` / :meth:`DriftAdapter.from_dict`), for the stream's per-sensor
state: the tracker is sequential, so a sensor's readings must reach it in event-time order.
``detect.residual`` uses it for the channels whose training record is a trend (off by default
elsewhere: docs/detection.md has the measurement). Pure numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SensorDrift:
    level: np.ndarray
    slope: np.ndarray
    frozen: np.ndarray | None = None  # (F,) bool: features implicated in the open alarm
    alarm_open: bool = False
    quiet: int = 0            # consecutive readings at or below the threshold while an alarm is open
    coasted: int = 0          # readings the level has coasted along the slope in this alarm
    updates: int = 0          # readings that taught the tracker

    def __post_init__(self) -> None:
        if self.frozen is None:
            self.frozen = np.zeros(self.level.shape, dtype=bool)

    def to_dict(self) -> dict:
        return {"level": self.level.tolist(), "slope": self.slope.tolist(), "frozen": self.frozen.tolist(),
                "alarm_open": self.alarm_open,
                "quiet": self.quiet, "coasted": self.coasted, "updates": self.updates}

    @classmethod
    def from_dict(cls, d: dict) -> "SensorDrift":
        return cls(np.asarray(d["level"], dtype=np.float64), np.asarray(d["slope"], dtype=np.float64),
                   np.asarray(d.get("frozen", np.zeros(len(d["level"]))), dtype=bool), bool(d["alarm_open"]), int(d["quiet"]), int(d.get("coasted", 0)), int(d.get("updates", 0)))


FREEZE_MODES = ("sensor", "implicated")


@dataclass
class DriftAdapter:
    """Per-sensor, per-feature bounded level/slope tracking (see the module docstring).

    Args:
        n_features: length of the residual vector.
        gain: level gain per normal reading (0.02 = time constant 50 readings); scalar or
            per feature (0 = that feature never adapts).
        slope_gain: slope gain per normal reading (0 = level only); scalar or per feature.
        max_step: largest change of a level per reading by learning (residual units).
        max_slope: largest size of a slope (scalar or per feature).
        max_offset: largest size of a level (scalar or per feature; inf = no cap).
        normal_ratio: without an open alarm, a reading teaches only when its score is below
            ``normal_ratio * threshold``.
        channel_limit: a feature teaches only from readings where its own residual (after
            the level) is below this in size; ``freeze="implicated"``: a feature whose residual
            exceeds it while an alarm is open is frozen until the alarm closes.
        holdoff: readings without an alarm needed to close an open alarm.
        max_coast: readings per alarm a frozen level may follow its slope untaught (0 = stand still).
        freeze: ``"sensor"`` - nothing learns while an alarm is open; ``"implicated"`` - only
            the features implicated in the open alarm (given by the caller, or over
            ``channel_limit`` at any reading of it) are frozen, the others keep learning
            under the ``channel_limit`` gate.
        init_level, init_slope: start values for new sensors (e.g. the training residuals'
            trend at the end of training), default zeros.
    """

    n_features: int
    gain: float | np.ndarray = 0.02
    slope_gain: float | np.ndarray = 0.0
    max_step: float = 0.2
    max_slope: float | np.ndarray = 0.05
    max_offset: float | np.ndarray = np.inf
    normal_ratio: float = 0.5
    channel_limit: float = 2.5
    holdoff: int = 32
    max_coast: int = 600
    freeze: str = "sensor"
    init_level: np.ndarray | None = None
    init_slope: np.ndarray | None = None
    sensors: dict[str, SensorDrift] = field(default_factory=dict)

    def __post_init__(self) -> None:
        g, sg = np.asarray(self.gain, dtype=np.float64), np.asarray(self.slope_gain, dtype=np.float64)
        if not ((g >= 0) & (g <= 1)).all() or not ((sg >= 0) & (sg <= 1)).all():
            raise ValueError(f"drift gains must lie in [0, 1], got {self.gain}, {self.slope_gain}")
        if self.max_step <= 0 or self.holdoff < 1 or not 0.0 < self.normal_ratio <= 1.0 or self.max_coast < 0 \
                or self.channel_limit <= 0:
            raise ValueError("drift max_step and channel_limit must be positive, holdoff at least 1, "
                             "normal_ratio in (0, 1] and max_coast not negative")
        if self.freeze not in FREEZE_MODES:
            raise ValueError(f"unknown drift freeze mode {self.freeze!r}: use {' or '.join(FREEZE_MODES)}")

    def _caps(self, value) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (self.n_features,))

    def state(self, sensor: str) -> SensorDrift:
        st = self.sensors.get(sensor)
        if st is None:
            lvl = np.zeros(self.n_features) if self.init_level is None else np.asarray(self.init_level, dtype=np.float64).copy()
            slp = np.zeros(self.n_features) if self.init_slope is None else np.asarray(self.init_slope, dtype=np.float64).copy()
            ms = self._caps(self.max_slope)
            st = self.sensors[sensor] = SensorDrift(lvl, np.clip(slp, -ms, ms))
        return st

    def offset(self, sensor: str) -> np.ndarray:
        """The level expected for the sensor's next reading (subtract it from the residual
        before scoring): current level plus one step of slope, clipped to ``max_offset``."""
        st = self.state(sensor)
        cap = self._caps(self.max_offset)
        return np.clip(st.level + st.slope, -cap, cap)

    def update(self, sensor: str, residual: np.ndarray, score: float, threshold: float,
               alarm: bool | None = None, implicated: np.ndarray | None = None) -> np.ndarray:
        """Feed one scored reading (in event-time order).

        Args:
            residual: the (F,) residual the detector saw *after* subtracting :meth:`offset`.
            score, threshold: the reading's score and its threshold.
            alarm: whether the detector alarms on this reading (default ``score > threshold``;
                pass the combined verdict of all rules, e.g. a stuck-channel rule).
            implicated: (F,) bool, features the caller knows are involved in this reading's
                alarm (e.g. the stuck channel); added to the frozen set.

        Returns:
            (F,) bool, the features this reading taught.
        """
        st = self.state(sensor)
        cap = self._caps(self.max_offset)
        r = np.asarray(residual, dtype=np.float64)
        if alarm is None:
            alarm = not np.isfinite(score) or score > threshold
        big = ~np.isfinite(r) | (np.abs(r) >= self.channel_limit)
        if alarm:
            st.alarm_open, st.quiet = True, 0
        elif st.alarm_open:
            st.quiet += 1
            if st.quiet >= self.holdoff:
                st.alarm_open, st.quiet, st.coasted = False, 0, 0
                st.frozen = np.zeros(self.n_features, dtype=bool)
        if st.alarm_open:
            if self.freeze == "sensor":
                st.frozen = np.ones(self.n_features, dtype=bool)
            else:
                st.frozen = st.frozen | big | (np.zeros(self.n_features, dtype=bool) if implicated is None
                                                 else np.asarray(implicated, dtype=bool))
        predicted = np.clip(st.level + st.slope, -cap, cap)
        teach = ~st.frozen & ~big
        if not st.alarm_open and not score < self.normal_ratio * threshold:
            teach[:] = False  # grey zone: not far enough from the threshold to teach
        g, sg = self._caps(self.gain), self._caps(self.slope_gain)
        teach &= g > 0
        rr = np.where(teach, r, 0.0)
        level = predicted + np.clip(g * rr, -self.max_step, self.max_step)
        if st.frozen.any():  # frozen features coast along their slope for at most max_coast readings
            if st.coasted >= self.max_coast:
                level = np.where(st.frozen, st.level, level)
            st.coasted += 1
        st.level = np.clip(level, -cap, cap)
        ms = self._caps(self.max_slope)
        st.slope = np.clip(st.slope + sg * rr, -ms, ms)
        st.updates += int(teach.any())
        return teach

    def to_dict(self) -> dict:
        """Parameters, start values and every sensor's state, JSON-serialisable (``max_offset``
        may be ``Infinity``, which ``json`` writes and reads)."""
        def arr(v):
            return None if v is None else np.asarray(v, dtype=np.float64).tolist()
        return {"params": {"gain": arr(self.gain), "slope_gain": arr(self.slope_gain), "max_step": self.max_step,
                           "max_slope": arr(self.max_slope), "max_offset": arr(self.max_offset),
                           "normal_ratio": self.normal_ratio, "channel_limit": self.channel_limit,
                           "holdoff": self.holdoff, "max_coast": self.max_coast, "freeze": self.freeze,
                           "init_level": arr(self.init_level), "init_slope": arr(self.init_slope)},
                "sensors": {k: v.to_dict() for k, v in sorted(self.sensors.items())}}

    @classmethod
    def from_dict(cls, d: dict, n_features: int) -> "DriftAdapter":
        p = d["params"]

        def val(v):
            a = np.asarray(v, dtype=np.float64)
            return a if a.ndim else float(a)

        def opt(v):
            return None if v is None else np.asarray(v, dtype=np.float64)
        return cls(n_features, val(p["gain"]), val(p["slope_gain"]), p["max_step"], val(p["max_slope"]),
                   val(p["max_offset"]), p["normal_ratio"], p["channel_limit"], p["holdoff"], p["max_coast"],
                   p["freeze"], opt(p.get("init_level")), opt(p.get("init_slope")),
                   sensors={k: SensorDrift.from_dict(v) for k, v in d.get("sensors", {}).items()})

    def copy(self) -> "DriftAdapter":
        """An independent copy (state included)."""
        return DriftAdapter.from_dict(self.to_dict(), self.n_features)


def residual_trend(residuals: np.ndarray, min_t: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Level at the last reading and slope per reading of each column of (n, F) training
    residuals (least-squares line); slopes whose t-statistic is below ``min_t`` are set to 0
    (and the level is then the mean of the last quarter). Starts a :class:`DriftAdapter`
    where training ended."""
    r = np.asarray(residuals, dtype=np.float64)
    n = r.shape[0]
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2
    b = (t[:, None] * (r - r.mean(0))).sum(0) / (t ** 2).sum()
    fit = r.mean(0) + b * t[:, None]
    se = np.sqrt(((r - fit) ** 2).sum(0) / max(n - 2, 1) / (t ** 2).sum())
    keep = np.abs(b) >= min_t * np.maximum(se, 1e-12)
    end_level = np.where(keep, r.mean(0) + b * t[-1], r[-max(n // 4, 1):].mean(0))
    return end_level, np.where(keep, b, 0.0)


def ewma(x: np.ndarray, alpha: float, init: float | np.ndarray | None = None) -> np.ndarray:
    """Exponentially weighted moving average along axis 0: ``y[t] = (1-alpha) y[t-1] + alpha x[t]``,
    ``y[-1] = init`` (default: ``x[0]``, so the first output is ``x[0]``). Streaming: pass the
    previous call's last output as ``init``."""
    x = np.asarray(x, dtype=np.float64)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"EWMA alpha must lie in (0, 1], got {alpha}")
    y = np.empty_like(x)
    if x.shape[0] == 0:
        return y
    prev = x[0] if init is None else np.asarray(init, dtype=np.float64)
    for i in range(x.shape[0]):
        prev = (1 - alpha) * prev + alpha * x[i]
        y[i] = prev
    return y
