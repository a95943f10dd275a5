"""The web sign-in's pieces that need no issuer: the S256 challenge (RFC 7636's own
example), and the signed flow cookie (round trip, tampering, another client, expiry)."""

from __future__ import annotations

import pytest

from broker.security.oidc import OidcConfig, OidcVerifier
from broker.security.oidc_login import (
    FLOW_MAX_AGE,
    LoginRefused,
    OidcLogin,
    OidcLoginConfig,
    PendingLogin,
    code_challenge,
    issuer_error,
)

ISSUER = "https://idp.test/realms/city"


def login(client_id: str = "mrb-web", secret: str | None = "s") -> OidcLogin:
    verifier = OidcVerifier(OidcConfig(issuer=ISSUER, audience="mrb-api"))
    return OidcLogin(
        OidcLoginConfig(client_id, secret, "https://mrb.test/auth/oidc/callback"), verifier
    )


def test_the_s256_challenge_is_rfc_7636s_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    pending = PendingLogin.new()
    assert 43 <= len(pending.verifier) <= 128
    assert len({pending.state, pending.nonce, pending.verifier}) == 3


def test_the_id_token_is_checked_for_the_client_not_the_api_audience() -> None:
    assert login().verifier.config.audience == "mrb-web"


def test_the_flow_cookie_round_trips_and_refuses_tampering_and_age() -> None:
    one = login()
    pending = PendingLogin.new(now=1_000_000)
    sealed = one.seal(pending)
    assert one.unseal(sealed, now=1_000_000 + 60) == pending
    # The same secret makes the same key (another replica); another client's does not.
    assert login().unseal(sealed, now=1_000_060) == pending
    for other in (login(client_id="other"), login(secret="other")):
        with pytest.raises(LoginRefused) as refused:
            other.unseal(sealed, now=1_000_060)
        assert refused.value.reason == "bad_flow"
    payload, _, mac = sealed.partition(".")
    for bad in (payload + "." + mac[:-2] + "AA", "x" + sealed, "not a cookie", "é.é"):
        with pytest.raises(LoginRefused) as refused:
            one.unseal(bad, now=1_000_060)
        assert refused.value.reason == "bad_flow"
    with pytest.raises(LoginRefused) as refused:
        one.unseal(sealed, now=1_000_000 + FLOW_MAX_AGE + 1)
    assert refused.value.reason == "flow_expired"
    with pytest.raises(LoginRefused) as refused:
        one.unseal(None)
    assert refused.value.reason == "no_flow"
    # A public client without MRB_OIDC_STATE_KEY: a key of this process only.
    assert login(secret=None).seal(pending) != login(secret=None).seal(pending)


def test_a_wrong_state_and_the_issuers_errors() -> None:
    one = login()
    pending = PendingLogin.new()
    one.check_state(pending, pending.state)
    for state in (None, "", pending.state + "x"):
        with pytest.raises(LoginRefused):
            one.check_state(pending, state)
    denied = issuer_error("access_denied", "no <b>thanks</b>")
    assert (denied.status, denied.reason) == (403, "access_denied")
    odd = issuer_error("<script>", None)
    assert odd.reason == "issuer_error" and "<script>" not in odd.detail
