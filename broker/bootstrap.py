"""The composition root: the only place that builds concrete infrastructure."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from broker.cdshooks.admission import CdsRateLimitAdmission
from broker.cdshooks.hooks import CdsHooks
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.ledger import SafetyPolicy
from broker.domain.recognition import Text
from broker.domain.retention_policy import RetentionPolicy
from broker.fhir.admission import RateLimitAdmission
from broker.fhir.audit_events import AuditEvents
from broker.fhir.cursors import CursorSigner
from broker.fhir.service import FhirService
from broker.ingest.parse import ParseLimits
from broker.ingest.service import IngestService
from broker.ingest.worker import IngestWorker
from broker.kafka.event_relay import EventRelay
from broker.reference.identifier_systems import load_identifier_registry
from broker.reference.loader import default_schemas_dir, load_catalog, load_policy
from broker.reference.retention import load_retention
from broker.reference.sensitive import load_sensitivity
from broker.security.keys import MissingKey, load_key
from broker.security.oidc import OidcVerifier
from broker.security.oidc_login import OidcLogin
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.security.receipt_signing import load_receipt_signer
from broker.security.tokens import (
    IssuedToken,
    TokenIssuer,
    TokenVerifier,
    TrustedKeys,
    load_issuer_key,
)
from broker.services import tokens as token_service
from broker.services.access_report import AccessReports
from broker.services.audit_sealer import AuditSealer
from broker.services.checks import Rules
from broker.services.consents import ConsentService, hidden_codes_for
from broker.services.outcomes import OutcomeRequest, RecordedOutcome, record_outcomes
from broker.services.rate_limits import RateLimiter
from broker.services.rules import RulesProvider
from broker.services.safety import SafetyNotifier
from broker.settings import Settings
from broker.storage.access_report_uow import SqlAccessReportUnitOfWork
from broker.storage.access_uow import SqlAccessLookups, SqlAccessUnitOfWork
from broker.storage.admin_uow import SqlMonthUnitOfWork, SqlPurgeUnitOfWork
from broker.storage.audit_chain import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    CheckpointKey,
    PinnedKeys,
    pinned_keys,
    sealer_key,
)
from broker.storage.audit_export import CheckpointExport, open_export
from broker.storage.audit_trail_uow import (
    SqlAuditChainUnitOfWork,
    SqlAuditReadUnitOfWork,
    SqlReadAudit,
)
from broker.storage.cds_store import DbClientRegistry, DbReplayGuard, SqlCdsUnitOfWork
from broker.storage.check_uow import SqlCheckUnitOfWork
from broker.storage.consents import SqlConsentReader, SqlConsentUnitOfWork
from broker.storage.database import Engine, Sessions, create_engine, ping, session_factory
from broker.storage.fhir_uow import SqlFhirReindex, SqlFhirUnitOfWork
from broker.storage.identity_review_uow import SqlIdentityUnitOfWork
from broker.storage.ingest_uow import SqlIngestUnitOfWork
from broker.storage.launch_store import SqlLaunchStore
from broker.storage.mapping_uow import SqlMappingUnitOfWork, session_catalog
from broker.storage.outbox_uow import SqlOutboxUnitOfWork
from broker.storage.outcome_uow import (
    SqlNoticeUnitOfWork,
    SqlOutcomeUnitOfWork,
    safety_listener,
)
from broker.storage.pdq_lookup import SqlPeopleDemographics
from broker.storage.reference_cache import ReferenceCache
from broker.storage.registry_uow import SqlRegistryUnitOfWork
from broker.storage.report_figures import SqlReportFigures
from broker.storage.result_retention import SqlResultPurgeUnitOfWork
from broker.storage.web_accounts import SqlWebUnitOfWork

FHIR_CURSOR_KEY_FILE = "fhir-cursor.key"


@dataclass
class Container:
    """Long-lived collaborators built from one Settings object."""

    settings: Settings
    engine: Engine
    sessions: Sessions
    pseudonyms: Pseudonymiser
    cipher: PayloadCipher
    kafka_bootstrap: str | None = None  # set once the broker (embedded or not) is known
    workers: list[IngestWorker] = field(default_factory=list)
    # Hospital profiles and the mappings' version between checks (reference_cache.py).
    reference: ReferenceCache = field(default_factory=ReferenceCache)
    _rules: Rules | None = None
    _token_verifier: TokenVerifier | None = None
    _token_issuer: TokenIssuer | None = None
    _revocations: token_service.RevocationCheck | None = None
    _oidc: OidcVerifier | None = None
    _oidc_login: OidcLogin | None = None
    _provider: RulesProvider | None = None
    _limiter: RateLimiter | None = None

    @classmethod
    def build(cls, settings: Settings) -> Container:
        engine = create_engine(
            settings.resolved_database_url,
            schema=settings.database_schema,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        keys = settings.keys_dir
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            pseudonyms=Pseudonymiser(
                load_key(keys / "pseudonym.key", create=settings.may_create_keys)
            ),
            cipher=PayloadCipher.from_dir(keys, create=settings.may_create_keys),
            kafka_bootstrap=settings.kafka_bootstrap,
        )

    @asynccontextmanager
    async def report_figures(self) -> AsyncIterator[SqlReportFigures]:
        """The reports' figures, read in one session."""
        async with self.sessions() as session:
            yield SqlReportFigures(session)

    def check_uow(self) -> SqlCheckUnitOfWork:
        """A fresh unit of work for one recognition check."""
        return SqlCheckUnitOfWork(self.sessions, self.cipher, self.pseudonyms, self.reference)

    def fhir_service(self, *, version: str) -> FhirService:
        """The FHIR read and search use cases (one per app: it holds the cursor key)."""
        rules = self.reference_rules()
        return FhirService(
            uow=lambda: SqlFhirUnitOfWork(self.sessions, self.cipher, self.pseudonyms),
            reindex=SqlFhirReindex(self.sessions, self.cipher, self.pseudonyms),
            admission=RateLimitAdmission(self.rate_limiter, self.read_audit(), self.pseudonyms),
            signer=self.fhir_cursor_signer(),
            zone=ZoneInfo(self.settings.default_timezone),
            identifiers=self.identifiers(),
            sensitive_codes=rules.sensitivity.index_codes(rules.catalog),
            version=version,
            hidden_codes=hidden_codes_for(rules.sensitivity, rules.catalog),
            consent_records=self.consent_service(),
            people_demographics=SqlPeopleDemographics(self.sessions, self.cipher, self.pseudonyms),
        )

    def consent_reader(self) -> SqlConsentReader:
        """A patient's opt-out and consents, read afresh by every check, FHIR read and hook."""
        return SqlConsentReader(self.sessions)

    def consent_service(self) -> ConsentService:
        """Recording and withdrawing consents, and the break-glass report (issue #19)."""
        return ConsentService(
            lambda: SqlConsentUnitOfWork(self.sessions, self.pseudonyms),
            self.identifiers(),
            self.reference_rules().sensitivity,
        )

    def fhir_audit_events(self) -> AuditEvents:
        """The audit trail as FHIR AuditEvents (same cursor key as the other resources)."""
        return AuditEvents(
            lambda: SqlAuditReadUnitOfWork(self.sessions, self.pseudonyms),
            self.fhir_cursor_signer(),
            ZoneInfo(self.settings.default_timezone),
        )

    def fhir_cursor_signer(self) -> CursorSigner:
        """Signs paging cursors with keys/fhir-cursor.key, created like the other keys.

        Where keys may not be created here (PostgreSQL: processes share keys made once by
        `mrb keys init`) and the file is missing, a key derived from the shared pseudonym
        key is used, so every API process still signs and accepts the same cursors.
        """
        s = self.settings
        try:
            key = load_key(s.keys_dir / FHIR_CURSOR_KEY_FILE, create=s.may_create_keys)
        except MissingKey:
            shared = load_key(s.keys_dir / "pseudonym.key", create=False)
            key = hmac.new(shared, b"mrb fhir paging cursors", hashlib.sha256).digest()
        return CursorSigner(key)

    def outcome_uow(self) -> SqlOutcomeUnitOfWork:
        """A unit of work for recording a doctor's outcomes (and their savings)."""
        return SqlOutcomeUnitOfWork(self.sessions)

    def notice_uow(self) -> SqlNoticeUnitOfWork:
        """A unit of work for a doctor's safety notices (and the audit of reading them)."""
        return SqlNoticeUnitOfWork(self.sessions, self.cipher, self.pseudonyms)

    def cds_uow(self) -> SqlCdsUnitOfWork:
        """A fresh unit of work for one step of a CDS Hooks call."""
        return SqlCdsUnitOfWork(self.sessions, self.cipher, self.pseudonyms, self.reference)

    async def ping_database(self) -> None:
        """Raises when the database cannot answer a trivial query now (readiness)."""
        await ping(self.engine)

    def cds_clients(self) -> DbClientRegistry:
        """The registered CDS clients, as the JWT check reads them."""
        return DbClientRegistry(self.sessions)

    def cds_replay_guard(self) -> DbReplayGuard:
        """The JWT ids CDS clients used, so that none is accepted twice."""
        return DbReplayGuard(self.sessions)

    def his_launch_store(self) -> SqlLaunchStore:
        """HIS launch sessions and the checks they ran (broker/services/his_launch.py)."""
        return SqlLaunchStore(self.sessions)

    def cds_hooks(self) -> CdsHooks:
        """The CDS Hooks use cases' collaborators (broker/cdshooks/hooks.py)."""
        catalog = self.reference_rules().catalog

        async def record(
            check_id: str,
            requests: Sequence[OutcomeRequest],
            actor: Actor,
            *,
            channel: str,
            now: datetime | None,
        ) -> list[RecordedOutcome]:
            return await record_outcomes(
                self.outcome_uow(),
                catalog,
                check_id,
                requests,
                actor,
                channel=channel,
                now=now,
            )

        return CdsHooks(
            uow=self.cds_uow,
            check_uow=self.check_uow,
            rules=self.rules_provider(),
            pseudonyms=self.pseudonyms,
            identifiers=self.identifiers(),
            admission=CdsRateLimitAdmission(self.rate_limiter, self.read_audit()),
            record_outcomes=record,
            allow_http_loopback=self.settings.cds_allow_http_loopback,
        )

    def registry_uow(self) -> SqlRegistryUnitOfWork:
        """A unit of work for a hospital registry change (and its audit entry)."""
        return SqlRegistryUnitOfWork(self.sessions)

    def mapping_uow(self) -> SqlMappingUnitOfWork:
        """A unit of work for mapping a local code (and its audit entry)."""
        return SqlMappingUnitOfWork(self.sessions)

    def access_uow(self) -> SqlAccessUnitOfWork:
        """A unit of work for issuing or revoking tokens, mapping or disabling users."""
        return SqlAccessUnitOfWork(self.sessions)

    def web_uow(self) -> SqlWebUnitOfWork:
        """A unit of work for web accounts, logins and sessions (and their audit entries)."""
        return SqlWebUnitOfWork(self.sessions)

    def month_uow(self) -> SqlMonthUnitOfWork:
        """A unit of work for closing a ledger month (and its audit entry)."""
        return SqlMonthUnitOfWork(self.sessions)

    def purge_uow(self) -> SqlPurgeUnitOfWork:
        """A unit of work for purging payloads (and its audit entry)."""
        return SqlPurgeUnitOfWork(self.sessions)

    def result_purge_uow(self) -> SqlResultPurgeUnitOfWork:
        """A unit of work for purging results past retention, one batch (and its audit
        entry) per transaction."""
        return SqlResultPurgeUnitOfWork(self.sessions)

    def retention_policy(self) -> RetentionPolicy:
        """Result retention (schemas/catalog/retention.yaml), checked against the catalog."""
        schemas = self.settings.schemas_dir or default_schemas_dir()
        return load_retention(schemas, self.reference_rules().catalog)

    def access_lookups(self) -> SqlAccessLookups:
        """The token register and user table as each request reads them."""
        return SqlAccessLookups(self.sessions)

    def read_audit(self) -> SqlReadAudit:
        """Audits a read in a transaction of its own (a break-glass pass)."""
        return SqlReadAudit(self.sessions)

    def reference_rules(self) -> Rules:
        """The catalog (with regions and the mappings shipped in schemas/) and the scope
        policy, loaded once: for what run-time mappings cannot change (items, fees, policy).
        A check, which maps hospitals' local codes, uses `rules_provider()`."""
        if self._rules is None:
            schemas = self.settings.schemas_dir or default_schemas_dir()
            # The data folder's catalog/ (`mrb catalog import`) wins over the shipped files.
            catalog = load_catalog(schemas, self.settings.data_dir / "catalog")
            self._rules = Rules(
                catalog,
                load_policy(schemas),
                load_identifier_registry(schemas),
                load_sensitivity(schemas, catalog),
            )
        return self._rules

    def identifiers(self) -> IdentifierRegistry:
        """The identifier systems and their spellings (schemas/identity), loaded once: every
        edge normalises and scopes identifiers with it, as ingest links them."""
        return self.reference_rules().identifiers

    def rules_provider(self) -> RulesProvider:
        """The rules with mappings added at run time (`mrb mapping add`) merged in."""
        if self._provider is None:
            self._provider = RulesProvider(self.reference_rules())
        return self._provider

    def token_verifier(self) -> TokenVerifier:
        """Checks API tokens with the trusted issuer public keys; no private key needed."""
        if self._token_verifier is None:
            s = self.settings
            keys = TrustedKeys(s.token_public_keys_path, s.token_public_keys)
            self._token_verifier = TokenVerifier(keys, s.token_lifetimes)
        return self._token_verifier

    def token_issuer(self) -> TokenIssuer:
        """Signs tokens: only where keys/token-issuer.key is (MissingKey elsewhere). With
        SQLite (the embedded set-up) the key is created on first use."""
        if self._token_issuer is None:
            s = self.settings
            key = load_issuer_key(s.keys_dir, create=s.may_create_keys)
            self._token_issuer = TokenIssuer(key, s.token_lifetimes)
        return self._token_issuer

    def oidc_verifier(self) -> OidcVerifier | None:
        """Checks tokens of the OpenID Connect issuer (MRB_OIDC_ISSUER) against its JWKS;
        None when no issuer is configured (mrb's own tokens only)."""
        config = self.settings.oidc
        if config is None:
            return None
        if self._oidc is None:
            self._oidc = OidcVerifier(config)
        return self._oidc

    def oidc_login(self) -> OidcLogin | None:
        """The web pages' sign-in through the OpenID Connect issuer (authorization code +
        PKCE); None unless MRB_OIDC_ISSUER and MRB_OIDC_CLIENT_ID are set."""
        config = self.settings.oidc_login
        verifier = self.oidc_verifier()
        if config is None or verifier is None:
            return None
        if self._oidc_login is None:
            self._oidc_login = OidcLogin(config, verifier)
        return self._oidc_login

    def token_revocations(self) -> token_service.RevocationCheck:
        if self._revocations is None:
            self._revocations = token_service.RevocationCheck(
                self.access_lookups(), cache_seconds=self.settings.token_revocation_cache_seconds
            )
        return self._revocations

    async def issue_token(
        self,
        subject: str,
        role: Role,
        hospital: str | None,
        *,
        by: str,
        ttl: timedelta | None = None,
        machine: bool = False,
    ) -> IssuedToken:
        """Issue and record a token as security administrator `by` (the issuing host's
        duty; the embedded set-up and the tests issue here because they hold the key)."""
        return await token_service.issue(
            self.access_uow(),
            self.token_issuer(),
            Actor(by, Role.SECURITY_ADMIN, ALL_HOSPITALS),
            subject=subject,
            role=role,
            hospital=hospital,
            ttl=ttl,
            machine=machine,
        )

    def rate_limiter(self) -> RateLimiter:
        """Requests per token and address, patients per person: shared by API processes."""
        if self._limiter is None:
            s = self.settings
            self._limiter = RateLimiter.build(
                self.engine,
                redis_url=s.redis_url.get_secret_value() if s.redis_url else None,
                per_token=s.rate_limit_per_minute,
                per_address=s.rate_limit_per_address_per_minute,
                patients_per_hour=s.distinct_patients_per_hour,
            )
        return self._limiter

    def safety_notifier(self) -> SafetyNotifier:
        """Notices and reversals when a recognised result is withdrawn or corrected (or
        its patient link undone)."""
        s = self.settings
        return SafetyNotifier(
            SafetyPolicy(s.ledger_on_withdrawn, s.ledger_on_corrected),
            self.reference_rules().catalog,
        )

    def identity_uow(self) -> SqlIdentityUnitOfWork:
        """A unit of work for a patient-identity review, link or unlink (and its audit)."""
        return SqlIdentityUnitOfWork(self.sessions, self.cipher, self.pseudonyms)

    def ingest_service(self) -> IngestService:
        s = self.settings
        listener = safety_listener(self.safety_notifier())
        catalog = session_catalog(self.rules_provider())
        return IngestService(
            lambda: SqlIngestUnitOfWork(
                self.sessions,
                self.cipher,
                self.pseudonyms,
                default_zone=s.default_timezone,
                on_change=listener,
                catalog_source=catalog,
            ),
            limits=ParseLimits(
                max_bytes=s.max_message_bytes,
                max_depth=s.max_json_depth,
                fhir_validation=s.fhir_validation,
            ),
            require_signatures=s.require_signatures,
            identifiers=self.identifiers(),
        )

    def ingest_worker(self) -> IngestWorker:
        if not self.kafka_bootstrap:
            raise RuntimeError("no Kafka bootstrap: set MRB_KAFKA_BOOTSTRAP or use `mrb up`")
        s = self.settings
        worker = IngestWorker(
            self.ingest_service(),
            cipher=self.cipher,
            receipt_signer=load_receipt_signer(s.keys_dir, create=s.may_create_keys),
            bootstrap=self.kafka_bootstrap,
            group_id=self.settings.consumer_group,
            max_records=self.settings.batch_max_records,
            session_timeout_ms=self.settings.consumer_session_timeout_ms,
            kafka_options=self.settings.kafka_options(),
            probe=lambda: ping(self.engine),  # while paused by a database outage
        )
        self.workers.append(worker)
        return worker

    def audit_sealer(self) -> AuditSealer:
        """Seals only where the sealer key is (keys/audit-checkpoint.key); idle elsewhere."""
        return AuditTrail(self.settings, self.sessions).sealer()

    def event_relay(self) -> EventRelay:
        if not self.kafka_bootstrap:
            raise RuntimeError("no Kafka bootstrap: set MRB_KAFKA_BOOTSTRAP or use `mrb up`")
        return EventRelay(
            lambda: SqlOutboxUnitOfWork(self.sessions),
            bootstrap=self.kafka_bootstrap,
            interval=self.settings.event_relay_interval_seconds,
            kafka_options=self.settings.kafka_options(),
        )

    async def close(self) -> None:
        if self._limiter is not None:
            await self._limiter.close()
        await self.engine.dispose()

    def access_reports(self) -> AccessReports:
        """A patient's access report (who read their data), read from the audit trail."""
        catalog = self.reference_rules().catalog
        return AccessReports(
            lambda: SqlAccessReportUnitOfWork(self.sessions, self.pseudonyms),
            self.identifiers(),
            {code: Text(i.name_zh, i.name_en) for code, i in catalog.items.items()},
        )


