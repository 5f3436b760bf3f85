"""Promotion policy: auto promotes a challenger at least as good on every figure, never a worse one."""
import pytest

from sentinel.lifecycle.compare import decide
from sentinel.lifecycle.registry import LifecycleError


def figures(fa, recall=None, days=20.0):
    return {"false_alarms_per_sensor_day": fa, "recall": recall, "normal_sensor_days": days}


@pytest.mark.parametrize("champion,challenger,verdict", [
    (figures(0.10, 0.9), figures(0.05, 0.9), "better"),
    (figures(0.10, 0.8), figures(0.10, 0.9), "better"),
    (figures(0.10, 0.9), figures(0.10, 0.9), "equal"),
    (figures(0.10), figures(0.10), "equal"),                 # no labelled incidents: recall not judged
    (figures(0.10, 0.9), figures(0.10), "equal"),            # the challenger's window had none
])
def test_auto_accepts_equal_or_better(champion, challenger, verdict):
    d = decide(champion, challenger, "auto")
    assert d.promote and d.verdict == verdict and d.reasons


@pytest.mark.parametrize("champion,challenger,what", [
    (figures(0.10, 0.9), figures(0.11, 0.9), "false alarms 0.110"),
    (figures(0.10, 0.9), figures(0.01, 0.8), "recall 0.800"),   # fewer false alarms do not buy lost recall
    (figures(0.00), figures(0.05), "false alarms 0.050"),
])
def test_auto_refuses_a_worse_challenger(champion, challenger, what):
    d = decide(champion, challenger, "auto")
    assert not d.promote and d.verdict == "worse" and what in d.reasons[0]


def test_tolerances():
    assert decide(figures(0.10, 0.9), figures(0.14, 0.9), "auto", false_alarm_tolerance=0.05).promote
    assert not decide(figures(0.10, 0.9), figures(0.16, 0.9), "auto", false_alarm_tolerance=0.05).promote
    assert decide(figures(0.10, 0.9), figures(0.10, 0.85), "auto", recall_tolerance=0.1).promote
    assert not decide(figures(0.10, 0.9), figures(0.10, 0.75), "auto", recall_tolerance=0.1).promote


def test_manual_never_promotes_but_judges():
    d = decide(figures(0.10), figures(0.01), "manual")
    assert not d.promote and d.verdict == "better" and "sentinel models promote" in d.reasons[-1]


def test_first_model_incompatible_and_too_little_data():
    assert decide(None, figures(0.3), "auto").verdict == "no_champion"
    assert decide(None, figures(0.3), "auto").promote
    d = decide(figures(0.1), figures(0.0), "auto", incompatible="model b cannot replace a: features differ")
    assert not d.promote and d.verdict == "incompatible"
    d = decide(figures(0.1), figures(0.0, days=0.5), "auto", min_sensor_days=1.0)
    assert not d.promote and d.verdict == "too_little_data"


def test_unknown_policy_is_one_sentence():
    with pytest.raises(LifecycleError, match="--promote auto or --promote manual"):
        decide(None, figures(0.0), "sometimes")
