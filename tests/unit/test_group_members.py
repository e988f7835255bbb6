"""Reading kafka-python 3.x's ``describe_groups`` answer (as Apache Kafka 4.3 gave it)."""

from __future__ import annotations

from imgstream.kafka_io.admin import parse_members

STABLE = {
    "g": {
        "group_id": "g",
        "group_state": "Stable",
        "protocol_type": "consumer",
        "protocol_data": "range",
        "members": [
            {
                "member_id": "imgstream-b9c2",
                "group_instance_id": None,
                "client_id": "imgstream",
                "client_host": "/127.0.0.1",
                "member_metadata": {"topics": ["t"], "user_data": ""},
                "member_assignment": {
                    "assigned_partitions": [{"topic": "t", "partitions": [1, 0]}],
                    "user_data": "",
                },
            }
        ],
        "authorized_operations": ["READ", "DESCRIBE"],
        "error": None,
    }
}


def test_members_with_their_host_and_partitions() -> None:
    assert parse_members(STABLE, "g") == [
        {"member": "imgstream-b9c2", "client": "imgstream", "host": "127.0.0.1",
         "partitions": ["t[0]", "t[1]"]}
    ]  # fmt: skip


def test_an_unknown_group_has_no_members() -> None:
    dead = {
        "x": {
            "group_id": "x",
            "group_state": "Dead",
            "members": [],
            "error": "[Error 69] GroupIdNotFoundError: Group x not found.",
        }
    }
    assert parse_members(dead, "x") == []


def test_an_error_or_a_missing_answer_means_the_broker_cannot_say() -> None:
    refused = {
        "g": {"group_id": "g", "members": [], "error": "[Error 30] GroupAuthorizationFailedError"}
    }
    assert parse_members(refused, "g") is None
    assert parse_members({}, "g") is None
    assert parse_members([], "g") is None


def test_an_undecoded_assignment_lists_no_partitions() -> None:
    member = {"member_id": "m", "client_id": "c", "client_host": "h", "member_assignment": b""}
    answer = {"g": {"members": [member], "error": None}}
    assert parse_members(answer, "g") == [
        {"member": "m", "client": "c", "host": "h", "partitions": []}
    ]
