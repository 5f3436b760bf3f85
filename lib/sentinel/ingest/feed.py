"""Live feeds: send events to a TCP socket (like ``nc -lk``) or a Kafka topic at a set rate.

The socket feed *listens* (Spark's socket source is a client, as with ``nc -lk 9999``): it
waits for the deploy job to connect, then writes one JSON event per line.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Iterable, Iterator
from urllib.parse import urlparse

log = logging.getLogger("sentinel.feed")


class FeedError(ValueError):
    """Bad target URL or nobody connected in time; the message says what to do."""


def parse_target(url: str) -> tuple[str, str, int, str]:
    """``tcp://HOST:PORT`` or ``kafka://HOST:PORT/TOPIC`` -> (scheme, host, port, topic)."""
    u = urlparse(url)
    if u.scheme not in ("tcp", "kafka") or not u.hostname or not u.port:
        raise FeedError(f"stream target {url!r} is not tcp://HOST:PORT or kafka://HOST:PORT/TOPIC")
    topic = u.path.lstrip("/")
    if u.scheme == "kafka" and not topic:
        raise FeedError(f"stream target {url!r} names no topic: use kafka://HOST:PORT/TOPIC")
    return u.scheme, u.hostname, u.port, topic


class Pacer:
    """Keeps a sender at ``rate`` lines per second (0 = as fast as possible), in bursts of
    about 10 ms so that sleeping costs little."""

    def __init__(self, rate: float):
        self.rate, self.sent, self.t0 = rate, 0, time.perf_counter()

    def tick(self, n: int = 1) -> None:
        self.sent += n
        if self.rate > 0:
            ahead = self.sent / self.rate - (time.perf_counter() - self.t0)
            if ahead > 0.01:
                time.sleep(ahead)


def send_tcp(lines: Iterable[str], host: str, port: int, rate: float, wait_s: float = 300.0,
             progress_every: int = 5000) -> int:
    """Listen on host:port, accept one client, send every line, close. Returns lines sent."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((host, port))
    except OSError as exc:
        raise FeedError(f"cannot listen on {host}:{port} ({exc.strerror}): stop what uses the port "
                        f"(another feed or `nc -lk {port}`) or pick another port") from exc
    srv.listen(1)
    srv.settimeout(wait_s)
    log.info("listening on %s:%d, waiting up to %.0f s for the deploy job to connect", host, port, wait_s)
    try:
        conn, addr = srv.accept()
    except socket.timeout as exc:
        raise FeedError(f"nobody connected to {host}:{port} within {wait_s:.0f} s: start the deploy job "
                        f"with source.type=\"socket\" and source.port={port}") from exc
    finally:
        srv.close()
    log.info("deploy job connected from %s:%d; sending at %s events/s", addr[0], addr[1], rate or "max")
    pacer = Pacer(rate)
    n, next_report = 0, progress_every
    chunk = max(1, int(rate / 100)) if rate else 500
    with conn:
        buf: list[str] = []
        for line in lines:
            buf.append(line)
            if len(buf) >= chunk:
                conn.sendall(("\n".join(buf) + "\n").encode("utf-8"))
                n += len(buf)
                pacer.tick(len(buf))
                buf = []
                if progress_every and n >= next_report:
                    log.info("sent %d events", n)
                    next_report += progress_every
        if buf:
            conn.sendall(("\n".join(buf) + "\n").encode("utf-8"))
            n += len(buf)
    log.info("feed done: %d events sent in %.1f s", n, time.perf_counter() - pacer.t0)
    return n


# Malformed lines a live feed can mix in (``--bad-rate``): the stream must reject each with a reason.
BAD_LINES = ["this is not json", '{"sensor_id": "PT-X", "timestamp": "yesterday", "pressure": 1}',
             '{"sensor_id": "PT-X", "timestamp": "2026-01-01T00:00:00Z", "pressure": "high"}',
             '{"sensor_id": "PT-X", "timestamp": "2026-01-01T00:00:00Z"}', "[1, 2, 3]",
             '{"sensor_id": "PT-X", "timestamp": "2026-01-01T00:00:00Z", "pressure": NaN}', "{"]


def event_lines(readings, data_settings, bad_rate: float = 0.0, seed: int = 0) -> Iterator[str]:
    """Events as JSON lines in time order, with malformed lines mixed in at ``bad_rate``."""
    import numpy as np

    from sentinel.ingest.events import to_event_json
    rng = np.random.default_rng([seed, 99])
    feats = [f for f in data_settings.features if f in readings]
    for row in readings.itertuples(index=False):
        if bad_rate and rng.random() < bad_rate:
            yield BAD_LINES[int(rng.integers(len(BAD_LINES)))]
        yield to_event_json(row.sensor_id, row.timestamp, {f: getattr(row, f) for f in feats}, data_settings)

