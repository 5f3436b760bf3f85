"""``sentinel serve``: the operator web app (HTTP API + live page) on uvicorn."""
from __future__ import annotations

import ipaddress
import os
import sys

from sentinel.config import ConfigError, Settings

DEFAULT_PORT = 8000


def add_serve_args(p):
    from sentinel.serve import TOKEN_ENV
    p.add_argument("--store", metavar="URL",
                   help="sqlite:///PATH | postgresql://USER@HOST:PORT/DB[?schema=S] | s3://BUCKET/PREFIX (read-only) "
                        "(default: the first of sinks.enabled)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; put a TLS reverse proxy in "
                        "front rather than binding 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    p.add_argument("--root-path", default="", metavar="PREFIX",
                   help="the path a reverse proxy serves the app under, e.g. /sentinel (default: none)")
    p.epilog = (f"Writes (acknowledge, close, label) need the environment variable {TOKEN_ENV}: clients send "
                f"'Authorization: Bearer <its value>'. Without it the app is read-only. OpenAPI docs at /docs.")


def run_serve(args, settings: Settings) -> int:
    import uvicorn

    from sentinel.serve import TOKEN_ENV, create_app
    from sentinel.store.query import default_store, parse_store
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port: give 1..65535")
    if args.root_path and not args.root_path.startswith("/"):
        raise ConfigError(f"--root-path {args.root_path!r} must start with '/', e.g. /sentinel")
    store = parse_store(args.store, settings) if args.store else default_store(settings)
    app = create_app(store, settings, root_path=args.root_path.rstrip("/"))
    if not _loopback(args.host):
        print(f"warning: listening on {args.host}, reachable from other machines: the token travels in clear over "
              "HTTP, put a TLS reverse proxy in front (docs/serve.md)", file=sys.stderr)
    token = "set: writes enabled" if os.environ.get(TOKEN_ENV) else "unset: read-only"
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"sentinel serve: {store.describe()} on http://{host}:{args.port}{args.root_path.rstrip('/')}/ "
          f"(API docs /docs; {TOKEN_ENV} {token}); Ctrl-C stops", file=sys.stderr, flush=True)
    # log_config=None: uvicorn logs through the logging set up by the CLI (one format). Its
    # access log has the method, path and status, never the headers (the token).
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, proxy_headers=True,
                forwarded_allow_ips="127.0.0.1", server_header=False, timeout_graceful_shutdown=5)
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
