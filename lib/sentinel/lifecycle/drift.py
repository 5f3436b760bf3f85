"""Drift: per sensor, recent scores against the bundle's validation scores.

Training stores each sensor's validation score quantiles (``manifest["validation"]
["score_quantiles"]``, see ``detect.training.score_quantiles``; sensors with few validation
windows use the global ones). For the recent scores of that model version, per sensor:

- ``psi``: population stability index over the validation deciles (ten equal-frequency bins:
  0.1 expected in each; 0 = same distribution, above 0.25 a large shift by the usual rule);
- ``median_ratio`` / ``p99_ratio``: recent median / 99th percentile over the validation ones;
- ``near_rate``: share of recent readings near the threshold (severity in [0.8, 1)), next to
  ``validation_near_rate``, the same share in validation.

A sensor with at least ``lifecycle.drift_min_scores`` recent scores is judged; it drifts when
its PSI exceeds ``lifecycle.drift_psi`` or its near rate ``lifecycle.drift_near_rate``. A retrain
is suggested when at least ``lifecycle.drift_share`` of the judged sensors drift. Pure
functions (:func:`drift_table`, :func:`summarise`, :func:`drift_section`) plus
:func:`drift_report`, which reads a store and a registry (``/api/drift``, ``sentinel models drift``).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from sentinel.config import Settings
from sentinel.lifecycle.registry import LifecycleError

log = logging.getLogger("sentinel.drift")

DRIFT_COLUMNS = ["sensor_id", "scores", "baseline", "psi", "median_ratio", "p99_ratio", "near_rate",
                 "validation_near_rate", "judged", "drifting", "reason"]
_EPS = 1e-4  # floor for empty bins in the PSI (an empty bin would make it infinite)


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of two proportion vectors (each summing to 1)."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), _EPS)
    e = np.maximum(np.asarray(expected, dtype=np.float64), _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def bin_shares(scores: np.ndarray, probs: list[float], q: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(recent shares, expected shares) over the bins the validation deciles cut.

    Edges are the quantiles at the probs below 0.95 (the deciles); equal edges (tied validation
    scores) are merged, their expected shares added, so no bin is empty by construction.
    """
    edges_p = [(p, v) for p, v in zip(probs, q) if p < 0.95]
    edges, cum = [], []
    for p, v in edges_p:
        if edges and v <= edges[-1]:
            cum[-1] = p
            continue
        edges.append(v)
        cum.append(p)
    expected = np.diff(np.concatenate([[0.0], cum, [1.0]]))
    counts = np.bincount(np.searchsorted(np.asarray(edges), scores, side="right"), minlength=len(edges) + 1)
    return counts / max(len(scores), 1), expected


