"""Sentences for operators: why a reading is an anomaly, and what an incident is.

Anomaly: ``PT-0007: 35.1 m read, 41.2 m expected (−6.1 m, drop); error in the newest 4 of 32
steps`` (multivariate models add each feature's share of the error). Incident: kind and zone,
sensors ranked by their share, the first sensor and when, the biggest deviation, and why the
kind. Units come from the bundle manifest (``mca``, metres of water column, is shown as ``m``).
Pure text from numbers the scorer and the tracker already hold.
"""
from __future__ import annotations

import math

import pandas as pd

UNIT_SYMBOLS = {"mca": "m", "mwc": "m", "m": "m", "mh2o": "m", "bar": "bar", "kpa": "kPa", "psi": "psi"}
KIND_NAMES = {"leak": "Leak", "burst": "Burst", "sensor_fault": "Sensor fault",
              "operational": "Operational change", "unknown": "Anomaly of unknown kind"}
MAX_LISTED_SENSORS = 5
MINUS = "\u2212"  # a real minus sign, as operators read it in reports


def unit_symbol(units: str | None) -> str:
    """The unit as shown next to a number (``mca`` -> ``m``; unknown units as given)."""
    if not units:
        return ""
    return UNIT_SYMBOLS.get(units.lower(), units)


def number(v: float) -> str:
    """One decimal for readings of 1 and more, three significant digits below."""
    if v is None or not math.isfinite(v):
        return "?"
    if abs(v) >= 1 or v == 0:
        text = f"{v:.1f}"
    else:
        text = f"{v:.3g}"
    return text.replace("-", MINUS)


def signed(v: float) -> str:
    """A deviation with its sign: ``−6.1``, ``+2.0``."""
    text = number(v)
    return text if text.startswith(MINUS) or text == "?" else "+" + text


def direction(dev: float | None) -> str:
    """``drop`` for a reading below its expected value, ``rise`` above it."""
    if dev is None:
        return ""
    return "drop" if dev < 0 else "rise"


def _with_unit(text: str, sym: str) -> str:
    return f"{text} {sym}" if sym else text


def deviation_phrase(observed, expected, dev, units: str | None, feature: str | None = None) -> str:
    """``35.1 m read, 41.2 m expected (−6.1 m, drop)``, the feature named first when given."""
    sym = unit_symbol(units)
    lead = f"{feature} " if feature else ""
    if observed is None or expected is None or dev is None:
        return f"{lead}deviation unknown"
    return (f"{lead}{_with_unit(number(observed), sym)} read, {_with_unit(number(expected), sym)} expected "
            f"({_with_unit(signed(dev), sym)}, {direction(dev)})")


def shares_phrase(shares: dict[str, float], limit: int = 3) -> str:
    """``pressure 72 %, flow 28 %``: the largest shares first."""
    total = sum(shares.values()) or 1.0
    ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return ", ".join(f"{f} {100 * v / total:.0f} %" for f, v in ranked)


def anomaly_sentence(row: dict, features: list[str], units: str | None, window_length: int) -> str:
    """The explanation of one flagged reading.

    Args:
        row: ``sensor_id`` and, where known, ``observed``/``expected``/``deviation`` of the top
            ``feature``, ``error_steps``, ``shares`` ({feature: share}) and ``severity``.
        features: the model's features (a multivariate model names them and their shares).
        units: the features' units.
        window_length: W.
    """
    multi = len(features) > 1
    text = f"{row['sensor_id']}: " + deviation_phrase(row.get("observed"), row.get("expected"), row.get("deviation"),
                                                      units, row.get("feature") if multi else None)
    steps = row.get("error_steps")
    if steps:
        text += f"; error in the newest {int(steps)} of {int(window_length)} steps"
    if multi and row.get("shares"):
        text += "; error by feature: " + shares_phrase(row["shares"])
    sev = row.get("severity")
    if sev is not None and math.isfinite(sev):
        text += f"; severity {sev:.1f}"
    return text


def _when(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def incident_sentence(inc, units: str | None) -> str:
    """The explanation of an incident (a ``tracker.Incident``; its kind already classified)."""
    ranked = inc.ranked()
    n = len(ranked)
    kind = KIND_NAMES.get(inc.kind, inc.kind)
    where = f"zone {inc.zone}" if inc.zone else "no zone"
    if n == 1:
        head = f"{kind} at {inc.first_sensor} ({where})"
    else:
        listed = ", ".join(f"{sid} {100 * share:.0f} %" for sid, _, share in ranked[:MAX_LISTED_SENSORS])
        more = f" and {n - MAX_LISTED_SENSORS} more" if n > MAX_LISTED_SENSORS else ""
        head = f"{kind} in {where}: {n} sensors ({listed}{more})"
    parts = [head, f"first {inc.first_sensor} at {_when(inc.opened_at)}"]
    worst = max(ranked, key=lambda r: (abs(r[1].dev_peak), r[0] == inc.first_sensor))
    s = worst[1]
    if s.observed_peak is not None and s.expected_peak is not None:
        feature = s.peak_feature if s.features and len(s.features) > 1 else None
        parts.append(f"biggest deviation {worst[0]}: "
                     + deviation_phrase(s.observed_peak, s.expected_peak, s.dev_peak, units, feature))
    feats: dict[str, float] = {}
    for _, t, _ in ranked:
        for f, v in t.features.items():
            feats[f] = feats.get(f, 0.0) + v
    if len(feats) > 1:
        parts.append("error by feature: " + shares_phrase(feats))
    parts.append(f"{inc.readings} flagged readings, peak severity {inc.peak_severity:.1f}")
    if inc.kind_reason:
        parts.append(f"why {inc.kind.replace('_', ' ')}: {inc.kind_reason}")
    return "; ".join(parts)
