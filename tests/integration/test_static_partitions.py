"""A worker reading fixed refs partitions (``--partition``): no group join, commits kept."""

from __future__ import annotations

import collections

import cv2
import numpy as np
import pytest

from imgstream.schema.records import Result
from tests.helpers import refs_for

pytestmark = pytest.mark.both_brokers


def test_static_partitions_process_commit_and_resume(topics, worker, write_images, tmp_path):
    root = tmp_path / "in"
    paths = write_images(root, 24)
    first, second = refs_for(paths[:12]), refs_for(paths[12:])
    out = tmp_path / "out"
    owned = list(range(topics.partitions))
    flags = [arg for p in owned for arg in ("--partition", str(p))]
    topics.produce(first)
    w = worker(out, root, "--max-batch", "4", *flags)
    topics.stream().wait_for({r.id for r in first}, timeout_s=60)
    assert w.stop() == 0
    # Its "assignment" is the partitions it was given, announced once.
    assert topics.assignments([w]) == [set(owned)]
    # A second worker with the same partitions starts from the committed offsets:
    # it processes only the refs produced since.
    topics.produce(second)
    w = worker(out, root, "--max-batch", "4", *flags)
    topics.stream().wait_for({r.id for r in second}, timeout_s=60)
    assert w.stop() == 0
    records = topics.read_all().records
    by_id = collections.Counter(r.id for r in records)
    assert by_id == {r.id: 1 for r in first + second}, by_id
    for ref in first + second:
        result = next(r for r in records if r.id == ref.id)
        assert isinstance(result, Result)
        got = cv2.imread(result.output_uri, cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, cv2.cvtColor(cv2.imread(ref.uri), cv2.COLOR_BGR2GRAY))
