"""The audit hash chain's rules: any change, removal or forged checkpoint shows, and the
exported checkpoints prove what the database no longer holds."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.domain.audit_chain import (
    GENESIS,
    ChainReport,
    Checkpoint,
    ExportRead,
    Finding,
    checkpoint_message,
    entry_hash,
    verify_chain,
)
from broker.storage.audit_chain import CheckpointKey

KEY = CheckpointKey(Ed25519PrivateKey.generate())
PINNED = KEY.pinned
ATTACKER = CheckpointKey(Ed25519PrivateKey.generate())


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


def relink(entries: list[dict[str, object]], start: int) -> None:
    """Recompute hashes from `start` on, as an attacker who edited an entry would."""
    prev = GENESIS if start == 1 else str(entries[start - 2]["hash"])
    for e in entries[start - 1 :]:
        seq = int(str(e["seq"]))
        e["prev_hash"], e["hash"] = prev, entry_hash(e, seq, prev)
        prev = str(e["hash"])


def checkpoint(entries: list[dict[str, object]], seq: int, key: CheckpointKey = KEY) -> Checkpoint:
    h = str(entries[seq - 1]["hash"])
    return Checkpoint(seq, h, key.key_id, key.sign(checkpoint_message(seq, h)))


def check(
    entries: list[dict[str, object]],
    db: list[Checkpoint],
    exported: list[Checkpoint] | ExportRead,
) -> ChainReport:
    export = exported if isinstance(exported, ExportRead) else ExportRead(tuple(exported))
    return verify_chain(entries, db, PINNED, export)


class TestAnUntouchedTrail:
    def test_verifies_with_its_checkpoints_exported(self) -> None:
        entries = chain(8)
        cps = [checkpoint(entries, s) for s in (3, 5, 8)]
        report = check(entries, cps, cps)
        assert report.intact and not report.notes
        assert (report.sealed, report.checkpoints, report.exported) == (8, 3, 3)

    def test_a_checkpoint_not_exported_yet_is_a_note_not_a_finding(self) -> None:
        entries = chain(8)
        cps = [checkpoint(entries, s) for s in (3, 5, 8)]
        report = check(entries, cps, cps[:2])
        assert report.intact
        assert report.notes == (
            "1 checkpoint(s) from seq 8 on are not exported yet (the sealer exports each "
            "after its commit)",
        )

    def test_the_same_record_exported_twice_is_harmless(self) -> None:
        entries = chain(3)
        cps = [checkpoint(entries, 3)]
        assert check(entries, cps, cps + cps).intact


class TestEntries:
    def test_a_changed_entry_is_found(self) -> None:
        entries = chain(4)
        entries[1]["actor"] = "someone-else"
        report = check(entries, [], [])
        assert report.problems == ("edited: seq 2 (audit id 2): content changed after sealing",)

    def test_a_removed_entry_in_the_middle_is_named(self) -> None:
        entries = chain(5)
        cps = [checkpoint(entries, 5)]
        del entries[2]
        report = check(entries, cps, cps)
        assert report.problems == ("deleted: seq 3 deleted: the chain jumps from seq 2 to 4",)

    def test_several_removed_entries_are_one_range(self) -> None:
        entries = chain(6)
        del entries[1:4]
        assert check(entries, [], []).problems == (
            "deleted: seq 2–4 deleted: the chain jumps from seq 1 to 5",
        )


class TestTruncation:
    def test_the_export_proves_entries_and_checkpoints_cut_off_the_end(self) -> None:
        entries = chain(8)
        cps = [checkpoint(entries, s) for s in (3, 5, 8)]
        report = check(entries[:5], cps[:2], cps)
        assert report.kinds == {Finding.TRUNCATED}
        assert report.problems == (
            "truncated: truncated since seq 6: the chain ends at seq 5, but exported "
            "checkpoint 8 proves entries up to seq 8 existed; checkpoint(s) 8 are gone from "
            "the database too",
        )

    def test_a_signed_checkpoint_left_behind_proves_it_too(self) -> None:
        entries = chain(8)
        cps = [checkpoint(entries, s) for s in (3, 8)]
        report = check(entries[:6], cps, cps[:1])
        assert report.kinds == {Finding.TRUNCATED}
        assert "truncated since seq 7" in report.problems[0]
        assert "signed checkpoint 8 in the database" in report.problems[0]

    def test_everything_deleted(self) -> None:
        entries = chain(3)
        report = check([], [], [checkpoint(entries, 3)])
        assert report.problems[0].startswith("truncated: truncated since seq 1:")

    def test_an_exported_checkpoint_deleted_in_the_middle(self) -> None:
        entries = chain(8)
        cps = [checkpoint(entries, s) for s in (3, 5, 8)]
        report = check(entries, [cps[0], cps[2]], cps)
        assert report.problems == (
            "deleted: checkpoint 5 was deleted from the database (the export has it)",
        )


class TestResigning:
    def test_an_edit_resealed_with_another_key_is_re_signed_and_edited(self) -> None:
        entries = chain(8)
        honest = [checkpoint(entries, s) for s in (3, 5, 8)]
        entries[3]["detail"] = {"check_id": "forged"}
        relink(entries, 4)
        forged = [honest[0], checkpoint(entries, 8, ATTACKER)]
        report = check(entries, forged, honest)
        assert report.kinds == {Finding.RESIGNED, Finding.EDITED, Finding.DELETED}
        assert (
            f"re-signed: checkpoint 8 is signed by key {ATTACKER.key_id}, which is not a "
            "pinned checkpoint key"
        ) in report.problems
        assert (
            "edited: the chain's hash at seq 5 is not the exported checkpoint's: an entry in "
            "seq 4–5 was changed and the chain re-linked after it"
        ) in report.problems

    def test_an_edit_resealed_with_the_real_key_is_caught_by_the_export(self) -> None:
        entries = chain(5)
        honest = [checkpoint(entries, s) for s in (3, 5)]
        entries[1]["actor"] = "someone-else"
        relink(entries, 2)
        resigned = [checkpoint(entries, s) for s in (3, 5)]  # the key was beside the app
        report = check(entries, resigned, honest)
        assert report.kinds == {Finding.RESIGNED, Finding.EDITED}
        assert any(p.startswith("re-signed: checkpoint 3 in the database") for p in report.problems)
        assert "an entry in seq 1–3 was changed" in " ".join(report.problems)

    def test_a_rewritten_tail_fails_its_signed_checkpoint_without_an_export(self) -> None:
        entries = chain(3)
        cp = checkpoint(entries, 3)
        entries[2]["detail"] = {"check_id": "forged"}
        entries[2]["hash"] = entry_hash(entries[2], 3, str(entries[2]["prev_hash"]))
        report = check(entries, [cp], [cp])
        assert report.kinds == {Finding.EDITED}

    def test_a_pinned_key_id_with_a_foreign_signature_does_not_verify(self) -> None:
        entries = chain(3)
        h = str(entries[2]["hash"])
        fake = Checkpoint(3, h, KEY.key_id, ATTACKER.sign(checkpoint_message(3, h)))
        report = check(entries, [fake], ExportRead())
        assert report.problems == (
            f"re-signed: checkpoint 3: its signature does not verify with pinned key "
            f"{KEY.key_id} (forged, or its seq or hash altered)",
        )


class TestTheExport:
    def test_missing(self) -> None:
        entries = chain(3)
        report = check(entries, [checkpoint(entries, 3)], ExportRead(missing="it is gone"))
        assert report.problems == (
            "export: it is gone: truncation and re-signed checkpoints cannot be ruled out",
        )

    def test_unreadable_lines_are_named(self) -> None:
        entries = chain(3)
        cps = [checkpoint(entries, 3)]
        report = check(entries, cps, ExportRead(tuple(cps), unreadable=(2,)))
        assert report.problems == ("export: export line 2 is not a checkpoint record",)

    def test_a_record_written_by_another_key_is_refused(self) -> None:
        entries = chain(3)
        cps = [checkpoint(entries, 3)]
        report = check(entries, cps, [*cps, checkpoint(entries, 2, ATTACKER)])
        assert report.kinds == {Finding.RESIGNED}
        assert "exported checkpoint 2 is signed by key" in report.problems[0]

    def test_two_different_records_for_one_seq(self) -> None:
        entries = chain(3)
        cp = checkpoint(entries, 3)
        other = Checkpoint(3, "f" * 64, KEY.key_id, KEY.sign(checkpoint_message(3, "f" * 64)))
        report = check(entries, [cp], [cp, other])
        assert report.problems == ("export: the export holds two different checkpoints for seq 3",)

    def test_a_checkpoint_the_export_skipped_is_named(self) -> None:
        entries = chain(5)
        cps = [checkpoint(entries, s) for s in (3, 5)]
        report = check(entries, cps, cps[1:])
        assert report.problems == (
            "export: checkpoint 3 is in the database but not in the export: added afterwards, "
            "or the export lost it",
        )
