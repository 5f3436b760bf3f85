"""Champion vs challenger on the newest held-out days, and the promotion policy.

Both bundles score the same held-out readings with ``detect.batch.score_table`` (the stream's
windowing and scoring; each gets the readings just before the held-out days as window context).
Figures per bundle:

- ``false_alarms_per_sensor_day``: alarms (runs of flagged readings, merged when at most W
  readings apart) that touch no left-out period (an incident not labelled false alarm, a mute, a
  history label; extended by W readings after its end, where a window still holds it), per
  sensor-day of normal readings;
- ``recall``: the share of labelled incidents (``confirmed``, ``sensor_fault``, history labels) in
  the held-out days with at least one flagged reading of one of their sensors inside them; None
  when there are none;
- ``flag_rate``: flagged normal readings / normal readings (shown, not judged).

:func:`decide` applies ``lifecycle.promote``: ``auto`` promotes a challenger at least as good on
every figure, within ``false_alarm_tolerance`` and ``recall_tolerance``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sentinel.config import Settings
from sentinel.detect import evaluate
from sentinel.detect.batch import score_table
from sentinel.lifecycle.periods import EXCLUDED_KINDS, TRUTH_KINDS

FIGURES = ("false_alarms_per_sensor_day", "recall")
POLICIES = ("auto", "manual")


def internal_settings(settings: Settings) -> Settings:
    """Settings whose column names are the lifecycle frames' own (``sensor_id``, ``event_time``)."""
    return settings.replace(**{"data.sensor_field": "sensor_id", "data.time_field": "event_time"})


def holdout_figures(bundle, marked: pd.DataFrame, periods: pd.DataFrame, holdout_start: pd.Timestamp,
                    settings: Settings) -> dict:
    """Score the held-out readings (``event_time >= holdout_start``) with ``bundle``; its figures.

    Args:
        bundle: a loaded ``detect.model.Bundle``.
        marked: the window's readings with ``normal`` (``periods.mark``), sorted by sensor and time.
        periods: the window's periods (``PERIOD_COLUMNS``).
        holdout_start: first held-out time.
        settings: scoring settings (persistence).
    """
    interval = pd.Timedelta(seconds=int(bundle.manifest["window"]["interval_s"]))
    span = interval * bundle.length
    context = marked[marked["event_time"] >= holdout_start - 2 * span]  # the first windows' history
    scored = score_table(bundle, context[["sensor_id", "event_time", *bundle.features]], internal_settings(settings))
    held = (context["event_time"] >= holdout_start).to_numpy()
    flags = (scored["is_anomaly"].to_numpy() == 1) & held
    normal = context["normal"].to_numpy(dtype=bool) & held
    flagged = context.loc[flags, ["sensor_id", "event_time"]].rename(columns={"event_time": "timestamp"})
    sensor_days = float(normal.sum() * interval.total_seconds() / 86400)

    def as_truth(kinds) -> pd.DataFrame:
        p = periods[periods["kind"].isin(kinds) & (pd.to_datetime(periods["end"], utc=True) >= holdout_start)]
        return p.rename(columns={"kind": "anomaly_type"})[["sensor_id", "anomaly_type", "start", "end", "incident_id"]]

    out_periods = as_truth(EXCLUDED_KINDS)
    em = evaluate.episode_metrics(out_periods.drop(columns="incident_id"), flagged, span, span)
    truth = as_truth(TRUTH_KINDS).reset_index(drop=True)
    found = _found(truth, flagged)
    key = truth["incident_id"].where(truth["incident_id"].notna(), pd.Series(truth.index.astype(str), dtype=object))
    per_incident = pd.Series(found, dtype=bool).groupby(key.to_numpy()).any() if len(truth) else pd.Series(dtype=bool)
    n_inc = int(len(per_incident))
    return {"version": bundle.version, "scored": int(np.isfinite(scored["score"].to_numpy()[held]).sum()),
            "normal_readings": int(normal.sum()), "normal_sensor_days": round(sensor_days, 3),
            "false_alarms": int(em["false_episodes"]),
            "false_alarms_per_sensor_day": float(em["false_episodes"] / sensor_days) if sensor_days else float("nan"),
            "flag_rate": float((flags & normal).sum() / normal.sum()) if normal.sum() else float("nan"),
            "incidents": n_inc, "incidents_found": int(per_incident.sum()),
            "recall": float(per_incident.mean()) if n_inc else None}


