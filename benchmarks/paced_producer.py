"""Send a file of events to Kafka at a schedule of rates, recording when each one was sent.

    python benchmarks/paced_producer.py --lines events.tsv --topic T --schedule 5000:100000 \
        --times sent.npy [--bootstrap 127.0.0.1:19092]

A process of its own, so that producing (about a fifth of a core at 20,000 events/s) does not
hold the deploy job's driver (the benchmark's own Python process) back through the GIL, as a
producer thread in that process did. ``--lines``: one ``key<TAB>line`` per event.
``--schedule``: ``rate:count`` steps, sent one after the other (each step paced from its own
start). ``--times``: a numpy file of each event's send time (``time.time()``, file order).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from sentinel.ingest.kafka import produce_lines  # noqa: E402


def parse_schedule(text: str) -> list[tuple[float, int]]:
    """``"5000:100000,10000:200000"`` -> [(5000.0, 100000), (10000.0, 200000)]."""
    steps = []
    for part in text.split(","):
        rate, _, count = part.partition(":")
        try:
            steps.append((float(rate), int(count)))
        except ValueError:
            raise SystemExit(f"--schedule: {part!r} is not rate:count (e.g. 5000:100000)") from None
    return steps


def read_pairs(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t", 1)) for line in f]


def send(pairs, bootstrap: str, topic: str, schedule: list[tuple[float, int]]) -> np.ndarray:
    sent = np.full(len(pairs), np.nan)

    def stamped(start: int, n: int):
        for i in range(start, min(start + n, len(pairs))):
            sent[i] = time.time()
            yield pairs[i]

    start = 0
    for rate, n in schedule:
        produce_lines(stamped(start, n), bootstrap, topic, rate, partitions=None, progress_every=0)
        start += n
    return sent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=Path, required=True, help="key<TAB>line per event")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schedule", required=True, type=parse_schedule, help="rate:count[,rate:count...]")
    ap.add_argument("--times", type=Path, required=True, help="where to write the send times (.npy)")
    ap.add_argument("--bootstrap", default="127.0.0.1:19092")
    args = ap.parse_args(argv)
    sent = send(read_pairs(args.lines), args.bootstrap, args.topic, args.schedule)
    np.save(args.times, sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
