"""Who holds which checkpoint key, and the sealer's export, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.bootstrap import AuditTrail, Container
from broker.domain.actors import Actor, Role
from broker.domain.audit_chain import Finding
from broker.security.keys import load_or_create_key
from broker.settings import Settings
from broker.storage.audit_chain import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    CheckpointKey,
    CheckpointKeyError,
    seal,
    verify,
)
from broker.storage.audit_export import FileExport
from broker.storage.audit_log import record_read
from tests.conftest import Db

DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")


async def audit(c: Container, n: int = 1) -> None:
    async with c.sessions() as s, s.begin():
        for i in range(n):
            await record_read(
                s, DOCTOR, action="fhir-read", purpose="treatment",
                patient_pseudonym=None, person_id=f"p{i}", detail=None,
            )  # fmt: skip


def production(db: Db, data: Path, **extra: Any) -> Settings:
    """A host of a production layout: PostgreSQL-style, no key is ever created on start."""
    return Settings(
        data_dir=data, database_url=db.url, database_schema=db.schema, create_keys=False, **extra
    )


@pytest.fixture
async def hosts(db: Db, tmp_path: Path) -> AsyncIterator[tuple[AuditTrail, Path]]:
    """The sealer host's key (made by `mrb audit key`), the export, and its public key."""
    sealer_data = tmp_path / "sealer"
    key = CheckpointKey.from_dir(sealer_data / "keys", create=True)
    export = tmp_path / "export" / "audit-checkpoints.jsonl"
    trail = AuditTrail.build(
        production(
            db,
            sealer_data,
            audit_export=str(export),
            audit_sealer_key=sealer_data / "keys" / PRIVATE_KEY_FILE,
        )
    )
    yield trail, export
    await trail.close()
    assert key.key_id  # the sealer host's key stayed where it was made


class TestTheSealerHost:
    async def test_seals_and_exports_each_checkpoint_as_it_is_made(
        self, container: Container, hosts: tuple[AuditTrail, Path]
    ) -> None:
        trail, export = hosts
        sealer = trail.sealer()
        assert sealer.active
        await audit(container, 2)
        assert await sealer.seal_once() == 2
        await audit(container, 1)
        assert await sealer.seal_once() == 1
        assert [c.seq for c in FileExport(export).read().records] == [2, 3]

    async def test_a_checkpoint_committed_but_not_exported_is_exported_first(
        self, container: Container, hosts: tuple[AuditTrail, Path]
    ) -> None:
        trail, export = hosts
        key = trail.sealer_key()
        assert key is not None
        await audit(container, 2)
        async with container.sessions() as s, s.begin():  # the process died after commit
            await seal(s, key)
        await audit(container, 1)
        assert await trail.sealer().seal_once() == 1
        assert [c.seq for c in FileExport(export).read().records] == [2, 3]

    async def test_nothing_is_sealed_while_the_export_cannot_be_written(
        self, container: Container, db: Db, tmp_path: Path
    ) -> None:
        CheckpointKey.from_dir(tmp_path / "s" / "keys", create=True)
        blocked = tmp_path / "not-a-dir"
        blocked.write_text("")
        trail = AuditTrail.build(
            production(
                db,
                tmp_path / "s",
                audit_export=str(blocked / "audit.jsonl"),
                audit_sealer_key=tmp_path / "s" / "keys" / PRIVATE_KEY_FILE,
            )
        )
        try:
            await audit(container, 1)
            async with container.sessions() as s, s.begin():  # one left to export
                key = trail.sealer_key()
                assert key is not None
                await seal(s, key)
            await audit(container, 1)
            with pytest.raises(OSError, match="Not a directory"):
                await trail.sealer().seal_once()
            async with container.sessions() as s:
                report = await verify(s, key.pinned, FileExport(blocked / "audit.jsonl"))
            assert report.unsealed == 1 and report.sealed == 1
        finally:
            await trail.close()

    async def test_it_needs_an_export(self, db: Db, tmp_path: Path) -> None:
        CheckpointKey.from_dir(tmp_path / "keys", create=True)
        trail = AuditTrail.build(
            production(db, tmp_path, audit_sealer_key=tmp_path / "keys" / PRIVATE_KEY_FILE)
        )
        try:
            with pytest.raises(ValueError, match="MRB_AUDIT_EXPORT"):
                trail.sealer()
        finally:
            await trail.close()

    async def test_a_key_that_is_not_the_pinned_one_is_refused(
        self, db: Db, tmp_path: Path
    ) -> None:
        CheckpointKey.from_dir(tmp_path / "keys", create=True)
        (tmp_path / "keys" / PUBLIC_KEY_FILE).unlink()  # pinned by configuration instead
        other = CheckpointKey(Ed25519PrivateKey.generate())
        trail = AuditTrail.build(
            production(
                db,
                tmp_path,
                audit_export=str(tmp_path / "e.jsonl"),
                audit_checkpoint_public_key=other.public_b64,
                audit_sealer_key=tmp_path / "keys" / PRIVATE_KEY_FILE,
            )
        )
        try:
            with pytest.raises(CheckpointKeyError, match="not the pinned checkpoint key"):
                trail.sealer()
        finally:
            await trail.close()


