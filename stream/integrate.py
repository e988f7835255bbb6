"""Mergeable accumulators: results folded into per-source, per-window statistics.

Every accumulator is a commutative monoid: ``merge`` is associative and
commutative and ``Accumulator()`` is its identity, so partial results from
two aggregators (or two partitions) merge exactly, in any order. Duplicates
are kept out before this layer (the store dedupes on ref id + pipeline hash).
Also here: :class:`RunTotals`, the one place a run's totals are counted
(``imgstream run``'s collector, replay), merging per-tile statistics into a
parent's, and merging boxes across tile seams. Pure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imgstream.schema.records import Failure, Result

WINDOWS = {"minute": 60_000, "hour": 3_600_000}


def window_start(ts_ms: int, window: str) -> int:
    """Start (epoch ms) of the window holding ``ts_ms``."""
    size = WINDOWS[window]
    return ts_ms - ts_ms % size


@dataclass
class RunTotals:
    """A run's totals: images ok, failures by type, pixels, and every latency.

    Latencies are kept (not summed) so the run can report percentiles.
    """

    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    pixels: int = 0
    latencies_ms: list[int] = field(default_factory=list)

    def add(self, record: Result | Failure) -> None:
        """Count one result or failure."""
        if isinstance(record, Result):
            self.ok += 1
            self.pixels += record.width * record.height
            self.latencies_ms.append(record.latency_ms)
        else:
            self.failures[record.error_type] += 1

    @property
    def accounted(self) -> int:
        """Records counted: results plus failures."""
        return self.ok + sum(self.failures.values())

    def percentile(self, q: float) -> float | None:
        """Latency percentile in ms (nearest rank); None before any result."""
        if not self.latencies_ms:
            return None
        data = sorted(self.latencies_ms)
        k = min(len(data) - 1, max(0, round(q / 100 * len(data) + 0.5) - 1))
        return float(data[k])


@dataclass
class Accumulator:
    """Counts, failures by type, pixels, brightness and a histogram of many results."""

    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    pixels: int = 0
    bytes_in: int = 0
    brightness_sum: float = 0.0
    brightness_n: int = 0
    hist: list[int] | None = None
    latency_ms_sum: int = 0

    def add_result(self, record: Result) -> None:
        """Fold one result."""
        self.ok += 1
        self.pixels += record.width * record.height
        self.bytes_in += record.bytes_in
        self.latency_ms_sum += record.latency_ms
        stats = record.outputs.get("stats")
        if isinstance(stats, Mapping) and "brightness" in stats:
            self.brightness_sum += float(stats["brightness"])
            self.brightness_n += 1
        hist = record.outputs.get("hist")
        if isinstance(hist, Mapping) and hist.get("channels"):
            merged = [sum(vals) for vals in zip(*hist["channels"], strict=True)]
            self.hist = _add_lists(self.hist, merged)

    def add_failure(self, error_type: str) -> None:
        """Fold one failure."""
        self.failures[error_type] += 1

    def merge(self, other: Accumulator) -> Accumulator:
        """A new accumulator holding both (associative, commutative)."""
        return Accumulator(
            ok=self.ok + other.ok,
            failures=self.failures + other.failures,
            pixels=self.pixels + other.pixels,
            bytes_in=self.bytes_in + other.bytes_in,
            brightness_sum=self.brightness_sum + other.brightness_sum,
            brightness_n=self.brightness_n + other.brightness_n,
            hist=_add_lists(self.hist, other.hist),
            latency_ms_sum=self.latency_ms_sum + other.latency_ms_sum,
        )

    @property
    def mean_brightness(self) -> float | None:
        """Mean of the images' brightness (those with ``stats``)."""
        return self.brightness_sum / self.brightness_n if self.brightness_n else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ok": self.ok,
            "failures": dict(sorted(self.failures.items())),
            "pixels": self.pixels,
            "bytes_in": self.bytes_in,
            "brightness_sum": self.brightness_sum,
            "brightness_n": self.brightness_n,
            "hist": self.hist,
            "latency_ms_sum": self.latency_ms_sum,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Accumulator:
        """Inverse of :meth:`to_dict`."""
        return cls(
            ok=int(obj.get("ok", 0)),
            failures=Counter({str(k): int(v) for k, v in (obj.get("failures") or {}).items()}),
            pixels=int(obj.get("pixels", 0)),
            bytes_in=int(obj.get("bytes_in", 0)),
            brightness_sum=float(obj.get("brightness_sum", 0.0)),
            brightness_n=int(obj.get("brightness_n", 0)),
            hist=list(obj["hist"]) if obj.get("hist") is not None else None,
            latency_ms_sum=int(obj.get("latency_ms_sum", 0)),
        )