@dataclass
class AuditTrail:
    """The audit trail's keys and checkpoint export, for sealing and verifying.

    Needs the database and the audit keys only: the sealer host and an auditor's host
    hold none of the broker's other keys.
    """

    settings: Settings
    sessions: Sessions
    engine: Engine | None = None  # set when built on its own (then closed by close())

    @classmethod
    def build(cls, settings: Settings) -> AuditTrail:
        engine = create_engine(settings.resolved_database_url, schema=settings.database_schema)
        return cls(settings, session_factory(engine), engine)

    def pinned_keys(self) -> PinnedKeys:
        s = self.settings
        return pinned_keys(s.keys_dir, s.audit_checkpoint_public_key, embedded=s.may_create_keys)

    def sealer_key(self, *, sealer_host: bool = False) -> CheckpointKey | None:
        """The sealer's private key, if this process is to seal (checked against the pin).

        MRB_AUDIT_SEALER_KEY names it; the embedded set-up makes keys/audit-checkpoint.key;
        `mrb audit seal` (`sealer_host`) also takes keys/audit-checkpoint.key. A key file
        merely present elsewhere (say, from `mrb keys init`) does not make a worker seal.
        """
        s = self.settings
        if s.audit_sealer_key is not None:
            path, create = s.audit_sealer_key, False
        elif s.may_create_keys or sealer_host:
            path, create = s.keys_dir / PRIVATE_KEY_FILE, s.may_create_keys
        else:
            return None
        pinned = None
        if s.audit_checkpoint_public_key or (s.keys_dir / PUBLIC_KEY_FILE).exists():
            pinned = self.pinned_keys()
        return sealer_key(path, pinned, create=create)

    def export(self, location: str | None = None) -> CheckpointExport | None:
        target = location or self.settings.resolved_audit_export
        return open_export(target) if target else None

    def sealer(self, *, sealer_host: bool = False) -> AuditSealer:
        """A sealer with its key and export, or an idle one where this process holds no key."""
        key = self.sealer_key(sealer_host=sealer_host)

        def uow() -> SqlAuditChainUnitOfWork:
            return SqlAuditChainUnitOfWork(self.sessions)

        if key is None:
            return AuditSealer.idle(uow)
        return AuditSealer(
            uow, key, self.export(), interval=self.settings.audit_seal_interval_seconds
        )

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
