"""Only messages signed by a registered, unrevoked key of their hospital are indexed."""

from __future__ import annotations

import uuid

import pytest

from broker.bootstrap import Container
from broker.domain.rejections import RejectCode
from broker.ingest.service import InboundMessage, Outcome, Processed
from broker.services import registry as registry_service
from tests import factories as f
from tests.conftest import PLATFORM_ADMIN


async def ingest(c: Container, *m: InboundMessage) -> list[Processed]:
    return await c.ingest_service().process_batch(list(m))


def with_header(m: InboundMessage, name: str, value: bytes) -> InboundMessage:
    return InboundMessage(m.value, {**m.headers, name: value})


class TestSignatureMatrix:
    async def test_good_signature_is_indexed(self, container: Container) -> None:
        (p,) = await ingest(container, f.inbound(f.lab_bundle()))
        assert p.outcome is Outcome.INDEXED

    async def test_tampered_value(self, container: Container) -> None:
        good = f.inbound(f.lab_bundle())
        tampered = InboundMessage(good.value.replace(b"13.2", b"19.2"), good.headers)
        (p,) = await ingest(container, tampered)
        assert p.code is RejectCode.BAD_SIGNATURE

    async def test_tampered_message_id(self, container: Container) -> None:
        m = with_header(f.inbound(f.lab_bundle()), "mrb-message-id", str(uuid.uuid4()).encode())
        assert (await ingest(container, m))[0].code is RejectCode.BAD_SIGNATURE

    async def test_message_claiming_another_hospital(self, container: Container) -> None:
        # Signed by H001's key but sent as H002: H002 has no such key.
        m = f.inbound(f.lab_bundle(), hospital="H002", signer="H001")
        assert (await ingest(container, m))[0].code is RejectCode.UNKNOWN_KEY

    async def test_signature_made_by_another_key_under_a_valid_key_id(
        self, container: Container
    ) -> None:
        forged = f.inbound(f.lab_bundle(), hospital="H001", signer="H002")
        m = with_header(forged, "mrb-key-id", f.key_id("H001").encode())
        assert (await ingest(container, m))[0].code is RejectCode.BAD_SIGNATURE

    async def test_unknown_key_id(self, container: Container) -> None:
        m = with_header(f.inbound(f.lab_bundle()), "mrb-key-id", b"H001-nope")
        assert (await ingest(container, m))[0].code is RejectCode.UNKNOWN_KEY

    async def test_missing_or_garbled_signature(self, container: Container) -> None:
        empty = with_header(f.inbound(f.lab_bundle()), "mrb-signature", b"")
        garbled = with_header(f.inbound(f.lab_bundle()), "mrb-signature", b"!!not base64!!")
        assert [p.code for p in await ingest(container, empty, garbled)] == [
            RejectCode.BAD_SIGNATURE,
            RejectCode.BAD_SIGNATURE,
        ]

    async def test_unknown_hospital_comes_first(self, container: Container) -> None:
        m = f.inbound(f.lab_bundle(), hospital="H999")
        assert (await ingest(container, m))[0].code is RejectCode.UNKNOWN_HOSPITAL

    async def test_rotated_key_keeps_older_messages_verifiable(self, container: Container) -> None:
        old = f.inbound(f.lab_bundle(accession="OLD"))  # signed with H001-test
        await registry_service.add_key(
            container.registry_uow(),
            "H001",
            f.key_id("H003"),
            f.public_b64("H003"),
            by=PLATFORM_ADMIN,
        )
        new = f.inbound(f.lab_bundle(accession="NEW"), hospital="H001", signer="H003")
        assert [p.outcome for p in await ingest(container, new, old)] == [
            Outcome.INDEXED,
            Outcome.INDEXED,
        ]

    async def test_revoked_key_is_refused(self, container: Container) -> None:
        await registry_service.revoke_key(
            container.registry_uow(), "H001", f.key_id("H001"), by=PLATFORM_ADMIN
        )
        (p,) = await ingest(container, f.inbound(f.lab_bundle()))
        assert p.code is RejectCode.REVOKED_KEY


async def test_key_registration_checks_the_key(container: Container) -> None:
    with pytest.raises(registry_service.RegistryError, match="32 bytes"):
        await registry_service.add_key(
            container.registry_uow(), "H001", "k2", "AAAA", by=PLATFORM_ADMIN
        )
    with pytest.raises(registry_service.RegistryError, match="already registered"):
        await registry_service.add_key(
            container.registry_uow(),
            "H001",
            f.key_id("H001"),
            f.public_b64("H001"),
            by=PLATFORM_ADMIN,
        )
    with pytest.raises(registry_service.RegistryError, match="not registered"):
        await registry_service.add_key(
            container.registry_uow(), "H404", "k", f.public_b64("H001"), by=PLATFORM_ADMIN
        )


async def test_migration_mode_accepts_unsigned_but_still_checks_signatures(
    container: Container,
) -> None:
    service = container.settings.model_copy(update={"require_signatures": False})
    relaxed = Container.build(service)
    try:
        unsigned = InboundMessage(
            f.lab_bundle(), {"mrb-hospital": b"H001", "mrb-message-id": str(uuid.uuid4()).encode()}
        )
        forged = with_header(
            f.inbound(f.lab_bundle(accession="X")),
            "mrb-signature",
            f.inbound(f.lab_bundle()).headers["mrb-signature"],
        )
        out = await relaxed.ingest_service().process_batch([unsigned, forged])
        assert [p.outcome for p in out] == [Outcome.INDEXED, Outcome.REJECTED]
        assert out[1].code is RejectCode.BAD_SIGNATURE
    finally:
        await relaxed.close()
