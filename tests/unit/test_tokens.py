"""API tokens without a database: Ed25519 signing, the trusted-key list, what verification
refuses, lifetimes, and the role table's shape."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.domain.actors import (
    ALL_HOSPITALS,
    GRANTS,
    HOSPITAL_ROLES,
    PLATFORM_ROLES,
    Actor,
    Duty,
    Forbidden,
    Role,
)
from broker.security.tokens import (
    AUDIENCE,
    ISSUER,
    InvalidToken,
    IssuerKey,
    Lifetimes,
    TokenIssuer,
    TokenKind,
    TokenVerifier,
    TrustedKeys,
    VerifiedToken,
    actor_hospital,
    load_issuer_key,
    parse_public_keys,
    parse_ttl,
    public_key_b64,
    retire_public_key,
    rotate_issuer_key,
)

LIFETIMES = Lifetimes(timedelta(hours=8), timedelta(days=30))


@pytest.fixture
def key() -> IssuerKey:
    return IssuerKey.generate()


@pytest.fixture
def issuer(key: IssuerKey) -> TokenIssuer:
    return TokenIssuer(key, LIFETIMES)


@pytest.fixture
def verifier(key: IssuerKey) -> TokenVerifier:
    return TokenVerifier(TrustedKeys(None, key.public_entry()), LIFETIMES)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWT put together by hand, as an attacker would."""
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return head + "." + b64url(sign(head.encode()))


def claims(**changes: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "dr.li",
        "role": "doctor",
        "hospital": "H001",
        "kind": "person",
        "iat": now,
        "exp": now + 3600,
        "jti": "4b0f7f0e-0000-4000-8000-000000000001",
    }
    return {**base, **changes}


