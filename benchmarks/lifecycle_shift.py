"""A lasting demand shift with and without retraining: false alarms per day and events found.

    .venv/bin/python benchmarks/lifecycle_shift.py [--shift 0.15] [--json out.json]
    .venv/bin/python benchmarks/lifecycle_shift.py --network Net1 [--leaks-per-week 3]

Timeline (days from the start of the simulated series; defaults):

    0 ........ 21 (history: the champion trains on it, labelled)
    21 ....... 28 live, as before                 -> "before the shift"
    28 ....... 35 live, demand +15 % from day 28  -> "after the shift": the champion alone
    35 ....... 42 live, shifted                   -> "after retrain": champion, or the challenger
                                                     `sentinel retrain` trained on day 35 if promoted

The champion scores the whole live period with ``score_table`` (the stream's code); its alarms
are grouped into incidents (alarm runs at most W readings apart, as the stream's incidents). On
day 35 ``lifecycle.retrain.retrain`` runs on the last ``lifecycle.window_days`` of readings with
``--promote auto``, in three variants:

- ``no retrain``: the champion keeps scoring;
- ``retrain, labelled``: an ideal operator labelled every incident before day 35 (``confirmed``
  when it overlaps an injected episode, else ``false_alarm``, so those readings stay in training);
- ``retrain, unlabelled``: nobody labelled anything (every incident's readings left out);
- ``retrain, labelled, recall tol 0.15``: labelled, with ``lifecycle.recall_tolerance = 0.15``
  (the labelled incidents are the champion's own alarms, so it finds all of them by construction).

For each retrain variant the challenger's figures on the last phase are also given when it was
not promoted (what promoting it by hand would have done).

Figures per phase: false alarms per day (alarm episodes touching no injected episode, network-wide,
and per sensor-day), events found / injected (all kinds, and leaks). ``--simulator MODULE:FUNC``
runs another simulator; it must accept ``simulate(n_sensors=, days=, interval_s=, seed=, start=,
anomalies_per_sensor_week=, demand_shift=, shift_at=)`` and return an object with ``readings``
(sensor_id, timestamp, pressure, is_anomaly, anomaly_type) and ``episodes`` (sensor_id,
anomaly_type, start, end), as ``sentinel.ingest.synthetic.simulate`` does. ``--quick`` shrinks it
for a smoke run. Prints a table; ``--json`` writes every figure.

``--network NAME`` runs the WNTR/EPANET network simulator instead (``sentinel.ingest.network``:
a network WNTR ships, such as Net1, ky4 or Net6, or an .inp file; hydraulics cached in
``.cache/network-sims``) with the demand shift of ``simulate_network(demand_shift=, shift_at=)``.
Its events are network-wide, so ``--leaks-per-week``, ``--faults-per-week`` and
``--operational-per-week`` set their rates and ``--anomalies`` is not used; ``--sensors`` defaults
to the network's own count. A leak there is one event seen by several sensors (an episode per
affected sensor): besides episodes, leaks and bursts are also counted as events, found when any
of their episodes is.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from sentinel.config import load_settings  # noqa: E402
from sentinel.detect import evaluate  # noqa: E402
from sentinel.detect.batch import score_table  # noqa: E402
from sentinel.detect.model import load_bundle  # noqa: E402
from sentinel.detect.training import fit_bundle  # noqa: E402
from sentinel.lifecycle.compare import internal_settings  # noqa: E402
from sentinel.lifecycle.registry import Registry  # noqa: E402
from sentinel.lifecycle.retrain import retrain  # noqa: E402
from sentinel.lifecycle.sources import FLAG_COL, WindowData  # noqa: E402

START = pd.Timestamp("2026-01-05T00:00:00Z")
QUICK = ["window.length=16", "window.stride=2", "model.units=12", "model.latent=4", "model.epochs=4",
         "train.report=false"]


def load_simulator(spec: str):
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func or "simulate")


def network_simulator(network: str, leaks_per_week: float, faults_per_week: float, operational_per_week: float):
    """``simulate_network`` of ``network`` behind the signature above (``anomalies_per_sensor_week``
    unused: the network's event rates are given here; ``n_sensors`` None = the network's default)."""
    from sentinel.ingest.network import simulate_network

    def simulate(n_sensors=None, days=42.0, interval_s=300, seed=7, start=None, anomalies_per_sensor_week=None,
                 demand_shift=0.0, shift_at=None):
        return simulate_network(network, days=days, interval_s=interval_s, seed=seed, start=start or START.isoformat(),
                                sensors=n_sensors,
                                leaks_per_week=leaks_per_week, faults_per_week=faults_per_week,
                                operational_per_week=operational_per_week, demand_shift=demand_shift,
                                shift_at=shift_at)
    return simulate


def _episodes_found(eps: pd.DataFrame, f: pd.DataFrame) -> np.ndarray:
    """Per episode: a flag of its sensor inside [start, end] (``evaluate.episode_metrics``' rule)."""
    by_sensor = {sid: np.sort(g["timestamp"].astype("int64").to_numpy()) for sid, g in f.groupby("sensor_id")}
    out = []
    for ep in eps.itertuples(index=False):
        ts = by_sensor.get(ep.sensor_id, np.empty(0, dtype=np.int64))
        out.append(np.searchsorted(ts, ep.end.value, side="right") > np.searchsorted(ts, ep.start.value, side="left"))
    return np.array(out, dtype=bool)


def score(bundle, readings: pd.DataFrame, settings, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Flags of ``bundle`` on readings in [start, end), windows fed by the readings before start."""
    span = pd.Timedelta(seconds=int(bundle.manifest["window"]["interval_s"])) * bundle.length * 2
    part = readings[(readings["event_time"] >= start - span) & (readings["event_time"] < end)].reset_index(drop=True)
    scored = score_table(bundle, part[["sensor_id", "event_time", *bundle.features]], internal_settings(settings))
    keep = (part["event_time"] >= start).to_numpy()
    out = part.loc[keep, ["sensor_id", "event_time"]].copy()
    out[FLAG_COL] = scored["is_anomaly"].to_numpy()[keep].astype(np.int8)
    return out.reset_index(drop=True)


def phase_figures(flags: pd.DataFrame, episodes: pd.DataFrame, start, end, tol: pd.Timedelta, sensors: int) -> dict:
    """False alarms per day and events found for alarms in [start, end)."""
    f = flags[(flags["event_time"] >= start) & (flags["event_time"] < end) & (flags[FLAG_COL] == 1)]
    f = f.rename(columns={"event_time": "timestamp"})[["sensor_id", "timestamp"]]
    eps = episodes[(episodes["start"] >= start) & (episodes["start"] < end)]
    days = (end - start) / pd.Timedelta(days=1)
    m = evaluate.episode_metrics(episodes, f, tol, tol, days * sensors)  # false alarms: against every episode
    found = evaluate.episode_metrics(eps, f, tol, tol) if len(eps) else None
    none = {"episodes": 0, "found": 0}
    leaks = found["per_type"].get("leak", none) if found else none
    bursts = found["per_type"].get("burst", none) if found else none
    out = {"days": round(days, 2), "false_alarms": m["false_episodes"],
           "false_alarms_per_day": m["false_episodes"] / days,
           "false_alarms_per_sensor_day": m["false_alarms_per_sensor_day"],
           "events": int(len(eps)), "events_found": found["episodes_found"] if found else 0,
           "leaks": leaks["episodes"], "leaks_found": leaks["found"],
           "bursts": bursts["episodes"], "bursts_found": bursts["found"]}
    if "event_id" in eps:  # network simulator: one leak = one event over its affected sensors' episodes
        lk = eps[eps["anomaly_type"].isin(["leak", "burst"])]
        hit = pd.Series(_episodes_found(lk, f), index=lk.index).groupby(lk["event_id"]).any()
        out.update(leak_events=hit.size, leak_events_found=int(hit.sum()))
    return out


def incidents_from(flags: pd.DataFrame, episodes: pd.DataFrame, gap: pd.Timedelta, tol: pd.Timedelta,
                   labelled: bool) -> pd.DataFrame:
    """Alarm runs -> incident records; labels from the truth when ``labelled`` (an ideal operator)."""
    f = flags[flags[FLAG_COL] == 1].rename(columns={"event_time": "timestamp"})
    det = evaluate.detected_episodes(f[["sensor_id", "timestamp"]], gap)
    rows = []
    for i, d in enumerate(det.itertuples(index=False)):
        t = episodes[episodes["sensor_id"] == d.sensor_id]
        real = bool(((d.start <= t["end"] + tol) & (d.end >= t["start"])).any())
        rows.append({"incident_id": f"sim-{i}", "sensors": json.dumps([{"sensor_id": d.sensor_id}]),
                     "first_sensor": d.sensor_id, "opened_at": d.start, "last_seen": d.end, "closed_at": None,
                     "label": ("confirmed" if real else "false_alarm") if labelled else None})
    return pd.DataFrame(rows, columns=["incident_id", "sensors", "first_sensor", "opened_at", "last_seen",
                                       "closed_at", "label"])


def _rec(f: dict) -> str:
    return "n/a" if f["recall"] is None else f"{f['incidents_found']}/{f['incidents']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--simulator", default="sentinel.ingest.synthetic:simulate", help="MODULE:FUNCTION (default: synthetic)")
    ap.add_argument("--network", metavar="NAME|FILE.inp",
                    help="run the WNTR network simulator on this network (Net1, ky4, Net6 ...) instead of --simulator")
    ap.add_argument("--leaks-per-week", type=float, default=3.0,
                    help="--network: leaks and bursts per week (default: 3)")
    ap.add_argument("--faults-per-week", type=float, default=2.0, help="--network: sensor faults per week (default: 2)")
    ap.add_argument("--operational-per-week", type=float, default=1.0,
                    help="--network: pump schedule changes and valve closures per week (default: 1)")
    ap.add_argument("--sensors", type=int, default=None, help="default: 10; --network: the network's own count")
    ap.add_argument("--history-days", type=float, default=21.0)
    ap.add_argument("--phase-days", type=float, default=7.0, help="length of each live phase (default: 7)")
    ap.add_argument("--shift", type=float, default=0.15, help="relative demand change (default: 0.15 = +15 %%)")
    ap.add_argument("--anomalies", type=float, default=2.0, help="episodes per sensor-week (default: 2)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    ap.add_argument("--quick", action="store_true", help="tiny network and model: a smoke run of a minute or two")
    ap.add_argument("--json", metavar="FILE", help="write the figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.sensors, args.history_days, args.phase_days = args.sensors or 4, 8.0, 3.0
    if args.sensors is None and not args.network:
        args.sensors = 10
    overrides = (QUICK if args.quick else ["train.report=false"]) + args.overrides
    if args.quick:
        overrides += ["lifecycle.window_days=10", "lifecycle.holdout_days=1.5"]
    settings = load_settings(None, overrides)
    lc = settings.lifecycle
    t_run = time.time()
    live = START + pd.Timedelta(days=args.history_days)
    shift_at, retrain_at = live + pd.Timedelta(days=args.phase_days), live + pd.Timedelta(days=2 * args.phase_days)
    end = live + pd.Timedelta(days=3 * args.phase_days)
    if args.network:
        args.simulator = f"network {args.network}"
        simulate = network_simulator(args.network, args.leaks_per_week, args.faults_per_week, args.operational_per_week)
    else:
        simulate = load_simulator(args.simulator)
    net = simulate(n_sensors=args.sensors, days=(end - START) / pd.Timedelta(days=1), interval_s=settings.window.interval_s,
                   seed=args.seed, start=START.isoformat(), anomalies_per_sensor_week=args.anomalies,
                   demand_shift=args.shift, shift_at=shift_at.isoformat())
    readings = net.readings.rename(columns={"timestamp": "event_time"})
    readings["event_time"] = pd.to_datetime(readings["event_time"], utc=True)
    readings = readings.sort_values(["sensor_id", "event_time"]).reset_index(drop=True)
    episodes = net.episodes.copy()
    for c in ("start", "end"):
        episodes[c] = pd.to_datetime(episodes[c], utc=True)
    args.sensors = int(readings["sensor_id"].nunique())  # the network simulator chooses its own count
    rates = (f" (leaks {args.leaks_per_week:g}, faults {args.faults_per_week:g}, operational "
             f"{args.operational_per_week:g} a week; {len(net.events)} events)" if args.network else "")
    print(f"{args.simulator}: {args.sensors} sensors, {len(episodes)} episodes{rates}; simulated in "
          f"{time.time() - t_run:.0f} s; demand {args.shift:+.0%} from "
          f"{shift_at:%Y-%m-%d}; retrain on {retrain_at:%Y-%m-%d} (window {lc.window_days:g} d, "
          f"held out {lc.holdout_days:g} d, --promote auto)", flush=True)

    work = Path(tempfile.mkdtemp(prefix="lifecycle-shift-"))
    history = readings[readings["event_time"] < live]
    t0 = time.time()
    champion_dir, _ = fit_bundle(history, settings, work / "champion", label_col="is_anomaly")
    champion = load_bundle(str(champion_dir))
    print(f"champion trained in {time.time() - t0:.0f} s", flush=True)
    interval = pd.Timedelta(seconds=settings.window.interval_s)
    tol = interval * champion.length
    champ_flags = score(champion, readings, settings, START + tol, end)
    phases = {"before shift": (live, shift_at), "after shift": (shift_at, retrain_at), "after retrain": (retrain_at, end)}

    results = {"settings": {"simulator": args.simulator, "sensors": args.sensors, "shift": args.shift,
                            "network_rates": {"leaks_per_week": args.leaks_per_week,
                                              "faults_per_week": args.faults_per_week,
                                              "operational_per_week": args.operational_per_week}
                            if args.network else None,
                            "seed": args.seed, "shift_at": str(shift_at), "retrain_at": str(retrain_at),
                            "window_days": lc.window_days, "holdout_days": lc.holdout_days,
                            "overrides": overrides}, "variants": {}}
    results["variants"]["no retrain"] = {p: phase_figures(champ_flags, episodes, a, b, tol, args.sensors)
                                         for p, (a, b) in phases.items()}
    variants = (("retrain, labelled", True, {}), ("retrain, unlabelled", False, {}),
                ("retrain, labelled, recall tol 0.15", True, {"lifecycle.recall_tolerance": 0.15}))
    for name, labelled, extra in variants:
        s = settings.replace(**extra) if extra else settings
        reg = Registry(work / name.replace(", ", "-").replace(" ", "_") / "pressure")
        reg.add_version(champion_dir, champion.version)
        reg.promote(champion.version, "benchmark")
        seen = champ_flags[champ_flags["event_time"] < retrain_at]
        window = readings[readings["event_time"] < retrain_at].merge(seen, on=["sensor_id", "event_time"], how="left")
        window[FLAG_COL] = window[FLAG_COL].fillna(0).astype(np.int8)
        data = WindowData(window[["sensor_id", "event_time", *settings.data.features, FLAG_COL]],
                          incidents=incidents_from(seen, episodes, tol, tol, labelled),  # the stream's incidents
                          source=f"{args.simulator} seed {args.seed}")
        t0 = time.time()
        res = retrain(data, s, reg, "auto", until=retrain_at - interval, by="benchmark")
        challenger = load_bundle(str(Path(reg.ref(res.version))))
        ch_flags = pd.concat([champ_flags[champ_flags["event_time"] < retrain_at],
                              score(challenger, readings, s, retrain_at, end)])
        flags = ch_flags if res.promoted else champ_flags
        results["variants"][name] = {p: phase_figures(flags, episodes, a, b, tol, args.sensors) for p, (a, b) in phases.items()}
        a, b = phases["after retrain"]
        results["variants"][name]["challenger after retrain"] = phase_figures(ch_flags, episodes, a, b, tol, args.sensors)
        results["variants"][name]["retrain"] = {"verdict": res.decision.verdict, "promoted": res.promoted,
                                                "reasons": res.decision.reasons, "seconds": round(time.time() - t0),
                                                "champion": res.comparison["champion"],
                                                "challenger": res.comparison["challenger"],
                                                "excluded": res.lineage["excluded"]}
        print(f"{name}: {res.decision.verdict}, {'promoted' if res.promoted else 'not promoted'} "
              f"({'; '.join(res.decision.reasons)}) in {time.time() - t0:.0f} s", flush=True)

    print()
    head = f"{'variant':<36}" + "".join(f"{p + ': FA/day':>24}" for p in phases) + f"{'events found after retrain':>28}{'leaks':>9}"
    print(head)
    for name, v in results["variants"].items():
        c = v["after retrain"]
        cells = "".join(f"{v[p]['false_alarms_per_day']:>15.2f} ({v[p]['false_alarms_per_sensor_day']:.3f})" for p in phases)
        print(f"{name:<36}{cells}{c['events_found']:>20}/{c['events']:<7}{c['leaks_found']:>5}/{c['leaks']:<3}")
        if "retrain" in v:
            r, x = v["retrain"], v["challenger after retrain"]
            print(f"{'':<4}{r['verdict']}, {'promoted' if r['promoted'] else 'not promoted'}: held out, champion "
                  f"{r['champion']['false_alarms_per_sensor_day']:.3f} / challenger {r['challenger']['false_alarms_per_sensor_day']:.3f} "
                  f"FA per sensor-day, recall {_rec(r['champion'])} / {_rec(r['challenger'])}; the challenger after "
                  f"retrain day: {x['false_alarms_per_day']:.2f} FA/day, {x['events_found']}/{x['events']} events")
    after = {n: v["after shift"]["events_found"] + v["after retrain"]["events_found"] for n, v in results["variants"].items()}
    total = results["variants"]["no retrain"]["after shift"]["events"] + results["variants"]["no retrain"]["after retrain"]["events"]
    print("FA/day: false alarm episodes per day over the network (per sensor-day); events found after the shift "
          "(both phases): " + ", ".join(f"{n} {k}/{total}" for n, k in after.items()))
    print("after the shift (both phases), found / injected:")
    for n, v in results["variants"].items():
        a, b = v["after shift"], v["after retrain"]
        line = (f"  {n:<36} episodes {a['events_found'] + b['events_found']}/{a['events'] + b['events']}, "
                f"leak episodes {a['leaks_found'] + b['leaks_found']}/{a['leaks'] + b['leaks']}, "
                f"burst episodes {a['bursts_found'] + b['bursts_found']}/{a['bursts'] + b['bursts']}")
        if "leak_events" in a:
            line += (f", leak+burst events {a['leak_events_found'] + b['leak_events_found']}/"
                     f"{a['leak_events'] + b['leak_events']}")
        print(line)
    print(f"\nrun time {time.time() - t_run:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
