"""The wire contract (mrb_wire) is defined once and carries no dependency an adapter lacks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import mrb_wire
from mrb_wire import resident_id
from mrb_wire.fhir import hospital_subsystem, hospital_system
from mrb_wire.routing import routing_key
from mrb_wire.signing import receipt_signed_bytes, signed_bytes

PACKAGE = Path(mrb_wire.__file__).parent
ROOT = PACKAGE.parent


def test_it_imports_the_standard_library_only() -> None:
    for module in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in {"mrb_wire", "__future__"}, (
                    f"{module.name} imports {name}"
                )


@pytest.mark.parametrize(
    "literal",
    [
        '"mrb.results.v1"',
        '"mrb.receipts.v1"',
        '"mrb-signature"',
        '"mrb-key-id"',
        '"urn:mrb:fhir:extension:contrast"',
        '"urn:mrb:fhir:extension:recognition-mark"',
        '"urn:oid:2.16.156.10011.1.3"',
        '"10X98765432"',
    ],
)
def test_the_contract_is_spelled_once(literal: str) -> None:
    """Topic, header, extension and check-digit literals live in mrb_wire only."""
    spelled = [
        str(path.relative_to(ROOT))
        for top in ("broker", "adapters")
        for path in (ROOT / top).rglob("*.py")
        if literal in path.read_text()
    ]
    assert spelled == []


def test_the_bytes_each_side_signs() -> None:
    # DESIGN.md, "Kafka contract": UTF-8(hospital) 0x0A UTF-8(message id) 0x0A value.
    assert signed_bytes("H001", "m-1", b"{}") == b"H001\nm-1\n{}"
    assert receipt_signed_bytes("医院", b"{}") == "医院".encode() + b"\n{}"


def test_the_routing_key_is_opaque_and_stable_per_patient() -> None:
    one = routing_key(b"s" * 32, "H001", "110101199003074514")
    assert one == routing_key(b"s" * 32, "H001", "110101199003074514")
    assert one != routing_key(b"s" * 32, "H002", "110101199003074514")
    assert one != routing_key(b"t" * 32, "H001", "110101199003074514")
    assert b"110101" not in one and len(one) == 32


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("11010519491231002X", "11010519491231002X"),  # GB 11643 appendix example
        ("11010519491231002x", "11010519491231002X"),
        (" １１０１０５１９４９１２３１００２Ｘ ", "11010519491231002X"),  # full width
        ("110105194912310021", None),  # wrong check character
        ("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X", None),  # Arabic-Indic digits are not ID digits
        ("11010519491231002", None),
        ("", None),
    ],
)
def test_resident_id_canonical_form(value: str, expected: str | None) -> None:
    assert resident_id.canonical(value) == expected


def test_a_check_character_needs_seventeen_ascii_digits() -> None:
    assert resident_id.check_character("11010519491231002") == "X"
    with pytest.raises(ValueError, match="17 digits"):
        resident_id.check_character("1101051949123100")


def test_hospital_scoped_systems() -> None:
    assert hospital_system("H001", "accession") == "urn:mrb:hospital:H001:accession"
    assert hospital_subsystem("H001", "pid", "HIS/1 a") == "urn:mrb:hospital:H001:pid:HIS%2F1%20a"
