"""The benchmarks run end to end on a tiny load (their figures are not asserted: benchmarks
are not tests; what is checked is that every figure is produced)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import need_service

ROOT = Path(__file__).resolve().parents[2]


def test_quality_benchmark_quick(tmp_path):
    """The three scenarios run with ours and the baselines side by side, seed groups apart."""
    out = tmp_path / "q.json"
    r = subprocess.run([sys.executable, "benchmarks/quality.py", "--quick", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    for role in ("tuning", "held-out"):
        syn = res["synthetic"][role]
        assert any(k.startswith("ours: autoencoder") for k in syn) and any("time-of-day" in k for k in syn)
        assert 0 <= syn[next(k for k in syn if k.startswith("ours"))][0]["points"]["f1"] <= 1
        net = res["network"]["summary"][role]
        assert {"ours: residual, network-wide", "time-of-day z-score (|z|>4)", "PCA SPE, POT 1e-4 (2-fold)"} <= set(net)
        assert "incident_precision" in net["ours: residual, network-wide"]["incidents"]
        # the visible leaks with a spatial signature are a subset of the visible leaks
        o = net["ours: residual, network-wide"]
        assert 0 <= o["leaks_gt2_spatial_found"] <= o["leaks_gt2_spatial"] <= o["leaks_gt2"]
        assert res["small"][role]["ours: product defaults (residual)"][0]["info"]["kind"] == "residual"
    # on the rig the residual detector beats PCA T2's textbook limit (FAR 0.8-0.9 there)
    small = res["small"]["tuning"]
    assert small["ours: product defaults (residual)"][0]["far"] < small["PCA T2, F-limit 1%"][0]["far"]
    assert any(k.startswith("network (held-out)") for k in res["targets"])
    for words in ("synthetic scenario, tuning seed", "network scenario, held-out seeds", "small-data scenario", "targets"):
        assert words in r.stdout


def test_throughput_benchmark_quick(tmp_path):
    need_service("SENTINEL_KAFKA_BOOTSTRAP", "Kafka")
    need_service("PGHOST", "PostgreSQL")
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, "benchmarks/throughput.py", "--quick",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1500,
                       env=dict(os.environ))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    res = json.loads(out.read_text())
    assert res["model_only"]["windows_per_s"] > 0
    assert res["parse"]["lines"] > 0 and res["parse"]["same_result"]  # the stream's parser agrees with the reference
    assert res["saturated"]["steady_events"] > 0
    # the stepped run offered its first rate and read what was sent (kept up or not: not a test)
    first = res["stepped"]["steps"][0]
    assert first["sent_events_per_s"] > 0 and first["read_events_per_s"] > 0
    assert isinstance(first["kept_up"], bool) and first["read_to_sent"] > 0
    assert "read/sent" in r.stdout  # each verdict printed with the ratio behind it
    assert res["baseline"]["rows"] > 0
    assert res["latency"]["anomalies_timed"] >= 0
    # the timed events were offered only after the warm-up batch was scored
    assert res["latency"]["events"] > 0 and res["latency"]["startup_s"] > 0
    st = res["state"][0]
    assert st["jvm_pss_peak"] > 0 and st["state_rows"] > 0
    # every kind of process was found, and the sum is theirs
    assert st["driver_pss_peak"] > 0 and st["python_score_pss_peak"] + st["python_other_pss_peak"] > 0
    assert st["total_pss_peak"] >= max(st["jvm_pss_peak"], st["driver_pss_peak"])
    # the serving peer scored the same windows as the product's UDF, to the same scores
    sv = res["serving"]
    assert sv["scored_product"] == sv["scored_mlflow"] == sv["windows"] > 0
    assert sv["same_scores"], sv
    assert sv["product_windows_per_s"] > 0 and sv["mlflow_windows_per_s"] > 0
    assert "speed-up over baseline" in r.stdout
