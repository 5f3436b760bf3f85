"""The real network: training writes a complete bundle; scoring separates anomalies."""
import json

import numpy as np
import pandas as pd
import pytest

from sentinel import scoring
from sentinel.model import BundleError, load_bundle, resolve_bundle
from sentinel.training import TrainingDataError, build_windows, fit_bundle


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
