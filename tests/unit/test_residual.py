"""The cross-channel residual detector (detect.residual) on hand-checked cases and tiny data."""
import json

import numpy as np
import pandas as pd
import pytest

from sentinel.config import load_settings
from sentinel.detect import residual, scoring
from sentinel.detect.model import Bundle
from sentinel.detect.residual import (LinearResidual, PageTest, ResidualDetector, calendar_columns, channel_scores,
                                      crossfit, page_cusum, scale_means, trend_dominated)
from sentinel.detect.threshold import Threshold, calibrate

NS = 1_000_000_000


def test_calendar_columns_by_hand():
    c = calendar_columns(np.array([0, 2 * 86400 * NS + 6 * 3600 * NS]))   # Thu 00:00, Sat 06:00 UTC
    assert c.shape == (2, 7)
    assert c[0, :2].tolist() == pytest.approx([0.0, 1.0]) and c[0, -1] == 0.0
    assert c[1, :2].tolist() == pytest.approx([1.0, 0.0], abs=1e-12) and c[1, -1] == 1.0   # a quarter day


def test_trend_dominated():
    rng = np.random.default_rng(0)
    t = np.arange(400.0)
    assert trend_dominated(np.column_stack([t + rng.normal(size=400), rng.normal(size=400)])).tolist() == [True, False]


def test_one_inverse_gives_every_ridge_regression():
    rng = np.random.default_rng(1)
    u = rng.normal(size=500)
    x = np.column_stack([u + 0.1 * rng.normal(size=500), 2 * u + 0.3 * rng.normal(size=500), rng.normal(size=500)])
    lam = 0.05
    m = LinearResidual.fit(x, None, lam)
    a = m.inputs(x, None)
    _, pred = m.predict(a)
    g = a.T @ a / len(a)
    for j in range(3):
        o = [i for i in range(3) if i != j]
        beta = np.linalg.solve(g[np.ix_(o, o)] + lam * np.eye(2), g[o, j])
        assert pred[:, j] == pytest.approx(a[:, o] @ beta, abs=1e-9)


def test_a_channel_left_out_is_as_if_the_model_never_had_it():
    rng = np.random.default_rng(2)
    u = rng.normal(size=400)
    x = np.column_stack([u + 0.1 * rng.normal(size=400) for _ in range(4)])
    m = LinearResidual.fit(x, None, 0.01)
    a = m.inputs(x[:5], None)
    a[:, 3] += 50.0                                          # channel 3 broken at these steps
    z, pred = m.predict(a, exclude_z=5.0)
    without = LinearResidual.fit(x[:, :3], None, 0.01)
    _, pred3 = without.predict(without.inputs(x[:5, :3], None))
    # same channels, same standardisation: the others' predictions ignore channel 3
    assert pred[:, :3] == pytest.approx(pred3 * (without.sd / m.sd[:3]) + (without.mean - m.mean[:3]) / m.sd[:3], abs=1e-6)
    assert (np.abs(z[:, 3]) > 100).all() and (np.abs(z[:, :3]) < 5).all()
    z_all, _ = m.predict(a, exclude_z=0.0)
    assert (np.abs(z_all[:, :3]) > 5).any()                  # without exclusion the neighbours alarm too


def test_scale_means_and_channel_scores_by_hand():
    z = np.array([[[0.0], [1.0], [3.0]]])                    # one window, W = 3, one channel
    spread = {2: np.array([0.5])}
    assert scale_means(z, [1, 2], 0.0)[2][0].tolist() == [[2.0]]
    assert channel_scores(z, [1, 2], spread, 0.0).tolist() == [[16.0]]       # (2 / 0.5)^2 > 3^2
    # mask 2.5: the 3 is left out of k = 2, one reading of two counted: (1 / 0.5)^2 * 1/2 = 2 < 9
    assert channel_scores(z, [1, 2], spread, 2.5).tolist() == [[9.0]]


