"""Drift on synthetic score shifts: PSI, quantile ratios, near-threshold rate, the suggestion."""
import numpy as np
import pandas as pd
import pytest

from sentinel.config import Settings
from sentinel.detect.training import QUANTILE_PROBS, score_quantiles
from sentinel.lifecycle.drift import bin_shares, drift_section, drift_table, psi, summarise
from sentinel.lifecycle.registry import LifecycleError

RNG = np.random.default_rng(5)
THRESHOLD = 1.0


def validation(n=2000):
    """Validation scores of sensors S1..S4 (lognormal, well under the threshold); S9 has too few."""
    scores = np.concatenate([RNG.lognormal(-2.0, 0.4, n) for _ in range(4)] + [RNG.lognormal(-2.0, 0.4, 50)])
    sensors = np.repeat(["S1", "S2", "S3", "S4", "S9"], [n, n, n, n, 50])
    return {"version": "v1", "validation": {"score_quantiles": score_quantiles(scores, sensors, np.full(scores.size, THRESHOLD))}}


def recent(sensor, scores):
    return pd.DataFrame({"sensor_id": sensor, "score": scores, "threshold": THRESHOLD})


def test_psi_basics():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.9, 0.1], [0.5, 0.5]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2), rel=1e-9)
    actual, expected = bin_shares(np.array([0.5, 1.5, 2.5, 3.5]), [0.25, 0.5, 0.75, 0.95], [1.0, 2.0, 3.0, 9.0])
    np.testing.assert_allclose(actual, [0.25, 0.25, 0.25, 0.25])   # edges at 1, 2, 3 (0.95 is not a decile)
    np.testing.assert_allclose(expected, [0.25, 0.25, 0.25, 0.25])
    _, merged = bin_shares(np.array([1.0]), [0.1, 0.2, 0.3], [1.0, 1.0, 2.0])  # tied edges merged
    np.testing.assert_allclose(merged, [0.2, 0.1, 0.7])


def test_same_distribution_does_not_drift_shifted_scores_do():
    m = validation()
    s = Settings()
    scores = pd.concat([recent("S1", RNG.lognormal(-2.0, 0.4, 1500)),
                        recent("S2", RNG.lognormal(-2.0 + np.log(1.6), 0.4, 1500)),   # scores x 1.6
                        recent("S3", RNG.lognormal(-2.0, 0.4, 50)),                   # too few to judge
                        recent("S9", RNG.lognormal(-2.0, 0.4, 800))])                 # global baseline
    t = drift_table(scores, m, s).set_index("sensor_id")
    assert t.loc["S1", "psi"] < 0.05 and not t.loc["S1", "drifting"]
    assert 0.9 < t.loc["S1", "median_ratio"] < 1.1
    assert t.loc["S2", "psi"] > 0.25 and t.loc["S2", "drifting"] and "PSI" in t.loc["S2", "reason"]
    assert 1.45 < t.loc["S2", "median_ratio"] < 1.75 and 1.3 < t.loc["S2", "p99_ratio"] < 1.9
    assert not t.loc["S3", "judged"] and not t.loc["S3", "drifting"] and "fewer than" in t.loc["S3", "reason"]
    assert t.loc["S9", "baseline"] == "global" and t.loc["S1", "baseline"] == "sensor"
    assert drift_table(scores, m, s)["sensor_id"].iloc[0] == "S2"  # drifting sensors first
    summary = summarise(drift_table(scores, m, s), s, "v1")
    assert summary["judged"] == 3 and summary["drifting"] == 1 and summary["suggest_retrain"]  # 1/3 >= 0.2
    high = s.replace(**{"lifecycle.drift_share": 0.5})
    assert not summarise(drift_table(scores, m, high), high, "v1")["suggest_retrain"]


def test_readings_piling_up_under_the_threshold():
    m = validation()
    s = Settings()
    base = RNG.lognormal(-2.0, 0.4, 1500)
    base[:90] = RNG.uniform(0.8, 1.0, 90) * THRESHOLD  # 6 % just under the threshold: no alarm, but close
    t = drift_table(recent("S1", base), m, s).set_index("sensor_id")
    assert t.loc["S1", "near_rate"] == pytest.approx(0.06)
    assert t.loc["S1", "validation_near_rate"] < 0.005
    assert t.loc["S1", "drifting"] and "near the threshold" in t.loc["S1", "reason"]


def test_markdown_section_and_missing_quantiles():
    m = validation()
    s = Settings()
    t = drift_table(recent("A|<b>", RNG.lognormal(-1.0, 0.4, 500)), m, s)
    md = drift_section(t, summarise(t, s, "v1"))
    assert md.startswith("## Model drift (model v1)") and "A\\|&lt;b&gt;" in md and "retrain with" in md
    with pytest.raises(LifecycleError, match="retrain it to get drift figures"):
        drift_table(recent("S1", [0.1]), {"version": "old", "validation": {}}, s)
    assert len(QUANTILE_PROBS) == len(m["validation"]["score_quantiles"]["global"]["q"])
