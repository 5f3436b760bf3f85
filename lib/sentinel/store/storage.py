"""Object storage helpers: ``s3://bucket/prefix`` URLs, a configured boto3 client, and copying
whole directories (model bundles) to and from a prefix.

Credentials come only from boto3's standard chain (env, profiles, instance roles).
The endpoint is resolved once, here, in this order:

1. an explicit ``endpoint_url`` (``sinks.s3.endpoint_url`` in the config) — config wins;
2. the ``SENTINEL_S3_ENDPOINT`` environment variable (what ``scripts/services/s3.sh env`` exports);
3. boto3's own resolution (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS itself).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

ENDPOINT_ENV = "SENTINEL_S3_ENDPOINT"
_SESSION = None
_SESSION_LOCK = threading.Lock()  # creating clients from one boto3 session is not thread-safe


def is_s3_url(path: str | os.PathLike) -> bool:
    return str(path).startswith(("s3://", "s3a://"))


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")`` (``s3a://`` accepted too)."""
    u = urlparse(str(url))
    if u.scheme not in ("s3", "s3a") or not u.netloc:
        raise ValueError(f"{url!r} is not an s3://BUCKET/PREFIX URL")
    return u.netloc, u.path.strip("/")


def join_key(*parts: str) -> str:
    """Join key parts with '/', skipping empty ones and stray slashes (no leading '/')."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def resolve_endpoint(endpoint_url: str | None = None) -> str | None:
    return (endpoint_url or os.environ.get(ENDPOINT_ENV) or None)


def s3_client(endpoint_url: str | None = None, region: str | None = None, max_attempts: int = 5,
              connect_timeout: float = 5.0, read_timeout: float = 60.0):
    """A boto3 S3 client with bounded retries (botocore's 'standard' mode: exponential back-off
    with jitter on throttling, 5xx and connection errors)."""
    import boto3
    from botocore.config import Config
    cfg = Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                 connect_timeout=connect_timeout, read_timeout=read_timeout,
                 # path-style works with every S3-compatible server (MinIO, moto) and with AWS
                 s3={"addressing_style": "path"} if resolve_endpoint(endpoint_url) else None)
    global _SESSION
    with _SESSION_LOCK:  # one session per process: it caches the service model (~0.4 s a session)
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION.client("s3", endpoint_url=resolve_endpoint(endpoint_url), region_name=region or None,
                               config=cfg)


def list_keys(client, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (all pages), sorted."""
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def upload_dir(local_dir: str | os.PathLike, s3_url: str, client=None, endpoint_url: str | None = None) -> list[str]:
    """Copy every file below ``local_dir`` to ``s3://bucket/prefix/<relative path>``.

    Used to publish a model bundle (``model.keras``, ``scaler.json`` ...). Returns the keys
    written. Keys are the relative paths, so uploading the same bundle again overwrites.
    """
    src = Path(local_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a directory")
    bucket, prefix = parse_s3_url(s3_url)
    client = client or s3_client(endpoint_url)
    written = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        key = join_key(prefix, path.relative_to(src).as_posix())
        client.upload_file(str(path), bucket, key)
        written.append(key)
    return written


def download_prefix(s3_url: str, local_dir: str | os.PathLike, client=None,
                    endpoint_url: str | None = None) -> Path:
    """Copy every object under ``s3://bucket/prefix/`` into ``local_dir`` (relative layout kept).

    Used to fetch a model bundle before loading it. Keys that would land outside ``local_dir``
    (``..`` components, absolute paths) are refused. Raises FileNotFoundError if the prefix
    holds no objects.
    """
    bucket, prefix = parse_s3_url(s3_url)
    client = client or s3_client(endpoint_url)
    base = prefix + "/" if prefix else ""
    keys = [k for k in list_keys(client, bucket, base) if not k.endswith("/")]
    if not keys:
        raise FileNotFoundError(f"no objects under {s3_url}")
    dest = Path(local_dir)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for key in keys:
        rel = PurePosixPath(key[len(base):])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"refusing to download s3://{bucket}/{key}: it would land outside {dest}")
        target = (dest / Path(*rel.parts)).resolve()
        if root not in target.parents:
            raise ValueError(f"refusing to download s3://{bucket}/{key}: it would land outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))
    return dest


def newest_bundle_url(s3_url: str, client=None, endpoint_url: str | None = None) -> str:
    """``s3://b/models/pressure/v1`` (holds manifest.json) stays; ``s3://b/models/pressure`` (a
    folder of versions) -> its newest version (greatest name; versions are UTC timestamps)."""
    bucket, prefix = parse_s3_url(s3_url)
    client = client or s3_client(endpoint_url)
    base = prefix + "/" if prefix else ""
    keys = list_keys(client, bucket, base)
    if base + "manifest.json" in keys:
        return f"s3://{bucket}/{prefix}"
    versions = sorted({k[len(base):].split("/")[0] for k in keys
                       if k.endswith("/manifest.json") and k[len(base):].count("/") == 1})
    if not versions:
        raise FileNotFoundError(f"no model bundle under {s3_url}: no manifest.json there or one folder below")
    return f"s3://{bucket}/{join_key(prefix, versions[-1])}"


def fetch_bundle(s3_url: str, cache_dir: str | os.PathLike, client=None, endpoint_url: str | None = None) -> Path:
    """Download a bundle (or the newest version under a folder) into ``cache_dir/<bucket>/<prefix>``
    once and return that local directory. Bundle versions are immutable, so a cached copy is
    reused; concurrent callers (several Python workers) download to a temporary folder and
    rename it into place, so nobody ever loads a half-written bundle."""
    client = client or s3_client(endpoint_url)
    url = newest_bundle_url(s3_url, client)
    bucket, prefix = parse_s3_url(url)
    parts = PurePosixPath(prefix).parts
    if ".." in parts:
        raise ValueError(f"refusing bundle URL {url}: '..' in the prefix")
    target = Path(cache_dir, bucket, *parts)
    if (target / "manifest.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        download_prefix(url, tmp, client)
        try:
            os.rename(tmp, target)
        except OSError:  # another process put it there first
            if not (target / "manifest.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