class TestSigning:
    def test_an_issued_token_verifies_with_the_public_key_alone(
        self, issuer: TokenIssuer, verifier: TokenVerifier
    ) -> None:
        issued = issuer.issue("dr.li", Role.DOCTOR, "H001")
        assert jwt.get_unverified_header(issued.token) == {
            "alg": "EdDSA",
            "kid": issuer.key.key_id,
            "typ": "JWT",
        }
        got = verifier.verify(issued.token)
        assert got.actor == Actor("dr.li", Role.DOCTOR, "H001", token_id=issued.jti)
        assert got.kind is TokenKind.PERSON and got.key_id == issuer.key.key_id
        assert got.expires_at - got.issued_at == timedelta(hours=8)  # the default: the cap

    def test_a_platform_token_acts_for_every_hospital(
        self, issuer: TokenIssuer, verifier: TokenVerifier
    ) -> None:
        issued = issuer.issue("qc.wu", Role.QC, ALL_HOSPITALS)
        actor = verifier.verify(issued.token).actor
        assert actor.platform and actor.acts_for("H001") and actor.acts_for("H404")

    @pytest.mark.parametrize(
        ("subject", "role", "hospital", "message"),
        [
            ("", Role.DOCTOR, "H001", "needs a subject"),
            ("   ", Role.DOCTOR, "H001", "needs a subject"),
            ("x" * 201, Role.DOCTOR, "H001", "longer than 200"),
            ("dr.li", Role.DOCTOR, ALL_HOSPITALS, "hospital role"),
            ("sys.zhang", Role.PLATFORM_ADMIN, "H001", "platform role"),
        ],
    )
    def test_refused_requests(
        self, issuer: TokenIssuer, subject: str, role: Role, hospital: str, message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            issuer.issue(subject, role, hospital)

    def test_lifetimes_are_capped_by_kind(self, issuer: TokenIssuer) -> None:
        with pytest.raises(ValueError, match=r"at most 8 h \(MRB_TOKEN_MAX_TTL_PEOPLE\)"):
            issuer.issue("dr.li", Role.DOCTOR, "H001", ttl=timedelta(hours=8, seconds=1))
        with pytest.raises(ValueError, match="MRB_TOKEN_MAX_TTL_MACHINES"):
            issuer.issue("lis", Role.ADAPTER, "H001", ttl=timedelta(days=31))
        with pytest.raises(ValueError, match="positive"):
            issuer.issue("dr.li", Role.DOCTOR, "H001", ttl=timedelta(0))
        adapter = issuer.issue("lis", Role.ADAPTER, "H001")
        assert adapter.kind is TokenKind.MACHINE
        assert adapter.expires_at - adapter.issued_at == timedelta(days=30)
        job = issuer.issue("report-job", Role.PLATFORM_FINANCE, "*", machine=True)
        assert job.kind is TokenKind.MACHINE
        with pytest.raises(ValueError, match="not doctor"):
            issuer.issue("his", Role.DOCTOR, "H001", machine=True)

    def test_ttl_syntax(self) -> None:
        assert parse_ttl("90s") == timedelta(seconds=90)
        assert parse_ttl("30m") == parse_ttl("30min") == timedelta(minutes=30)
        assert parse_ttl("1.5h") == timedelta(minutes=90)
        assert parse_ttl("7d") == timedelta(days=7)
        with pytest.raises(ValueError, match="8h or 30d"):
            parse_ttl("a century")

    def test_a_platform_role_may_leave_out_its_hospital(self) -> None:
        assert actor_hospital(Role.AUDIT, None) == ALL_HOSPITALS
        with pytest.raises(ValueError, match="name its one hospital"):
            actor_hospital(Role.FINANCE, None)


class TestRefusals:
    def test_hs256_even_keyed_with_the_public_key(
        self, key: IssuerKey, verifier: TokenVerifier
    ) -> None:
        pem = key.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for secret in (pem, public_key_b64(key.public).encode(), b"k" * 32):
            token = craft(
                {"alg": "HS256", "typ": "JWT", "kid": key.key_id},
                claims(),
                lambda m, s=secret: hmac.new(s, m, hashlib.sha256).digest(),
            )
            with pytest.raises(InvalidToken, match="'HS256' is refused"):
                verifier.verify(token)

    @pytest.mark.parametrize("alg", ["none", "None", "RS256", "ES256", "HS512"])
    def test_any_other_algorithm(self, key: IssuerKey, verifier: TokenVerifier, alg: str) -> None:
        token = craft({"alg": alg, "kid": key.key_id}, claims(), lambda _: b"")
        with pytest.raises(InvalidToken, match="is refused"):
            verifier.verify(token)

    def test_another_key_under_the_trusted_kid(
        self, key: IssuerKey, verifier: TokenVerifier
    ) -> None:
        other = Ed25519PrivateKey.generate()
        token = jwt.encode(claims(), other, algorithm="EdDSA", headers={"kid": key.key_id})
        with pytest.raises(InvalidToken, match="Signature verification failed"):
            verifier.verify(token)

    def test_a_tampered_claim(self, issuer: TokenIssuer, verifier: TokenVerifier) -> None:
        head, body, sig = issuer.issue("dr.li", Role.DOCTOR, "H001").token.split(".")
        raised = json.loads(base64.urlsafe_b64decode(body + "=="))
        raised["role"] = "platform-admin"
        raised["hospital"] = "*"
        forged = f"{head}.{b64url(json.dumps(raised).encode())}.{sig}"
        with pytest.raises(InvalidToken, match="Signature verification failed"):
            verifier.verify(forged)

    def test_an_untrusted_or_missing_key_id(self, verifier: TokenVerifier) -> None:
        stranger = IssuerKey.generate()
        token = jwt.encode(claims(), stranger.private, "EdDSA", headers={"kid": stranger.key_id})
        with pytest.raises(InvalidToken, match="not trusted"):
            verifier.verify(token)
        with pytest.raises(InvalidToken, match="no signing key"):
            verifier.verify(jwt.encode(claims(), stranger.private, "EdDSA"))

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"exp": 0, "iat": 0}, "expired"),
            ({"role": "superuser"}, "unknown"),
            ({"kind": "robot"}, "unknown"),
            ({"role": "doctor", "hospital": "*"}, "hospital role"),
            ({"role": "platform-admin", "hospital": "H001"}, "platform role"),
            ({"role": "adapter", "kind": "person"}, "machine's"),
            ({"aud": "someone-else"}, "Audience"),
            ({"iss": "evil"}, "issuer"),
            ({"jti": None}, "jti"),
        ],
    )
    def test_bad_claims(
        self, key: IssuerKey, verifier: TokenVerifier, changes: dict[str, Any], message: str
    ) -> None:
        body = {k: v for k, v in claims(**changes).items() if v is not None}
        token = jwt.encode(body, key.private, "EdDSA", headers={"kid": key.key_id})
        with pytest.raises(InvalidToken, match=message):
            verifier.verify(token)

    def test_a_century_long_token_signed_with_the_real_key(
        self, key: IssuerKey, verifier: TokenVerifier
    ) -> None:
        now = int(datetime.now(UTC).timestamp())
        for kind, life in (("person", 8 * 3600 + 1), ("machine", 100 * 365 * 86400)):
            role = "adapter" if kind == "machine" else "doctor"
            body = claims(role=role, kind=kind, iat=now, exp=now + life)
            token = jwt.encode(body, key.private, "EdDSA", headers={"kid": key.key_id})
            with pytest.raises(InvalidToken, match=f"allowed for a {kind} token"):
                verifier.verify(token)

    def test_a_stricter_verifier_refuses_what_a_laxer_issuer_signed(self, key: IssuerKey) -> None:
        lax = TokenIssuer(key, Lifetimes(timedelta(hours=8), timedelta(days=30)))
        strict = TokenVerifier(
            TrustedKeys(None, key.public_entry()), Lifetimes(timedelta(hours=1), timedelta(days=1))
        )
        with pytest.raises(InvalidToken, match="longer than the 1 h allowed"):
            strict.verify(lax.issue("dr.li", Role.DOCTOR, "H001").token)

    def test_issued_in_the_future(self, key: IssuerKey, verifier: TokenVerifier) -> None:
        later = int(datetime.now(UTC).timestamp()) + 3600
        body = claims(iat=later, exp=later + 60)
        token = jwt.encode(body, key.private, "EdDSA", headers={"kid": key.key_id})
        with pytest.raises(InvalidToken, match="not yet valid"):
            verifier.verify(token)

    @pytest.mark.parametrize("junk", ["", "not-a-token", "a.b.c", "....."])
    def test_junk(self, verifier: TokenVerifier, junk: str) -> None:
        with pytest.raises(InvalidToken):
            verifier.verify(junk)