def test_page_cusum_by_hand():
    z = np.array([0.2, -1.5, -2.0, 1.0, -1.2]).reshape(1, 5, 1)
    # drop, k = 0.5: x = -z - k = [-0.7, 1.0, 1.5, -1.5, 0.7]; Page from 0: 0, 1.0, 2.5, 1.0, 1.7
    assert page_cusum(z, 5, 0.5, 0.0, "drop")[0, 0] == pytest.approx(1.7)
    assert page_cusum(z, 5, 0.5, 0.0, "both")[0, 0] == pytest.approx(1.7)   # z - k never adds up here
    # the newest 2 steps only: x = [-1.5, 0.7] -> 0.7
    assert page_cusum(z, 2, 0.5, 0.0, "drop")[0, 0] == pytest.approx(0.7)
    # mask 1.8: the -2.0 adds nothing: x = [-0.7, 1.0, 0, -1.5, 0.7] -> newest-first sums 0.7, -0.8, -0.8, 0.2, -0.5
    assert page_cusum(z, 5, 0.5, 1.8, "drop")[0, 0] == pytest.approx(0.7)
    up = np.array([0.0, 1.0, 0.9]).reshape(1, 3, 1)
    assert page_cusum(up, 3, 0.5, 0.0, "drop")[0, 0] == pytest.approx(0.0)
    assert page_cusum(up, 3, 0.5, 0.0, "both")[0, 0] == pytest.approx(0.9)  # 0.5 + 0.4
    # one more term of channel_scores, divided by its norm: 1.7 / 0.1 = 17 > z**2 = 1.44
    page = PageTest(0.5, 5, "drop", np.array([0.1]))
    assert channel_scores(z, [1], {}, 0.0, page)[0, 0] == pytest.approx(17.0)
    assert channel_scores(z, [1], {}, 0.0)[0, 0] == pytest.approx(1.44)


def test_windowed_page_cusum_is_the_page_recursion_started_at_the_window():
    rng = np.random.default_rng(9)
    z = rng.normal(-0.3, 1.0, size=(1, 40, 3))
    s = np.zeros(3)
    for t in range(40):
        s = np.maximum(0.0, s - z[0, t] - 0.5)
    assert page_cusum(z, 40, 0.5, 0.0, "drop")[0] == pytest.approx(s)


def test_crossfit_scales_white_noise_to_unit_z():
    rng = np.random.default_rng(3)
    u = rng.normal(size=2000)
    x = np.column_stack([u + rng.normal(size=2000), u + rng.normal(size=2000), u + rng.normal(size=2000)])
    _, z = crossfit(x, None, 2, 1e-3, None)
    assert z.std(axis=0) == pytest.approx(np.ones(3))


def _rig(n=700, seed=4):
    rng = np.random.default_rng(seed)
    u = np.sin(np.arange(n) / 15.0) + 0.3 * np.sin(np.arange(n) / 4.0)   # a moving operating point, no trend
    t = pd.Timestamp("2026-03-02T08:00:00Z") + pd.to_timedelta(np.arange(n), unit="s")
    return pd.DataFrame({"sensor_id": "RIG", "event_time": t, "a": np.round(u + 0.1 * rng.normal(size=n), 4),
                         "b": np.round(200 + 2 * u + 0.1 * rng.normal(size=n), 4),
                         "c": np.round(-u + 0.1 * rng.normal(size=n), 4)})


def _features_bundle(frame):
    s = load_settings(None, ['data.features=["a","b","c"]', "window.interval_s=0", "window.max_gap_s=0"])
    fitted = residual.fit(frame, s, None, NS, 6 * NS)
    det = fitted.detector
    th = calibrate(fitted.cal_scores, fitted.cal_sensors, "pot", risk=1e-3)
    manifest = {"features": ["a", "b", "c"], "model": {"kind": "residual", "mode": "features"},
                "window": {"length": fitted.info["window_length"], "max_gap_s": 6, "interval_s": 1}}
    return Bundle("", det, fitted.info["scaler"], th, manifest), fitted