def _add_lists(a: Sequence[int] | None, b: Sequence[int] | None) -> list[int] | None:
    if a is None:
        return list(b) if b is not None else None
    if b is None:
        return list(a)
    if len(a) != len(b):  # different bin counts cannot be added: keep the longer one's shape
        return list(a) if len(a) >= len(b) else list(b)
    return [x + y for x, y in zip(a, b, strict=True)]


# -- merging tile outputs into a parent's --------------------------------------


def merge_channel_stats(parts: Sequence[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """Merge (pixel count, {mean, std, min, max}) of disjoint regions exactly."""
    n = sum(k for k, _ in parts)
    mean = sum(k * float(s["mean"]) for k, s in parts) / n
    second = sum(k * (float(s["std"]) ** 2 + float(s["mean"]) ** 2) for k, s in parts) / n
    return {
        "mean": mean,
        "std": math.sqrt(max(0.0, second - mean * mean)),
        "min": min(int(s["min"]) for _, s in parts),
        "max": max(int(s["max"]) for _, s in parts),
    }


def merge_stats(parts: Sequence[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
    """A parent's ``stats`` from its tiles' (core pixel count, stats) pairs.

    Means, standard deviations, minima and maxima merge exactly; sharpness
    (variance of the Laplacian) merges as a variance of the tiles' cores.
    """
    n_channels = len(parts[0][1]["channels"])
    channels = [
        merge_channel_stats([(k, s["channels"][c]) for k, s in parts]) for c in range(n_channels)
    ]
    gray = merge_channel_stats(
        [(k, {"mean": s["brightness"], "std": s["contrast"], "min": 0, "max": 0}) for k, s in parts]
    )
    n = sum(k for k, _ in parts)
    sharpness = sum(k * float(s["sharpness"]) for k, s in parts) / n
    return {
        "channels": channels,
        "brightness": gray["mean"],
        "contrast": gray["std"],
        "sharpness": sharpness,
    }


def merge_hists(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A parent's ``hist`` as the per-channel sum of its tiles'."""
    items = list(parts)
    channels = [
        [sum(vals) for vals in zip(*(h["channels"][c] for h in items), strict=True)]
        for c in range(len(items[0]["channels"]))
    ]
    return {"bins": items[0]["bins"], "channels": channels}


def merge_boxes(boxes: Iterable[Sequence[int]], gap: int = 1) -> list[list[int]]:
    """Union boxes that overlap or touch (within ``gap`` px): pieces cut by a seam become one."""
    merged = [list(map(int, b)) for b in boxes]
    changed = True
    while changed:
        changed = False
        out: list[list[int]] = []
        for box in merged:
            for other in out:
                if _touch(box, other, gap):
                    x0, y0 = min(box[0], other[0]), min(box[1], other[1])
                    x1 = max(box[0] + box[2], other[0] + other[2])
                    y1 = max(box[1] + box[3], other[1] + other[3])
                    other[:] = [x0, y0, x1 - x0, y1 - y0]
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return sorted(merged)


def _touch(a: Sequence[int], b: Sequence[int], gap: int) -> bool:
    return not (
        a[0] > b[0] + b[2] + gap
        or b[0] > a[0] + a[2] + gap
        or a[1] > b[1] + b[3] + gap
        or b[1] > a[1] + a[3] + gap
    )
