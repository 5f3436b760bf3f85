"""The real network: training writes a complete bundle; scoring separates anomalies."""
import json

import numpy as np
import pandas as pd
import pytest

from sentinel.detect import scoring
from sentinel.detect.model import BundleError, load_bundle, resolve_bundle
from sentinel.detect.training import TrainingDataError, build_windows, fit_bundle


def test_bundle_contract(tiny_bundle):
    for f in ("model.keras", "scaler.json", "threshold.json", "manifest.json"):
        assert (tiny_bundle / f).is_file()
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    for key in ("features", "window", "architecture", "data", "validation", "libraries", "created_at", "version"):
        assert key in m
    assert m["window"]["length"] == 16 and m["architecture"]["cell"] == "gru"
    assert len(m["data"]["fingerprint"]) == 16


def test_anomalous_windows_score_higher_than_normal_ones(tiny_bundle, tiny_network):
    b = load_bundle(str(tiny_bundle))
    frame = tiny_network.readings.rename(columns={"timestamp": "event_time"})
    ws = build_windows(frame, ["pressure"], b.length, 1800, label_col="is_anomaly")
    s = scoring.score_windows(b, ws.windows, ws.times, ws.sensors)
    assert s.shape == (len(ws.windows),)
    assert np.median(s[ws.labelled]) > 3 * np.median(s[~ws.labelled])
    _, flags = scoring.flag(b, s, ws.sensors)
    assert flags[~ws.labelled].mean() < 0.01


def test_scoring_is_deterministic_and_batch_size_independent(tiny_bundle, tiny_network):
    b = load_bundle(str(tiny_bundle))
    frame = tiny_network.readings.rename(columns={"timestamp": "event_time"})
    ws = build_windows(frame, ["pressure"], b.length, 1800)
    inputs = scoring.model_inputs(b, ws.windows[:300], ws.times[:300], ws.sensors[:300])
    np.testing.assert_allclose(scoring.reconstruct(b.model, inputs, batch=64),
                               scoring.reconstruct(b.model, inputs, batch=4096), rtol=1e-5, atol=1e-6)


def test_newest_version_is_resolved_and_missing_bundle_is_a_clear_error(tiny_bundle, tmp_path):
    assert resolve_bundle(tiny_bundle) == tiny_bundle
    assert resolve_bundle(tiny_bundle.parent) == tiny_bundle
    with pytest.raises(BundleError, match="sentinel train"):
        resolve_bundle(tmp_path / "nothing")


def test_too_little_history_stops_with_a_sentence(tiny_settings, tiny_network, tmp_path):
    frame = tiny_network.readings.rename(columns={"timestamp": "event_time"}).head(40)
    with pytest.raises(TrainingDataError, match="too little normal history"):
        fit_bundle(frame, tiny_settings, tmp_path / "x")


def test_mahalanobis_bundle_fits_error_model_on_older_half_and_scores(tiny_settings, tiny_network, tmp_path):
    settings = tiny_settings.replace(**{"threshold.reduce": "mahalanobis", "threshold.recent_steps": 0})
    frame = tiny_network.readings.rename(columns={"timestamp": "event_time"})
    path, _ = fit_bundle(frame, settings, tmp_path / "maha", label_col="is_anomaly")
    assert (path / "error_model.json").is_file()
    m = json.loads((path / "manifest.json").read_text())
    em = m["score"]["error_model"]
    assert m["score"]["reduce"] == "mahalanobis" and em["estimator"] == "ledoit_wolf"
    assert em["fit_windows"] > 0 and em["calibration_windows"] == m["validation"]["windows"]
    assert pd.Timestamp(em["split_time"]) > pd.Timestamp(m["training"]["split_time"])
    b = load_bundle(str(path))
    assert b.error_model is not None and b.error_model.mean.shape == (b.length,)
    ws = build_windows(frame, ["pressure"], b.length, 1800, label_col="is_anomaly")
    s = scoring.score_windows(b, ws.windows, ws.times, ws.sensors)
    errors = scoring.step_errors(b, ws.windows, ws.times, ws.sensors)
    # the score is the distance (raised to 1.5 x the threshold where the stuck rule fires)
    np.testing.assert_allclose(s, scoring.stuck_rule(b, b.error_model.distance(errors), ws.windows, ws.sensors))
    _, flags = scoring.flag(b, s, ws.sensors)
    assert flags[~ws.labelled].mean() < 0.01 and flags[ws.labelled].mean() > 0.3

    (path / "error_model.json").unlink()
    load_bundle.cache_clear()
    with pytest.raises(BundleError, match="error_model.json"):
        load_bundle(str(path))


def test_bundle_without_score_section_or_error_model_scores_with_the_mean(tiny_bundle, tiny_network, tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    m = json.loads((old / "manifest.json").read_text())
    m.pop("score", None)
    (old / "manifest.json").write_text(json.dumps(m))
    b = load_bundle(str(old))
    assert b.error_model is None and scoring.reduction(b) == "mean"
    frame = tiny_network.readings.rename(columns={"timestamp": "event_time"})
    ws = build_windows(frame, ["pressure"], b.length, 1800)
    np.testing.assert_allclose(scoring.score_windows(b, ws.windows[:50], ws.times[:50], ws.sensors[:50]),
                               scoring.step_errors(b, ws.windows[:50], ws.times[:50], ws.sensors[:50]).mean(axis=1),
                               rtol=1e-6)


def test_score_table_applies_alarm_persistence(tiny_bundle, tiny_network, tiny_settings):
    from sentinel.detect.batch import score_table
    b = load_bundle(str(tiny_bundle))
    frame = tiny_network.readings
    raw = score_table(b, frame, tiny_settings)
    held = score_table(b, frame, tiny_settings.replace(**{"threshold.persistence_m": 2,
                                                           "threshold.persistence_n": 3}))
    np.testing.assert_allclose(raw["score"], held["score"])
    for sid, g in raw.assign(held=held["is_anomaly"]).groupby("sensor_id"):
        g = g[g["score"].notna()].sort_values("timestamp")
        want, _ = scoring.persist(g["is_anomaly"].to_numpy(), 2, 3)
        assert g["held"].astype(bool).tolist() == want.tolist()
    # runs of flags come one reading later (2 of 3 needs two), isolated flags vanish
    assert held["is_anomaly"].sum() > 0 and (held["is_anomaly"] != raw["is_anomaly"]).any()