def drift_table(scores: pd.DataFrame, manifest: dict, settings: Settings) -> pd.DataFrame:
    """Recent score records of one model version (``sensor_id``, ``score`` and, for the near
    rate, ``threshold``) -> one row per sensor (``DRIFT_COLUMNS``), drifting ones first.

    Raises LifecycleError when the bundle has no validation score quantiles (trained before
    drift checks existed).
    """
    sq = manifest.get("validation", {}).get("score_quantiles")
    if not sq:
        raise LifecycleError(f"model {manifest.get('version', '?')} has no validation score quantiles (it was "
                             f"trained before drift checks): retrain it to get drift figures")
    lc = settings.lifecycle
    probs, near = list(sq["probs"]), float(sq.get("near_severity", 0.8))
    i50, i99 = probs.index(0.5), probs.index(0.99)
    rows = []
    if scores.empty:
        return pd.DataFrame(columns=DRIFT_COLUMNS)
    for sid, g in scores.groupby(scores["sensor_id"].astype(str), sort=True):
        s = pd.to_numeric(g["score"], errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(s)
        s = s[ok]
        base = sq["per_sensor"].get(sid)
        baseline = "sensor" if base else "global"
        base = base or sq["global"]
        q = base["q"]
        n = int(s.size)
        row = {"sensor_id": sid, "scores": n, "baseline": baseline, "psi": np.nan, "median_ratio": np.nan,
               "p99_ratio": np.nan, "near_rate": np.nan, "validation_near_rate": float(base.get("near_rate", np.nan)),
               "judged": n >= lc.drift_min_scores, "drifting": False, "reason": ""}
        if n:
            actual, expected = bin_shares(s, probs, q)
            row["psi"] = psi(actual, expected)
            row["median_ratio"] = float(np.median(s) / q[i50]) if q[i50] > 0 else np.nan
            row["p99_ratio"] = float(np.quantile(s, 0.99) / q[i99]) if q[i99] > 0 else np.nan
            if "threshold" in g:
                th = pd.to_numeric(g["threshold"], errors="coerce").to_numpy(dtype=np.float64)[ok]
                sev = s / np.where(th > 0, th, np.nan)
                row["near_rate"] = float(np.mean((sev >= near) & (sev < 1.0)))  # 1.0 exactly: capped by the recent rule
        if row["judged"]:
            why = []
            if row["psi"] > lc.drift_psi:
                why.append(f"PSI {row['psi']:.2f} > {lc.drift_psi}")
            if np.isfinite(row["near_rate"]) and row["near_rate"] > lc.drift_near_rate:
                why.append(f"{row['near_rate']:.1%} near the threshold > {lc.drift_near_rate:.1%}")
            row["drifting"], row["reason"] = bool(why), "; ".join(why)
        else:
            row["reason"] = f"{n} scores, fewer than lifecycle.drift_min_scores = {lc.drift_min_scores}"
        rows.append(row)
    out = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    return out.sort_values(["drifting", "psi"], ascending=[False, False], na_position="last").reset_index(drop=True)


def summarise(table: pd.DataFrame, settings: Settings, version: str | None = None) -> dict:
    """Counts and the retrain suggestion: ``suggest_retrain`` when at least
    ``lifecycle.drift_share`` of the judged sensors drift (and at least one does)."""
    lc = settings.lifecycle
    judged = int(table["judged"].sum()) if len(table) else 0
    drifting = int(table["drifting"].sum()) if len(table) else 0
    share = drifting / judged if judged else 0.0
    suggest = drifting > 0 and share >= lc.drift_share
    if not judged:
        message = (f"no sensor has {lc.drift_min_scores} recent scores of model {version or '?'} yet: "
                   f"drift cannot be judged")
    elif suggest:
        message = (f"{drifting} of {judged} sensors drift (at least {lc.drift_share:.0%}): retrain with "
                   f"`sentinel retrain`")
    else:
        message = f"{drifting} of {judged} sensors drift (below {lc.drift_share:.0%}): no retrain needed"
    return {"version": version, "sensors": int(len(table)), "judged": judged, "drifting": drifting,
            "share": round(share, 4), "suggest_retrain": bool(suggest), "message": message}


def drift_section(table: pd.DataFrame, summary: dict, max_rows: int = 30) -> str:
    """A markdown section for ``sentinel report``'s summary page (drifting sensors first)."""
    lines = [f"## Model drift (model {summary.get('version') or '?'})", "", summary["message"] + ".", ""]
    if len(table):
        lines += ["| sensor | scores | PSI | median ratio | p99 ratio | near threshold (validation) | drifting |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for r in table.head(max_rows).itertuples(index=False):
            near = "" if not np.isfinite(r.near_rate) else f"{r.near_rate:.2%} ({r.validation_near_rate:.2%})"
            lines.append(f"| {_cell(r.sensor_id)} | {r.scores} | {_num(r.psi)} | {_num(r.median_ratio)} | "
                         f"{_num(r.p99_ratio)} | {near} | {'yes: ' + r.reason if r.drifting else 'no'} |")
        if len(table) > max_rows:
            lines.append(f"\n({len(table) - max_rows} more sensors not shown)")
    return "\n".join(lines) + "\n"


def _num(x) -> str:
    return "" if x is None or not np.isfinite(x) else f"{x:.2f}"


def _cell(s) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in str(s))
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(a, b)
    return text


def drift_report(store, registry, settings: Settings, since: pd.Timestamp | None = None,
                 until: pd.Timestamp | None = None, version: str | None = None) -> dict:
    """Drift of the served (or ``version``'s) model from a store's recent scores.

    Args:
        store: a store URL or an open ``store.client`` object (``sentinel serve`` passes its own).
        registry: a registry URL or ``lifecycle.registry.Registry``.
        since, until: the recent scores; if not given, the last ``lifecycle.drift_days`` to now.
        version: the model version; if not given, the registry's served version.

    Returns:
        ``{"available", "version", "since", "until", "summary", "sensors": [rows], "markdown"}``;
        ``available`` False (with ``summary.message``) when there is no model or it has no
        validation quantiles.
    """
    from sentinel.lifecycle.registry import Registry
    from sentinel.lifecycle.sources import store_scores
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    until = until or pd.Timestamp.now(tz="UTC")
    since = since or until - pd.Timedelta(days=settings.lifecycle.drift_days)
    version = version or reg.serving()
    out = {"available": False, "version": version, "since": since.isoformat(), "until": until.isoformat(),
           "sensors": [], "markdown": ""}
    if version is None:
        out["summary"] = {"message": f"registry {reg.url} holds no model: train one with `sentinel train`"}
        return out
    manifest = reg.manifest(version)
    from sentinel.store.query import Store
    if isinstance(store, (str, Store)):  # a URL or the configured store: open it
        from sentinel.store.client import open_store
        store = open_store(store, settings)
    scores = store_scores(store, since, until)
    if len(scores) and "model_version" in scores:
        scores = scores[scores["model_version"].astype(str) == str(manifest.get("version", version))]
    try:
        table = drift_table(scores, manifest, settings)
    except LifecycleError as exc:
        out["summary"] = {"message": str(exc)}
        return out
    summary = summarise(table, settings, version)
    out.update(available=True, summary=summary, markdown=drift_section(table, summary),
               sensors=[{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in rec.items()}
                        for rec in table.to_dict("records")])
    return out
