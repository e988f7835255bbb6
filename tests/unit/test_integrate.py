"""Accumulators are commutative monoids; tile statistics merge exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from imgstream.integrate import (
    Accumulator,
    RunTotals,
    merge_boxes,
    merge_hists,
    merge_stats,
    window_start,
)
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from imgstream.schema.records import Failure, Lineage, Result

result = st.fixed_dictionaries(
    {
        "width": st.integers(1, 100),
        "height": st.integers(1, 100),
        "bytes_in": st.integers(0, 10**6),
        "latency_ms": st.integers(0, 10**5),
        "outputs": st.fixed_dictionaries(
            {
                "stats": st.fixed_dictionaries({"brightness": st.integers(0, 255)}),
                "hist": st.fixed_dictionaries(
                    {
                        "channels": st.lists(
                            st.lists(st.integers(0, 50), min_size=4, max_size=4),
                            min_size=1,
                            max_size=3,
                        )
                    }
                ),
            }
        ),
    }
)
events = st.lists(st.one_of(result, st.sampled_from(["not_found", "decode_error"])), max_size=20)


def _as_result(fields: dict) -> Result:
    lineage = Lineage("t", 0, 0, None, {})
    return Result(
        "r",
        "/u",
        None,
        "p",
        "h",
        channels=1,
        timings={},
        batch_id="b",
        worker="w",
        source=None,
        ts=0,
        lineage=lineage,
        **fields,
    )


def acc(items) -> Accumulator:
    a = Accumulator()
    for item in items:
        if isinstance(item, str):
            a.add_failure(item)
        else:
            a.add_result(_as_result(item))
    return a


@given(events, events, events)
def test_merge_is_associative_commutative_with_identity(x, y, z) -> None:
    a, b, c = acc(x), acc(y), acc(z)
    assert a.merge(b).to_dict() == b.merge(a).to_dict()
    assert a.merge(b).merge(c).to_dict() == a.merge(b.merge(c)).to_dict()
    assert a.merge(Accumulator()).to_dict() == a.to_dict()
    assert acc(x + y).to_dict() == a.merge(b).to_dict()  # split anywhere, merge: same result
    assert Accumulator.from_dict(a.to_dict()).to_dict() == a.to_dict()


def test_windows() -> None:
    assert window_start(3_600_000 * 5 + 61_234, "minute") == 3_600_000 * 5 + 60_000
    assert window_start(3_600_000 * 5 + 61_234, "hour") == 3_600_000 * 5


def test_tile_stats_merge_to_the_whole_images(photos) -> None:
    import cv2

    img = cv2.imread(str(photos[0]))
    reg = build_registry()
    pipe = parse_spec("stats|hist:bins=16", reg)
    _, whole = pipe.run(img)
    h, w = img.shape[:2]
    parts, hists = [], []
    for y0, y1 in ((0, h // 3), (h // 3, h)):
        for x0, x1 in ((0, w // 2), (w // 2, w)):
            _, out = pipe.run(img[y0:y1, x0:x1])
            parts.append(((y1 - y0) * (x1 - x0), out["stats"]))
            hists.append(out["hist"])
    merged = merge_stats(parts)
    for c in range(3):
        for key in ("mean", "std", "min", "max"):
            assert np.isclose(merged["channels"][c][key], whole["stats"]["channels"][c][key])
    assert np.isclose(merged["brightness"], whole["stats"]["brightness"])
    assert np.isclose(merged["contrast"], whole["stats"]["contrast"])
    assert merge_hists(hists) == whole["hist"]


def test_boxes_cut_by_a_seam_become_one() -> None:
    assert merge_boxes([[90, 10, 10, 20], [100, 12, 15, 20], [300, 300, 5, 5]]) == [
        [90, 10, 25, 22],
        [300, 300, 5, 5],
    ]
    assert merge_boxes([[0, 0, 10, 10], [20, 20, 5, 5]]) == [[0, 0, 10, 10], [20, 20, 5, 5]]


def test_run_totals_count_results_and_failures() -> None:
    totals = RunTotals()
    assert totals.percentile(50) is None
    for i, latency in enumerate([30, 10, 20]):
        totals.add(
            Result(
                f"r{i}",
                "/u",
                None,
                "gray",
                "h",
                4,
                5,
                1,
                {},
                {},
                "b",
                "w",
                None,
                0,
                latency,
                Lineage("t", 0, i, None, {}),
            )
        )
    totals.add(Failure("not_found", "gone", "t", 0, 9, "w", 0, id="x"))
    assert (totals.ok, totals.pixels, totals.accounted) == (3, 60, 4)
    assert totals.failures == {"not_found": 1}
    assert (totals.percentile(50), totals.percentile(100)) == (20.0, 30.0)
