"""The audit hash chain's rules: any change, removal or forged checkpoint shows."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.domain.audit_chain import GENESIS, checkpoint_message, entry_hash, verify_chain

KEY = Ed25519PrivateKey.generate()


def ok(message: bytes, signature: bytes) -> bool:
    try:
        KEY.public_key().verify(signature, message)
    except Exception:
        return False
    return True


def chain(n: int) -> list[dict[str, object]]:
    prev, out = GENESIS, []
    for i in range(1, n + 1):
        e: dict[str, object] = {
            "id": i, "at": datetime(2026, 5, 20, 9, i, tzinfo=UTC), "actor": f"dr-{i}",
            "role": "doctor", "hospital_id": "H002", "action": "recognition-check",
            "purpose": "order-entry", "patient_pseudonym": "ab" * 32, "person_id": "p",
            "detail": {"check_id": f"c{i}", "items": i},
        }  # fmt: skip
        e |= {"seq": i, "prev_hash": prev, "hash": entry_hash(e, i, prev)}
        prev = str(e["hash"])
        out.append(e)
    return out


def test_an_untouched_chain_with_its_checkpoint_verifies() -> None:
    entries = chain(5)
    last = str(entries[-1]["hash"])
    report = verify_chain(entries, [(5, last, KEY.sign(checkpoint_message(5, last)))], ok)
    assert report.intact and report.sealed == 5 and report.checkpoints == 1


def test_a_changed_entry_is_found() -> None:
    entries = chain(4)
    entries[1]["actor"] = "someone-else"
    assert verify_chain(entries, [], ok).problems == (
        "seq 2 (audit id 2): content changed after sealing",
    )


def test_a_removed_entry_is_found() -> None:
    entries = chain(4)
    del entries[2]
    problems = verify_chain(entries, [], ok).problems
    assert "seq 3 is missing (found 4): entries were removed" in problems


def test_a_rewritten_tail_fails_its_signed_checkpoint() -> None:
    entries = chain(3)
    signed = str(entries[-1]["hash"])
    checkpoint = (3, signed, KEY.sign(checkpoint_message(3, signed)))
    entries[2]["detail"] = {"check_id": "forged"}
    entries[2]["hash"] = entry_hash(entries[2], 3, str(entries[2]["prev_hash"]))  # recomputed
    problems = verify_chain(entries, [checkpoint], ok).problems
    assert problems == ("checkpoint 3: the chain no longer has the signed hash there",)
    forged = (3, str(entries[2]["hash"]), Ed25519PrivateKey.generate().sign(b"x"))
    assert "checkpoint 3: signature does not verify" in verify_chain(entries, [forged], ok).problems
