"""``sentinel report``: per-sensor anomaly plots and a summary page from any store's rows."""
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


def write_report(frame: pd.DataFrame, out_dir: str | Path, history: pd.DataFrame | None = None,
                 features: list[str] | None = None, source: str = "", max_sensors: int = 50) -> dict:
    """Draw one PNG per sensor with anomalies and summary.md + summary.png into ``out_dir``."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # ids in scripts the default font lacks: boxes, not warnings
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        return _write_report(plt, frame, out_dir, history, features, source, max_sensors)


def _write_report(plt, frame, out_dir, history, features, source, max_sensors) -> dict:
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
