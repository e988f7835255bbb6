"""``imgstream status`` and ``offsets reset`` against a group with live members.

Kafka only: listing members needs DescribeGroups, which the embedded broker
cannot answer (there ``status`` says members are not available and ``offsets
reset`` only warns).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import refs_for

pytestmark = pytest.mark.kafka_only("Tansu cannot describe consumer groups (DescribeGroups)")


def test_status_lists_live_members_and_reset_waits_until_they_stop(
    topics, worker, write_images, run_cli, tmp_path
) -> None:
    root = tmp_path / "in"
    refs = refs_for(write_images(root, 8))
    workers = [worker(tmp_path / "out", root) for _ in range(2)]
    topics.wait_for_group(workers)
    topics.produce(refs)
    topics.stream().wait_for({r.id for r in refs}, timeout_s=60)
    where = ("--bootstrap", topics.bootstrap, "--topic", topics.refs, "--group", topics.group)

    def status() -> dict:
        done = run_cli("status", *where, "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    live = status()
    assert len(live["members"]) == 2, live
    owned = [p for m in live["members"] for p in m["partitions"]]
    assert sorted(owned) == sorted(f"{topics.refs}[{p}]" for p in range(4))
    assert all(m["client"] and m["host"] == "127.0.0.1" for m in live["members"])
    table = run_cli("status", *where)
    assert "members: 2" in table.stdout, table.stdout
    assert all(m["member"] in table.stdout for m in live["members"])

    refused = run_cli("offsets", "reset", *where, "--to-earliest")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "2 live member(s)" in refused.stderr and "stop its workers first" in refused.stderr
    assert "Traceback" not in refused.stderr

    assert [w.stop() for w in workers] == [0, 0]
    # The workers committed everything before leaving; nothing moved on refusal.
    stopped = status()
    assert stopped["members"] == [] and stopped["lag"] == 0, stopped
    reset = run_cli("offsets", "reset", *where, "--to-earliest")
    assert reset.returncode == 0, reset.stderr
    assert "warning" not in reset.stderr  # Kafka can tell that the group is empty
    assert status()["lag"] == len(refs)
