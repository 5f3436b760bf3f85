"""The benchmark's measures, on made-up timelines: when a stepped run kept up, what a batch
consumed (Kafka end offsets), and the paced producer's schedule."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sentinel.stream.query import consumed_offsets

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from paced_producer import parse_schedule  # noqa: E402
from throughput import step_verdicts  # noqa: E402


def timeline(rates, step_s, read_cap):
    """Events sent evenly at each step's rate; a batch every second reads what was sent by
    its start, but at most ``read_cap`` events/s on the whole."""
    counts = [int(r * step_s) for r in rates]
    sent = np.concatenate([np.linspace(0, step_s, n, endpoint=False) + k * step_s
                           for k, n in enumerate(counts)]) + 100.0
    t_start = 100.0 + np.arange(0, len(rates) * step_s + 1, 1.0)
    available = np.searchsorted(sent, t_start, side="right")
    consumed = np.minimum(available, (read_cap * (t_start - 100.0)).astype(int))
    return counts, sent, t_start, t_start + 0.5, consumed


def test_a_job_that_reads_everything_keeps_up_with_every_step():
    counts, sent, t0, t1, consumed = timeline([1000, 2000], 12, read_cap=10_000)
    r = step_verdicts([1000, 2000], counts, sent, t0, t1, consumed)
    assert [s["kept_up"] for s in r["steps"]] == [True, True]
    assert r["sustained_events_per_s"] == 2000
    assert r["steps"][0]["read_events_per_s"] == pytest.approx(1000, rel=0.1)


def test_a_job_capped_below_the_second_step_falls_behind_there():
    counts, sent, t0, t1, consumed = timeline([1000, 3000], 12, read_cap=1500)
    r = step_verdicts([1000, 3000], counts, sent, t0, t1, consumed)
    assert [s["kept_up"] for s in r["steps"]] == [True, False]
    assert r["sustained_events_per_s"] == 1000
    assert r["steps"][1]["backlog_slope_s_per_s"] > 0.3  # reads half of what comes: grows ~0.5 s a second


def test_no_step_kept_up_gives_no_sustained_rate():
    counts, sent, t0, t1, consumed = timeline([3000, 4000, 5000], 12, read_cap=1000)
    r = step_verdicts([3000, 4000, 5000], counts, sent, t0, t1, consumed)
    assert [s["kept_up"] for s in r["steps"]] == [False, False, False]
    assert np.isnan(r["sustained_events_per_s"])


def test_a_backlog_that_grows_with_the_rate_but_then_holds_is_kept_up():
    # the batch cycle (and with it the backlog) steps up at the start of the step, then holds
    counts, sent, t0, t1, consumed = timeline([1000, 2000], 12, read_cap=10_000)
    lag = np.where(t0 < 100 + 12 + 3, 0.0, 3.0)  # reads what was sent 3 s ago from 3 s into step 2
    consumed = np.searchsorted(sent, t0 - lag, side="right")
    r = step_verdicts([1000, 2000], counts, sent, t0, t1, consumed)
    assert r["steps"][1]["kept_up"] and r["steps"][1]["backlog_s_mean"] > 2


def test_consumed_offsets_sums_the_kafka_partitions():
    offsets = {"bench": {"0": 10, "1": 5, "2": 0}}
    assert consumed_offsets({"sources": [{"endOffset": offsets}]}) == 15
    assert consumed_offsets({"sources": [{"endOffset": json.dumps(offsets)}]}) == 15
    assert consumed_offsets({"sources": [{"endOffset": 42}]}) is None  # socket: no record counts


def test_schedule_parses_and_says_what_is_wrong():
    assert parse_schedule("5000:100,10000.5:20") == [(5000.0, 100), (10000.5, 20)]
    with pytest.raises(SystemExit, match="rate:count"):
        parse_schedule("5000")
