"""``sentinel retrain``: a data window -> exclusions -> challenger -> comparison -> registry.

1. The window: ``lifecycle.window_days`` (or ``since``) up to ``until`` (default: the newest
   reading), from a store's scores or a history file (:mod:`sentinel.lifecycle.sources`).
2. Readings to leave out (:mod:`sentinel.lifecycle.periods`): incidents not labelled false
   alarm, mutes, history labels; false alarms' readings stay in as normal.
3. The challenger: ``detect.training.fit_bundle`` with the current settings on the window less
   its newest ``lifecycle.holdout_days`` (its own validation split is inside those days before).
4. Champion (the registry's served version) and challenger score the held-out days
   (:mod:`sentinel.lifecycle.compare`); the comparison and the lineage (parent version, data
   window, fingerprint, exclusions) go into the challenger's ``manifest.json``.
5. The challenger becomes a version of the registry (a served version is pinned first, so an
   unpromoted challenger is never served as "newest"), promoted when the policy says so.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sentinel.config import Settings
from sentinel.detect.model import check_compatible, fingerprint, load_bundle, resolve_bundle
from sentinel.lifecycle import compare, periods as periods_mod
from sentinel.lifecycle.registry import LifecycleError, Registry
from sentinel.lifecycle.sources import WindowData

log = logging.getLogger("sentinel.retrain")
EXCLUDED_COL = "retrain_excluded"  # the label column fit_bundle leaves out windows by


@dataclass
class RetrainResult:
    version: str                      # the challenger's version (registry folder)
    ref: str                          # where it is (path or s3:// URL)
    champion: str | None              # the version it was compared with
    promoted: bool
    decision: compare.Decision
    comparison: dict
    lineage: dict
    messages: list[str] = field(default_factory=list)


def window_bounds(readings: pd.DataFrame, window_days: float, since: pd.Timestamp | None = None,
                  until: pd.Timestamp | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(start, end) of the window, both inclusive: ``end`` = ``until`` or the newest reading,
    ``start`` = ``since`` or ``end`` - ``window_days``."""
    if readings.empty:
        raise LifecycleError("the source holds no readings: check --store / --history and --since")
    t = readings["event_time"]
    end = min(until, t.max()) if until is not None else t.max()
    start = since if since is not None else end - pd.Timedelta(days=window_days)
    if start >= end:
        raise LifecycleError(f"the window's start {start} is not before its end {end}: widen --since")
    return start, end


