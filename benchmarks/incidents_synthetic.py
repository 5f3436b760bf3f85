"""Incident quality on the synthetic benchmark: one incident per injected event, the right kind,
and an alarm load an operator can carry.

    .venv/bin/python benchmarks/incidents_synthetic.py            # about 6 minutes on 2 cores
    .venv/bin/python benchmarks/incidents_synthetic.py --quick    # smoke run (tiny sizes)

For each seed (``--seeds``, default 7,11,13; 7 is the seed the kind rules and the [incidents]
defaults were tuned on, the others are reported apart as held-out networks) it

1. simulates 14 days of labelled history and a 7-day test week of the same network (20 sensors,
   5-minute readings, every anomaly type, 3 episodes per sensor-week), trains the default model
   with ``fit_bundle`` and scores the test week with ``score_table(details=True)``;
2. feeds the flagged rows to ``incidents.IncidentTracker`` in micro-batches of ``--chunk-s``
   of event time (1 hour), the state saved with ``to_json`` and reloaded with ``from_json``
   after every batch, as the stream does; a second pass replays every batch from the state
   saved before it and checks the records are identical (wall-clock fields aside);
3. scores the incidents against the injected episodes (``incidents.evaluate``): incident
   precision and recall, incidents per event, kind accuracy, sensor faults called leak/burst,
   and how often the zone rule merged unrelated events (also with ``merge_onset_s = 0``, the
   literal "overlap in time" rule);
4. measures the alarm load (``incidents.load``) on the test week and on the demo's live feed
   (3 days, 4 episodes per sensor-week, seed 7's network scored by seed 7's model).

Prints one table per seed, the targets, and writes JSON (``--json``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from sentinel.config import load_settings  # noqa: E402
from sentinel.detect.batch import score_table  # noqa: E402
from sentinel.detect.model import load_bundle  # noqa: E402
from sentinel.detect.training import fit_bundle  # noqa: E402
from sentinel.incidents import evaluate, load  # noqa: E402
from sentinel.incidents.tracker import IncidentTracker  # noqa: E402
from sentinel.ingest.synthetic import simulate  # noqa: E402

TUNING_SEED = 7
START = pd.Timestamp("2026-01-05T00:00:00Z")
TARGETS = {"incident_precision": 0.95, "incident_recall": 0.95, "kind_accuracy": 0.90,
           "faults_as_leak_or_burst": 0.05, "demo_most_in_an_hour": 6, "demo_floods": 0}
WALL_CLOCK = ("detected_at", "updated_at")


def run_tracker(scored: pd.DataFrame, settings, bundle, sensors: pd.DataFrame, chunk_s: int,
                replay: bool = True, **overrides) -> dict:
    """Feed the flagged rows to the tracker in event-time micro-batches; state via JSON each batch."""
    inc_settings = settings.replace(**{f"incidents.{k}": v for k, v in overrides.items()}) if overrides else settings
    frame = scored.assign(event_time=pd.to_datetime(scored["timestamp"], utc=True))
    flagged = frame[frame["is_anomaly"] == 1]
    make = dict(settings=inc_settings, features=bundle.features, window_length=bundle.length,
                registry=sensors, model_version=bundle.version)
    tracker = IncidentTracker.from_settings(**make)
    t0 = frame["event_time"].min().floor(f"{chunk_s}s")
    edges = pd.date_range(t0, frame["event_time"].max() + pd.Timedelta(seconds=chunk_s), freq=f"{chunk_s}s")
    times = frame["event_time"].astype("int64").to_numpy()  # ns UTC
    records, events, alarms, durations, mismatches, opened_kind = {}, [], 0, [], 0, {}
    state = tracker.to_json()
    batch = 0
    for a, b in zip(edges[:-1], edges[1:]):
        part = flagged[(flagged["event_time"] >= a) & (flagged["event_time"] < b)]
        seen = times[(times >= a.value) & (times < b.value)]
        now = pd.Timestamp(int(seen.max()), tz="UTC") if seen.size else None  # newest event time of the batch
        tracker = IncidentTracker.from_json(state, **make)
        t = time.perf_counter()
        out = tracker.update(part, now, batch_id=batch)
        durations.append(time.perf_counter() - t)
        new_state = tracker.to_json()
        if replay:  # the same batch from the state saved before it: the same records
            again = IncidentTracker.from_json(state, **make).update(part, now, batch_id=batch)
            mismatches += int(not _same(out, again))
        state = new_state
        alarms += len(out.alarms)
        for ev in out.events.itertuples(index=False):
            events.append((batch, ev.incident_id, ev.event))
        for r in out.incidents.to_dict("records"):
            records[r["incident_id"]] = r
            opened_kind.setdefault(r["incident_id"], r["kind"])
        batch += 1
    # end of feed: a clock far ahead closes what is still open
    tracker = IncidentTracker.from_json(state, **make)
    out = tracker.update(flagged.iloc[0:0], frame["event_time"].max() + pd.Timedelta(days=2), batch_id=batch)
    for r in out.incidents.to_dict("records"):
        records[r["incident_id"]] = r
    incidents = pd.DataFrame(list(records.values()))
    return {"incidents": incidents, "events": events, "alarms": alarms, "flags": int(len(flagged)),
            "batches": batch, "batch_ms_mean": 1000 * float(np.mean(durations)),
            "batch_ms_max": 1000 * float(np.max(durations)), "replay_mismatches": mismatches,
            "state_bytes": len(state), "opened_kind": opened_kind}


def _same(a, b) -> bool:
    x, y = a.incidents.drop(columns=list(WALL_CLOCK)), b.incidents.drop(columns=list(WALL_CLOCK))
    return (x.to_json(date_unit="ns") == y.to_json(date_unit="ns") and a.events.equals(b.events)
            and a.alarms.to_json(date_unit="ns") == b.alarms.to_json(date_unit="ns"))


def seed_run(seed: int, settings, sizes: dict, work: Path, chunk_s: int) -> dict:
    train = simulate(sizes["sensors"], sizes["train_days"], 300, seed, START.isoformat(), 2.0)
    test = simulate(sizes["sensors"], sizes["test_days"], 300, seed,
                    (START + pd.Timedelta(days=sizes["train_days"])).isoformat(), 3.0)
    t0 = time.time()
    path, _ = fit_bundle(train.readings.rename(columns={"timestamp": "event_time"}), settings, work / f"seed{seed}",
                         label_col="is_anomaly")
    bundle = load_bundle(str(path))
    train_s = time.time() - t0
    scored = score_table(bundle, test.readings.reset_index(drop=True), settings, details=True)
    tol = pd.Timedelta(seconds=settings.window.interval_s * bundle.length)
    res = run_tracker(scored, settings, bundle, test.sensors, chunk_s)
    m = evaluate.incident_metrics(test.episodes, res["incidents"], tol)
    literal = run_tracker(scored, settings, bundle, test.sensors, chunk_s, replay=False, merge_onset_s=0)
    ml = evaluate.incident_metrics(test.episodes, literal["incidents"], tol)
    per_event = m.pop("per_event")
    ml.pop("per_event")
    at_open = per_event[per_event["found"]].assign(
        open_kind=lambda d: d["incident_id"].map(res["opened_kind"]))
    multi = res["incidents"][res["incidents"]["sensors"].map(lambda s: len(json.loads(s)) > 1)]
    span = (pd.Timestamp(test.readings["timestamp"].min()), pd.Timestamp(test.readings["timestamp"].max()))
    out = {
        "seed": seed, "role": "tuning" if seed == TUNING_SEED else "held-out",
        "episodes": int(len(test.episodes)), "flagged_readings": res["flags"], "alarms": res["alarms"],
        "train_seconds": round(train_s, 1), "threshold": bundle.threshold.value,
        "metrics": m,
        "kind_accuracy_at_open": float((at_open["open_kind"] == at_open["expected_kind"]).mean()) if len(at_open) else None,
        "multi_sensor_incidents": int(len(multi)),
        "literal_overlap_rule": {"incidents": ml["incidents"],
                                 "incidents_covering_several_events": ml["incidents_covering_several_events"],
                                 "incident_precision": ml["incident_precision"], "kind_accuracy": ml["kind_accuracy"]},
        "tracker": {k: res[k] for k in ("batches", "batch_ms_mean", "batch_ms_max", "replay_mismatches", "state_bytes")},
        "alarm_load": load.alarm_load(res["incidents"], settings, span[0], span[1] + pd.Timedelta(minutes=5)),
        "bundle": bundle,
    }
    return out


def demo_run(bundle, settings, sizes: dict, chunk_s: int) -> dict:
    """The demo's live feed (scripts/demo.sh): 3 days from 2026-01-19, 4 episodes per sensor-week."""
    feed = simulate(sizes["sensors"], sizes["demo_days"], 300, TUNING_SEED, "2026-01-19T00:00:00Z", 4.0)
    scored = score_table(bundle, feed.readings.reset_index(drop=True), settings, details=True)
    res = run_tracker(scored, settings, bundle, feed.sensors, chunk_s, replay=False)
    tol = pd.Timedelta(seconds=settings.window.interval_s * bundle.length)
    m = evaluate.incident_metrics(feed.episodes, res["incidents"], tol)
    m.pop("per_event")
    span = (pd.Timestamp(feed.readings["timestamp"].min()), pd.Timestamp(feed.readings["timestamp"].max()))
    lo = load.alarm_load(res["incidents"], settings, span[0], span[1] + pd.Timedelta(minutes=5))
    return {"episodes": int(len(feed.episodes)), "flagged_readings": res["flags"], "incidents": int(len(res["incidents"])),
            "metrics": m, "alarm_load": lo, "markdown": load.markdown(lo)}


