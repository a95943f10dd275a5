"""CDS Hooks data on SQLAlchemy (the ports of broker/ports/cds.py): the client registry,
the jti replay guard, draft orders, cards, and the unit of work of a hook call's steps."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.check_items import StoredCheckItem, stored_items
from broker.domain.recognition import PriorItem
from broker.ports import cds as ports
from broker.security.payload_cipher import PayloadCipher
from broker.security.sealed_fields import open_json, seal_json
from broker.storage.cds_tables import cds_card, cds_client, cds_draft_order, cds_jti
from broker.storage.check_uow import SqlAudit, SqlHospitals, SqlMappings, SqlPeople
from broker.storage.consents import SessionConsentReader
from broker.storage.dialect_insert import insert_into
from broker.storage.prior_items import person_items
from broker.storage.protect import Protector
from broker.storage.reference_cache import ReferenceReadingUnitOfWork
from broker.storage.tables import hospital, recognition_check, recognition_outcome, result
from broker.storage.write_batch import Writes

# -- the client registry -----------------------------------------------------------------


class SqlCdsClients(ports.CdsClients):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def hospital_exists(self, hospital_id: str) -> bool:
        found = await self._session.scalar(
            select(hospital.c.id).where(hospital.c.id == hospital_id)
        )
        return found is not None

    async def put(self, client: ports.RegisteredClient, *, by: str, at: datetime) -> None:
        values = {
            "hospital_id": client.hospital,
            "jwks_url": client.jwks_url,
            "jwks": client.jwks,
            "fhir_servers": list(client.fhir_servers),
            "launch_origins": list(client.launch_origins),
            "added_by": by,
            "added_at": at,
            "revoked_at": None,
        }
        done = await self._session.execute(
            update(cds_client).where(cds_client.c.issuer == client.issuer).values(**values)
        )
        if getattr(done, "rowcount", 0) == 0:
            await self._session.execute(cds_client.insert().values(issuer=client.issuer, **values))

    async def set_fhir_servers(self, issuer: str, fhir_servers: Sequence[str]) -> bool:
        done = await self._session.execute(
            update(cds_client)
            .where(cds_client.c.issuer == issuer)
            .values(fhir_servers=list(fhir_servers))
        )
        return bool(getattr(done, "rowcount", 0))

    async def set_launch_origins(self, issuer: str, origins: Sequence[str]) -> bool:
        done = await self._session.execute(
            update(cds_client)
            .where(cds_client.c.issuer == issuer)
            .values(launch_origins=list(origins))
        )
        return bool(getattr(done, "rowcount", 0))

    async def revoke(self, issuer: str, at: datetime) -> bool:
        done = await self._session.execute(
            update(cds_client)
            .where(cds_client.c.issuer == issuer, cds_client.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return bool(getattr(done, "rowcount", 0))

    async def all(self) -> list[ports.ClientRow]:
        rows = await self._session.execute(select(cds_client).order_by(cds_client.c.issuer))
        return [
            ports.ClientRow(
                r.issuer,
                r.hospital_id,
                r.jwks_url,
                len(r.jwks.get("keys", [])) if isinstance(r.jwks, dict) else None,
                r.added_by,
                r.added_at,
                r.revoked_at,
                tuple(r.fhir_servers or ()),
                tuple(r.launch_origins or ()),
            )
            for r in rows
        ]


class DbClientRegistry:
    """The active clients, as broker/cdshooks/auth.py's ClientRegistry reads them."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def client(self, issuer: str) -> ports.RegisteredClient | None:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(cds_client).where(
                        cds_client.c.issuer == issuer, cds_client.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            return None
        return ports.RegisteredClient(
            row.issuer,
            row.hospital_id,
            row.jwks_url,
            row.jwks,
            tuple(row.fhir_servers or ()),
            tuple(row.launch_origins or ()),
        )


