"""Retraining end to end on tiny Keras models: a SQLite store written by the sinks (scores,
incidents, operator labels, a mute), `sentinel retrain` into a local registry, the comparison
in the challenger's manifest, auto promotion granted and refused, manual promote and rollback."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from sentinel.cli import main
from sentinel.detect.batch import score_table
from sentinel.detect.model import load_bundle, read_pointer, resolve_bundle
from tests.conftest import TINY_OVERRIDES

SINCE, UNTIL = "2026-01-05T00:00:00Z", "2026-01-11T00:00:00Z"
FA_SENSOR, FA_START, FA_END = "PT-0001", pd.Timestamp("2026-01-06T10:00Z"), pd.Timestamp("2026-01-06T12:00Z")
MUTE_SENSOR, MUTE_START, MUTE_END = "PT-0001", pd.Timestamp("2026-01-07T00:00Z"), pd.Timestamp("2026-01-07T06:00Z")
LIFECYCLE = ["lifecycle.holdout_days=1.5"]


def incident(i, sid, start, end, version):
    now = pd.Timestamp.now(tz="UTC")
    return {"incident_id": f"inc-{i}", "kind": "leak", "status": "new", "zone": None,
            "sensors": json.dumps([{"sensor_id": sid, "share": 1.0}]), "first_sensor": sid, "opened_at": start,
            "last_seen": end, "closed_at": None, "peak_severity": 2.0, "readings": 1, "explanation": "",
            "muted": False, "model_version": version, "detected_at": now, "updated_at": now, "batch_id": 0}


@pytest.fixture(scope="module")
def lake(tmp_path_factory, tiny_bundle, tiny_network, tiny_settings):
    """The tiny network's week as the deploy job would have stored it: every reading's score by
    the champion, one confirmed incident per injected episode, one false alarm, one mute."""
    from sentinel.incidents import lifecycle as rules
    from sentinel.store.client import open_store
    from sentinel.store.sinks.base import BatchRecords, batch_record
    from sentinel.store.sinks.sqlite import SqliteSink
    root = tmp_path_factory.mktemp("lake")
    version = json.loads((tiny_bundle / "manifest.json").read_text())["version"]
    champion_dir = root / "champion" / version
    shutil.copytree(tiny_bundle, champion_dir)
    champion = load_bundle(str(champion_dir))
    r = tiny_network.readings
    scored = score_table(champion, r, tiny_settings)
    ok = scored["score"].notna().to_numpy()
    scores = pd.DataFrame({
        "sensor_id": r["sensor_id"], "event_time": pd.to_datetime(r["timestamp"], utc=True),
        "score": scored["score"], "threshold": scored["threshold"], "severity": scored["score"] / scored["threshold"],
        "is_anomaly": scored["is_anomaly"].astype(bool), "values": [json.dumps({"pressure": p}) for p in r["pressure"]],
        "expected": None, "model_version": version, "batch_id": 0})[ok].reset_index(drop=True)
    eps = tiny_network.episodes
    incs = [incident(i, e.sensor_id, e.start, e.end, version) for i, e in enumerate(eps.itertuples())]
    incs.append(incident("fa", FA_SENSOR, FA_START, FA_END, version))
    db = root / "sentinel.db"
    sink = SqliteSink(db)
    sink.setup()
    sink.write(BatchRecords(0, scores=scores, incidents=pd.DataFrame(incs),
                            batch=batch_record(0, scored=len(scores), model_version=version)))
    with open_store(f"sqlite:///{db}", tiny_settings, rules=rules) as client:
        for i in range(len(eps)):
            client.label(f"inc-{i}", "confirmed", "ana")
        client.label("inc-fa", "false_alarm", "ana")
        client.add_mute(sensor_id=MUTE_SENSOR, starts_at=MUTE_START, ends_at=MUTE_END, reason="valve work", actor="ana")
    return {"db": db, "champion": champion_dir, "version": version, "scores": scores, "episodes": eps}


def fresh_registry(lake, tmp_path):
    reg = tmp_path / "models" / "pressure"
    shutil.copytree(lake["champion"], reg / lake["version"])
    return reg


def expected_counts(lake) -> dict:
    """What the rules must leave out, counted straight from the store's rows."""
    s = lake["scores"]
    t, sid = s["event_time"], s["sensor_id"]
    in_ep = np.zeros(len(s), dtype=bool)
    for e in lake["episodes"].itertuples():
        in_ep |= (sid == e.sensor_id).to_numpy() & (t >= e.start).to_numpy() & (t <= e.end).to_numpy()
    muted = ((sid == MUTE_SENSOR) & (t >= MUTE_START) & (t < MUTE_END)).to_numpy() & ~in_ep
    fa = ((sid == FA_SENSOR) & (t >= FA_START) & (t <= FA_END)).to_numpy() & ~in_ep & ~muted
    stray = s["is_anomaly"].to_numpy() & ~in_ep & ~muted & ~fa
    return {"confirmed": int(in_ep.sum()), "muted": int(muted.sum()), "false_alarm_kept": int(fa.sum()),
            "flagged": int(stray.sum()), "labelled": 0, "unlabelled": 0}


