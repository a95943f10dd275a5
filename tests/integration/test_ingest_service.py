"""Indexing through the real database (SQLite and PostgreSQL): versions, people, privacy."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import func, select, text

from broker.bootstrap import Container
from broker.domain.rejections import RejectCode
from broker.ingest.service import InboundMessage, Outcome, Processed
from broker.security.payload_cipher import Sealed
from broker.storage import fhir_index
from broker.storage.fhir_tables import fhir_resource, fhir_token
from broker.storage.people import People
from broker.storage.prior_items import person_items
from broker.storage.protect import Protector, has_legacy_rows, seal_legacy_rows
from broker.storage.tables import (
    payload,
    person,
    rejection,
    result,
    result_item,
    result_version,
)
from tests import factories as f
from tests.conftest import Db, seed_hospitals


def msg(value: bytes, hospital: str = "H001", message_id: str | None = None) -> InboundMessage:
    return f.inbound(value, hospital, message_id)


async def ingest(c: Container, *values: InboundMessage) -> list[Processed]:
    return await c.ingest_service().process_batch(list(values))


async def current(c: Container, business_id: str, hospital: str = "H001") -> dict[str, object]:
    """The result row (found by its business id's keyed hash), and its version count."""
    async with c.sessions() as s:
        key = Protector(c.cipher, c.pseudonyms).business_key(hospital, business_id)
        row = (await s.execute(select(result).where(result.c.business_id == key))).one()
        assert f.business_id_of(c, row) == business_id
        versions = (
            await s.execute(
                select(func.count())
                .select_from(result_version)
                .where(result_version.c.result_id == row.id)
            )
        ).scalar_one()
    return {**row._mapping, "versions": versions}


async def person_of(c: Container, national_id: str) -> str | None:
    from broker.domain.identifiers import normalise

    ident = normalise(f.NATIONAL, national_id, hospital="H001")
    assert ident is not None
    async with c.sessions() as s:
        return await People(s, c.pseudonyms).find(ident)


BID = "DiagnosticReport|urn:lab:H001|ACC-1"


class TestVersions:
    async def test_a_result_is_indexed_with_its_items(self, container: Container) -> None:
        (p,) = await ingest(container, msg(f.lab_bundle()))
        assert p.outcome is Outcome.INDEXED and p.results == 1
        row = await current(container, BID)
        assert row["status"] == "final" and row["versions"] == 1

    async def test_replay_of_the_same_message_changes_nothing(self, container: Container) -> None:
        m = msg(f.lab_bundle())
        await ingest(container, m)
        (again,) = await ingest(container, m)
        assert again.outcome is Outcome.DUPLICATE
        assert (await current(container, BID))["versions"] == 1

    async def test_same_content_under_a_new_message_id_is_a_duplicate_version(
        self, container: Container
    ) -> None:
        await ingest(container, msg(f.lab_bundle()))
        (p,) = await ingest(container, msg(f.lab_bundle()))
        assert p.outcome is Outcome.DUPLICATE
        assert (await current(container, BID))["versions"] == 1

    async def test_amendment_arriving_before_the_original_still_wins(
        self, container: Container
    ) -> None:
        amended = f.lab_bundle(
            status="amended", hb=11.0, version="2", last_updated="2026-05-19T09:00:00+08:00"
        )
        original = f.lab_bundle(version="1")
        await ingest(container, msg(amended))
        (p,) = await ingest(container, msg(original))
        assert p.outcome is Outcome.INDEXED and p.versions == {"superseded": 1}
        row = await current(container, BID)
        assert row["status"] == "amended" and row["versions"] == 2

    async def test_withdrawal_in_one_batch_with_the_original(self, container: Container) -> None:
        cancelled = f.lab_bundle(
            status="entered-in-error", version="2", last_updated="2026-05-20T09:00:00+08:00"
        )
        await ingest(container, msg(f.lab_bundle()), msg(cancelled))
        assert (await current(container, BID))["status"] == "entered-in-error"
        async with container.sessions() as s:
            n = (await s.execute(select(func.count()).select_from(result_version))).scalar_one()
            current_versions = (
                await s.execute(
                    select(func.count())
                    .select_from(result_version)
                    .where(result_version.c.is_current.is_(True))
                )
            ).scalar_one()
        assert (n, current_versions) == (2, 1)


class TestPeople:
    async def test_national_id_links_results_across_hospitals(self, container: Container) -> None:
        at_h2 = f.lab_bundle(accession="B-7", pat=f.patient(mrn="X-99", pid="zz"))
        await ingest(container, msg(f.lab_bundle()), msg(at_h2, hospital="H002"))
        person_id = await person_of(container, f.PATIENT_A)
        assert person_id is not None
        async with container.sessions() as s:
            found = [
                i
                for i in await person_items(
                    s, person_id, Protector(container.cipher, container.pseudonyms)
                )
                if i.codings[0].code == "718-7"
            ]
        assert sorted(r.hospital for r in found) == ["H001", "H002"]

    async def test_same_mrn_at_two_hospitals_is_two_people(self, container: Container) -> None:
        a = f.lab_bundle(pat=f.patient(national_id=None, mrn="12345"))
        b = f.lab_bundle(accession="B-1", pat=f.patient(national_id=None, mrn="12345"))
        await ingest(container, msg(a), msg(b, hospital="H002"))
        async with container.sessions() as s:
            people = (await s.execute(select(func.count()).select_from(person))).scalar_one()
        assert people == 2

    async def test_a_message_with_both_identifiers_merges_two_people(
        self, container: Container
    ) -> None:
        mrn_only = f.lab_bundle(accession="A-1", pat=f.patient(national_id=None, mrn="M-1"))
        id_only = f.lab_bundle(
            accession="A-2",
            pat=f.patient(mrn=None, pid="other"),
            effective="2026-05-01T08:00:00+08:00",
        )
        both = f.lab_bundle(accession="A-3", pat=f.patient(mrn="M-1"))
        await ingest(container, msg(mrn_only), msg(id_only))
        await ingest(container, msg(both))
        person_id = await person_of(container, f.PATIENT_A)
        async with container.sessions() as s:
            found = [
                i
                for i in await person_items(
                    s, person_id or "", Protector(container.cipher, container.pseudonyms)
                )
                if i.codings[0].code == "718-7"
            ]
            alive = (
                await s.execute(
                    select(func.count()).select_from(person).where(person.c.merged_into.is_(None))
                )
            ).scalar_one()
        assert len(found) == 3 and alive == 1

    async def test_rows_written_for_a_person_after_it_was_merged_are_still_found(
        self, container: Container
    ) -> None:
        """Two workers cross: one merges person X into Y while the other, which had not
        seen the merge, writes a result for X. Its rows keep X, and the check's prior items
        of Y still hold it (the FHIR search and the birth date read the same set of people:
        storage.people.with_merged)."""
        mrn_only = f.lab_bundle(accession="A-1", pat=f.patient(national_id=None, mrn="M-1"))
        id_only = f.lab_bundle(accession="A-2", pat=f.patient(mrn=None, pid="other"))
        await ingest(container, msg(mrn_only), msg(id_only))
        both = f.lab_bundle(accession="A-4", pat=f.patient(mrn="M-1"))
        await ingest(container, msg(both))  # the two people are one: one is merged
        survivor = await person_of(container, f.PATIENT_A)
        async with container.sessions() as s:
            (gone,) = (
                (await s.execute(select(person.c.id).where(person.c.merged_into == survivor)))
                .scalars()
                .all()
            )
        assert survivor is not None
        late = f.lab_bundle(accession="A-3", pat=f.patient(national_id=None, mrn="M-1"))
        await ingest(container, msg(late))
        async with container.sessions() as s, s.begin():  # as the lagging worker wrote it
            late_id = (await current(container, "DiagnosticReport|urn:lab:H001|A-3"))["id"]
            for table in (result, result_item):
                await s.execute(
                    table.update()
                    .where(
                        table.c.id == late_id if table is result else table.c.result_id == late_id
                    )
                    .values(person_id=gone)
                )
        async with container.sessions() as s:
            items = await person_items(
                s, survivor, Protector(container.cipher, container.pseudonyms)
            )
        assert late_id in {i.result_id for i in items}

    async def test_patient_sent_first_lets_references_resolve(self, container: Container) -> None:
        obs = f.observation("o9", "2345-7", 5.1, "mmol/L", subject={"reference": "Patient/p1"})
        (early,) = await ingest(container, msg(json.dumps(obs).encode()))
        assert early.code is RejectCode.PATIENT_NOT_IDENTIFIED
        await ingest(container, msg(json.dumps(f.patient()).encode()))
        (late,) = await ingest(container, msg(json.dumps(obs).encode()))
        assert late.outcome is Outcome.INDEXED


class TestPrivacyAndSafety:
    async def test_no_identifier_or_name_is_stored_in_clear(
        self, container: Container, db: Db
    ) -> None:
        await ingest(container, msg(f.lab_bundle()))
        async with container.sessions() as s:
            dump: list[str] = []
            raw: list[bytes] = []  # binary columns as stored, not their repr's escapes
            for table in (
                "person_link",
                "person",
                "result",
                "result_item",
                "result_version",
                "payload",
                "inbox",
                "audit_event",
            ):
                for row in (await s.execute(text(f"SELECT * FROM {table}"))).all():
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            raw.append(bytes(value))
                        else:
                            dump.append(repr(value))
        # Sealed bytes are compared as bytes: their repr's escapes ("\x13" then ".2") could
        # spell a secret by chance.
        blob = "\n".join(dump)
        for secret in (f.PATIENT_A, "MRN-1", "张三", "\\u5f20"):
            assert secret not in blob
            assert not any(secret.encode() in b for b in raw), secret
        # Clinical text and business identifiers are sealed too: the accession, the value.
        for secret in ("ACC-1", "13.2", "LOINC 718-7: "):
            assert secret not in blob, secret
            assert not any(secret.encode() in b for b in raw), secret

    async def test_rows_indexed_in_clear_before_are_sealed_once(self, container: Container) -> None:
        await ingest(container, msg(f.lab_bundle()))
        async with container.sessions() as s, s.begin():  # as an older version stored it
            await s.execute(
                result.update().values(
                    business_id=BID, business_id_sealed=None, clinical=None, summary="CBC 13.2"
                )
            )
            await s.execute(result_item.update().values(clinical=None, summary="Hb: 13.2 g/dL"))
            await s.execute(  # and a search index row from before identifiers were hashed
                fhir_resource.insert().values(
                    id="fr1",
                    result_id=(await s.execute(select(result.c.id))).scalar_one(),
                    version_id=1,
                    resource_type="DiagnosticReport",
                )
            )
            await s.execute(
                fhir_token.insert().values(
                    resource_id="fr1", param="identifier", system="urn:lab:H001", code="ACC-1"
                )
            )
        protector = Protector(container.cipher, container.pseudonyms)
        async with container.sessions() as s, s.begin():
            assert await has_legacy_rows(s)
            assert await seal_legacy_rows(s, protector) > 0
        async with container.sessions() as s, s.begin():
            assert not await has_legacy_rows(s)
            assert await seal_legacy_rows(s, protector) == 0
            assert (await s.execute(select(fhir_token))).first() is None
        row = await current(container, BID)  # found by its keyed hash, opened again
        assert row["summary"] == ""
        (p,) = await ingest(container, msg(f.lab_bundle(hb=13.2)))  # same content: duplicate
        assert p.outcome is Outcome.DUPLICATE
        async with container.sessions() as s:
            person_id = await person_of(container, f.PATIENT_A)
            assert person_id is not None
            items = await person_items(s, person_id, protector)
        assert any(i.summary == "Hb: 13.2 g/dL" for i in items)

    async def test_payload_is_the_received_bytes_sealed(self, container: Container) -> None:
        value = f.lab_bundle()
        m = msg(value)
        await ingest(container, m)
        async with container.sessions() as s:
            row = (await s.execute(select(payload))).one()._mapping
        sealed = Sealed(row["key_id"], row["algorithm"], row["nonce"], row["ciphertext"])
        opened = container.cipher.open(sealed, associated=m.headers["mrb-message-id"])
        assert opened == value  # byte for byte: never re-serialised

    async def test_bad_messages_are_recorded_and_lose_nothing_stored(
        self, container: Container
    ) -> None:
        await ingest(container, msg(f.lab_bundle()))
        bad = [
            msg(b"{not json"),
            msg(f.lab_bundle(), hospital="H999"),
            InboundMessage(f.lab_bundle(), {"mrb-hospital": b"H001"}),
            InboundMessage(
                f.lab_bundle(), {"mrb-hospital": b"H001", "mrb-message-id": b"not-a-uuid"}
            ),
            msg(b"\xff" * 10),
        ]
        processed = await ingest(container, *bad)
        assert [p.code for p in processed] == [
            RejectCode.MALFORMED_JSON,
            RejectCode.UNKNOWN_HOSPITAL,
            RejectCode.MISSING_HEADER,
            RejectCode.INVALID_MESSAGE_ID,
            RejectCode.INVALID_ENCODING,
        ]
        row = await current(container, BID)
        assert row["status"] == "final"
        async with container.sessions() as s:
            n = (await s.execute(select(func.count()).select_from(rejection))).scalar_one()
        assert n == 5

    async def test_rejected_message_can_be_replayed_after_the_fix(
        self, container: Container
    ) -> None:
        from broker.storage import hospitals

        m = msg(f.lab_bundle(), hospital="H003")
        (first,) = await ingest(container, m)
        assert first.code is RejectCode.UNKNOWN_HOSPITAL
        await seed_hospitals(container, hospitals.Hospital("H003", "Third", "510503", "1"))
        (second,) = await ingest(container, m)
        assert second.outcome is Outcome.INDEXED
        assert (await current(container, BID, "H003"))["updated_at"] <= datetime.now(UTC)


class TestSearchIndexAtIngest:
    """The FHIR search rows are written with the result, in the ingest transaction: a read
    finds nothing stale and opens no payload to index it."""

    async def _index(
        self, c: Container
    ) -> tuple[int, list[tuple[object, ...]], set[tuple[str, str]]]:
        async with c.sessions() as s:
            current_version = (
                await s.execute(
                    select(result_version.c.id).where(result_version.c.is_current.is_(True))
                )
            ).scalar_one()
            rows = [
                tuple(r)
                for r in await s.execute(
                    select(fhir_resource.c.resource_type, fhir_resource.c.version_id)
                )
            ]
            tokens = {(t.param, t.code) for t in await s.execute(select(fhir_token))}
        return current_version, rows, tokens

    async def test_rows_are_written_at_ingest_and_reads_rebuild_nothing(
        self, container: Container
    ) -> None:
        await ingest(container, msg(f.lab_bundle()))
        version, rows, tokens = await self._index(container)
        assert {t for t, _ in rows} == {"DiagnosticReport", "Observation", "Patient"}
        assert {v for _, v in rows} == {version}
        assert ("code", "58410-2") in tokens and ("code", "718-7") in tokens
        # The accession is searchable by its keyed hash only.
        assert all(code != "ACC-1" for _, code in tokens)
        person_id = (await current(container, BID))["person_id"]
        assert isinstance(person_id, str)
        rebuilt = await fhir_index.refresh_person(
            container.sessions,
            container.cipher,
            person_id,
            identifiers=fhir_index.identifier_key(container.pseudonyms),
        )
        assert rebuilt == 0

    async def test_a_correction_replaces_the_rows_in_the_same_batch_and_later(
        self, container: Container
    ) -> None:
        await ingest(
            container,
            msg(f.lab_bundle(version="1")),
            msg(
                f.lab_bundle(
                    version="2", status="amended", hb=12.9, last_updated="2026-05-19T12:00:00+08:00"
                )
            ),
        )
        version, rows, _ = await self._index(container)
        assert {v for _, v in rows} == {version}  # version 1's rows replaced in the batch
        await ingest(
            container,
            msg(
                f.lab_bundle(
                    version="3",
                    status="corrected",
                    hb=12.8,
                    last_updated="2026-05-20T12:00:00+08:00",
                )
            ),
        )
        version3, rows3, _ = await self._index(container)
        assert version3 != version and {v for _, v in rows3} == {version3}
        assert len(rows3) == len(rows)
