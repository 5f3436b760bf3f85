"""Airflow DAG ``sentinel_retrain``: scheduled retraining of Pressure Sentinel, then its reports.

    retrain  ->  report  ->  drift

- ``retrain``: ``sentinel retrain --config CONFIG``: the last ``lifecycle.window_days`` of the
  store's scores, labelled incidents and mutes left out, challenger vs champion on the newest
  held-out days, promoted per ``lifecycle.promote`` (auto | manual; a running deploy job
  switches to a promoted version between micro-batches, no restart).
- ``report``: ``sentinel report`` of the last 7 days into ``reports/<run date>/``.
- ``drift``: ``sentinel models drift`` (per-sensor score drift of the served model) into
  ``reports/<run date>/drift.md``.

The schedule is ``lifecycle.schedule`` in the config file (default ``@weekly``; a cron expression
works too). The DAG only runs the ``sentinel`` command line, so Airflow and Pressure Sentinel
can live in different Python environments. Environment:

- ``SENTINEL_HOME``: the project folder (default: the folder above ``dags/``);
- ``SENTINEL_CONFIG``: the settings file (default: ``$SENTINEL_HOME/conf/sentinel.toml``);
- ``SENTINEL_BIN``: the command (default: ``$SENTINEL_HOME/.venv/bin/sentinel``).

Works with Airflow 2.4+ and 3.x. Without Airflow, docs/lifecycle.md has the cron line.
"""
from __future__ import annotations

import os
import shlex
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
try:  # Airflow 3, and Airflow 2 with the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:
    from airflow.operators.bash import BashOperator

HOME = Path(os.environ.get("SENTINEL_HOME", Path(__file__).resolve().parents[1]))
CONFIG = Path(os.environ.get("SENTINEL_CONFIG", HOME / "conf" / "sentinel.toml"))
BIN = os.environ.get("SENTINEL_BIN", str(HOME / ".venv" / "bin" / "sentinel"))
DEFAULT_SCHEDULE = "@weekly"


def schedule_of(config: Path) -> str:
    """``lifecycle.schedule`` of the settings file, or ``@weekly`` when it is missing or unset
    (read with tomllib: the DAG file must parse fast and without the sentinel package)."""
    try:
        with open(config, "rb") as f:
            value = tomllib.load(f).get("lifecycle", {}).get("schedule", DEFAULT_SCHEDULE)
    except (OSError, tomllib.TOMLDecodeError):
        return DEFAULT_SCHEDULE
    return value if isinstance(value, str) and value.strip() else DEFAULT_SCHEDULE


def commands(home: Path = HOME, config: Path = CONFIG, bin_: str = BIN) -> dict[str, str]:
    """The bash command of each task (``{{ ds }}`` is the run's date, rendered by Airflow)."""
    cd = f"cd {shlex.quote(str(home))} && "
    run = f"{shlex.quote(bin_)} {{}} --config {shlex.quote(str(config))}"
    out = "reports/{{ ds }}"
    return {
        "retrain": cd + run.format("retrain"),
        "report": cd + f"mkdir -p {out} && " + run.format("report") + f" --since 7d --out {out}",
        "drift": cd + f"mkdir -p {out} && " + run.format("models drift") + f" > {out}/drift.md",
    }


with DAG(
    dag_id="sentinel_retrain",
    description="Pressure Sentinel: retrain on recent history, promote per policy, report and drift",
    schedule=schedule_of(CONFIG),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # two retrains at once would race on the registry's pointer
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["sentinel", "lifecycle"],
) as dag:
    cmd = commands()
    retrain = BashOperator(task_id="retrain", bash_command=cmd["retrain"], execution_timeout=timedelta(hours=3))
    report = BashOperator(task_id="report", bash_command=cmd["report"], execution_timeout=timedelta(minutes=30))
    drift = BashOperator(task_id="drift", bash_command=cmd["drift"], execution_timeout=timedelta(minutes=30))
    retrain >> report >> drift
