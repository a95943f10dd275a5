"""Nesting depth is measured on the parsed document, and hostile depth costs nothing."""

from __future__ import annotations

import pytest

from broker.domain.rejections import RejectCode, Rejected
from broker.ingest.message_json import decode_json


def nested(depth: int) -> bytes:
    """A resource whose containers (itself included) nest `depth` deep."""
    inner = b"[" * (depth - 1) + b"]" * (depth - 1)
    return b'{"resourceType": "Observation", "x": ' + inner + b"}"


def test_the_limit_itself_is_allowed_and_one_more_is_not() -> None:
    assert decode_json(nested(10), max_bytes=1000, max_depth=10)["resourceType"] == "Observation"
    with pytest.raises(Rejected) as info:
        decode_json(nested(11), max_bytes=1000, max_depth=10)
    assert info.value.code is RejectCode.NESTING_TOO_DEEP
    assert info.value.detail.startswith("JSON nests 11 levels deep; the limit is 10")


def test_depth_counts_objects_and_arrays_alike() -> None:
    value = b'{"resourceType": "Bundle", "a": {"b": [{"c": [1]}]}, "d": []}'
    assert decode_json(value, max_bytes=1000, max_depth=5)
    with pytest.raises(Rejected) as info:
        decode_json(value, max_bytes=1000, max_depth=4)
    assert info.value.code is RejectCode.NESTING_TOO_DEEP


@pytest.mark.parametrize("brackets", [b"[", b'{"a":'])
def test_a_megabyte_of_open_brackets_is_too_deep_not_a_crash(brackets: bytes) -> None:
    count = (1024 * 1024 - 100) // len(brackets)
    value = b'{"resourceType": "Bundle", "x": ' + brackets * count
    with pytest.raises(Rejected) as info:
        decode_json(value, max_bytes=1024 * 1024, max_depth=64)
    assert info.value.code is RejectCode.NESTING_TOO_DEEP