def print_seed(r: dict) -> None:
    m = r["metrics"]
    print(f"\nseed {r['seed']} ({r['role']}): {r['episodes']} injected episodes, {r['flagged_readings']} flagged "
          f"readings -> {m['incidents']} incidents (model trained in {r['train_seconds']:.0f} s)")
    print(evaluate.format_table(m))
    lit = r["literal_overlap_rule"]
    t, lo = r["tracker"], r["alarm_load"]
    print(f"kind accuracy at open (first record): {r['kind_accuracy_at_open']:.2f}; multi-sensor incidents: "
          f"{r['multi_sensor_incidents']}; with merge_onset_s = 0 (any overlap in a zone merges): "
          f"{lit['incidents_covering_several_events']} incidents cover several events (precision "
          f"{lit['incident_precision']:.2f}, kind accuracy {lit['kind_accuracy']:.2f})")
    print(f"tracker: {t['batches']} batches of event time, {t['batch_ms_mean']:.1f} ms mean / {t['batch_ms_max']:.1f} ms max "
          f"per batch, state {t['state_bytes']} bytes after the last batch, replayed batches differing: {t['replay_mismatches']}")
    print(f"alarm load (test week): {lo['incidents']} incidents, {lo['incidents_per_day']} per day, most in an hour "
          f"{lo['most_in_an_hour']}, busiest 10 min {lo['busiest_window']}, floods {lo['floods']}, chattering "
          f"{lo['chattering_sensors']}, stale {lo['stale_incidents']}, within budget: {lo['within_budget']}")