class TestTrustedKeys:
    def test_formats(self) -> None:
        a, b, c = IssuerKey.generate(), IssuerKey.generate(), IssuerKey.generate()
        pem = a.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        raw = base64.b64encode(
            b.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ).decode()
        text = f"# comment\n{pem}\nold-key={raw}  # a chosen id\n,{public_key_b64(c.public)}\n"
        keys = parse_public_keys(text, source="t")
        assert set(keys) == {a.key_id, "old-key", c.key_id}

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("kid=not base64!", "is not KID=BASE64"),
            ("kid=AAAA", "neither 32 raw key bytes"),
            ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "PEM public key"),
        ],
    )
    def test_unusable_entries(self, text: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_public_keys(text, source="t")

    def test_one_id_for_two_keys_is_refused(self) -> None:
        a, b = IssuerKey.generate(), IssuerKey.generate()
        text = f"k={public_key_b64(a.public)}\nk={public_key_b64(b.public)}"
        with pytest.raises(ValueError, match="given twice"):
            parse_public_keys(text, source="t")

    def test_an_rsa_key_is_refused(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        der = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        with pytest.raises(ValueError, match="not an Ed25519"):
            parse_public_keys(f"k={base64.b64encode(der).decode()}", source="t")

    def test_the_file_is_reread_when_it_changes(self, tmp_path: Path) -> None:
        file = tmp_path / "token-issuer.pub"
        a, b = IssuerKey.generate(), IssuerKey.generate()
        trusted = TrustedKeys(file)
        assert trusted.get(a.key_id) is None  # no file yet
        file.write_text(a.public_entry() + "\n")
        assert trusted.get(a.key_id) is not None
        file.write_text(b.public_entry() + "\n")
        assert trusted.get(a.key_id) is None and trusted.get(b.key_id) is not None
        file.write_text("garbage=!!\n")  # a broken edit keeps the keys read before
        assert trusted.key_ids() == [b.key_id]


class TestKeyFiles:
    def test_create_only_where_allowed(self, tmp_path: Path) -> None:
        from broker.security.keys import MissingKey

        with pytest.raises(MissingKey, match="cannot issue"):
            load_issuer_key(tmp_path, create=False)
        made = load_issuer_key(tmp_path, create=True)
        assert (tmp_path / "token-issuer.key").stat().st_mode & 0o077 == 0
        assert load_issuer_key(tmp_path, create=False).key_id == made.key_id
        assert TrustedKeys(tmp_path / "token-issuer.pub").key_ids() == [made.key_id]

    def test_rotate_then_retire(self, tmp_path: Path) -> None:
        first = load_issuer_key(tmp_path, create=True)
        old, new = rotate_issuer_key(tmp_path)
        assert old.key_id == first.key_id != new.key_id
        assert load_issuer_key(tmp_path, create=False).key_id == new.key_id
        trusted = TrustedKeys(tmp_path / "token-issuer.pub")
        assert sorted(trusted.key_ids()) == sorted([old.key_id, new.key_id])
        with pytest.raises(ValueError, match="rotate first"):
            retire_public_key(tmp_path, new.key_id)
        assert retire_public_key(tmp_path, old.key_id)
        assert not retire_public_key(tmp_path, old.key_id)
        assert trusted.key_ids() == [new.key_id]


class TestVerificationCache:
    """A verified token is reused until it expires, unless its key is no longer trusted."""

    def test_the_same_token_is_verified_once(
        self, issuer: TokenIssuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = issuer.issue("dr-li", Role.DOCTOR, "H001").token
        first = verifier.verify(token)
        monkeypatch.setattr(verifier, "_verify", lambda _t: pytest.fail("verified again"))
        assert verifier.verify(token) is first

    def test_past_its_expiry_a_verified_token_is_verified_again(
        self, issuer: TokenIssuer, verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        issued = issuer.issue("dr-li", Role.DOCTOR, "H001", ttl=timedelta(minutes=5))
        verifier.verify(issued.token)
        assert verifier.verify(issued.token, now=issued.expires_at) is not None  # leeway

        def expired(_token: str) -> VerifiedToken:
            raise InvalidToken("the token has expired; ask for a new one")

        monkeypatch.setattr(verifier, "_verify", expired)  # what PyJWT says by then
        with pytest.raises(InvalidToken, match="expired"):
            verifier.verify(issued.token, now=issued.expires_at + timedelta(minutes=1))

    def test_a_retired_key_stops_its_verified_tokens(self, tmp_path: Path) -> None:
        load_issuer_key(tmp_path, create=True)
        old_issuer = TokenIssuer(load_issuer_key(tmp_path, create=False), LIFETIMES)
        token = old_issuer.issue("dr-li", Role.DOCTOR, "H001").token
        trusted = TrustedKeys(tmp_path / "token-issuer.pub")
        verifier = TokenVerifier(trusted, LIFETIMES)
        verifier.verify(token)
        old, _new = rotate_issuer_key(tmp_path)
        verifier.verify(token)  # both keys trusted during the rotation
        assert retire_public_key(tmp_path, old.key_id)
        with pytest.raises(InvalidToken, match="not trusted"):
            verifier.verify(token)


class TestRoleTable:
    def test_hospital_and_platform_roles_are_the_design_names(self) -> None:
        assert {r.value for r in HOSPITAL_ROLES} == {"adapter", "doctor", "finance", "admin"}
        assert {r.value for r in PLATFORM_ROLES} == {
            "platform-admin",
            "security-admin",
            "audit",
            "qc",
            "platform-finance",
        }

    def test_duties_are_separated(self) -> None:
        def duties(role: Role) -> set[Duty]:
            return {d for d, roles in GRANTS.items() if role in roles}

        # The audit trail and what is read from it: a patient's access report, and the
        # break-glass reads the security administrator reviews too.
        assert duties(Role.AUDIT) == {
            Duty.AUDIT_TRAIL,
            Duty.PATIENT_ACCESS_REPORT,
            Duty.BREAK_GLASS_REPORT,
        }
        assert duties(Role.PLATFORM_ADMIN) == {
            Duty.REFERENCE,
            Duty.REGISTRY,
            Duty.LEDGER_READ,
            Duty.LEDGER_CLOSE,
            Duty.MAPPINGS,
            Duty.IDENTITY,
        }
        assert duties(Role.SECURITY_ADMIN) == {
            Duty.REFERENCE,
            Duty.TOKENS,
            Duty.ISSUING,
            Duty.BREAK_GLASS_REPORT,
        }
        assert duties(Role.QC) == {Duty.REFERENCE, Duty.CERTIFY}
        assert duties(Role.PLATFORM_FINANCE) == {
            Duty.REFERENCE,
            Duty.SAVINGS,
            Duty.CITY_REPORTS,
            Duty.LEDGER_READ,
        }
        assert duties(Role.ADMIN) == {Duty.REFERENCE, Duty.MAPPINGS, Duty.TOKENS}
        for duty in (
            Duty.REGISTRY,
            Duty.CERTIFY,
            Duty.LEDGER_CLOSE,
            Duty.CITY_REPORTS,
            Duty.IDENTITY,
            Duty.BREAK_GLASS_REPORT,
        ):
            assert not GRANTS[duty] & HOSPITAL_ROLES  # never a hospital's own doing

    def test_a_hospital_admin_acts_on_its_own_hospital_only(self) -> None:
        admin = Actor("it.zhou", Role.ADMIN, "H001")
        admin.authorize(Duty.MAPPINGS, "H001")
        with pytest.raises(Forbidden, match="H002 is another hospital's"):
            admin.authorize(Duty.MAPPINGS, "H002")
        with pytest.raises(Forbidden, match="needs the role platform-admin"):
            admin.authorize(Duty.REGISTRY, "H001")
        platform = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
        platform.authorize(Duty.REGISTRY, "H002")
        with pytest.raises(Forbidden, match="needs the role qc"):
            platform.authorize(Duty.CERTIFY, "H002")
