"""A residual (zone) bundle trained and scored end to end on a tiny Net1 simulation (WNTR).

Trains through ``fit_bundle`` (valid ranges learned, interval taken from the data, zone
alignment, cross-fitted scales, POT threshold), saves and loads the bundle without TensorFlow,
and scores the event days through ``score_table`` exactly as the batch path does.
"""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sentinel.config import load_settings
from sentinel.detect.batch import score_table
from sentinel.detect.model import load_bundle
from sentinel.detect.training import fit_bundle
from sentinel.ingest.network import simulate_network


@pytest.fixture(scope="module")
def net1(tmp_path_factory):
    return simulate_network("Net1", days=7, clean_days=4, seed=3, sensors=6, leaks_per_week=7, faults_per_week=7,
                            operational_per_week=0, cache_dir=tmp_path_factory.mktemp("sims"))


@pytest.fixture(scope="module")
def trained(net1, tmp_path_factory):
    train, test = net1.split()
    s = load_settings(None, ['model.kind="residual"', "window.interval_s=0", "window.max_gap_s=0", "train.report=false"])
    out, report = fit_bundle(train.rename(columns={"timestamp": "event_time"}), s,
                             tmp_path_factory.mktemp("bundle") / "net1", label_col="is_anomaly")
    return s, out, report


def test_the_bundle_says_what_it_is_and_loads_without_tensorflow(trained):
    s, out, report = trained
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["kind"] == "residual" and manifest["model"]["mode"] == "zone"
    assert manifest["model"]["zones"] == {"network": [f"PT-000{i}" for i in range(1, 7)]}
    assert manifest["window"]["interval_s"] == 300.0 and manifest["window"]["max_gap_s"] == 1800.0  # from the data
    assert set(manifest["valid_ranges"]) == {"pressure"} and (out / "residual.json").is_file()
    assert not (out / "model.keras").exists()
    code = (f"import sys; from sentinel.detect.model import load_bundle; b = load_bundle({str(out)!r}); "
            f"print(b.kind, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["residual", "False", "False"]


def test_score_table_flags_the_faults_and_expects_the_normal_readings(trained, net1):
    s, out, _ = trained
    bundle = load_bundle(str(out))
    train, test = net1.split()
    tail = train[train["timestamp"] >= net1.events_from - pd.Timedelta(hours=3)]
    scored = score_table(bundle, pd.concat([tail, test], ignore_index=True), s, details=True)
    scored = scored.iloc[len(tail):].reset_index(drop=True)
    lab = test["anomaly_type"].to_numpy()
    normal = test["is_anomaly"].to_numpy() == 0
    assert scored["score"].notna().mean() > 0.97                   # every complete step scored (dropouts aside)
    assert scored["is_anomaly"].to_numpy()[normal].mean() < 0.01
    for kind in ("spike", "drift"):
        if (lab == kind).any():
            assert scored["is_anomaly"].to_numpy()[lab == kind].any(), kind
    # expected values are the cross-sensor predictions, within a few noise sd of normal readings
    err = (scored["pressure"] - scored["expected_pressure"]).abs().to_numpy()[normal]
    assert np.nanmedian(err) < 0.2
    flagged = scored[scored["is_anomaly"] == 1]
    assert flagged["top_feature"].eq("pressure").all() and flagged["deviation"].notna().all()
