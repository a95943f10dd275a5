"""The first line of defence: size, encoding, JSON syntax and nesting depth."""

from __future__ import annotations

import json

import pytest

from broker.domain.rejections import RejectCode, Rejected
from broker.ingest.message_json import decode_json


def reject_code(value: bytes, *, max_bytes: int = 10_000, max_depth: int = 64) -> RejectCode:
    with pytest.raises(Rejected) as info:
        decode_json(value, max_bytes=max_bytes, max_depth=max_depth)
    return info.value.code


def test_a_fhir_object_is_returned() -> None:
    assert decode_json(b'{"resourceType": "Patient"}', max_bytes=100, max_depth=5) == {
        "resourceType": "Patient"
    }


def test_utf8_bom_is_tolerated() -> None:
    doc = decode_json(b'\xef\xbb\xbf{"resourceType": "Bundle"}', max_bytes=100, max_depth=5)
    assert doc["resourceType"] == "Bundle"


def test_oversized_message_is_refused_before_parsing() -> None:
    assert (
        reject_code(b'{"resourceType": "Bundle", "x": "' + b"a" * 200 + b'"}', max_bytes=100)
        is RejectCode.MESSAGE_TOO_LARGE
    )


def test_message_exactly_at_the_limit_is_accepted() -> None:
    value = b'{"resourceType": "Patient"}'
    assert decode_json(value, max_bytes=len(value), max_depth=5)


def test_invalid_utf8_is_refused_with_its_offset() -> None:
    with pytest.raises(Rejected) as info:
        decode_json(b'{"resourceType": "Bundle", "n": "\xff\xfe"}', max_bytes=100, max_depth=5)
    assert info.value.code is RejectCode.INVALID_ENCODING
    assert "0xff" in info.value.detail


def test_gbk_bytes_are_not_utf8() -> None:
    value = '{"resourceType": "Patient", "name": "张三"}'.encode("gbk")
    assert reject_code(value) is RejectCode.INVALID_ENCODING


@pytest.mark.parametrize("value", [b'{"resourceType": "Bundle",', b"", b"{'a': 1}", b"nul"])
def test_malformed_json_is_refused(value: bytes) -> None:
    assert reject_code(value) is RejectCode.MALFORMED_JSON


def test_absurd_nesting_is_refused_without_recursion() -> None:
    value = b'{"resourceType":"Bundle","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert reject_code(value, max_bytes=10**6) is RejectCode.NESTING_TOO_DEEP


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    value = b'{"resourceType": "Observation", "note": "[[[[[[[[[[\\"{{{{{{{{"}'
    assert decode_json(value, max_bytes=1000, max_depth=2)["resourceType"] == "Observation"


@pytest.mark.parametrize(
    "value", [b'{"patient": "x"}', b"[1, 2]", b'"text"', b'{"resourceType": 3}']
)
def test_json_that_is_not_fhir_is_refused(value: bytes) -> None:
    assert reject_code(value) is RejectCode.NOT_FHIR


# The fast reader (orjson) refuses some input the standard library reads; those messages
# must get exactly the verdict they got before it was added.
@pytest.mark.parametrize(
    "value",
    [
        b'{"resourceType": "Observation", "valueQuantity": {"value": NaN}}',
        b'{"resourceType": "Observation", "valueQuantity": {"value": 1e400}}',
        b'{"resourceType": "Patient", "name": [{"text": "\\ud800"}]}',
    ],
    ids=["nan", "infinity", "lone-surrogate"],
)
def test_what_the_fast_reader_refuses_is_read_as_before(value: bytes) -> None:
    assert decode_json(value, max_bytes=1000, max_depth=8) == json.loads(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b'{"resourceType": "Patient",}', RejectCode.MALFORMED_JSON),
        (b'{"resourceType": "Patient", "x": "\xff"}', RejectCode.INVALID_ENCODING),
        (b"[" * 3000 + b"]" * 3000, RejectCode.NESTING_TOO_DEEP),
        (b'{"resourceType": "Patient", "n": ' + b"9" * 5000 + b"}", RejectCode.MALFORMED_JSON),
    ],
    ids=["trailing-comma", "bad-utf8", "deeper-than-any-reader", "huge-integer"],
)
def test_what_both_readers_refuse_keeps_its_code(value: bytes, code: RejectCode) -> None:
    assert reject_code(value, max_bytes=100_000) is code


def test_depth_is_counted_in_containers_of_any_kind() -> None:
    nested: bytes = b'{"resourceType": "Bundle", "a": [{"b": [[{"c": 1}]]}]}'  # 6 deep
    assert decode_json(nested, max_bytes=1000, max_depth=6)
    assert reject_code(nested, max_depth=5) is RejectCode.NESTING_TOO_DEEP
