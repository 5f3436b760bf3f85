"""Peaks-over-threshold thresholds on hand-computed and known-distribution cases."""
import numpy as np
import pytest
from scipy import stats

from sentinel.detect.threshold import MIN_SENSOR_WINDOWS, Threshold, calibrate, fit_gpd, pot_threshold


def test_exponential_tail_by_hand_and_initial_quantile_lowered():
    s = np.arange(1.0, 21.0)             # n = 20
    fit = pot_threshold(s, risk=1e-3, init_quantile=0.9)
    # 0.9 leaves 2 excesses < 10 -> q = 1 - 10/20 = 0.5, t = 10.5, excesses 0.5..9.5 (mean 5)
    assert fit.init_quantile == 0.5 and fit.init_threshold == 10.5 and fit.n_peaks == 10
    assert fit.method == "exponential" and fit.sigma == pytest.approx(5.0)
    # z = t - sigma * ln(risk * n / N_t) = 10.5 - 5 ln(0.002)
    assert fit.value == pytest.approx(10.5 - 5.0 * np.log(0.002))
    assert "lowered" in fit.note and "exponential" in fit.note


def test_large_exponential_sample_hits_the_true_quantile():
    s = np.random.default_rng(1).exponential(size=20_000)
    fit = pot_threshold(s, risk=1e-3)
    assert fit.method == "gpd" and abs(fit.xi) < 0.1
    assert fit.value == pytest.approx(-np.log(1e-3), rel=0.05)


def test_gpd_fit_matches_scipy_and_the_quantile_formula():
    y = stats.genpareto.rvs(0.2, scale=2.0, size=2000, random_state=np.random.default_rng(2))
    xi, sigma = fit_gpd(y)
    c, _, sc = stats.genpareto.fit(y, floc=0)
    assert xi == pytest.approx(c, abs=0.01) and sigma == pytest.approx(sc, rel=0.01)
    s = np.random.default_rng(5).lognormal(size=10_000)
    fit = pot_threshold(s, risk=1e-3, init_quantile=0.8)
    assert fit.n_peaks == 2000 and fit.init_threshold == pytest.approx(np.quantile(s, 0.8))
    want = fit.init_threshold + stats.genpareto.ppf(1 - 1e-3 * 10000 / 2000, fit.xi, scale=fit.sigma)
    assert fit.value == pytest.approx(want, rel=1e-9)
    assert fit.value == pytest.approx(stats.lognorm(1).ppf(0.999), rel=0.15)


def test_shape_is_constrained():
    y = stats.genpareto.rvs(1.0, size=3000, random_state=np.random.default_rng(3))
    assert fit_gpd(y)[0] == pytest.approx(0.5)


def test_target_inside_the_data_is_the_empirical_quantile():
    s = np.arange(100.0)
    fit = pot_threshold(s, risk=0.2)      # 0.2 * 100 = 20 > 10 excesses over the 0.9 quantile
    assert fit.method == "empirical" and fit.value == pytest.approx(np.quantile(s, 0.8))


def test_ties_at_the_top_are_degenerate_not_an_error():
    fit = pot_threshold(np.ones(50), risk=1e-3)
    assert fit.method == "empirical" and fit.value == 1.0


def test_too_few_scores_is_a_sentence():
    with pytest.raises(ValueError, match="19 validation scores are too few.*at least 20"):
        pot_threshold(np.arange(19.0))


def test_todays_quantile_rule_on_47_windows_is_about_the_maximum():
    s = np.random.default_rng(4).exponential(size=47)
    top2 = np.sort(s)[-2:]
    q = calibrate(s, method="quantile", quantile=0.999, margin=1.1).value
    # np.quantile(., 0.999) interpolates between the two largest of 47 scores
    assert q == pytest.approx(1.1 * (top2[0] + 0.954 * (top2[1] - top2[0])))
    assert calibrate(s, method="pot", risk=1e-3).value > np.max(s)   # POT extrapolates past it


def test_pot_per_sensor_only_with_enough_scores_and_json_round_trip():
    rng = np.random.default_rng(6)
    a, b = rng.exponential(1.0, MIN_SENSOR_WINDOWS), rng.exponential(3.0, 50)
    ids = np.array(["a"] * a.size + ["b"] * b.size)
    th = calibrate(np.concatenate([a, b]), ids, method="pot", risk=1e-3)
    assert set(th.per_sensor) == {"a"}                          # b: 50 < 200 scores -> global
    assert th.per_sensor["a"] == pytest.approx(pot_threshold(a, 1e-3).value)
    assert th.for_sensors(np.array(["b", "zz"])).tolist() == [th.value, th.value]
    again = Threshold.from_json(th.to_json())
    assert again.method == "pot" and again.params["method"] in ("exponential", "gpd") and again.per_sensor == th.per_sensor
