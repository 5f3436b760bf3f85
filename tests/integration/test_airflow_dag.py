"""dags/sentinel_retrain.py loaded by Airflow's own DagBag, in a throw-away environment.

Airflow is not a dependency of Pressure Sentinel (the DAG only runs the ``sentinel`` command), so
this test builds a fresh environment with uv, installs the pinned Airflow there and loads the
DAG folder with DagBag: about 10 s to install and 12 s to load here (uv itself is bootstrapped
from PyPI into the same temporary folder when it is not on PATH, about 20 s more).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = "3.3.2"   # the Airflow release the DAG is checked against
UV = "0.13.8"

LOAD = r"""
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag   # Airflow 3
except ImportError:
    from airflow.models.dagbag import DagBag           # Airflow 2
bag = DagBag(sys.argv[1])
dag = bag.dags.get("sentinel_retrain")
out = {"errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
if dag is not None:
    out["tasks"] = {t.task_id: {"upstream": sorted(t.upstream_task_ids), "command": t.bash_command} for t in dag.tasks}
    out["timetable"] = repr(dag.timetable)
    out["max_active_runs"] = dag.max_active_runs
print("RESULT " + json.dumps(out))
"""


def find_uv(tmp: Path) -> str:
    uv = shutil.which("uv") or (str(Path(sys.executable).with_name("uv")) if Path(sys.executable).with_name("uv").exists() else None)
    if uv:
        return uv
    tool = tmp / "uv-tool"
    subprocess.run([sys.executable, "-m", "venv", str(tool)], check=True, timeout=120)
    subprocess.run([str(tool / "bin" / "pip"), "install", "-q", f"uv=={UV}"], check=True, timeout=300)
    return str(tool / "bin" / "uv")


@pytest.mark.airflow
def test_dagbag_loads_the_retrain_dag(tmp_path):
    uv = find_uv(tmp_path)
    env_dir = tmp_path / "airflow-env"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["UV_CACHE_DIR"] = env.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(env_dir)], check=True, timeout=120, env=env)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(env_dir / "bin" / "python"),
                    f"apache-airflow=={AIRFLOW}"], check=True, timeout=600, env=env)
    config = tmp_path / "sentinel.toml"
    config.write_text('[lifecycle]\nschedule = "@daily"\npromote = "auto"\n')
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), SENTINEL_HOME=str(ROOT), SENTINEL_CONFIG=str(config),
               SENTINEL_BIN="/opt/sentinel/bin/sentinel")
    proc = subprocess.run([str(env_dir / "bin" / "python"), "-c", LOAD, str(ROOT / "dags")], capture_output=True,
                          text=True, timeout=300, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["errors"] == {} and out["dags"] == ["sentinel_retrain"]
    tasks = out["tasks"]
    assert tasks["retrain"]["upstream"] == [] and tasks["report"]["upstream"] == ["retrain"]
    assert tasks["drift"]["upstream"] == ["report"] and out["max_active_runs"] == 1
    assert tasks["retrain"]["command"] == f"cd {ROOT} && /opt/sentinel/bin/sentinel retrain --config {config}"
    assert "'0 0 * * *'" in out["timetable"]  # lifecycle.schedule = "@daily" from the config file
