"""The operator page in a real browser: `sentinel serve`'s app on uvicorn, headless Debian chromium
driven by Playwright, while the deploy job streams into the store.

The stream is the product's own query (``sentinel.stream.query.run`` in pytest's Spark session,
the tiny bundle, SQLite store, a file source the test feeds one file per micro-batch): readings
of the tiny network, then a burst on one sensor. The page is opened before any incident exists;
the test waits (Playwright's auto-waiting assertions, no sleeps) for the incident the job opens
to appear without a reload, acknowledges it with the page's button, checks the store says so,
lets the job update the incident further (the acknowledgement stays), and keeps a screenshot in
reports/screenshots/serve.png (SENTINEL_DOCS_SCREENSHOT=1: also docs/img/serve.png). A second
test runs the `sentinel serve` command itself as a subprocess.

Needs /usr/bin/chromium (`make test` installs Debian's chromium when it is missing).
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from sentinel.config import load_settings
from sentinel.store.client import open_store
from sentinel.store.sinks.sqlite import SqliteSink

from tests.serve_data import Episode, Feed, registry

pytestmark = [pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token"
BURST_SENSOR = "PT-0002"
STEPS_PER_FILE = 6          # 30 minutes of readings of every sensor per micro-batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Feed2Files:
    """Writes the live readings into the stream's source folder, one file per call."""

    def __init__(self, readings, folder: Path, data):
        from sentinel.ingest.events import to_event_json
        self.folder, self.k = folder, 0
        steps = sorted(readings["timestamp"].unique())
        self.files = []
        for i in range(0, len(steps), STEPS_PER_FILE):
            part = readings[readings["timestamp"].isin(steps[i:i + STEPS_PER_FILE])]
            self.files.append([to_event_json(r.sensor_id, r.timestamp, {"pressure": r.pressure}, data)
                               for r in part.itertuples()])

    def next(self) -> bool:
        if self.k >= len(self.files):
            return False
        tmp = self.folder / f".part-{self.k:04d}.tmp"
        tmp.write_text("\n".join(self.files[self.k]) + "\n")
        tmp.rename(self.folder / f"part-{self.k:04d}.jsonl")   # the file source never sees half a file
        self.k += 1
        return True


@pytest.fixture
def served(tmp_path, spark, tiny_bundle, tiny_settings):
    if not Path(CHROMIUM).exists():
        msg = f"{CHROMIUM} missing: apt-get install chromium (make test does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    import uvicorn
    from sentinel.detect.model import load_bundle
    from sentinel.ingest.synthetic import simulate
    from sentinel.serve import create_app
    from sentinel.store.sinks import build_sinks
    from sentinel.stream import query as stream_query

    # the tiny network's sensors (same seed), a later day, one burst that the job must turn into an incident
    live = simulate(n_sensors=4, days=1, interval_s=300, seed=3, start="2026-01-14T00:00:00Z",
                    anomalies_per_sensor_week=0)
    r = live.readings.copy()
    t_burst = r["timestamp"].min() + (r["timestamp"].max() - r["timestamp"].min()) / 3
    hit = (r["sensor_id"] == BURST_SENSOR) & (r["timestamp"] >= t_burst)
    r.loc[hit, "pressure"] = (r.loc[hit, "pressure"] * 0.55).round(3)
    src, db = tmp_path / "in", tmp_path / "live.db"
    src.mkdir()
    settings = tiny_settings.replace(**{"stream.checkpoint": str(tmp_path / "ckpt"), "sinks.sqlite.path": str(db),
                                        "stream.trigger_s": 0.5})
    sinks = build_sinks(settings)
    for s in sinks:
        s.load_sensors(live.sensors)
    files = Feed2Files(r, src, settings.data)
    for _ in range(3):          # the first 90 minutes: windows warm up, nothing is wrong yet
        files.next()
    raw = (spark.readStream.format("text").option("maxFilesPerTrigger", 1).load(str(src))
           .selectExpr("value AS raw", "CAST(NULL AS STRING) AS key"))
    stop = threading.Event()
    done: dict = {}

    def job():
        try:
            done["totals"] = stream_query.run(spark, settings.replace(**{"stream.idle_timeout_s": 600.0}),
                                              load_bundle(str(tiny_bundle)), sinks, source_df=raw,
                                              registry=live.sensors, stop_event=stop)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            done["error"] = exc

    runner = threading.Thread(target=job, daemon=True, name="deploy")
    runner.start()
    url = f"sqlite:///{db}"
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(url, load_settings(), token=TOKEN), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:   # uvicorn sets .started once it listens
        threading.Event().wait(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}/", url, files, done
    finally:
        stop.set()
        runner.join(120)
        for s in sinks:
            s.close()
        server.should_exit = True
        thread.join(10)