def test_retrain_from_the_store_promotes_per_policy_with_lineage(lake, tmp_path, capsys):
    reg = fresh_registry(lake, tmp_path)
    sets = [a for o in TINY_OVERRIDES + LIFECYCLE + ["lifecycle.false_alarm_tolerance=100.0",
                                                      "lifecycle.recall_tolerance=1.0"] for a in ("--set", o)]
    code = main(["retrain", "--store", f"sqlite:///{lake['db']}", "--registry", str(reg), "--since", SINCE,
                 "--until", UNTIL, "--promote", "auto", "--by", "ana", "--json", *sets])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["promoted"] and out["champion"] == lake["version"]
    new = out["version"]
    assert read_pointer(reg) == new and resolve_bundle(reg).name == new
    m = json.loads((reg / new / "manifest.json").read_text())
    lin, cmp_ = m["lineage"], m["comparison"]
    assert lin["parent"] == lake["version"] and lin["source"] == f"sqlite:///{lake['db']}"
    assert lin["data_window"]["start"].startswith("2026-01-05") and len(lin["fingerprint"]) == 16
    assert {k: lin["excluded"][k] for k in expected_counts(lake)} == expected_counts(lake)
    # the challenger trained on the window before the held-out days, its left-out readings as labels
    assert m["data"]["labelled_rows"] == lin["excluded"]["excluded"] - _excluded_in(lake, lin["data_window"]["holdout_start"])
    for who in ("champion", "challenger"):
        f = cmp_[who]
        assert f["normal_sensor_days"] > 4 and np.isfinite(f["false_alarms_per_sensor_day"])
        assert f["incidents"] >= 1 and f["recall"] is not None  # injected episodes fall in the held-out days
    assert cmp_["champion"]["version"] == lake["version"] and cmp_["challenger"]["version"] == new
    assert cmp_["policy"] == "auto" and cmp_["verdict"] in ("better", "equal", "worse") and cmp_["promote"]
    assert m["validation"]["score_quantiles"]["per_sensor"]  # drift figures for the new model
    history = [json.loads(x) for x in (reg / "promotions.jsonl").read_text().splitlines()]
    assert [h["action"] for h in history] == ["pin", "promote"] and history[-1]["version"] == new


def _excluded_in(lake, holdout_start) -> int:
    """Left-out readings from ``holdout_start`` on, counted from the store's rows."""
    s = lake["scores"]
    t, sid = s["event_time"], s["sensor_id"]
    mask = np.zeros(len(s), dtype=bool)
    for e in lake["episodes"].itertuples():
        mask |= (sid == e.sensor_id).to_numpy() & (t >= e.start).to_numpy() & (t <= e.end).to_numpy()
    mask |= ((sid == MUTE_SENSOR) & (t >= MUTE_START) & (t < MUTE_END)).to_numpy()
    fa = ((sid == FA_SENSOR) & (t >= FA_START) & (t <= FA_END)).to_numpy()
    mask |= s["is_anomaly"].to_numpy() & ~fa
    return int((mask & (t >= pd.Timestamp(holdout_start)).to_numpy()).sum())


def test_auto_refuses_a_worse_challenger_then_manual_promote_and_rollback(lake, tmp_path, tiny_settings, capsys):
    from sentinel.lifecycle import sources
    from sentinel.lifecycle.registry import Registry
    from sentinel.lifecycle.retrain import retrain
    reg = Registry(fresh_registry(lake, tmp_path))
    # a threshold at 0.3 x the validation quantile: alarms everywhere, a worse model by construction
    s = tiny_settings.replace(**{"threshold.method": "quantile", "threshold.margin": 0.3, "lifecycle.holdout_days": 1.5})
    data = sources.read_store(f"sqlite:///{lake['db']}", s, pd.Timestamp(SINCE), pd.Timestamp(UNTIL))
    res = retrain(data, s, reg, "auto", pd.Timestamp(SINCE), by="test")
    ch, cp = res.comparison["challenger"], res.comparison["champion"]
    assert res.decision.verdict == "worse" and not res.promoted
    assert ch["false_alarms_per_sensor_day"] > cp["false_alarms_per_sensor_day"]
    assert reg.promoted() == lake["version"] == reg.serving()  # pinned: the challenger is not served as newest
    assert reg.versions() == sorted([lake["version"], res.version])
    r = ["--registry", reg.url]
    assert main(["models", "promote", res.version, "--by", "ana", *r]) == 0 and reg.promoted() == res.version
    assert main(["models", "rollback", "--by", "ana", *r]) == 0 and reg.promoted() == lake["version"]
    capsys.readouterr()
    assert main(["models", "show", res.version, *r]) == 0
    shown = capsys.readouterr().out
    assert "comparison (auto): worse" in shown and f"parent {lake['version']}" in shown


def test_drift_and_models_overview_from_the_store(lake, tmp_path, tiny_settings, capsys):
    """What /api/drift and /api/models return, and `sentinel models drift`, on the store above."""
    from sentinel.lifecycle.drift import drift_report
    from sentinel.lifecycle.registry import models_overview
    reg = fresh_registry(lake, tmp_path)
    url = f"sqlite:///{lake['db']}"
    rep = drift_report(url, str(reg), tiny_settings, pd.Timestamp(SINCE), pd.Timestamp(UNTIL))
    assert rep["available"] and rep["version"] == lake["version"]
    assert {r["sensor_id"] for r in rep["sensors"]} == set(lake["scores"]["sensor_id"])
    assert rep["summary"]["judged"] == 4 and all(r["psi"] is not None and r["psi"] >= 0 for r in rep["sensors"])
    assert rep["markdown"].startswith(f"## Model drift (model {lake['version']})")
    assert json.dumps(rep, default=str)  # the API can serialise it
    over = models_overview(str(reg))
    assert over["serving"] == lake["version"] and over["promoted"] is None and len(over["versions"]) == 1
    sets = [a for o in TINY_OVERRIDES for a in ("--set", o)]
    assert main(["models", "drift", "--store", url, "--registry", str(reg), "--since", SINCE, "--until", UNTIL,
                 *sets]) == 0
    assert "| sensor | scores | PSI |" in capsys.readouterr().out
