"""dags/sentinel_retrain.py without Airflow: its structure read from the source, its helper
functions run on their own. (tests/integration/test_airflow_dag.py loads it with Airflow's DagBag.)"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "sentinel_retrain.py"
TREE = ast.parse(DAG_FILE.read_text(encoding="utf-8"))


def helpers() -> dict:
    """The module's functions and constants, executed without its Airflow imports."""
    keep = [n for n in TREE.body if isinstance(n, (ast.FunctionDef, ast.Assign, ast.Import, ast.ImportFrom))
            and not (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("airflow"))]
    ns = {"__file__": str(DAG_FILE)}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(DAG_FILE), "exec"), ns)
    return ns


def test_the_dag_has_three_tasks_in_order_and_one_run_at_a_time():
    src = DAG_FILE.read_text()
    calls = {n.func.id: n for n in ast.walk(TREE) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    dag = {k.arg: k.value for k in calls["DAG"].keywords}
    assert ast.literal_eval(dag["dag_id"]) == "sentinel_retrain"
    assert ast.literal_eval(dag["max_active_runs"]) == 1 and ast.literal_eval(dag["catchup"]) is False
    tasks = [ast.literal_eval(k.value) for n in ast.walk(TREE) if isinstance(n, ast.Call)
             and getattr(n.func, "id", "") == "BashOperator" for k in n.keywords if k.arg == "task_id"]
    assert tasks == ["retrain", "report", "drift"]
    assert "retrain >> report >> drift" in src
    assert "from airflow.sdk import DAG" in src and "from airflow import DAG" in src  # 3.x and 2.x


def test_commands_and_schedule(tmp_path):
    ns = helpers()
    cmd = ns["commands"](tmp_path / "my home", tmp_path / "c.toml", "/opt/sentinel/bin/sentinel")
    assert cmd["retrain"] == f"cd '{tmp_path}/my home' && /opt/sentinel/bin/sentinel retrain --config {tmp_path}/c.toml"
    assert "sentinel report --config" in cmd["report"] and "--out reports/{{ ds }}" in cmd["report"]
    assert cmd["drift"].endswith("> reports/{{ ds }}/drift.md") and "models drift" in cmd["drift"]
    cfg = tmp_path / "c.toml"
    assert ns["schedule_of"](cfg) == "@weekly"                      # no file
    cfg.write_text('[lifecycle]\nschedule = "0 3 * * 1"\n')
    assert ns["schedule_of"](cfg) == "0 3 * * 1"
    cfg.write_text("[lifecycle\n")
    assert ns["schedule_of"](cfg) == "@weekly"                      # unreadable: the default
    import tomllib
    documented = tomllib.loads((ROOT / "conf" / "sentinel.toml").read_text())["lifecycle"]["schedule"]
    assert ns["schedule_of"](ROOT / "conf" / "sentinel.toml") == documented == ns["DEFAULT_SCHEDULE"]
