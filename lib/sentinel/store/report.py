"""``sentinel report``: per-sensor anomaly plots and a summary page from any store's rows.

``summary.md`` holds the anomalies per sensor, zone and hour, the incidents of the period
(when given) and, when the caller passes one, an alarm-load section (``alarm_load``: a dict of
figures, e.g. from ``sentinel.incidents.load``); :func:`report_json` is the same as one JSON
document (``sentinel report --json FILE``).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from sentinel.store.query import _iso, _printable


def safe_name(sensor_id: str) -> str:
    """A file name for a sensor's plot: ASCII slug + hash, never a path (``../../etc`` stays put)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(sensor_id)).strip("_")[:48] or "sensor"
    digest = hashlib.sha1(str(sensor_id).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"sensor-{slug}-{digest}.png"


def _mpl_text(s) -> str:
    """Plain text for matplotlib: '$' would start mathtext, control characters are escaped."""
    return _printable(str(s)).replace("$", r"\$")


def _md(s) -> str:
    """A markdown table cell: pipes, backticks, HTML and line breaks neutralised."""
    s = _printable("" if s is None else str(s))
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("`", "\\`"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*"),
                 ("_", "\\_"), ("[", "\\["), ("]", "\\]")):
        s = s.replace(a, b)
    return s


def summarise(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Anomalies per sensor, per zone and per hour (UTC)."""
    if frame.empty:
        empty = pd.DataFrame(columns=["anomalies"])
        return {"sensor": empty, "zone": empty, "hour": empty}
    f = frame.assign(zone=frame["zone"].fillna("(no zone)"), hour=frame["event_time"].dt.floor("h"))
    per_sensor = f.groupby("sensor_id").agg(zone=("zone", "first"), anomalies=("severity", "size"),
                                            max_severity=("severity", "max"), mean_severity=("severity", "mean"),
                                            first=("event_time", "min"), last=("event_time", "max"))
    per_sensor = per_sensor.sort_values(["anomalies", "max_severity"], ascending=False)
    per_zone = f.groupby("zone").agg(anomalies=("severity", "size"), sensors=("sensor_id", "nunique"),
                                     max_severity=("severity", "max")).sort_values("anomalies", ascending=False)
    per_hour = f.groupby("hour").agg(anomalies=("severity", "size"), sensors=("sensor_id", "nunique"))
    return {"sensor": per_sensor, "zone": per_zone, "hour": per_hour}


MAX_INCIDENT_ROWS = 50  # incidents listed in summary.md (newest first); counts cover all


def write_report(frame: pd.DataFrame, out_dir: str | Path, history: pd.DataFrame | None = None,
                 features: list[str] | None = None, source: str = "", max_sensors: int = 50,
                 incidents: pd.DataFrame | None = None, alarm_load: dict | None = None,
                 alarm_load_md: str | None = None) -> dict:
    """Draw one PNG per sensor with anomalies and summary.md + summary.png into ``out_dir``.

    Args:
        incidents: the period's incidents (``StoreClient.incidents`` columns); if not given, the
            page has no incidents section.
        alarm_load: figures for an "Alarm load" section (name -> number or text); none if not given.
        alarm_load_md: that section already rendered (``sentinel.incidents.load.markdown``); if
            not given, the figures are listed as a plain table.
    """
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # ids in scripts the default font lacks: boxes, not warnings
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        return _write_report(plt, frame, out_dir, history, features, source, max_sensors, incidents, alarm_load,
                             alarm_load_md)


def _write_report(plt, frame, out_dir, history, features, source, max_sensors, incidents=None,
                  alarm_load=None, alarm_load_md=None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = features or ["pressure"]
    tables = summarise(frame)
    sensor_files: dict[str, str] = {}
    top = list(tables["sensor"].index[:max_sensors]) if len(frame) else []
    for sid in top:
        rows = frame[frame["sensor_id"] == sid]
        hist = history[history["sensor_id"] == sid] if history is not None else None
        name = safe_name(sid)
        _plot_sensor(plt, sid, rows, hist if hist is not None and len(hist) else None, features, out / name)
        sensor_files[sid] = name
    _plot_summary(plt, tables, out / "summary.png")
    md = _summary_md(frame, tables, sensor_files, source, history is not None, max_sensors)
    md += _incidents_md(incidents)
    if alarm_load_md:
        md += "\n" + alarm_load_md.rstrip("\n") + "\n"
    else:
        md += _alarm_load_md(alarm_load)
    (out / "summary.md").write_text(md, encoding="utf-8")
    return {"summary_md": out / "summary.md", "summary_png": out / "summary.png",
            "sensors": {sid: out / n for sid, n in sensor_files.items()}}


def _plot_sensor(plt, sid, rows: pd.DataFrame, hist: pd.DataFrame | None, features: list[str], path: Path) -> None:
    sev = rows["severity"].to_numpy()
    norm = plt.Normalize(vmin=1.0, vmax=max(float(sev.max()), 1.0001))
    if hist is not None:
        fig, (ax, ax_sev) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, height_ratios=[3, 1.3],
                                         layout="constrained")
        feat = next((f for f in features if f in hist), None)
        ax.plot(hist["event_time"], hist[feat], lw=0.7, color="0.35", label=_mpl_text(feat))
        y = [json.loads(v).get(feat, math.nan) for v in rows["values"]]
        pts = ax.scatter(rows["event_time"], y, c=sev, cmap="autumn_r", norm=norm, s=26, zorder=3,
                         edgecolors="k", linewidths=0.3, label="anomaly")
        ax.set_ylabel(_mpl_text(feat))
        ax.legend(loc="upper left", fontsize=8)
    else:
        fig, ax_sev = plt.subplots(1, 1, figsize=(11, 3.5), layout="constrained")
        ax = None
    pts2 = ax_sev.scatter(rows["event_time"], sev, c=sev, cmap="autumn_r", norm=norm, s=18,
                          edgecolors="k", linewidths=0.3)
    ax_sev.axhline(1.0, color="tab:blue", lw=0.8, ls="--", label="threshold (severity 1)")
    ax_sev.set_ylabel("severity")
    ax_sev.legend(loc="upper left", fontsize=8)
    fig.colorbar(pts if ax is not None else pts2, ax=[a for a in (ax, ax_sev) if a is not None], label="severity")
    zone = rows["zone"].iloc[0]
    title = f"{_mpl_text(sid)}" + (f" (zone {_mpl_text(zone)})" if zone else "") + \
        f": {len(rows)} anomalies, max severity {sev.max():.2f}"
    (ax or ax_sev).set_title(title, fontsize=10)
    _date_axis(ax_sev)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _date_axis(ax) -> None:
    import matplotlib.dates as mdates
    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _plot_summary(plt, tables: dict, path: Path) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(11, 11), layout="constrained")
    per_sensor = tables["sensor"].head(30)
    for ax, tab, title in ((axes[0], per_sensor, "anomalies per sensor (top 30)"),
                           (axes[1], tables["zone"], "anomalies per zone")):
        if len(tab):
            labels = [_mpl_text(x)[:24] for x in tab.index]
            ax.bar(range(len(tab)), tab["anomalies"], color="tab:red")
            ax.set_xticks(range(len(tab)), labels, rotation=60, ha="right", fontsize=7)
            ax.set_xlim(-0.6, max(len(tab), 10) - 0.4)  # a few bars stay bar-shaped
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("anomalies")
    ax = axes[2]
    hours = tables["hour"]
    if len(hours):
        ax.bar(hours.index, hours["anomalies"], width=1 / 24, align="edge", color="tab:orange")
        _date_axis(ax)
    ax.set_title("anomalies per hour (UTC)", fontsize=10)
    ax.set_ylabel("anomalies")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _summary_md(frame, tables, sensor_files, source, with_history, max_sensors) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Pressure Sentinel anomaly report", "",
             f"- store: `{_printable(source)}`" if source else "- store: (frame)",
             f"- generated: {now}",
             f"- anomalies: {len(frame)} from {frame['sensor_id'].nunique() if len(frame) else 0} sensors"]
    if len(frame):
        lines.append(f"- event time: {_iso(frame['event_time'].min())} .. {_iso(frame['event_time'].max())}")
    lines += ["", "![summary](summary.png)", "", "## Anomalies per sensor", ""]
    if len(frame):
        lines += ["| sensor | zone | anomalies | max severity | mean severity | first | last | plot |",
                  "|---|---|---:|---:|---:|---|---|---|"]
        for sid, r in tables["sensor"].iterrows():
            plot = f"[png]({sensor_files[sid]})" if sid in sensor_files else ""
            lines.append(f"| {_md(sid)} | {_md(r['zone'])} | {int(r['anomalies'])} | {r['max_severity']:.2f} | "
                         f"{r['mean_severity']:.2f} | {_iso(r['first'])} | {_iso(r['last'])} | {plot} |")
        if len(tables["sensor"]) > max_sensors:
            lines += ["", f"Plots for the {max_sensors} sensors with most anomalies only (--max-sensors)."]
        lines += ["", "## Anomalies per zone", "", "| zone | anomalies | sensors | max severity |", "|---|---:|---:|---:|"]
        for zone, r in tables["zone"].iterrows():
            lines.append(f"| {_md(zone)} | {int(r['anomalies'])} | {int(r['sensors'])} | {r['max_severity']:.2f} |")
        lines += ["", "## Anomalies per hour (UTC)", "", "| hour | anomalies | sensors |", "|---|---:|---:|"]
        for hour, r in tables["hour"].iterrows():
            lines.append(f"| {hour.strftime('%Y-%m-%d %H:00')} | {int(r['anomalies'])} | {int(r['sensors'])} |")
    else:
        lines.append("No anomalies match the filters.")
    lines += ["", "Severity = score / threshold (1 = at the alarm threshold)."
              + (" Sensor plots draw the readings from --history with anomalies on them." if with_history else "")]
    return "\n".join(lines) + "\n"


def _incidents_md(incidents: pd.DataFrame | None) -> str:
    if incidents is None:
        return ""
    lines = ["", "## Incidents", ""]
    if not len(incidents):
        return "\n".join(lines + ["No incidents match the filters."]) + "\n"
    by_status = incidents["status"].value_counts()
    by_kind = incidents["kind"].value_counts()
    lines.append(f"- incidents: {len(incidents)} ("
                 + ", ".join(f"{_md(k)} {int(n)}" for k, n in sorted(by_status.items())) + "; "
                 + ", ".join(f"{_md(k)} {int(n)}" for k, n in sorted(by_kind.items())) + ")")
    lines.append(f"- muted: {int(incidents['muted'].sum())}, labelled: {int(incidents['label'].notna().sum())}")
    lines += ["", "| incident | status | kind | zone | first sensor | opened | last seen | peak severity | readings "
                  "| muted | label |", "|---|---|---|---|---|---|---|---:|---:|---|---|"]
    for r in incidents.head(MAX_INCIDENT_ROWS).itertuples(index=False):
        lines.append(f"| {_md(r.incident_id)} | {_md(r.status)} | {_md(r.kind)} | {_md(r.zone)} | "
                     f"{_md(r.first_sensor)} | {_iso(r.opened_at)} | {_iso(r.last_seen)} | {r.peak_severity:.2f} | "
                     f"{int(r.readings)} | {'yes' if r.muted else ''} | {_md(r.label)} |")
    if len(incidents) > MAX_INCIDENT_ROWS:
        lines += ["", f"The {MAX_INCIDENT_ROWS} newest of {len(incidents)} incidents are listed."]
    return "\n".join(lines) + "\n"


def _alarm_load_md(alarm_load: dict | None) -> str:
    if not alarm_load:
        return ""
    lines = ["", "## Alarm load", "", "| figure | value |", "|---|---:|"]
    for k, v in alarm_load.items():
        if not isinstance(v, (dict, list)):
            lines.append(f"| {_md(k)} | {_md(f'{v:.3g}' if isinstance(v, float) else v)} |")
    return "\n".join(lines) + "\n"


def report_json(frame: pd.DataFrame, incidents: pd.DataFrame | None = None, alarm_load: dict | None = None,
                source: str = "") -> dict:
    """The report's figures as one JSON-ready dict: anomaly counts per sensor and zone, the
    incidents (counts and records) and the alarm load (None when not computed)."""
    tables = summarise(frame)

    def rows(tab, key):
        out = []
        for idx, r in tab.iterrows():
            d = {key: idx}
            for c, v in r.items():
                d[c] = _iso(v) if isinstance(v, pd.Timestamp) else (v.item() if hasattr(v, "item") else v)
            out.append(d)
        return out

    doc = {"store": source, "generated": _iso(pd.Timestamp(datetime.now(timezone.utc))),
           "anomalies": int(len(frame)), "sensors": int(frame["sensor_id"].nunique()) if len(frame) else 0,
           "per_sensor": rows(tables["sensor"], "sensor_id") if len(frame) else [],
           "per_zone": rows(tables["zone"], "zone") if len(frame) else [], "incidents": None,
           "alarm_load": alarm_load}
    if incidents is not None:
        recs = []
        for r in incidents.to_dict("records"):
            d = {}
            for k, v in r.items():
                if isinstance(v, pd.Timestamp) or v is pd.NaT:
                    d[k] = _iso(v) or None
                elif k == "sensors":
                    d[k] = json.loads(v) if isinstance(v, str) else v
                elif isinstance(v, float) and math.isnan(v):
                    d[k] = None
                else:
                    d[k] = v.item() if hasattr(v, "item") else v
            recs.append(d)
        doc["incidents"] = {"total": len(incidents),
                            "by_status": {k: int(n) for k, n in incidents["status"].value_counts().items()},
                            "by_kind": {k: int(n) for k, n in incidents["kind"].value_counts().items()},
                            "items": recs}
    return doc