def test_features_mode_quiet_on_normal_loud_on_a_broken_relation_and_a_stuck_channel():
    frame = _rig()
    bundle, fitted = _features_bundle(frame.iloc[:400])
    assert fitted.info["mode"] == "features" and fitted.info["calendar"] is False    # 7 minutes: no calendar
    assert fitted.info["decoupled"] == [] and fitted.info["drift"] is False           # nothing trends
    w = bundle.length
    x = frame[["a", "b", "c"]].to_numpy()
    t = frame["event_time"].astype("int64").to_numpy()
    test = x[400 - w + 1:].copy()
    tt = t[400 - w + 1:]
    test[200:230, 1] += 3.0                                  # b no longer follows a and c
    test[100:140, 0] = test[99, 0]                           # a stuck
    idx = np.arange(w - 1, len(test))
    windows = np.stack([test[i - w + 1:i + 1] for i in idx])
    times = np.stack([tt[i - w + 1:i + 1] for i in idx])
    sc = scoring.score_windows(bundle, windows, times, np.full(len(idx), "RIG"))
    thr = bundle.threshold.value
    flags = sc > thr
    end = idx                                                # window row -> the test row it ends at
    normal = np.ones(len(test), dtype=bool)
    normal[95:150] = normal[195:240] = False
    assert flags[normal[end]].mean() < 0.03
    assert flags[(end >= 200) & (end < 230)].mean() > 0.9
    stuck_rows = (end >= 100 + 10) & (end < 140)
    assert (sc[stuck_rows] >= residual.STUCK_SEVERITY * thr - 1e-9).all()   # the stuck rule, not the model
    d = scoring.score_details(bundle, windows, times, np.full(len(idx), "RIG"))
    assert d.scores == pytest.approx(sc)                     # one scoring path
    exp_b = d.explain.frame(["a", "b", "c"])["expected_b"].to_numpy()
    assert np.abs(exp_b[(end >= 200) & (end < 230)] - (test[end[(end >= 200) & (end < 230)], 1] - 3.0)).max() < 1.0


def test_the_detector_round_trips_through_json_to_the_same_scores():
    bundle, _ = _features_bundle(_rig().iloc[:400])
    again = Bundle("", ResidualDetector.from_json(bundle.model.to_json()), bundle.scaler, bundle.threshold,
                   bundle.manifest)
    rng = np.random.default_rng(5)
    w = rng.normal(size=(6, bundle.length, 3)) + np.array([0, 200, 0])
    t = np.arange(6 * bundle.length).reshape(6, -1) * NS
    ids = np.full(6, "RIG")
    assert scoring.score_windows(again, w, t, ids) == pytest.approx(scoring.score_windows(bundle, w, t, ids))


def test_zone_mode_scores_every_member_window_major():
    rng = np.random.default_rng(6)
    n = 600
    demand = np.sin(np.arange(n) / 30.0)
    t = np.arange(n) * 300 * NS
    rows = []
    for k, sid in enumerate(["A", "B", "C"]):
        p = 40 + 5 * k - (2 + k) * demand + 0.05 * rng.normal(size=n)
        rows.append(pd.DataFrame({"sensor_id": sid, "event_time": pd.to_datetime(t, utc=True), "pressure": np.round(p, 3)}))
    frame = pd.concat(rows, ignore_index=True)
    s = load_settings(None, ["residual.scales=[1, 3]"])
    fitted = residual.fit(frame, s, None, 300 * NS, 1800 * NS)
    det = fitted.detector
    assert det.mode == "zone" and det.channels == {"network": ["A", "B", "C"]}
    bundle = Bundle("", det, fitted.info["scaler"], Threshold("pot", 50.0), {"features": ["pressure"],
                    "model": {"kind": "residual", "mode": "zone", "zones": det.channels}, "window": {"length": 8}})
    zw = np.stack([frame.pivot(index="event_time", columns="sensor_id", values="pressure").to_numpy()[i - 7:i + 1]
                   for i in (100, 200)])
    zt = np.stack([t[i - 7:i + 1] for i in (100, 200)])
    win, sen = scoring.scored_rows(bundle, np.array(["network", "network"]))
    assert win.tolist() == [0, 0, 0, 1, 1, 1] and sen.tolist() == ["A", "B", "C"] * 2
    zw[1, -3:, 1] -= 1.0                                     # B drops 1 m (20 noise sd) against A and C
    sc = scoring.score_windows(bundle, zw, zt, np.array(["network", "network"]))
    assert sc.shape == (6,) and sc[4] > 50 and max(sc[0], sc[1], sc[2]) < 50
    with pytest.raises(ValueError, match="zone 'Z9' is not in the residual bundle"):
        scoring.score_windows(bundle, zw, zt, np.array(["Z9", "Z9"]))


