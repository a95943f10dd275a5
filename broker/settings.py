"""Runtime configuration, read from MRB_* environment variables."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.domain.safety_actions import SafetyAction
from broker.domain.sessions import LockoutPolicy, SessionPolicy
from broker.security.tokens import PUBLIC_KEYS_FILE, Lifetimes, parse_ttl

if TYPE_CHECKING:  # the OIDC client (httpx, JWKS) loads only where an issuer is used
    from broker.security.oidc import OidcConfig
    from broker.security.oidc_login import OidcLoginConfig


class Settings(BaseSettings):
    """Everything mrb reads from its environment; build it once in the composition root."""

    model_config = SettingsConfigDict(env_prefix="MRB_", env_ignore_empty=True, extra="ignore")

    kafka_bootstrap: str | None = None  # unset: start the embedded Tansu broker
    kafka_security_protocol: str = "PLAINTEXT"  # SSL, SASL_PLAINTEXT, SASL_SSL in production
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None  # mutual TLS
    kafka_ssl_keyfile: Path | None = None
    database_url: str | None = None  # unset: SQLite file in data_dir
    database_schema: str | None = None  # PostgreSQL schema (search_path), e.g. per test run
    # Connections each process keeps open, and how many more it may open at a peak (closed
    # again when returned). Below the requests a process serves at once, every request past
    # the pool pays a new connection (TLS negotiation, codecs, statements prepared afresh).
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=20, ge=0)
    data_dir: Path = Path("./var")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # `mrb worker` serves /healthz and /readyz here (on MRB_HTTP_HOST), not on the API's
    # port: give each worker on one host its own (and its own MRB_METRICS_PORT).
    worker_health_port: int = Field(default=8001, ge=1, le=65535)
    # Prometheus /metrics on its own listener, never on the API port; 0 turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # A listening or polling adapter (`mrb adapter hl7v2|dicom --listen`, `fhir --poll`)
    # serves its outbox's metrics on MRB_METRICS_HOST at this port; 0 (default): off.
    adapter_metrics_port: int = Field(default=0, ge=0, le=65535)
    # Request bodies above this many bytes get HTTP 413 before they are read or parsed.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Slow clients: a request body still arriving after this many seconds gets 408; the
    # request line and headers must arrive within http_header_timeout seconds, be at most
    # max_header_bytes long, and an idle keep-alive connection closes after
    # http_keep_alive_timeout seconds.
    body_read_timeout: float = Field(default=30.0, gt=0)
    http_header_timeout: float = Field(default=10.0, gt=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    http_keep_alive_timeout: int = Field(default=5, ge=1)
    # Rate limits, shared by every API process (0 turns one off): requests per minute per
    # token (its subject and hospital) and per client address, and distinct patients one
    # person may look up per hour. Counters live in the database, or in Redis when
    # redis_url is set (redis://[:password@]host:port/db). See docs/security.md.
    rate_limit_per_minute: int = Field(default=120, ge=0)
    rate_limit_per_address_per_minute: int = Field(default=600, ge=0)
    distinct_patients_per_hour: int = Field(default=60, ge=0)
    redis_url: SecretStr | None = None
    # The URL EHRs and browsers reach mrb at (behind any proxy), ending in "/": CDS Hooks
    # JWTs must name {public_base_url}cds-services/{id} as their audience, and card links
    # point here. Unset: http://{http_host}:{http_port}/ (right only without a proxy).
    public_base_url: str | None = None
    # Test and development only: let CDS clients register http://127.0.0.1, localhost or
    # [::1] FHIR servers and HIS launch origins (in production both must be https).
    cds_allow_http_loopback: bool = False
    tansu_bin: Path | None = None
    schemas_dir: Path | None = None  # catalog and policy; default: the checkout's schemas/
    embedded_kafka_port: int = 19092
    log_level: str = "INFO"
    # Create missing key files on start? Default: yes with SQLite (one machine), no with
    # PostgreSQL, where API and workers must share keys made once by `mrb keys init`.
    create_keys: bool | None = None

    # Refuse messages without a valid hospital signature (UNKNOWN_KEY / BAD_SIGNATURE).
    # Turn off only while migrating adapters: unsigned messages are then accepted, but
    # any signature that is present is still checked.
    require_signatures: bool = True
    # Names this installation's ingest consumer group (mrb-ingest-<id>), so that two
    # installations on one Kafka never share a group. The same on every worker of one
    # installation, on any host; unset: MRB_DATA_DIR/installation-id, made once where the
    # broker makes its own keys (the embedded set-up). See docs/operations.md.
    installation_id: str | None = None
    # The group coordinator holds a join for about half of this: short for the demo/tests.
    consumer_session_timeout_ms: int = Field(default=10_000, ge=1000)
    max_message_bytes: int = Field(default=1024 * 1024, gt=0)
    # Raw payloads (the sealed messages as received) older than this many days are erased
    # by `mrb purge payloads` (run it daily); index, checks, ledger and audit stay. 0: keep
    # them forever. docs/operations.md, "Retention and purge".
    payload_retention_days: int = Field(default=0, ge=0)
    max_json_depth: int = Field(default=64, gt=0)
    # How ingest validates FHIR: "fast", a schema compiled from the fhir.resources R4B
    # models (it refuses all they refuse, with the same DLQ codes, about 10x quicker), or
    # "full", the models themselves.
    fhir_validation: Literal["fast", "full"] = "fast"
    default_timezone: str = "Asia/Shanghai"  # zone for timestamps sent without one
    batch_max_records: int = Field(default=500, gt=0)
    # `mrb dlq purge` without --older-than drops the sealed values of dead letters older
    # than this many days (the rows, with code, detail and dates, stay).
    dlq_retention_days: int = Field(default=90, ge=0)
    # Admin commands print the data folder and database they act on (stderr) unless set
    # (or given `mrb --quiet`).
    quiet: bool = False
    results_partitions: int = Field(default=6, gt=0)
    # A saving whose result is later withdrawn / corrected: reverse it, or flag it for
    # finance to review (the recognising doctor is notified either way).
    ledger_on_withdrawn: SafetyAction = SafetyAction.REVERSE
    ledger_on_corrected: SafetyAction = SafetyAction.FLAG
    event_relay_interval_seconds: float = Field(default=1.0, gt=0)
    audit_seal_interval_seconds: float = Field(default=5.0, gt=0)
    # The audit trail (docs/security.md, "Audit trail"). The sealer's checkpoint public
    # key, pinned: base64 raw Ed25519 (several, comma-separated, while rotating); else
    # keys/audit-checkpoint.pub. Verification refuses checkpoints signed by other keys.
    audit_checkpoint_public_key: str | None = None
    # Where the sealer appends each checkpoint as it is made: a file path (JSON lines)
    # outside the database host. Default only in the embedded set-up: data_dir's
    # audit-export.jsonl.
    audit_export: str | None = None
    # The sealer's private key file, on the sealer host only: workers given it seal too.
    # Unset, only `mrb audit seal` (keys/audit-checkpoint.key) and the embedded set-up seal.
    audit_sealer_key: Path | None = None

    # API tokens (docs/security.md "Tokens and roles"). Trusted issuer public keys: the
    # file (default keys/token-issuer.pub) and/or KID=BASE64 entries, comma-separated.
    token_public_keys: str | None = None
    token_public_keys_file: Path | None = None
    # Longest lifetimes: 8h, 30m, 30d, seconds, or ISO 8601 (PT8H).
    token_max_ttl_people: timedelta = timedelta(hours=8)
    token_max_ttl_machines: timedelta = timedelta(days=30)
    # How long a request may rely on an earlier look-up of a token's revocation state.
    token_revocation_cache_seconds: float = Field(default=2.0, ge=0, le=5)
    # People logging in through an OpenID Connect issuer (docs/security.md, "OpenID
    # Connect"): its URL exactly as its tokens' `iss` says it (https), the audience its
    # tokens must name (the client id or API audience), and its JWKS URL (unset: the
    # jwks_uri of {issuer}/.well-known/openid-configuration). Unset issuer: mrb tokens only.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    # Web pages' sign-in through that issuer (authorization code + PKCE, docs/security.md
    # "Web login"), on when a client id is set: the secret of a confidential client (unset:
    # a public client), where the issuer sends the browser back (unset:
    # {public base URL}auth/oidc/callback), the scopes asked for, and the key signing the
    # sign-in's short-lived state cookie, the same on every API replica (unset: derived
    # from the client secret, else random in each process: then one API process only).
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_redirect_uri: str | None = None
    oidc_scopes: str = "openid profile"
    oidc_state_key: SecretStr | None = None
    # Web pages' login (docs/security.md, "Web login"): a session ends after this long
    # without a request, or this long after login at most; N failed logins within the
    # window lock the account for web_login_lockout.
    web_session_idle: timedelta = timedelta(minutes=30)
    web_session_absolute: timedelta = timedelta(hours=12)
    web_login_max_failures: int = Field(default=5, ge=1)
    web_login_failure_window: timedelta = timedelta(minutes=15)
    web_login_lockout: timedelta = timedelta(minutes=15)
    # The session cookie is `__Host-mrb_session` (Secure, HttpOnly, SameSite=Strict, Path=/).
    # Browsers send Secure cookies over https and to http://127.0.0.1 / localhost only (a
    # secure context); false: `mrb_session` without Secure, for plain-HTTP demos on
    # another address. Never in production.
    web_cookie_secure: bool = True

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _oidc_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        from broker.security.oidc import issuer_url

        return issuer_url(value, setting=f"MRB_{(info.field_name or '').upper()}")

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer is None and (self.oidc_audience or self.oidc_jwks_url):
            raise ValueError("MRB_OIDC_AUDIENCE and MRB_OIDC_JWKS_URL need MRB_OIDC_ISSUER")
        if self.oidc_issuer is not None and not (self.oidc_audience or "").strip():
            raise ValueError(
                "MRB_OIDC_ISSUER needs MRB_OIDC_AUDIENCE: the client id or API audience its "
                "tokens name in `aud`"
            )
        if self.oidc_issuer is None and (self.oidc_client_id or self.oidc_redirect_uri):
            raise ValueError("MRB_OIDC_CLIENT_ID and MRB_OIDC_REDIRECT_URI need MRB_OIDC_ISSUER")
        if "openid" not in self.oidc_scopes.split():
            raise ValueError("MRB_OIDC_SCOPES must include openid")
        return self

    @field_validator("oidc_redirect_uri")
    @classmethod
    def _redirect_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
            raise ValueError("MRB_OIDC_REDIRECT_URI must be an absolute http(s) URL")
        return value

    @property
    def oidc_login(self) -> OidcLoginConfig | None:
        """The web pages' OpenID Connect sign-in, if an issuer and a client id are set."""
        if self.oidc_issuer is None or not (self.oidc_client_id or "").strip():
            return None
        from broker.security.oidc_login import OidcLoginConfig

        secret = self.oidc_client_secret.get_secret_value() if self.oidc_client_secret else None
        state_key = self.oidc_state_key.get_secret_value() if self.oidc_state_key else None
        return OidcLoginConfig(
            client_id=(self.oidc_client_id or "").strip(),
            client_secret=secret or None,
            redirect_uri=self.oidc_redirect_uri
            or self.resolved_public_base_url + "auth/oidc/callback",
            scopes=" ".join(self.oidc_scopes.split()),
            state_key=state_key or None,
        )

    @property
    def oidc(self) -> OidcConfig | None:
        """The OpenID Connect issuer whose tokens the API accepts, if one is configured."""
        if self.oidc_issuer is None or self.oidc_audience is None:
            return None
        from broker.security.oidc import OidcConfig

        return OidcConfig(
            issuer=self.oidc_issuer,
            audience=self.oidc_audience.strip(),
            jwks_url=self.oidc_jwks_url,
            max_lifetime=self.token_max_ttl_people,
        )

    @field_validator("token_max_ttl_people", "token_max_ttl_machines", mode="before")
    @classmethod
    def _lifetime(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_ttl(value)
            except ValueError:
                return value  # seconds or ISO 8601, parsed by pydantic
        return value

    @property
    def web_session_policy(self) -> SessionPolicy:
        return SessionPolicy(idle=self.web_session_idle, absolute=self.web_session_absolute)

    @property
    def web_lockout_policy(self) -> LockoutPolicy:
        return LockoutPolicy(
            self.web_login_max_failures, self.web_login_failure_window, self.web_login_lockout
        )

    @property
    def token_lifetimes(self) -> Lifetimes:
        return Lifetimes(self.token_max_ttl_people, self.token_max_ttl_machines)

    @property
    def token_public_keys_path(self) -> Path:
        return self.token_public_keys_file or self.keys_dir / PUBLIC_KEYS_FILE

    @field_validator("public_base_url")
    @classmethod
    def _absolute_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("MRB_PUBLIC_BASE_URL must be an absolute http(s) URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("MRB_PUBLIC_BASE_URL takes no query, fragment or user")
        return value if value.endswith("/") else value + "/"

    @property
    def resolved_public_base_url(self) -> str:
        """Where clients reach mrb, ending in "/": configured, never taken from a request."""
        if self.public_base_url:
            return self.public_base_url
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"http://{host}:{self.http_port}/"

    @cached_property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: explicit, or a SQLite file in the data dir."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://"):
                url = "postgresql+asyncpg://" + url.removeprefix("postgresql://")
            elif url.startswith("sqlite:///"):
                url = "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mrb.db').resolve()}"

    def kafka_options(self) -> dict[str, Any]:
        """TLS/SASL keyword arguments for every Kafka client (none for the embedded broker)."""
        if not self.kafka_bootstrap:
            return {}
        from broker.kafka.security import client_options

        return client_options(
            self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password.get_secret_value()
            if self.kafka_sasl_password
            else None,
            cafile=self.kafka_ssl_cafile,
            certfile=self.kafka_ssl_certfile,
            keyfile=self.kafka_ssl_keyfile,
        )

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def resolved_audit_export(self) -> str | None:
        """The checkpoint export: MRB_AUDIT_EXPORT, or a file in the data dir when embedded."""
        if self.audit_export:
            return self.audit_export
        if self.may_create_keys:
            return str(self.data_dir / "audit-export.jsonl")
        return None

    @property
    def may_create_keys(self) -> bool:
        if self.create_keys is not None:
            return self.create_keys
        return self.resolved_database_url.startswith("sqlite")

    @field_validator("installation_id")
    @classmethod
    def _installation_id(cls, value: str | None) -> str | None:
        from broker.instance import valid_installation_id

        return None if value is None else valid_installation_id(value)

    @property
    def consumer_group(self) -> str:
        """The ingest workers' Kafka consumer group: mrb-ingest-<installation id>."""
        from broker.instance import installation_id

        return f"mrb-ingest-{installation_id(self)}"