class DbReplayGuard:
    """Used jtis, kept until their JWT expires (then purged)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        now = datetime.now(UTC)
        try:
            async with self._sessions() as s, s.begin():
                await s.execute(delete(cds_jti).where(cds_jti.c.expires_at < now))
                await s.execute(
                    cds_jti.insert().values(issuer=issuer, jti=jti, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True


# -- draft orders: order-select and order-sign share one check ----------------------------


class SqlDraftOrders(ports.DraftOrders):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def find(
        self, hospital: str, pseudonym: str, refs: Iterable[str]
    ) -> dict[tuple[str, str], ports.DraftCheck]:
        wanted = sorted(set(refs))
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(cds_draft_order).where(
                cds_draft_order.c.hospital_id == hospital,
                cds_draft_order.c.patient_pseudonym == pseudonym,
                cds_draft_order.c.draft_ref.in_(wanted),
            )
        )
        return {
            (r.draft_ref, r.order_key): ports.DraftCheck(r.check_id, r.item_index, r.created_at)
            for r in rows
        }

    async def remember(
        self,
        hospital: str,
        pseudonym: str,
        draft_ref: str,
        order_key: str,
        check: ports.DraftCheck,
    ) -> None:
        values = {
            "check_id": check.check_id,
            "item_index": check.item_index,
            "created_at": check.created_at,
        }
        # One statement, and two calls remembering the same draft at once cannot collide.
        await self._session.execute(
            insert_into(self._session, cds_draft_order)
            .values(
                hospital_id=hospital,
                patient_pseudonym=pseudonym,
                draft_ref=draft_ref,
                order_key=order_key,
                **values,
            )
            .on_conflict_do_update(
                index_elements=["hospital_id", "patient_pseudonym", "draft_ref", "order_key"],
                set_=values,
            )
        )


# -- cards ---------------------------------------------------------------------------------


def card_context(card_uuid: str) -> str:
    return f"cds-card|{card_uuid}"


def stored_envelope(blob: bytes) -> dict[str, str]:
    """How a sealed envelope sits in the JSON column."""
    return {"sealed": base64.b64encode(blob).decode()}


def card_envelope(stored: Any) -> bytes | None:
    """The envelope of a stored card; None for a card stored before cards were sealed."""
    if isinstance(stored, dict) and set(stored) == {"sealed"}:
        return base64.b64decode(stored["sealed"])
    return None


def _seal_content(cipher: PayloadCipher, card_uuid: str, content: dict[str, Any]) -> dict[str, str]:
    """A card names the prior result (its summary, hospital, date): sealed like the index's
    clinical text, inside the JSON column as {"sealed": base64 envelope}."""
    return stored_envelope(seal_json(cipher, content, context=card_context(card_uuid)))


def _open_content(cipher: PayloadCipher, card_uuid: str, stored: Any) -> dict[str, Any]:
    blob = card_envelope(stored)
    if blob is None:
        return dict(stored)  # a card stored before sealing
    opened: dict[str, Any] = open_json(cipher, blob, context=card_context(card_uuid))
    return opened


class SqlCards(ports.Cards):
    def __init__(self, session: AsyncSession, cipher: PayloadCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def add(self, card: ports.StoredCard) -> None:
        await self._session.execute(
            cds_card.insert().values(
                uuid=card.uuid,
                suggestion_uuid=card.suggestion_uuid,
                service_id=card.service_id,
                issuer=card.issuer,
                hospital_id=card.hospital_id,
                user_id=card.user_id[:200],
                check_id=card.check_id,
                item_index=card.item_index,
                kind=card.kind,
                draft_ref=card.draft_ref,
                content=_seal_content(self._cipher, card.uuid, card.content),
                created_at=card.created_at,
            )
        )

    async def by_uuid(self, uuids: Sequence[str]) -> dict[str, ports.StoredCard]:
        if not uuids:
            return {}
        rows = await self._session.execute(
            select(cds_card).where(cds_card.c.uuid.in_(sorted(set(uuids))))
        )
        return {r.uuid: self._card(r) for r in rows}

    async def latest(
        self, items: Iterable[tuple[str, int]], hospital: str
    ) -> dict[tuple[str, int], ports.StoredCard]:
        wanted = set(items)
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(cds_card)
            .where(
                cds_card.c.check_id.in_(sorted({c for c, _ in wanted})),
                cds_card.c.hospital_id == hospital,
            )
            .order_by(cds_card.c.created_at)
        )
        out: dict[tuple[str, int], ports.StoredCard] = {}
        for r in rows:
            if (r.check_id, r.item_index) in wanted:
                out[(r.check_id, r.item_index)] = self._card(r)
        return out

    def _card(self, r: Any) -> ports.StoredCard:
        return ports.StoredCard(
            r.uuid,
            r.suggestion_uuid,
            r.service_id,
            r.issuer,
            r.hospital_id,
            r.user_id,
            r.check_id,
            r.item_index,
            r.kind,
            r.draft_ref,
            _open_content(self._cipher, r.uuid, r.content),
            r.created_at,
        )


# -- what CDS reads back of checks and results ---------------------------------------------


class SqlCheckRecords(ports.CheckRecords):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def items(self, check_ids: Iterable[str]) -> dict[str, tuple[StoredCheckItem, ...]]:
        wanted = sorted(set(check_ids))
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(recognition_check.c.id, recognition_check.c["items"].label("answers")).where(
                recognition_check.c.id.in_(wanted)
            )
        )
        return {r.id: tuple(stored_items(r.answers)) for r in rows}

    async def decided(self, check_ids: Iterable[str]) -> set[tuple[str, int]]:
        wanted = sorted(set(check_ids))
        if not wanted:
            return set()
        rows = await self._session.execute(
            select(recognition_outcome.c.check_id, recognition_outcome.c.item_index).where(
                recognition_outcome.c.check_id.in_(wanted)
            )
        )
        return {(r.check_id, r.item_index) for r in rows}


class SqlCdsResults(ports.CdsResults):
    def __init__(self, session: AsyncSession, protector: Protector) -> None:
        self._session = session
        self._protector = protector

    async def states(self, result_ids: Iterable[str]) -> dict[str, ports.PriorResultState]:
        wanted = sorted(set(result_ids))
        if not wanted:
            return {}
        rows = await self._session.execute(
            select(result.c.id, result.c.status, result.c.updated_at, result.c.resource_type).where(
                result.c.id.in_(wanted)
            )
        )
        return {
            r.id: ports.PriorResultState(r.status, r.updated_at.isoformat(), r.resource_type)
            for r in rows
        }

    async def prior_items(self, person_id: str) -> list[PriorItem]:
        return await person_items(self._session, person_id, self._protector)


class SqlCdsUnitOfWork(ReferenceReadingUnitOfWork, ports.CdsUnitOfWork):
    def _bind(self, s: AsyncSession) -> None:
        reference = self._reference.reader(s)
        self.hospitals = SqlHospitals(reference)
        # Finding the person also says whether they have any consent record: none, and
        # the consent view of this session reads nothing.
        self.consents = SessionConsentReader(s)
        self.people = SqlPeople(s, self._pseudonyms, self._cipher, self.consents)
        self.mappings = SqlMappings(s, reference)
        self.results = SqlCdsResults(s, Protector(self._cipher, self._pseudonyms))
        self.checks = SqlCheckRecords(s)
        self.drafts = SqlDraftOrders(s)
        self.cards = SqlCards(s, self._cipher)
        self.audit = SqlAudit(Writes(s), self._pseudonyms)
