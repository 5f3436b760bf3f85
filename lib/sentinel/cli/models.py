"""``sentinel models list | show VERSION | promote VERSION | rollback | drift``: the registry."""
from __future__ import annotations

import getpass
import json

import pandas as pd

from sentinel.config import ConfigError, Settings

ACTIONS = ("list", "show", "promote", "rollback", "drift")


def add_registry_arg(p) -> None:
    p.add_argument("--registry", metavar="URL",
                   help="models folder or s3://BUCKET/PREFIX holding versions and the 'promoted' pointer "
                        "(default: lifecycle.registry, else model.dir/model.name)")


def add_models_args(p):
    p.add_argument("action", choices=ACTIONS, help="list versions | show one | promote one | roll back to the "
                                                     "previously promoted one | drift of the served one")
    p.add_argument("version", nargs="?", help="the version (a folder name in the registry) for show and promote; "
                                              "for drift: the version to judge (default: the served one)")
    add_registry_arg(p)
    p.add_argument("--by", metavar="NAME", help="who promotes, for the history (default: the user name)")
    p.add_argument("--reason", default="", help="why, for the history")
    p.add_argument("--force", action="store_true",
                   help="promote even a version the running deploy job could not switch to (other features "
                        "or window): it then serves it from its next restart")
    p.add_argument("--store", metavar="URL", help="drift: the store with the scores (default: lifecycle.store, "
                                                  "else the first of sinks.enabled)")
    p.add_argument("--since", metavar="T", help="drift: scores from T (ISO-8601 or 7d ...; default: lifecycle.drift_days ago)")
    p.add_argument("--until", metavar="T", help="drift: scores before T (default: now)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")


def run_models(args, settings: Settings) -> int:
    from sentinel.lifecycle.registry import Registry, registry_url
    reg = Registry(args.registry or registry_url(settings))
    if args.action in ("show", "promote") and not args.version:
        raise ConfigError(f"`sentinel models {args.action}` needs a VERSION: `sentinel models list` shows them")
    if args.action == "list":
        frame = reg.list()
        if args.format == "json":
            print(json.dumps({"registry": reg.url, "promoted": reg.promoted(), "serving": reg.serving(),
                              "versions": json.loads(frame.to_json(orient="records"))}, indent=1))
        else:
            print(format_versions(frame, reg))
    elif args.action == "show":
        info = reg.show(args.version)
        print(json.dumps(info, indent=1, default=str) if args.format == "json" else format_show(info))
    elif args.action in ("promote", "rollback"):
        by = args.by or getpass.getuser()
        rec = (reg.promote(args.version, by, args.reason, force=args.force) if args.action == "promote"
               else reg.rollback(by, args.reason, force=args.force))
        if args.format == "json":
            print(json.dumps(rec, indent=1, default=str))
        elif not rec.get("changed", True):
            print(f"{rec['version']} is already the promoted version of {reg.url}: nothing changed")
        else:
            print(f"{reg.url}: {rec['action']} {rec['version']} (was {rec['previous'] or 'none'}); a running deploy "
                  f"job switches to it between micro-batches")
    else:
        return run_drift(args, settings, reg)
    return 0


def run_drift(args, settings: Settings, reg) -> int:
    from sentinel.lifecycle.drift import drift_report
    from sentinel.store.query import default_store, parse_time
    now = pd.Timestamp.now(tz="UTC")
    store = args.store or settings.lifecycle.store or default_store(settings)
    rep = drift_report(store, reg, settings, parse_time(args.since, now), parse_time(args.until, now), args.version)
    if args.format == "json":
        print(json.dumps(rep, indent=1, default=str))
    else:
        print(rep["markdown"] or rep["summary"]["message"])
    return 0


def format_versions(frame: pd.DataFrame, reg) -> str:
    if frame.empty:
        return f"(no versions in {reg.url}: train one with `sentinel train` or `sentinel retrain`)"
    cols = [("", lambda r: "*" if r.promoted else ""), ("version", lambda r: r.version),
            ("created", lambda r: (r.created_at or "")[:19]), ("parent", lambda r: r.parent or ""),
            ("data", lambda r: f"{str(r.data_start or '')[:10]}..{str(r.data_end or '')[:10]}"),
            ("verdict", lambda r: r.verdict or ""),
            ("false alarms/sensor-day", lambda r: _pair(r.false_alarms_challenger, r.false_alarms_champion)),
            ("recall", lambda r: _pair(r.recall_challenger, r.recall_champion)),
            ("complete", lambda r: "yes" if r.complete else "NO")]
    cells = [[f(r) for _, f in cols] for r in frame.itertuples(index=False)]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(cols, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.append(f"(* = served: {reg.serving()}{'' if reg.promoted() else ', the newest: no pointer yet'}; "
                 f"figures: challenger (champion) on the held-out days)")
    return "\n".join(lines)


def _pair(a, b) -> str:
    def f(x):
        return "" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.3f}"
    return f"{f(a)} ({f(b)})" if f(b) else f(a)


def format_show(info: dict) -> str:
    m = info["manifest"]
    lin, cmp_ = m.get("lineage", {}), m.get("comparison", {})
    lines = [f"version {info['version']} in {info['registry']}" + ("  [served]" if info["promoted"] else ""),
             f"created {m.get('created_at')}, features {m.get('features')}, window {m.get('window', {}).get('length')}",
             f"threshold {m.get('validation', {}).get('threshold')} ({m.get('validation', {}).get('windows')} validation windows)"]
    if info["missing_files"]:
        lines.append(f"INCOMPLETE: lacks {', '.join(info['missing_files'])}")
    if lin:
        w = lin.get("data_window", {})
        lines.append(f"lineage: parent {lin.get('parent')}, data {w.get('start')} .. {w.get('end')} "
                     f"(held out from {w.get('holdout_start')}), fingerprint {lin.get('fingerprint')}, source {lin.get('source')}")
        ex = lin.get("excluded", {})
        lines.append("left out: " + ", ".join(f"{k} {v}" for k, v in ex.items() if v and k != "rows"))
    if cmp_:
        lines.append(f"comparison ({cmp_.get('policy')}): {cmp_.get('verdict')}: {'; '.join(cmp_.get('reasons', []))}")
        for who in ("champion", "challenger"):
            f = cmp_.get(who)
            if f:
                rec = "n/a" if f.get("recall") is None else f"{f['recall']:.3f} ({f['incidents_found']}/{f['incidents']})"
                lines.append(f"  {who:<10} {f['version']}: {f['false_alarms_per_sensor_day']:.3f} false alarms per "
                             f"sensor-day ({f['false_alarms']} on {f['normal_sensor_days']} sensor-days), recall {rec}")
    for h in info["promotions"]:
        lines.append(f"{h.get('action')} {h.get('promoted_at')} by {h.get('promoted_by')}: {h.get('reason', '')}")
    return "\n".join(lines)
