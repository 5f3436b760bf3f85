"""Dependencies of the routes (FastAPI ``Depends``): the store client, the token check, and the
input checks every route shares (times, ids, pages), each failing with one sentence."""
from __future__ import annotations

import hmac
import logging

import pandas as pd
from fastapi import Header, HTTPException, Request

from sentinel.config import ConfigError
from sentinel.store.query import parse_time

log = logging.getLogger("sentinel.serve")

MAX_LIMIT = 1000          # hard cap of every list endpoint (page with offset beyond it)
DEFAULT_LIMIT = 100
MAX_OFFSET = 1_000_000
MAX_ID_CHARS = 200


def client(request: Request):
    """The app's store client (``store.open_store``), opened once by :func:`serve.app.create_app`."""
    return request.app.state.client


def require_token(request: Request, authorization: str | None = Header(None, include_in_schema=False)) -> None:
    """Writes need ``Authorization: Bearer <token>`` equal to the server's token.

    Refused with 403 when the server has no token (writes disabled), 401 when the header is
    missing, malformed or wrong. Compared in constant time; neither token is ever logged.
    """
    expected: str | None = request.app.state.token
    env = request.app.state.token_env
    if not expected:
        raise HTTPException(403, f"writes are disabled on this server: start `sentinel serve` with the "
                                 f"environment variable {env} set to a token, and send it as "
                                 f"'Authorization: Bearer <token>'")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(401, "this action needs the operator token: send 'Authorization: Bearer <token>' "
                                 f"(the value of {env} on the server)", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode("utf-8"), expected.encode("utf-8")):
        log.warning("refused %s %s: wrong operator token", request.method, request.url.path)
        raise HTTPException(401, f"the operator token is wrong: use the value of {env} on the server",
                            headers={"WWW-Authenticate": "Bearer"})


def require_writable(request: Request) -> None:
    if not request.app.state.writable:
        raise HTTPException(409, f"the store {request.app.state.store_name} is read-only (S3): acknowledge, close "
                                 "and label incidents on a SQLite or PostgreSQL store")


def when(text: str | None, name: str, now: pd.Timestamp | None = None) -> pd.Timestamp | None:
    """A ``since``/``until`` parameter: ISO-8601 (naive = UTC) or a duration back from now
    (``24h``, ``7d``), as ``sentinel query`` takes them; else 400 with a sentence."""
    if text is None or not text.strip():
        return None
    if len(text) > 64 or not text.isprintable():
        raise HTTPException(400, f"{name} is not a time: give ISO-8601 (2026-03-25T16:00:00Z) or a duration like 24h")
    try:
        ts = parse_time(text, now)
    except ConfigError as exc:
        raise HTTPException(400, f"{name}: {exc}") from None
    except (OverflowError, ValueError):
        raise HTTPException(400, f"{name} {text!r} is out of range: give a time between 1678 and 2261") from None
    return ts


def window(since: str | None, until: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    now = pd.Timestamp.now(tz="UTC")
    a, b = when(since, "since", now), when(until, "until", now)
    if a is not None and b is not None and a >= b:
        raise HTTPException(400, f"since ({a.isoformat()}) is not before until ({b.isoformat()}): swap them")
    return a, b


def ident(text: str, what: str) -> str:
    """A sensor id, zone or incident id from the URL: printable text of at most MAX_ID_CHARS
    (a control character or NUL could never match and PostgreSQL refuses NUL outright)."""
    if not text or len(text) > MAX_ID_CHARS or not text.isprintable():
        raise HTTPException(400, f"{what} {text[:40]!r} is not valid: ids are printable text of at most "
                                 f"{MAX_ID_CHARS} characters")
    return text


def next_offset(offset: int, limit: int, got: int, asked: int | None = None) -> int | None:
    """Routes ask for limit + 1 rows: one more than a page means there is a next page. Where a
    store caps a call at ``limit`` itself (``asked == limit``), a full page may have a next one."""
    asked = limit + 1 if asked is None else asked
    return offset + limit if got > limit or (asked <= limit and got >= asked) else None
