"""The operator page in a real browser: `sentinel serve`'s app on uvicorn, headless Debian chromium
driven by Playwright, while a small stream writes micro-batches into the store.

The stream here is the sink contract driven from a thread (``tests.serve_data.Feed``: the
records the deploy job's writer hands every sink, BatchRecords through the real SQLite sink),
two 5-minute steps per micro-batch. The page is opened before any incident exists; the test
waits (Playwright's auto-waiting assertions, no sleeps) for the incident to appear without a
reload, acknowledges it with the page's button, checks the store says so, and keeps a
screenshot in reports/screenshots/serve.png (SENTINEL_DOCS_SCREENSHOT=1: also docs/img/serve.png).
A second test runs the `sentinel serve` command itself as a subprocess.

Needs /usr/bin/chromium (`make test` installs Debian's chromium when it is missing).
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from sentinel.config import load_settings
from sentinel.store.client import open_store
from sentinel.store.sinks.sqlite import SqliteSink

from tests.serve_data import Episode, Feed, registry

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token"
SENSORS, STEPS_PER_BATCH, BATCHES = 12, 2, 60
EPISODE = Episode("PT-0007", first_step=10, steps=60, severity=3.5, kind="leak")  # opens in batch 5, stays open
BATCH_EVERY_S = 0.5   # the simulated stream's trigger interval


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stream(threading.Thread):
    """Writes the feed's micro-batches to the sink, one per BATCH_EVERY_S, once started."""

    def __init__(self, feed: Feed, sink: SqliteSink, first_batch: int, first_step: int):
        super().__init__(daemon=True, name="feed")
        self.feed, self.sink, self.batch, self.step = feed, sink, first_batch, first_step
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            while not self.stop.is_set() and self.batch < BATCHES:
                self.sink.write(self.feed.batch(self.batch, self.step, self.step + STEPS_PER_BATCH))
                self.batch += 1
                self.step += STEPS_PER_BATCH
                self.stop.wait(BATCH_EVERY_S)   # pacing of the simulated trigger, not a wait for a result
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc


@pytest.fixture
def served(tmp_path):
    if not Path(CHROMIUM).exists():
        msg = f"{CHROMIUM} missing: apt-get install chromium (make test does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    import uvicorn
    from sentinel.serve import create_app
    db = tmp_path / "live.db"
    sink = SqliteSink(db)
    sink.setup()
    sink.load_sensors(registry(SENSORS))
    feed = Feed(SENSORS, episodes=[EPISODE])
    feed.write([sink], steps=4, per_batch=STEPS_PER_BATCH)      # batches 0-1: the stream is running, all ok
    url = f"sqlite:///{db}"
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(url, load_settings(), token=TOKEN), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    started = threading.Event()
    for _ in range(200):   # uvicorn sets .started once it listens
        if server.started:
            started.set()
            break
        started.wait(0.05)
    assert server.started, "uvicorn did not start"
    stream = Stream(feed, sink, first_batch=2, first_step=4)
    try:
        yield f"http://127.0.0.1:{port}/", url, stream, feed
    finally:
        stream.stop.set()
        if stream.is_alive():
            stream.join(10)
        server.should_exit = True
        thread.join(10)


def test_an_incident_appears_live_and_is_acknowledged_from_the_page(served):
    from playwright.sync_api import expect, sync_playwright
    page_url, store_url, stream, feed = served
    iid = feed.incident_id(EPISODE)
    shots = ROOT / "reports" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1050})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url)
            expect(page.locator("#updated")).not_to_have_attribute("data-polls", "0")
            expect(page.locator("#incidents")).to_have_attribute("data-count", "0")
            expect(page.locator("circle.sensor")).to_have_count(SENSORS)
            page.evaluate("window.__sameDocument = true")   # gone if the page ever reloads

            stream.start()   # the stream goes on; the leak opens in its 4th batch
            card = page.locator(f'article.incident[data-incident-id="{iid}"]')
            expect(card).to_be_visible(timeout=30_000)
            expect(card).to_have_attribute("data-status", "new")
            expect(card.locator(".explanation")).to_contain_text("leak at PT-0007")
            expect(page.locator('circle.sensor[data-sensor-id="PT-0007"]')).to_have_attribute("data-state", "incident")
            assert page.evaluate("window.__sameDocument") is True

            card.get_by_role("button", name=f"show the chart of incident {iid}").click()
            expect(page.locator("#chart-readings canvas")).to_have_count(1)
            expect(page.locator("#chart-score canvas")).to_have_count(1)
            expect(page.locator("#chart-title")).to_contain_text("PT-0007")

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

            # the stream keeps updating the incident; the page follows and the status stays acknowledged
            page.wait_for_function("n => Number((document.querySelector('#health').textContent.match(/batch (\\d+)/) "
                                   "|| [0, -1])[1]) >= n", arg=acked_in + 2, timeout=30_000)
            expect(card).to_have_attribute("data-status", "acknowledged")
            assert page.evaluate("window.__sameDocument") is True and not errors, errors
            page.screenshot(path=str(shots / "serve.png"), full_page=True)
        finally:
            browser.close()
    assert stream.error is None, stream.error
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
