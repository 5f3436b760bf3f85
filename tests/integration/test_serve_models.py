"""/api/models and /api/drift over a real registry folder and SQLite store (FastAPI TestClient)."""
from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from sentinel.config import load_settings
from sentinel.detect.model import load_bundle, pointer_text
from sentinel.store.sinks.sqlite import SqliteSink


@pytest.fixture
def app_over(tmp_path, tiny_bundle):
    from sentinel.serve import create_app
    reg = tmp_path / "models"
    version = load_bundle(str(tiny_bundle)).version
    shutil.copytree(tiny_bundle, reg / version)
    (reg / "promoted").write_text(pointer_text(version))
    db = tmp_path / "s.db"
    SqliteSink(db).setup()

    def make(registry):
        settings = load_settings(None, [f'lifecycle.registry="{registry}"', 'stream.model=""'])
        return TestClient(create_app(f"sqlite:///{db}", settings, token="t"))
    return make, reg, version


def test_models_lists_the_registry_and_its_promoted_version(app_over):
    make, reg, version = app_over
    body = make(reg).get("/api/models").json()
    assert [v["version"] for v in body["versions"]] == [version]
    assert body["promoted"] == version


def test_drift_without_scores_says_so_and_a_missing_registry_is_a_404(app_over, tmp_path):
    make, reg, _ = app_over
    r = make(reg).get("/api/drift", params={"since": "30d"})
    assert r.status_code == 200 and r.json()["sensors"] == [] and r.json()["summary"]["suggest_retrain"] is False
    assert make(reg).get("/api/drift", params={"since": "bogus"}).status_code == 400
    missing = make(tmp_path / "nowhere").get("/api/models")
    assert missing.status_code == 404 and "nowhere" in missing.json()["detail"]