def window_periods(data: WindowData, frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Every period the exclusion rules know for ``frame``'s sensors: incidents, mutes, labels."""
    parts = [periods_mod.incident_periods(data.incidents, settings.lifecycle.incident_margin_s),
             periods_mod.mute_periods(data.mutes, data.zones, frame["sensor_id"].unique()),
             periods_mod.label_periods(frame, settings.data.label_field)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=periods_mod.PERIOD_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    for c in ("start", "end"):
        out[c] = pd.to_datetime(out[c], utc=True)
    return out


def retrain(data: WindowData, settings: Settings, registry: Registry, policy: str | None = None,
            since: pd.Timestamp | None = None, until: pd.Timestamp | None = None,
            by: str = "sentinel retrain") -> RetrainResult:
    """Train a challenger on the window, compare it with the champion, add it to the registry.

    Args:
        data: the window's readings, incidents, mutes and zones (``lifecycle.sources``).
        settings: training settings (the challenger uses them as they are) and ``[lifecycle]``.
        registry: where the champion is served from and the challenger goes.
        policy: ``auto`` or ``manual``; if not given, ``lifecycle.promote``.
        since, until: the window; if not given, ``lifecycle.window_days`` up to the newest reading.
        by: who promotes (recorded in the promotion history).

    Raises:
        LifecycleError: bad policy, empty window or held-out days (nothing is written).
        TrainingDataError: too little normal history left for the challenger (nothing written).
    """
    lc = settings.lifecycle
    policy = policy or lc.promote
    compare.check_policy(policy)  # an unknown policy stops before anything is read or trained
    feats = list(settings.data.features)
    start, end = window_bounds(data.readings, lc.window_days, since, until)
    r = data.readings
    frame = r[(r["event_time"] >= start) & (r["event_time"] <= end)].sort_values(["sensor_id", "event_time"])
    frame = frame.reset_index(drop=True)
    periods = window_periods(data, frame, settings)
    marked, counts = periods_mod.mark(frame, periods)
    holdout_start = end - pd.Timedelta(days=lc.holdout_days)
    held = marked["event_time"] >= holdout_start
    if not held.any() or held.all():
        raise LifecycleError(f"the window {start} .. {end} cannot be split at {holdout_start}: it needs readings "
                             f"on both sides of its newest lifecycle.holdout_days = {lc.holdout_days} days")
    log.info("window %s .. %s: %d readings, %d left out (%s), held out from %s", start, end, len(frame),
             counts["excluded"], ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("rows", "excluded") and v),
             holdout_start)

    champion_version = registry.serving()
    champion = None
    messages: list[str] = []
    if champion_version is not None:
        try:
            champion = load_bundle(str(resolve_bundle(registry.ref(champion_version))))
        except Exception as exc:  # a broken champion cannot be compared with: say so, promote nothing
            messages.append(f"champion {champion_version} could not be loaded ({exc}); nothing is promoted")

    from sentinel.detect.training import fit_bundle
    staging = registry.staging()
    try:
        train = marked.loc[~held, ["sensor_id", "event_time", *feats]].assign(
            **{EXCLUDED_COL: marked.loc[~held, "excluded"].astype("int8").to_numpy()})
        cleaning = {**data.cleaning, "retrain_excluded": counts}
        _, report = fit_bundle(train, settings, staging, label_col=EXCLUDED_COL, cleaning=cleaning)
        challenger = load_bundle(str(staging))
        figures = {"challenger": compare.holdout_figures(challenger, marked, periods, holdout_start, settings)}
        figures["champion"] = (compare.holdout_figures(champion, marked, periods, holdout_start, settings)
                               if champion is not None else None)
        why = check_compatible(champion.manifest, challenger.manifest) if champion is not None else None
        if champion_version is not None and champion is None:
            decision = compare.Decision(False, "champion_unavailable", list(messages))
        else:
            decision = compare.decide(figures["champion"], figures["challenger"], policy, lc.false_alarm_tolerance,
                                      lc.recall_tolerance, lc.min_holdout_sensor_days, why)
        version = challenger.version
        lineage = {
            "parent": champion_version, "trained_by": by, "source": data.source,
            "data_window": {"start": str(start), "end": str(end), "holdout_start": str(holdout_start),
                            "rows": int(len(frame)), "sensors": int(frame["sensor_id"].nunique())},
            "fingerprint": fingerprint(frame[["sensor_id", "event_time", *feats]]),
            "excluded": counts, "periods": {k: int(v) for k, v in periods["kind"].value_counts().items()},
        }
        comparison = {
            "holdout": {"start": str(holdout_start), "end": str(end)},
            "champion": figures["champion"], "challenger": figures["challenger"],
            "policy": policy, "verdict": decision.verdict, "reasons": decision.reasons,
            "promote": decision.promote,
            "tolerance": {"false_alarms_per_sensor_day": lc.false_alarm_tolerance, "recall": lc.recall_tolerance},
            "compared_at": pd.Timestamp.now(tz="UTC").isoformat(),
        }
        manifest_path = Path(staging) / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["lineage"], manifest["comparison"] = lineage, comparison
        manifest_path.write_text(json.dumps(manifest, indent=1, default=str))
        registry.pin_serving(by)  # before the challenger lands: it must not be served as "newest"
        ref = registry.add_version(staging, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    promoted = False
    if decision.promote:
        registry.promote(version, by, f"{policy}: {decision.verdict}; " + "; ".join(decision.reasons))
        promoted = True
    log.info("challenger %s: %s (%s)%s", version, decision.verdict, "; ".join(decision.reasons),
             ", promoted" if promoted else "")
    return RetrainResult(version, ref, champion_version, promoted, decision, comparison, lineage,
                         messages + [f"training took {report['seconds']} s"])
