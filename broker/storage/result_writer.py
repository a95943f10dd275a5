"""Writing a batch of results: two reads up front, the decisions in memory, the writes in bulk.

A batch of hundreds of messages costs about a dozen SQL statements instead of a dozen
per message. Each message updates the in-memory view (people by pseudonym, results and
their versions) for the next, so the outcome is the one of indexing them one by one.
The decisions themselves are domain functions (broker.domain.linking for people,
broker.domain.versions for result versions); this module holds their rows.
The same class indexes a single message when the caller isolates messages in savepoints.

The FHIR search index of each result whose current version changed is written here too,
in the same transaction, from the message just parsed: reads never open payloads to
index them (broker.storage.fhir_index still rebuilds rows indexed before this existed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain import linking
from broker.domain.catalog import Catalog
from broker.domain.demographics import Demographics
from broker.domain.identifiers import PatientIdentifier
from broker.domain.mapping import LocalCode, unmapped_codes
from broker.domain.results import ExtractedResult, ParsedMessage, PatientRef, ResultChange
from broker.domain.versions import StoredVersion, VersionKey, VersionOutcome, place_version
from broker.fhir.resources import ResultInfo, ResultView
from broker.observability import FOLLOW_UP_FAILURES
from broker.ports.ingest import Collision, IdentityConflict, ResultWriter, Staged, UnknownPatient
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import demographics, fhir_index, identity
from broker.storage.bulk_insert import insert_rows
from broker.storage.mappings import note_unmapped
from broker.storage.new_people_lock import wait_for_new_people
from broker.storage.one_of import one_of
from broker.storage.outage import conflicts_raised_as, is_outage, outages_retriable
from broker.storage.people import birth_date_context
from broker.storage.protect import Protector
from broker.storage.results import current_fields, item_rows
from broker.storage.tables import (
    inbox,
    payload,
    person,
    person_birth_date,
    person_demographics,
    person_link,
    result,
    result_item,
    result_version,
)

logger = logging.getLogger(__name__)


@dataclass
class _Identity:
    result_id: str
    versions: list[StoredVersion]


@dataclass(frozen=True)
class _GroupNumbers(Mapping[str, Mapping[str, Set[str]]]):
    """person -> the national numbers of everyone linked with them (by review or matching:
    a check reads them all), for linking.conflict."""

    held: dict[str, dict[str, set[str]]]  # group -> national system -> pseudonyms
    roots: dict[str, str]  # person -> the group it is in (the person linked into)

    def __getitem__(self, person: str) -> Mapping[str, Set[str]]:
        return self.held.get(self.roots.get(person, person), {})

    def __iter__(self) -> Iterator[str]:
        return iter(self.roots)

    def __len__(self) -> int:
        return len(self.roots)


# Told, inside the indexing transaction, about results that got a new current version.
ChangeListener = Callable[[AsyncSession, list[ResultChange], datetime], Awaitable[None]]


@dataclass
class SqlResultWriter(ResultWriter):
    session: AsyncSession
    pseudonyms: Pseudonymiser
    cipher: PayloadCipher
    now: datetime
    on_change: ChangeListener | None = None
    catalog: Catalog | None = None  # None: no worklist (tools, some tests)
    zones: Callable[[str], tzinfo] = lambda _hospital: UTC  # a hospital's time zone
    _people: dict[str, str] = field(default_factory=dict)  # pseudonym -> person
    _born: dict[str, datetime] = field(default_factory=dict)  # person -> created_at
    # What linking.conflict weighs: per group of people linked reversibly (its root: the
    # person linked into), the national numbers (pseudonyms) they hold, by system.
    _held: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    _roots: dict[str, str] = field(default_factory=dict)  # person -> root, if not itself
    _merges: dict[str, str] = field(default_factory=dict)  # merged person -> survivor
    _docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # message id -> JSON
    _results: dict[tuple[str, str], _Identity] = field(default_factory=dict)
    _rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Per result: its staged version rows (also in _rows) and its item rows (only here,
    # in staging order): an amendment reaches its own rows without scanning the batch's.
    _version_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _item_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _uncurrent: set[str] = field(default_factory=set)
    _updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    _clear_items: set[str] = field(default_factory=set)
    _changes: dict[str, ResultChange] = field(default_factory=dict)
    _unmapped: Counter[tuple[str, LocalCode]] = field(default_factory=Counter)
    _births: dict[tuple[str, str], date] = field(default_factory=dict)  # (person, hospital)
    _demographics: dict[tuple[str, str], Demographics] = field(default_factory=dict)
    # result -> (message, person, result) of its newest current version: its FHIR index rows
    _to_index: dict[str, tuple[str, str, ExtractedResult]] = field(default_factory=dict)
    _values: dict[str, bytes] = field(default_factory=dict)  # message id -> value
    _senders: dict[str, str] = field(default_factory=dict)  # message id -> hospital
    # Keyed hashes asked for again and again in one batch (prefetch, then staging: each
    # identifier three or four times), each an HMAC: computed once.
    _pseudonyms: dict[PatientIdentifier, str] = field(default_factory=dict)
    _business_keys: dict[tuple[str, str], str] = field(default_factory=dict)

    _protector: Protector = field(init=False)

    def __post_init__(self) -> None:
        self._protector = Protector(self.cipher, self.pseudonyms)  # once per batch

    async def prefetch(self, parsed: Sequence[tuple[str, ParsedMessage]]) -> None:
        """Load the people and results the batch touches (two queries)."""
        with outages_retriable():
            await self._prefetch(parsed)

    async def _prefetch(self, parsed: Sequence[tuple[str, ParsedMessage]]) -> None:
        pseudos = {
            self._pseudonym(k)
            for hospital, p in parsed
            for ref in (*p.patients, *(r.patient for r in p.results))
            for k in ref.link_keys
        }
        if pseudos:
            await self._read_people(pseudos)
            unknown = pseudos - self._people.keys()
            # Another worker may be linking the same new people right now: wait for it
            # (new_people_lock), then find whom it linked, rather than collide with it.
            if unknown and await wait_for_new_people(self.session, unknown):
                await self._read_people(unknown)
            # The national numbers of the groups of the batch's known people.
            roots = {self._root(pid) for pid in self._people.values()}
            self._held.update(await identity.group_numbers(self.session, roots))
        idents = {
            (hospital, self._business_key(hospital, r.business_id))
            for hospital, p in parsed
            for r in p.results
        }
        if idents:
            versions = await self.session.execute(
                select(
                    result.c.hospital_id,
                    result.c.business_id,
                    result.c.id,
                    result_version.c.source_time,
                    result_version.c.version_number,
                    result_version.c.content_hash,
                    result_version.c.is_current,
                )
                .join(result_version, result_version.c.result_id == result.c.id)
                # Per-column IN lists: an index search on uq_result_identity on both
                # databases (a row-value IN is a full scan on SQLite); pairs filtered below.
                .where(
                    one_of(result.c.hospital_id, {h for h, _ in idents}),
                    one_of(result.c.business_id, {b for _, b in idents}),
                )
            )
            for h, b, rid, t, n, digest, cur in versions:
                if (h, b) not in idents:
                    continue
                ident = self._results.setdefault((h, b), _Identity(rid, []))
                ident.versions.append(StoredVersion(VersionKey(t, n), digest, cur))

    async def _read_people(self, pseudos: set[str]) -> None:
        rows = await self.session.execute(
            select(
                person_link.c.pseudonym,
                person.c.id,
                person.c.merged_into,
                person.c.created_at,
            )
            .join(person, person_link.c.person_id == person.c.id)
            .where(one_of(person_link.c.pseudonym, pseudos))
        )
        for p, pid, merged, born in rows:
            # Rows are written under the person the identifiers name, never the one they
            # are linked into: an unlink then leaves each their own rows (reads follow
            # the link: people.with_merged).
            self._people[p] = pid
            self._born.setdefault(pid, born)
            if merged is not None:
                self._roots[pid] = merged

    def _root(self, pid: str) -> str:
        return self._roots.get(pid, pid)

    def stage(
        self,
        message_value: bytes,
        content_type: str | None,
        message_id: str,
        hospital: str,
        parsed: ParsedMessage,
    ) -> Staged:
        """Plan one message's writes and update the in-memory view.

        Raises UnknownPatient or IdentityConflict before changing anything, so the
        message can be rejected alone.
        """
        for r in parsed.results:
            if not r.patient.identifiers and not any(
                self._pseudonym(k) in self._people for k in r.patient.link_keys
            ):
                key = r.patient.resource_key
                raise UnknownPatient(
                    f"{r.resource_type} refers to Patient {key.value if key else '?'!r}, which "
                    f"is not in the message and {hospital} has not sent before"
                )
        refs = [ref.link_keys for ref in parsed.patients]
        refs += [r.patient.link_keys for r in parsed.results]
        if system := linking.conflict(
            [[(self._pseudonym(k), k.national_system) for k in keys] for keys in refs],
            self._people,
            _GroupNumbers(self._held, self._roots),
        ):
            raise IdentityConflict(
                f"the patient's identifiers lead to a person who holds, or is linked to one "
                f"who holds, another {system} number; nothing was linked. Either the sender "
                "reused an identifier (a Patient.id, an MRN) for another patient or sent two "
                "patients' numbers together: fix the sender and re-send (a replay is refused "
                "again); or a link made by review or matching joined two people: a platform "
                "admin undoes it (`mrb patient unlink`), then replays this message"
            )
        for ref in parsed.patients:
            pid = self._person(ref.link_keys)
            self._note_birth(pid, hospital, ref.birth_date)
            self._note_demographics(pid, hospital, ref)
        people = [self._person(r.patient.link_keys) for r in parsed.results]
        for r, pid in zip(parsed.results, people, strict=True):
            self._note_birth(pid, hospital, r.patient.birth_date)
            self._note_demographics(pid, hospital, r.patient)
        # A later result of the message may have merged an earlier one's person.
        people = [self._merges.get(pid, pid) for pid in people]
        self._payload(message_value, content_type, message_id, hospital)
        if parsed.document is not None:
            self._docs[message_id] = parsed.document
        staged = Staged(message_id, hospital)
        if self.catalog is not None:
            for r in parsed.results:
                for code in unmapped_codes(self.catalog, hospital, r.items):
                    self._unmapped[(hospital, code)] += 1
        for r, pid in zip(parsed.results, people, strict=True):
            outcome = self._version(r, hospital, pid, message_id)
            staged.counts[outcome.value] = staged.counts.get(outcome.value, 0) + 1
        return staged

    def _note_birth(self, pid: str, hospital: str, born: date | None) -> None:
        if born is not None:
            self._births[(pid, hospital)] = born

    def _note_demographics(self, pid: str, hospital: str, ref: PatientRef) -> None:
        if ref.demographics is not None:
            self._demographics[(pid, hospital)] = ref.demographics

    def add_inbox(self, row: dict[str, Any]) -> None:
        self._add("inbox", row)

    async def flush(self) -> None:
        """Write everything staged, in dependency order; raises Collision when another
        worker wrote the same rows at the same moment (tried again by the caller)."""
        with outages_retriable(), conflicts_raised_as(Collision):
            await self._flush()

    async def _flush(self) -> None:
        s = self.session
        if rows := self._rows.get("person"):
            await insert_rows(s, person, rows)
        for gone, survivor in self._merges.items():
            # People proven to be one: links and results move, the row points on.
            for table in (person_link, result, result_item):
                await s.execute(
                    update(table).where(table.c.person_id == gone).values(person_id=survivor)
                )
            await s.execute(
                update(person)
                .where(
                    ((person.c.id == gone) | (person.c.merged_into == gone))
                    & (person.c.id != survivor)
                )
                .values(merged_into=survivor)
            )
            # A survivor that was linked (reversibly) into the merged person stands alone:
            # the identifiers just proved them one.
            await s.execute(
                update(person)
                .where((person.c.id == survivor) & (person.c.merged_into == gone))
                .values(merged_into=None)
            )
        if self._merges:
            await identity.end_merged(s, self._merges, self.now)
        if rows := self._rows.get("person_link"):
            # In key order, as every worker inserts them: two batches linking the same new
            # person then wait for each other (the second meets a Collision and is tried
            # again) instead of deadlocking.
            await insert_rows(s, person_link, sorted(rows, key=lambda r: str(r["pseudonym"])))
        ids: dict[str, int] = {}
        if rows := self._rows.get("payload"):
            # One executemany, then one read of the ids: RETURNING in parameter order
            # costs one INSERT per row on SQLite.
            await insert_rows(s, payload, rows)
            mids = [r["message_id"] for r in rows]
            for chunk in fhir_index.chunks(mids):
                found = await s.execute(
                    select(payload.c.message_id, payload.c.id).where(
                        one_of(payload.c.message_id, chunk)
                    )
                )
                ids.update(dict(found.all()))
        if rows := self._rows.get("result"):
            await insert_rows(s, result, rows)
        if self._updates:
            # One executemany: every update sets the same columns (results.current_fields).
            await s.execute(
                update(result).where(result.c.id == bindparam("b_result_id")),
                [{"b_result_id": rid, **values} for rid, values in self._updates.items()],
            )
        if self._uncurrent:
            await s.execute(
                update(result_version)
                .where(one_of(result_version.c.result_id, self._uncurrent))
                .values(is_current=False)
            )
        if rows := self._rows.get("result_version"):
            await insert_rows(
                s,
                result_version,
                [_with_payload_id(r, ids) for r in rows],
            )
        if self._clear_items:
            await s.execute(
                delete(result_item).where(one_of(result_item.c.result_id, self._clear_items))
            )
        if rows := [row for rows in self._item_rows.values() for row in rows]:
            await insert_rows(s, result_item, rows)
        if rows := self._rows.get("inbox"):
            await insert_rows(s, inbox, rows)
        if self._to_index:
            await self._write_search_index()
        if self._births:
            await self._write_births()
        if self._demographics:
            latest = {(self._merges.get(p, p), h): d for (p, h), d in self._demographics.items()}
            # Most messages of a known patient carry the same Patient again: what is stored
            # is opened and compared, and only changed demographics are sealed and written
            # (their blocks with them). `first`: no demographics stored yet.
            plain = {k: demographics.plaintext(d) for k, d in latest.items()}
            held = await demographics.stored(
                s, self.cipher, person_demographics, plain, demographics.context
            )
            first = {k for k in self._seen_unidentified(latest) if k not in held.present}
            changed = {k: d for k, d in latest.items() if k not in held.same}
            await demographics.replace(s, self.cipher, self.pseudonyms, changed, self.now, plain)
            if unmatched := self._to_match(latest, first):
                await self._follow_up(
                    "matching",
                    identity.match_at_ingest(s, self.cipher, self.pseudonyms, unmatched, self.now),
                )
        if self._unmapped:
            seen = [(h, c, n) for (h, c), n in self._unmapped.items()]
            await self._follow_up("worklist", note_unmapped(s, seen, self.now))
        if self._changes and self.on_change is not None:
            changes = list(self._changes.values())
            await self._follow_up("safety", self.on_change(s, changes, self.now))

    def _seen_unidentified(
        self, latest: dict[tuple[str, str], Demographics]
    ) -> list[tuple[str, str]]:
        """Records of people seen before this batch, without a trusted national identifier:
        matched if these are the first demographics their hospital sent."""
        created = {r["id"] for r in self._rows.get("person", ())}
        return [
            (pid, h)
            for (pid, h), d in latest.items()
            if pid not in created and not d.identifiers and pid not in self._merges
        ]

    def _to_match(
        self, latest: dict[tuple[str, str], Demographics], first: set[tuple[str, str]]
    ) -> dict[tuple[str, str], Demographics]:
        """The records to score against the index: of people this batch created, or the
        first demographics a hospital sent for a person seen before (`first`; a later change
        of demographics is not scored again), without a trusted national identifier (those
        link deterministically; `Demographics.identifiers` holds only trusted ones)."""
        created = {r["id"] for r in self._rows.get("person", ())}
        return {
            (pid, h): d
            for (pid, h), d in latest.items()
            if (pid in created or (pid, h) in first)
            and not d.identifiers
            and pid not in self._merges
        }

    async def _write_search_index(self) -> None:
        """The FHIR search rows of the results whose current version changed, from the
        messages of this batch (each decoded once)."""
        ids = list(self._to_index)
        versions: dict[str, int] = {}
        for chunk in fhir_index.chunks(ids):
            found = await self.session.execute(
                select(result_version.c.result_id, result_version.c.id).where(
                    one_of(result_version.c.result_id, chunk), result_version.c.is_current.is_(True)
                )
            )
            versions.update(dict(found.all()))
        rows = fhir_index.IndexRows(fhir_index.identifier_key(self.pseudonyms))
        docs = self._docs
        for rid, (mid, pid, r) in self._to_index.items():
            hospital = self._senders[mid]
            if mid not in docs:  # staged without its decoded document
                doc = json.loads(self._values[mid].decode("utf-8-sig"))
                docs[mid] = doc if isinstance(doc, dict) else {}
            info = ResultInfo(
                result_id=rid,
                resource_type=r.resource_type,
                business_id=r.business_id,
                hospital=hospital,
                person_id=self._merges.get(pid, pid),
                updated_at=self.now,
            )
            rows.add(ResultView(docs[mid], info), versions[rid], self.zones(hospital))
        # A result created in this batch has no rows to delete: only the others' are.
        created = {r["id"] for r in self._rows.get("result", ())}
        await rows.replace(self.session, [rid for rid in ids if rid not in created])

    async def _write_births(self) -> None:
        """The latest birth date each hospital sent for a person, sealed (replacing the last);
        one already stored as it is now is not sealed and written again."""
        latest: dict[tuple[str, str], bytes] = {}
        for (pid, hospital), born in self._births.items():
            latest[(self._merges.get(pid, pid), hospital)] = born.isoformat().encode()
        held = await demographics.stored(
            self.session, self.cipher, person_birth_date, latest, birth_date_context
        )
        rows = [
            demographics.sealed_row(
                pid,
                hospital,
                self.cipher.seal(plain, associated=birth_date_context(pid, hospital)),
                self.now,
            )
            for (pid, hospital), plain in sorted(latest.items())
            if (pid, hospital) not in held.same
        ]
        if rows:  # one statement, replacing the last date each hospital sent
            await self.session.execute(
                demographics.upsert_sealed(self.session, person_birth_date), rows
            )

    async def _follow_up(self, step: str, work: Awaitable[None]) -> None:
        """Run a step that must not cost hospitals their results if it has a bug.

        In a savepoint: a failure is undone, logged and counted
        (mrb_ingest_follow_up_failures_total), and the results are still indexed. A
        database outage still fails the batch, which is then retried.
        """
        try:
            async with self.session.begin_nested():
                await work
        except Exception as exc:
            if is_outage(exc):
                raise
            FOLLOW_UP_FAILURES.labels(step).inc()
            logger.exception("ingest follow-up %r failed; the results are indexed", step)

    # -- in-memory decisions -------------------------------------------------------------

    def _person(self, keys: tuple[PatientIdentifier, ...]) -> str:
        """The person these identifiers link to: found, created, or several merged."""
        pseudos = [self._pseudonym(k) for k in keys]
        found = linking.link(pseudos, self._people, self._born)
        pid = found.person
        if pid is None:
            pid = str(uuid.uuid4())
            self._born[pid] = self.now
            self._add("person", {"id": pid, "created_at": self.now, "merged_into": None})
        elif found.merged:
            self._merge(found.merged, pid)
        scope = {self._pseudonym(k): k for k in keys}
        for p in found.new_links:
            self._people[p] = pid
            system = scope[p].national_system
            if system is not None:
                self._held.setdefault(self._root(pid), {}).setdefault(system, set()).add(p)
            self._add(
                "person_link",
                {
                    "pseudonym": p,
                    "person_id": pid,
                    "scope": scope[p].scope.value,
                    "hospital_id": scope[p].hospital,
                    "national_system": system,
                    "created_at": self.now,
                },
            )
        return pid

    def _merge(self, gone: frozenset[str], survivor: str) -> None:
        """Identifiers linked to several people prove they are one: the rows staged so far
        follow the survivor (linking.link chose it)."""
        for p, pid in self._people.items():
            if pid in gone:
                self._people[p] = survivor
        # The survivor's group gains the numbers of each merged person's group (of all of
        # it, when that person was in another's group: more than it holds, never less).
        target = self._root(survivor)
        for person_id in gone:
            root = self._root(person_id)
            numbers = self._held.pop(root, {}) if root == person_id else self._held.get(root, {})
            for system, pseudos in numbers.items():
                self._held.setdefault(target, {}).setdefault(system, set()).update(pseudos)
            self._roots[person_id] = target
            for pid, its_root in list(self._roots.items()):
                if its_root == person_id:  # linked into the merged person: now the survivor's
                    self._roots[pid] = target
        for rows in (*self._rows.values(), *self._item_rows.values()):
            for row in rows:
                if row.get("person_id") in gone:
                    row["person_id"] = survivor
        for values in self._updates.values():
            if values.get("person_id") in gone:
                values["person_id"] = survivor
        linking.redirect(self._merges, gone, survivor)

    def _payload(self, value: bytes, content_type: str | None, mid: str, hospital: str) -> None:
        self._values[mid] = value
        self._senders[mid] = hospital
        sealed = self.cipher.seal(value, associated=mid.encode())
        self._add(
            "payload",
            {
                "message_id": mid,
                "hospital_id": hospital,
                "content_type": content_type,
                "sha256": hashlib.sha256(value).hexdigest(),
                "size": len(value),
                "key_id": sealed.key_id,
                "algorithm": sealed.algorithm,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "received_at": self.now,
            },
        )

    def _version(
        self, r: ExtractedResult, hospital: str, person_id: str, message_id: str
    ) -> VersionOutcome:
        key = (hospital, self._business_key(hospital, r.business_id))
        ident = self._results.get(key)
        if ident is None:
            ident = _Identity(str(uuid.uuid4()), [])
            self._results[key] = ident
            self._add(
                "result",
                {
                    "id": ident.result_id,
                    "hospital_id": hospital,
                    "business_id": key[1],
                    "business_id_sealed": self._protector.seal_business_id(
                        ident.result_id, r.business_id
                    ),
                    **current_fields(r, person_id, self.now, ident.result_id, self._protector),
                },
            )
            outcome = VersionOutcome.CURRENT
        else:
            outcome = place_version(r.version, r.content_hash, ident.versions, r.legacy_hash)
            if outcome is VersionOutcome.DUPLICATE:
                return outcome
            if outcome is VersionOutcome.CURRENT:
                self._changes[ident.result_id] = ResultChange(
                    ident.result_id, hospital, r.status, message_id
                )
                self._uncurrent.add(ident.result_id)
                self._updates[ident.result_id] = current_fields(
                    r, person_id, self.now, ident.result_id, self._protector
                )
                self._clear_items.add(ident.result_id)
                for row in self._version_rows.get(ident.result_id, ()):
                    row["is_current"] = False
                # Re-staged below, after the other results' items (the order they had).
                self._item_rows.pop(ident.result_id, None)
        current = outcome is VersionOutcome.CURRENT
        if current:
            self._to_index[ident.result_id] = (message_id, person_id, r)
            ident.versions = [StoredVersion(v.key, v.content_hash, False) for v in ident.versions]
            self._item_rows[ident.result_id] = item_rows(
                ident.result_id, hospital, person_id, r.items, self._protector
            )
        ident.versions.append(StoredVersion(r.version, r.content_hash, current))
        row = {
            "result_id": ident.result_id,
            "message_id": message_id,
            "payload_message_id": message_id,
            "source_time": r.version.source_time,
            "version_number": r.version.version_number,
            "version_label": r.version_label,
            "content_hash": r.content_hash,
            "status": r.status,
            "is_current": current,
            "received_at": self.now,
        }
        self._add("result_version", row)
        self._version_rows.setdefault(ident.result_id, []).append(row)
        return outcome

    def _pseudonym(self, key: PatientIdentifier) -> str:
        found = self._pseudonyms.get(key)
        if found is None:
            found = self._pseudonyms[key] = self.pseudonyms.of(key)
        return found

    def _business_key(self, hospital: str, business_id: str) -> str:
        found = self._business_keys.get((hospital, business_id))
        if found is None:
            found = self._protector.business_key(hospital, business_id)
            self._business_keys[(hospital, business_id)] = found
        return found

    def _add(self, table: str, row: dict[str, Any]) -> None:
        self._rows.setdefault(table, []).append(row)


def _with_payload_id(row: dict[str, Any], ids: Mapping[str, int]) -> dict[str, Any]:
    """A version row staged with its message's id, given the payload's row id instead."""
    out = {k: v for k, v in row.items() if k != "payload_message_id"}
    out["payload_id"] = ids[row["payload_message_id"]]
    return out