def _found(truth: pd.DataFrame, flagged: pd.DataFrame) -> np.ndarray:
    """Per truth period: at least one flagged reading of its sensor inside it."""
    ts = {s: np.sort(pd.to_datetime(g["timestamp"], utc=True).astype("int64").to_numpy())
          for s, g in flagged.groupby("sensor_id")}
    out = np.zeros(len(truth), dtype=bool)
    for i, p in enumerate(truth.itertuples(index=False)):
        t = ts.get(p.sensor_id, np.empty(0, dtype=np.int64))
        lo = np.searchsorted(t, pd.Timestamp(p.start).value, side="left")
        hi = np.searchsorted(t, pd.Timestamp(p.end).value, side="right")
        out[i] = hi > lo
    return out


@dataclass
class Decision:
    promote: bool
    verdict: str                       # better | equal | worse | no_champion | incompatible | too_little_data
    reasons: list[str] = field(default_factory=list)


def check_policy(policy: str) -> str:
    """``policy`` if it is ``auto`` or ``manual``, else a one-sentence LifecycleError."""
    if policy not in POLICIES:
        from sentinel.lifecycle.registry import LifecycleError
        raise LifecycleError(f"promotion policy {policy!r} is unknown: use --promote auto or --promote manual")
    return policy


def decide(champion: dict | None, challenger: dict, policy: str, false_alarm_tolerance: float = 0.0,
           recall_tolerance: float = 0.0, min_sensor_days: float = 1.0, incompatible: str | None = None) -> Decision:
    """Whether to promote the challenger, and the verdict written into its manifest.

    ``auto`` promotes when the challenger is at least as good on every figure: false alarms per
    sensor-day at most the champion's + ``false_alarm_tolerance``, recall (when both have one) at
    least the champion's - ``recall_tolerance``; a first model (no champion) is promoted too. It
    never promotes an ``incompatible`` challenger (the running job could not switch to it) nor
    one judged on fewer than ``min_sensor_days`` normal sensor-days. ``manual`` never promotes:
    the verdict waits for ``sentinel models promote``.
    """
    check_policy(policy)
    reasons: list[str] = []
    if incompatible:
        return Decision(False, "incompatible", [incompatible])
    days = challenger.get("normal_sensor_days") or 0.0
    if days < min_sensor_days:
        return Decision(False, "too_little_data",
                        [f"the held-out days hold {days:.2f} normal sensor-days, fewer than "
                         f"lifecycle.min_holdout_sensor_days = {min_sensor_days}"])
    if champion is None:
        verdict = "no_champion"
        reasons.append("no champion to compare with")
    else:
        worse, better = [], []
        fa_c, fa_p = challenger["false_alarms_per_sensor_day"], champion["false_alarms_per_sensor_day"]
        if fa_c > fa_p + false_alarm_tolerance:
            worse.append(f"false alarms {fa_c:.3f} per sensor-day against the champion's {fa_p:.3f} "
                         f"(tolerance {false_alarm_tolerance})")
        elif fa_c < fa_p:
            better.append(f"false alarms {fa_c:.3f} per sensor-day against {fa_p:.3f}")
        r_c, r_p = challenger.get("recall"), champion.get("recall")
        if r_c is not None and r_p is not None:
            if r_c < r_p - recall_tolerance:
                worse.append(f"recall {r_c:.3f} against the champion's {r_p:.3f} (tolerance {recall_tolerance})")
            elif r_c > r_p:
                better.append(f"recall {r_c:.3f} against {r_p:.3f}")
        verdict = "worse" if worse else "better" if better else "equal"
        reasons += worse or better or ["the same figures as the champion"]
    promote = policy == "auto" and verdict in ("better", "equal", "no_champion")
    if policy == "manual":
        reasons.append("manual policy: promote it with `sentinel models promote VERSION`")
    return Decision(promote, verdict, reasons)