def test_zone_mode_page_term_is_calibrated_saved_and_adds_up_a_small_drop():
    rng = np.random.default_rng(7)
    n = 1200
    demand = np.sin(np.arange(n) / 30.0)
    t = np.arange(n) * 300 * NS
    wide = np.column_stack([40 + 5 * k - (2 + k) * demand + 0.05 * rng.normal(size=n) for k in range(3)])
    times = pd.to_datetime(t, utc=True)
    frame = pd.concat([pd.DataFrame({"sensor_id": sid, "event_time": times, "pressure": wide[:, k]})
                       for k, sid in enumerate(["A", "B", "C"])], ignore_index=True)
    base = ["residual.scales=[1, 3]", "residual.cusum_steps=12"]
    on = residual.fit(frame, load_settings(None, base + ["residual.cusum_k=1.0", 'residual.cusum_sides="drop"']),
                      None, 300 * NS, 1800 * NS)
    off = residual.fit(frame, load_settings(None, base + ["residual.cusum_k=0"]), None, 300 * NS, 1800 * NS)
    det = on.detector
    assert det.cusum_k == 1.0 and det.cusum_steps == 12 and det.cusum_norm["network"].shape == (3,)
    assert on.info["window_length"] == 12 and off.detector.page("network") is None
    # the norm puts the Page term's 0.995 quantile on the fixed scales': the calibration tails stay alike
    assert np.quantile(on.cal_scores, 0.995) == pytest.approx(np.quantile(off.cal_scores, 0.995), rel=0.25)
    again = ResidualDetector.from_json(det.to_json())
    assert again.cusum_sides == "drop" and again.cusum_norm["network"] == pytest.approx(det.cusum_norm["network"])
    old = json.loads(det.to_json())
    del old["cusum"]                                         # a bundle saved before the Page term scores without it
    assert ResidualDetector.from_json(json.dumps(old)).page("network") is None
    z = np.zeros((1, 12, 3))
    z[0, :, 1] = -2.0                                        # B 2 residual sd low for 12 steps: (2 - 1) * 12 = 12
    page = det.page("network")
    assert channel_scores(z, [1, 3], det.spread["network"], det.mask_z, page)[0, 1] == pytest.approx(
        max(12.0 / page.norm[1], 4.0, (2.0 / det.spread["network"][3][1]) ** 2))
    assert channel_scores(-z, [1, 3], det.spread["network"], det.mask_z, page)[0, 1] == pytest.approx(
        max(4.0, (2.0 / det.spread["network"][3][1]) ** 2))            # a rise: drop-side Page adds nothing


def test_page_settings_are_checked():
    from sentinel.config import ConfigError
    with pytest.raises(ConfigError, match="residual.cusum_k"):
        load_settings(None, ["residual.cusum_k=-1"])
    with pytest.raises(ConfigError, match="cusum_sides"):
        load_settings(None, ['residual.cusum_sides="up"'])
