"""``GET /api/models`` (the registry: versions, lineage, the promoted pointer, promotions) and
``GET /api/drift`` (per sensor: recent scores against the served model's validation scores).

The registry is ``lifecycle.registry`` or, if empty, ``stream.model`` (what the deploy job
serves); both answer 404 with a sentence when no registry is configured or found.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from sentinel.serve.deps import client, ident, window

router = APIRouter(tags=["models"])


def _registry(request: Request) -> str:
    s = request.app.state.settings
    ref = s.lifecycle.registry or s.stream.model
    if not ref:
        raise HTTPException(404, "no model registry is configured: set lifecycle.registry or stream.model")
    from pathlib import Path

    from sentinel.store.storage import is_s3_url
    if not is_s3_url(ref) and not Path(ref).expanduser().exists():
        raise HTTPException(404, f"model registry {ref} does not exist: train a model into it with `sentinel train`")
    return ref


@router.get("/api/models", summary="model registry: versions, lineage and figures, the promoted version")
def models(request: Request):
    from sentinel.lifecycle.registry import LifecycleError, models_overview
    try:
        return models_overview(_registry(request))
    except LifecycleError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/api/drift", summary="per sensor: recent score distribution against the model's validation scores")
def drift(request: Request, since: str | None = Query(None, description="ISO-8601 or 24h, 7d ..."),
          until: str | None = Query(None), version: str | None = Query(None, max_length=128),
          store=Depends(client)):
    from sentinel.lifecycle.drift import drift_report
    from sentinel.lifecycle.registry import LifecycleError
    a, b = window(since, until)
    try:
        return drift_report(store, _registry(request), request.app.state.settings, since=a, until=b,
                            version=ident(version, "version") if version else None)
    except LifecycleError as exc:
        raise HTTPException(404, str(exc)) from None
