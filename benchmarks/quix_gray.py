"""The Quix Streams peer of ``imgstream run --ops gray``, written as a Quix user would.

A ref topic of JSON ``{"path": ...}`` messages; each of two (or N) processes
of one consumer group reads it with a ``StreamingDataFrame`` whose
``sdf.update`` does ``cv2.imread`` -> ``cv2.cvtColor`` -> ``cv2.imwrite``.
Nothing imgstream-specific is used: this is the baseline a Quix user gets.
Installed with ``pip install -e '.[bench]'``; driven by ``bench_gray.py``.

    python benchmarks/quix_gray.py produce --broker B --topic T --partitions 2 DIR
    python benchmarks/quix_gray.py consume --broker B --topic T --group G --out OUT
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import cv2
from quixstreams import Application
from quixstreams.models.topics import TopicConfig

#: The embedded broker (Tansu) needs a short session timeout, as imgstream's clients use.
CONSUMER_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


def produce(broker: str, topic_name: str, partitions: int, src: Path) -> int:
    """One ref message per JPEG in ``src`` (keyed by file name); how many."""
    app = Application(broker_address=broker, loglevel="WARNING")
    topic = app.topic(
        topic_name, config=TopicConfig(num_partitions=partitions, replication_factor=1)
    )
    paths = sorted(src.iterdir())
    with app.get_producer() as producer:
        for path in paths:
            msg = topic.serialize(key=path.name, value={"path": str(path)})
            producer.produce(topic=topic.name, key=msg.key, value=msg.value)
    return len(paths)


def consume(broker: str, topic_name: str, group: str, out: Path) -> None:
    """Run the Quix application until stopped (SIGTERM/SIGINT)."""
    out.mkdir(parents=True, exist_ok=True)
    app = Application(
        broker_address=broker,
        consumer_group=group,
        auto_offset_reset="earliest",
        consumer_extra_config=CONSUMER_CONFIG,
        loglevel="WARNING",
    )
    topic = app.topic(topic_name, value_deserializer="json")
    sdf = app.dataframe(topic)

    def to_gray(value: dict[str, Any]) -> None:
        path = value["path"]
        img = cv2.imread(path)
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(out / (Path(path).stem + ".png")), gray)

    sdf.update(to_gray)
    app.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--broker", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("src", type=Path)
    c = sub.add_parser("consume")
    c.add_argument("--broker", required=True)
    c.add_argument("--topic", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "produce":
        print(produce(args.broker, args.topic, args.partitions, args.src))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        consume(args.broker, args.topic, args.group, args.out)


if __name__ == "__main__":
    main()
