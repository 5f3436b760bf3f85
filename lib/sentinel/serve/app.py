"""The FastAPI application: one router per resource, the store as a dependency, errors as sentences.

    app = create_app("sqlite:///data/demo.db")          # what `sentinel serve` runs on uvicorn
    app = create_app(open_store(url, settings))         # or a client opened elsewhere (tests)

Routes: ``/`` (the live page), ``/static/*`` (its assets), ``/api/sensors``,
``/api/sensors/{id}/series``, ``/api/anomalies``, ``/api/incidents`` (+ ``/{id}``, ``/{id}/ack``,
``/{id}/close``, ``/{id}/label``), ``/api/stats``, ``/api/health``, ``/metrics``, ``/docs``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from sentinel.config import ConfigError, Settings
from sentinel.incidents.lifecycle import ActionError, UnknownIncident
from sentinel.store.errors import NotFound, StoreError

log = logging.getLogger("sentinel.serve")

TOKEN_ENV = "SENTINEL_API_TOKEN"
STATIC = Path(__file__).resolve().parent / "static"
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")


def create_app(store, settings: Settings | None = None, *, token: str | None = None,
               token_env: str = TOKEN_ENV, root_path: str = "") -> FastAPI:
    """Build the app over ``store``.

    Args:
        store: a store URL (``sqlite:///...``, ``postgresql://...``, ``s3://...``), a
            ``store.query.Store``, or a client from ``store.open_store``.
        settings: for the store (S3 endpoint, PostgreSQL schema default); if not given, defaults.
        token: the operator token writes must carry; if not given, the ``token_env``
            environment variable (unset or empty: writes are refused with 403).
        token_env: the variable's name, for the messages (default SENTINEL_API_TOKEN).
        root_path: the path prefix a reverse proxy serves the app under (e.g. ``/sentinel``).
    """
    from sentinel.incidents import lifecycle
    from sentinel.serve.routes import anomalies, incidents, models, ops, sensors, series
    from sentinel.store.client import open_store

    settings = settings or Settings()
    # the incident rules (new -> acknowledged -> closed, labels) are handed to the store's writes
    client = store if hasattr(store, "incidents") else open_store(store, settings, rules=lifecycle)
    app = FastAPI(title="Pressure Sentinel", version="1", root_path=root_path,
                  description="Operator API of Pressure Sentinel: sensors and their states, anomalies, incidents "
                              "(acknowledge, close, label with `Authorization: Bearer <token>`), series for charts, "
                              "hourly statistics, health and Prometheus metrics. Times are ISO-8601 UTC.")
    app.state.client = client
    app.state.token = token if token is not None else (os.environ.get(token_env) or None)
    app.state.token_env = token_env
    app.state.store_name = client.describe()
    app.state.writable = not client.read_only
    app.add_middleware(GZipMiddleware, minimum_size=4096)
    app.state.settings = settings
    for module in (sensors, series, anomalies, incidents, models, ops):
        app.include_router(module.router)
    install_error_handlers(app)
    missing = [f for f in VENDOR_FILES if not (STATIC / "vendor" / f).is_file()]
    if missing:
        log.warning("the page's chart library is missing (%s): run `bash scripts/build-web.sh`", ", ".join(missing))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    log.info("serving %s (writes %s)", app.state.store_name,
             "enabled" if app.state.token and app.state.writable else
             "read-only: S3 store" if not app.state.writable else f"disabled: {token_env} unset")
    return app


def problem(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def validation_sentence(exc: RequestValidationError) -> str:
    """pydantic's error list -> one sentence about the first problem."""
    errors = exc.errors()
    if not errors:
        return "the request is not valid"
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body")]
    where = {"query": "query parameter", "path": "path parameter", "body": "body field"}.get(
        str(e.get("loc", ("",))[0]), "field")
    name = ".".join(loc) or "body"
    msg = str(e.get("msg", "is not valid")).rstrip(".")
    given = e.get("input")
    shown = "" if given is None or isinstance(given, (dict, list)) else f" (got {str(given)[:40]!r})"
    text = f"{where} {name}: {msg[0].lower() + msg[1:]}{shown}"
    if name in ("limit",) and "less than" in msg:
        text += ": fetch the next page with offset instead"
    return text


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return problem(422, validation_sentence(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(UnknownIncident)
    async def _unknown(request: Request, exc: UnknownIncident):
        return problem(404, str(exc))

    @app.exception_handler(ActionError)
    async def _action(request: Request, exc: ActionError):
        return problem(409, str(exc))

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError):
        return problem(400, str(exc))

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return problem(404, str(exc))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return problem(503, str(exc))