class TestTheOtherHosts:
    async def test_a_worker_without_the_key_does_not_seal(self, db: Db, tmp_path: Path) -> None:
        trail = AuditTrail.build(production(db, tmp_path))
        try:
            assert trail.sealer_key() is None
            sealer = trail.sealer()
            assert not sealer.active
            stop = asyncio.Event()
            task = asyncio.create_task(sealer.run(stop))
            await asyncio.sleep(0.05)
            assert not task.done()  # idle until the process stops, not a failed task
            stop.set()
            await asyncio.wait_for(task, 5)
            assert not (tmp_path / "keys" / PRIVATE_KEY_FILE).exists()
        finally:
            await trail.close()

    async def test_a_key_file_merely_present_does_not_make_a_worker_seal(
        self, db: Db, tmp_path: Path
    ) -> None:
        load_or_create_key(tmp_path / "keys" / PRIVATE_KEY_FILE)  # as `mrb keys init` leaves it
        pin = CheckpointKey(Ed25519PrivateKey.generate()).public_b64
        trail = AuditTrail.build(production(db, tmp_path, audit_checkpoint_public_key=pin))
        try:
            assert not trail.sealer().active
            with pytest.raises(CheckpointKeyError, match="not the pinned checkpoint key"):
                trail.sealer(sealer_host=True)  # `mrb audit seal` here would be refused
        finally:
            await trail.close()

    async def test_verification_needs_a_pinned_public_key(self, db: Db, tmp_path: Path) -> None:
        trail = AuditTrail.build(production(db, tmp_path))
        try:
            with pytest.raises(CheckpointKeyError, match="no checkpoint public key is pinned"):
                trail.pinned_keys()
        finally:
            await trail.close()

    async def test_the_pin_comes_from_configuration_or_the_pub_file(
        self, db: Db, tmp_path: Path
    ) -> None:
        key = CheckpointKey(Ed25519PrivateKey.generate())
        by_env = AuditTrail.build(
            production(db, tmp_path, audit_checkpoint_public_key=key.public_b64)
        )
        (tmp_path / "f" / "keys").mkdir(parents=True)
        key.write_public(tmp_path / "f" / "keys" / PUBLIC_KEY_FILE)
        by_file = AuditTrail.build(production(db, tmp_path / "f"))
        other = CheckpointKey(Ed25519PrivateKey.generate())
        both = AuditTrail.build(
            production(db, tmp_path / "f", audit_checkpoint_public_key=other.public_b64)
        )
        try:
            assert by_env.pinned_keys().key_ids == by_file.pinned_keys().key_ids == (key.key_id,)
            with pytest.raises(CheckpointKeyError, match="pin different keys"):
                both.pinned_keys()
            with pytest.raises(CheckpointKeyError, match="not a base64 raw Ed25519"):
                AuditTrail(
                    production(db, tmp_path, audit_checkpoint_public_key="not-a-key"),
                    by_env.sessions,
                ).pinned_keys()
        finally:
            for t in (by_env, by_file, both):
                await t.close()

    async def test_checkpoints_signed_by_another_key_do_not_verify(
        self, container: Container, hosts: tuple[AuditTrail, Path], db: Db, tmp_path: Path
    ) -> None:
        sealer_host, export = hosts
        await audit(container, 2)
        await sealer_host.sealer().seal_once()
        rotated = CheckpointKey(Ed25519PrivateKey.generate())
        genuine = (tmp_path / "sealer" / "keys" / PUBLIC_KEY_FILE).read_text().strip()
        auditor = production(db, tmp_path / "auditor", audit_export=str(export))
        for pin, intact in ((genuine, True), (rotated.public_b64, False)):
            trail = AuditTrail(
                auditor.model_copy(update={"audit_checkpoint_public_key": pin}),
                container.sessions,
            )
            async with container.sessions() as s:
                report = await verify(s, trail.pinned_keys(), trail.export())
            assert report.intact is intact
            if not intact:
                assert report.kinds == {Finding.RESIGNED}
        both = f"{rotated.public_b64},{genuine}"  # during a key rotation
        trail = AuditTrail(
            auditor.model_copy(update={"audit_checkpoint_public_key": both}), container.sessions
        )
        async with container.sessions() as s:
            assert (await verify(s, trail.pinned_keys(), trail.export())).intact