def targets(runs: list[dict], demo: dict) -> dict:
    out = {}
    for role in ("tuning", "held-out"):
        rs = [r for r in runs if r["role"] == role]
        if not rs:
            continue
        agg = {k: min(r["metrics"][k] for r in rs) for k in ("incident_precision", "incident_recall", "kind_accuracy")}
        agg["faults_as_leak_or_burst"] = max(r["metrics"]["faults_as_leak_or_burst"] for r in rs)
        for k, v in agg.items():
            goal = TARGETS[k]
            met = v <= goal if k == "faults_as_leak_or_burst" else v >= goal
            out[f"{k} ({role}, worst seed)"] = {"target": f"{'<=' if k == 'faults_as_leak_or_burst' else '>='} {goal}",
                                                "measured": round(v, 3), "met": bool(met)}
    if demo is None:
        return out
    lo = demo["alarm_load"]
    out["demo feed: most incidents in any hour"] = {"target": f"<= {TARGETS['demo_most_in_an_hour']}",
                                                    "measured": lo["most_in_an_hour"],
                                                    "met": lo["most_in_an_hour"] <= TARGETS["demo_most_in_an_hour"]}
    out["demo feed: floods"] = {"target": "0", "measured": lo["floods"], "met": lo["floods"] == 0}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="7,11,13", help=f"simulation seeds (tuning seed {TUNING_SEED}; default 7,11,13)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and one seed, for a smoke test")
    ap.add_argument("--chunk-s", type=int, default=3600, help="event time per micro-batch (default 3600)")
    ap.add_argument("--json", default="reports/incidents_synthetic.json", help="where to write the figures")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                    help="change settings for this run (repeatable), e.g. --set incidents.open_severity=2.0")
    args = ap.parse_args(argv)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    t_run = time.time()
    quick = ["model.epochs=2", "window.length=16", "model.units=8"] if args.quick else []
    settings = load_settings(None, quick + ["train.report=false"] + args.overrides)
    sizes = ({"sensors": 4, "train_days": 5, "test_days": 2, "demo_days": 1} if args.quick else
             {"sensors": 20, "train_days": 14, "test_days": 7, "demo_days": 3})
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.quick:
        seeds = seeds[:1]
    inc = settings.incidents
    print(f"incident settings: merge_gap_s {inc.merge_gap_s}, quiet_s {inc.quiet_s}, merge_onset_s {inc.merge_onset_s}, "
          f"merge_distance_m {inc.merge_distance_m:g}, open_severity {inc.open_severity:g}, open_readings "
          f"{inc.open_readings}, persistence {settings.threshold.persistence_m} of {settings.threshold.persistence_n}; "
          f"micro-batches of {args.chunk_s} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="sentinel-incidents-"))
    runs, demo = [], None
    try:
        for seed in seeds:
            r = seed_run(seed, settings, sizes, work, args.chunk_s)
            print_seed(r)
            if seed == TUNING_SEED:  # the demo feed is seed 7's network
                demo = demo_run(r["bundle"], settings, sizes, args.chunk_s)
            runs.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if demo is not None:
        print_demo(demo, sizes)
    result = {"settings": {"incidents": dataclasses.asdict(settings.incidents),
                           "persistence": [settings.threshold.persistence_m, settings.threshold.persistence_n],
                           "chunk_s": args.chunk_s},
              "seeds": [{k: v for k, v in r.items() if k != "bundle"} for r in runs],
              "demo": None if demo is None else {k: v for k, v in demo.items() if k != "markdown"}}
    result["targets"] = targets(runs, demo)
    print("targets:")
    for key, t in result["targets"].items():
        print(f"  {'met    ' if t['met'] else 'NOT MET'} {key}: {t['measured']} (target {t['target']})")
    print(f"\nrun time {time.time() - t_run:.0f} s")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    print(f"figures written to {args.json}")
    return 0


def print_demo(demo: dict, sizes: dict) -> None:
    dm = demo["metrics"]
    print(f"\ndemo feed ({sizes['demo_days']} days, {demo['episodes']} episodes): {demo['flagged_readings']} flagged readings "
          f"-> {demo['incidents']} incidents (precision {dm['incident_precision']:.2f}, recall {dm['incident_recall']:.2f}, "
          f"kind accuracy {dm['kind_accuracy']:.2f})")
    print(demo["markdown"])


if __name__ == "__main__":
    sys.exit(main())