def test_an_incident_appears_live_and_is_acknowledged_from_the_page(served):
    from playwright.sync_api import expect, sync_playwright
    page_url, store_url, files, done = served
    shots = ROOT / "reports" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1050})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            expect(page.locator("circle.sensor")).to_have_count(4)
            # the job's first batches reach the page (the health line names the newest batch)
            expect(page.locator("#health")).to_contain_text("batch", timeout=180_000)
            expect(page.locator("#incidents")).to_have_attribute("data-count", "0")
            page.evaluate("window.__sameDocument = true")   # gone if the page ever reloads

            cards = page.locator("article.incident")
            while files.next():      # the stream goes on; the burst starts a third of the way in
                if cards.count():
                    break
                page.wait_for_timeout(700)   # one file per trigger (0.5 s): paces the feed, asserts nothing
            expect(cards).to_have_count(1, timeout=60_000)
            card = cards.first
            iid = card.get_attribute("data-incident-id")
            expect(card).to_have_attribute("data-status", "new")
            expect(card.locator(".explanation")).to_contain_text(BURST_SENSOR)
            expect(page.locator(f'circle.sensor[data-sensor-id="{BURST_SENSOR}"]')).to_have_attribute(
                "data-state", "incident")
            assert page.evaluate("window.__sameDocument") is True

            card.get_by_role("button", name=f"show the chart of incident {iid}").click()
            expect(page.locator("#chart-readings canvas")).to_have_count(1)
            expect(page.locator("#chart-score canvas")).to_have_count(1)
            expect(page.locator("#chart-title")).to_contain_text(BURST_SENSOR)

            page.fill("#actor", "browser-test")
            page.fill("#token", TOKEN)
            card.get_by_role("button", name=f"acknowledge incident {iid}").click()
            expect(page.locator("#status")).to_have_text(f"Incident {iid} acknowledged.")
            expect(card).to_have_attribute("data-status", "acknowledged")
            expect(card.get_by_role("button", name=f"acknowledge incident {iid}")).to_be_disabled()
            with open_store(store_url, load_settings()) as store:
                stored = store.incident(iid)
            assert (stored["status"], stored["acknowledged_by"]) == ("acknowledged", "browser-test")
            assert [a["action"] for a in stored["actions"]] == ["ack"]
            acked_in = int(stored["batch_id"])

            # the job keeps updating the incident; the page follows and the status stays acknowledged
            for _ in range(4):
                files.next()
            page.wait_for_function("n => Number((document.querySelector('#health').textContent.match(/batch (\\d+)/) "
                                   "|| [0, -1])[1]) >= n", arg=acked_in + 2, timeout=60_000)
            expect(card).to_have_attribute("data-status", "acknowledged")
            assert page.evaluate("window.__sameDocument") is True and not errors, errors
            page.screenshot(path=str(shots / "serve.png"), full_page=True)
        finally:
            browser.close()
    assert "error" not in done, done.get("error")
    with open_store(store_url, load_settings()) as store:
        later = store.incident(iid)
    assert later["status"] == "acknowledged" and int(later["batch_id"]) > acked_in
    if os.environ.get("SENTINEL_DOCS_SCREENSHOT") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "serve.png", ROOT / "docs" / "img" / "serve.png")


def test_sentinel_serve_command_serves_the_store_and_never_prints_the_token(tmp_path):
    """`sentinel serve` as a user runs it: a subprocess on a free port, the URL on stderr, the
    token neither printed nor logged, SIGINT stops it cleanly."""
    import signal
    import subprocess

    import httpx2
    db = tmp_path / "cli.db"
    sink = SqliteSink(db)
    sink.setup()
    sink.load_sensors(registry(4))
    Feed(4, episodes=[Episode("PT-0002", 2, 3)]).write([sink], steps=12, per_batch=6)
    port = free_port()
    env = dict(os.environ, SENTINEL_API_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "sentinel"), "serve", "--store", f"sqlite:///{db}",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(300):   # bounded: until uvicorn listens (about 2 s)
                try:
                    health = http.get("/api/health")
                    break
                except httpx2.TransportError:
                    proc.poll()
                    assert proc.returncode is None, proc.stdout.read()
                    threading.Event().wait(0.05)
            assert health.status_code == 200 and health.json()["newest_batch"]["batch_id"] == 1
            assert len(http.get("/api/incidents").json()["items"]) == 1
            refused = http.post("/api/incidents/x/ack", headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out and "SENTINEL_API_TOKEN set" in out
    assert TOKEN not in out and "wrong" not in out.replace("wrong operator token", "")
