"""Wallet sign-in (Sign-In with Ethereum, EIP-4361) tests for the vectorway gateway.

Every message is signed by the real ``eth-account`` package exactly as a wallet would sign it
(EIP-191 ``personal_sign``: ``encode_defunct(text=message)`` + ``Account.sign_message``), and
every request goes to the real ``vectorway serve`` binary started by conftest.py. Covered:

* the session flow: challenge -> verify -> ``/v1/me`` -> refresh -> refresh-token reuse revokes
  the whole token family -> revoke;
* every SIWE rejection (domain, nonce reuse, unknown nonce, expiry, chain id, foreign signer,
  wallet mismatch, malformed message) with its status and OpenAI-shaped error ``code``;
* API keys managed with the session JWT (``/v1/api-keys``): create, list, revoke, and the
  revoked key refused at once;
* the agent-router aliases authenticated by a SIWE message in the body or the query
  (``/v1/auth/keys``) and ``/v1/usage/{wallet}``, including its 403 for another wallet's key.

Each test signs in with fresh random accounts (``Account.create()``), so tests never share a
wallet, a nonce or a session. Nonces are single-use: every verification gets a new challenge.
"""

from __future__ import annotations

import re
import secrets
import string
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import quote, quote_plus, urlencode

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

#: Chain ids the gateway accepts by default; Base Sepolia is what agent-router clients use.
BASE_SEPOLIA = 84532
ALLOWED_CHAINS = (1, 8453, BASE_SEPOLIA)
#: A chain id the gateway does not accept (Goerli).
UNSUPPORTED_CHAIN = 5
#: Default lifetimes (config: auth.nonce_ttl_s, auth.access_ttl_s).
NONCE_TTL_S = 300
ACCESS_TTL_S = 900
PREAMBLE = " wants you to sign in with your Ethereum account:"
RFC3339_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

#: The ``api`` fixture of conftest.py: ``api(method, path, headers=, json_body=)`` -> HttpResult
#: (``.status``, ``.headers``, ``.body``: parsed JSON).
Api = Callable[..., Any]
HttpResult = Any


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def new_account() -> LocalAccount:
    """A fresh random wallet (private key generated locally by eth-account)."""
    return Account.create()


def sign(account: LocalAccount, message: str) -> str:
    """The EIP-191 ``personal_sign`` signature of ``message`` as 0x-prefixed hex (65 bytes)."""
    signed = account.sign_message(encode_defunct(text=message))
    signature = "0x" + bytes(signed.signature).hex()
    assert len(signature) == 2 + 2 * 65
    return signature


def bearer(access_token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {access_token}"}


def assert_error(res: HttpResult, status: int, code: str) -> dict[str, Any]:
    """``res`` is ``status`` with an OpenAI-shaped error body carrying ``code``; returns it."""
    assert res.status == status, f"expected {status} {code}, got {res.status}: {res.body!r}"
    assert isinstance(res.body, dict) and isinstance(res.body.get("error"), dict), res.body
    error = res.body["error"]
    assert error.get("code") == code, f"expected code {code!r}: {res.body!r}"
    assert isinstance(error.get("message"), str) and error["message"], res.body
    assert isinstance(error.get("type"), str) and error["type"], res.body
    assert "param" in error, res.body
    return error


def replace_line(message: str, prefix: str, new_line: str) -> str:
    """``message`` with its one line starting with ``prefix`` replaced by ``new_line``."""
    lines = message.split("\n")
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"expected one line starting with {prefix!r} in:\n{message}"
    lines[hits[0]] = new_line
    return "\n".join(lines)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Siwe:
    """The SIWE endpoints of one gateway, driven with eth-account signatures."""

    def __init__(self, api: Api, domain: str) -> None:
        self.api = api
        self.domain = domain

    def challenge_raw(self, wallet_address: str, chain_id: int | None = None) -> HttpResult:
        body: dict[str, Any] = {"wallet_address": wallet_address}
        if chain_id is not None:
            body["chain_id"] = chain_id
        return self.api("POST", "/v1/auth/siwe/challenge", json_body=body)

    def challenge(self, account: LocalAccount, chain_id: int | None = BASE_SEPOLIA) -> str:
        """A fresh challenge message for ``account`` (asked for with a lower-case address)."""
        res = self.challenge_raw(account.address.lower(), chain_id)
        assert res.status == 200, f"challenge: {res.status} {res.body!r}"
        message = res.body["message"]
        assert isinstance(message, str) and message
        return message

    def signed(self, account: LocalAccount) -> tuple[str, str]:
        """A fresh challenge signed by ``account``: ``(message, signature)``."""
        message = self.challenge(account)
        return message, sign(account, message)

    def verify_raw(self, wallet_address: str, message: str, signature: str) -> HttpResult:
        return self.api(
            "POST",
            "/v1/auth/siwe/verify",
            json_body={
                "wallet_address": wallet_address,
                "message": message,
                "signature": signature,
            },
        )

    def sign_in(self, account: LocalAccount) -> dict[str, Any]:
        """Challenge, sign, verify; returns the verify response body."""
        message, signature = self.signed(account)
        res = self.verify_raw(account.address, message, signature)
        assert res.status == 200, f"verify: {res.status} {res.body!r}"
        return res.body

    def access_token(self, account: LocalAccount) -> str:
        return self.sign_in(account)["tokens"]["access_token"]


@pytest.fixture(scope="session")
def siwe(api: Api, gateway_url: str) -> Siwe:
    """SIWE helper for the gateway; its SIWE domain is the bound ``host:port`` by default."""
    return Siwe(api, gateway_url.split("://", 1)[1])


def me(api: Api, access_token: str) -> HttpResult:
    return api("GET", "/v1/me", headers=bearer(access_token))


def refresh(api: Api, refresh_token: str) -> HttpResult:
    return api("POST", "/v1/auth/refresh", json_body={"refresh_token": refresh_token})


def credits_with_key(api: Api, api_key: str) -> HttpResult:
    return api("GET", "/v1/credits/me", headers={"x-api-key": api_key})


def assert_token_pair(tokens: Any) -> None:
    assert isinstance(tokens, dict), tokens
    assert isinstance(tokens.get("access_token"), str) and tokens["access_token"], tokens
    assert isinstance(tokens.get("refresh_token"), str) and tokens["refresh_token"], tokens
    assert tokens["access_token"] != tokens["refresh_token"]
    assert tokens.get("token_type") == "bearer", tokens
    assert tokens.get("expires_in") == ACCESS_TTL_S, tokens


# --------------------------------------------------------------------------------------------
# Challenge
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chain_id", ALLOWED_CHAINS)
def test_challenge_is_an_eip4361_message(siwe: Siwe, chain_id: int) -> None:
    """The challenge names the server's domain, the EIP-55 address, the chain and the nonce."""
    account = new_account()
    res = siwe.challenge_raw(account.address.lower(), chain_id)
    assert res.status == 200, res.body
    body = res.body
    assert body["wallet_address"] == account.address  # EIP-55, whatever case was sent
    assert body["expires_in_seconds"] == NONCE_TTL_S
    nonce = body["nonce"]
    assert isinstance(nonce, str) and len(nonce) >= 8 and nonce.isalnum(), nonce

    lines = body["message"].split("\n")
    assert lines[0] == f"{siwe.domain}{PREAMBLE}", lines
    assert lines[1] == account.address
    assert lines[2] == ""
    assert f"Chain ID: {chain_id}" in lines
    assert f"Nonce: {nonce}" in lines
    assert "Version: 1" in lines
    assert any(line.startswith("URI: ") for line in lines), lines
    for tag in ("Issued At: ", "Expiration Time: "):
        values = [line[len(tag):] for line in lines if line.startswith(tag)]
        assert len(values) == 1 and RFC3339_UTC_RE.match(values[0]), (tag, lines)


def test_challenge_defaults_to_mainnet_and_issues_fresh_nonces(siwe: Siwe) -> None:
    account = new_account()
    first = siwe.challenge_raw(account.address)
    second = siwe.challenge_raw(account.address)
    assert first.status == second.status == 200, (first.body, second.body)
    assert "Chain ID: 1" in first.body["message"].split("\n")
    assert first.body["nonce"] != second.body["nonce"]


def test_challenge_rejects_an_unsupported_chain(siwe: Siwe) -> None:
    res = siwe.challenge_raw(new_account().address, UNSUPPORTED_CHAIN)
    assert_error(res, 401, "siwe_chain_invalid")


# --------------------------------------------------------------------------------------------
# Sessions: verify, me, refresh, reuse detection, revoke
# --------------------------------------------------------------------------------------------


def test_sign_in_refresh_reuse_and_revoke(api: Api, siwe: Siwe) -> None:
    """The whole session life cycle of one wallet, signed with eth-account."""
    account = new_account()

    # Challenge -> sign (a real EIP-191 signature, recoverable locally) -> verify.
    message = siwe.challenge(account)
    signature = sign(account, message)
    recovered = Account.recover_message(encode_defunct(text=message), signature=signature)
    assert recovered == account.address
    res = siwe.verify_raw(account.address, message, signature)
    assert res.status == 200, res.body
    first = res.body
    assert first["wallet_address"] == account.address
    assert first["created"] is True
    assert first["credits"] == 0  # no sign-up grant by default
    assert_token_pair(first["tokens"])
    access1, refresh1 = first["tokens"]["access_token"], first["tokens"]["refresh_token"]

    # The access token authenticates /v1/me.
    res = me(api, access1)
    assert res.status == 200, res.body
    assert res.body == {"wallet_address": account.address, "credits": 0, "created": False}

    # Signing in again is not a new account.
    again = siwe.sign_in(account)
    assert again["created"] is False
    assert again["wallet_address"] == account.address
    assert_token_pair(again["tokens"])
    other_session_access = again["tokens"]["access_token"]
    other_session_refresh = again["tokens"]["refresh_token"]

    # Refresh rotates the pair; the new access token works.
    res = refresh(api, refresh1)
    assert res.status == 200, res.body
    assert_token_pair(res.body)
    access2, refresh2 = res.body["access_token"], res.body["refresh_token"]
    assert refresh2 != refresh1 and access2 != access1
    res = me(api, access2)
    assert res.status == 200 and res.body["wallet_address"] == account.address, res.body

    # Presenting the already-rotated refresh token again is theft: the family is revoked.
    assert_error(refresh(api, refresh1), 401, "refresh_token_reused")
    assert_error(me(api, access2), 401, "invalid_token")
    assert_error(refresh(api, refresh2), 401, "invalid_token")

    # The wallet's other session (another family) is untouched; revoking it ends it.
    res = me(api, other_session_access)
    assert res.status == 200, res.body
    res = api("POST", "/v1/auth/revoke", json_body={"refresh_token": other_session_refresh})
    assert res.status == 200, res.body
    assert res.body == {"status": "revoked"}
    assert_error(me(api, other_session_access), 401, "invalid_token")
    assert_error(refresh(api, other_session_refresh), 401, "invalid_token")

    # A brand-new sign-in still works afterwards.
    assert me(api, siwe.access_token(account)).status == 200


def test_me_without_or_with_a_bogus_token_is_401(api: Api) -> None:
    assert api("GET", "/v1/me").status == 401
    assert_error(me(api, "not.a.jwt"), 401, "invalid_token")


# --------------------------------------------------------------------------------------------
# SIWE rejections
# --------------------------------------------------------------------------------------------


def test_wrong_domain_is_rejected(siwe: Siwe) -> None:
    account = new_account()
    message = siwe.challenge(account)
    forged = replace_line(message, siwe.domain + " ", f"evil.example.com{PREAMBLE}")
    res = siwe.verify_raw(account.address, forged, sign(account, forged))
    assert_error(res, 401, "siwe_domain_mismatch")


def test_reused_nonce_is_rejected(siwe: Siwe) -> None:
    account = new_account()
    message, signature = siwe.signed(account)
    assert siwe.verify_raw(account.address, message, signature).status == 200
    res = siwe.verify_raw(account.address, message, signature)
    assert_error(res, 401, "siwe_nonce_invalid")


def test_nonce_not_issued_by_the_server_is_rejected(siwe: Siwe) -> None:
    account = new_account()
    message = siwe.challenge(account)
    made_up = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(22))
    forged = replace_line(message, "Nonce: ", f"Nonce: {made_up}")
    res = siwe.verify_raw(account.address, forged, sign(account, forged))
    assert_error(res, 401, "siwe_nonce_invalid")


def test_nonce_issued_for_another_wallet_is_rejected(siwe: Siwe) -> None:
    """A nonce is bound to the wallet it was issued for."""
    owner, thief = new_account(), new_account()
    message = siwe.challenge(owner)
    forged = replace_line(message, owner.address, thief.address)
    res = siwe.verify_raw(thief.address, forged, sign(thief, forged))
    assert_error(res, 401, "siwe_nonce_invalid")


def test_expired_message_is_rejected(siwe: Siwe) -> None:
    account = new_account()
    message = siwe.challenge(account)
    past = rfc3339(datetime.now(timezone.utc) - timedelta(minutes=10))
    forged = replace_line(message, "Expiration Time: ", f"Expiration Time: {past}")
    res = siwe.verify_raw(account.address, forged, sign(account, forged))
    assert_error(res, 401, "siwe_expired")


def test_wrong_chain_in_message_is_rejected(siwe: Siwe) -> None:
    account = new_account()
    message = siwe.challenge(account, chain_id=1)
    forged = replace_line(message, "Chain ID: ", f"Chain ID: {UNSUPPORTED_CHAIN}")
    res = siwe.verify_raw(account.address, forged, sign(account, forged))
    assert_error(res, 401, "siwe_chain_invalid")


def test_signature_by_another_key_is_rejected_and_spends_the_nonce(siwe: Siwe) -> None:
    account, impostor = new_account(), new_account()
    message = siwe.challenge(account)
    res = siwe.verify_raw(account.address, message, sign(impostor, message))
    assert_error(res, 401, "siwe_signature_invalid")
    # One attempt per challenge: the genuine signature no longer helps.
    res = siwe.verify_raw(account.address, message, sign(account, message))
    assert_error(res, 401, "siwe_nonce_invalid")


def test_message_for_another_wallet_is_403(siwe: Siwe) -> None:
    account, other = new_account(), new_account()
    message, signature = siwe.signed(account)
    res = siwe.verify_raw(other.address, message, signature)
    assert_error(res, 403, "wallet_mismatch")


def has_mixed_case(address: str) -> bool:
    """True when an EIP-55 address has upper- and lower-case letters (a checksum to break)."""
    letters = [c for c in address[2:] if c.isalpha()]
    return any(c.isupper() for c in letters) and any(c.islower() for c in letters)


def break_checksum(message: str) -> str:
    """``message`` with one upper-case letter of its address lowered: an invalid EIP-55 spelling
    (still mixed case, so it is not the all-lower-case form the grammar also accepts)."""
    address = message.split("\n")[1]
    i = next(i for i, c in enumerate(address) if i >= 2 and c.isupper())
    return message.replace(address, address[:i] + address[i].lower() + address[i + 1 :], 1)


MALFORMATIONS: dict[str, Callable[[str], str]] = {
    "not_siwe": lambda m: "Please sign this to log in.",
    "crlf_line_ends": lambda m: m.replace("\n", "\r\n"),
    "unknown_trailing_line": lambda m: m + "\nFavourite Colour: blue",
    "missing_nonce_line": lambda m: "\n".join(
        line for line in m.split("\n") if not line.startswith("Nonce: ")
    ),
    "version_2": lambda m: replace_line(m, "Version: ", "Version: 2"),
    "bad_eip55_checksum": break_checksum,
}


@pytest.mark.parametrize("mangle", MALFORMATIONS.values(), ids=MALFORMATIONS.keys())
def test_malformed_message_is_rejected(siwe: Siwe, mangle: Callable[[str], str]) -> None:
    account = new_account()
    while not has_mixed_case(account.address):  # rare (all letters one case): draw again
        account = new_account()
    message = siwe.challenge(account)
    bad = mangle(message)
    assert bad != message
    res = siwe.verify_raw(account.address, bad, sign(account, bad))
    assert_error(res, 401, "siwe_message_invalid")


# --------------------------------------------------------------------------------------------
# API keys with the session JWT
# --------------------------------------------------------------------------------------------


def test_api_key_create_list_revoke_round_trip(api: Api, siwe: Siwe) -> None:
    account = new_account()
    access = siwe.access_token(account)

    res = api(
        "POST",
        "/v1/api-keys",
        headers=bearer(access),
        json_body={"wallet_address": account.address.lower(), "key_name": "ci-key"},
    )
    assert res.status == 201, res.body
    api_key, meta = res.body["api_key"], res.body["metadata"]
    key_id = meta["key_id"]
    assert isinstance(key_id, str) and key_id
    assert api_key.startswith(f"vw_{key_id}_") and len(api_key) > len(f"vw_{key_id}_")
    assert meta["key_name"] == "ci-key"
    assert meta["created_at"]
    assert "last_used_at" in meta

    # The key works.
    res = credits_with_key(api, api_key)
    assert res.status == 200, res.body
    assert res.body["wallet_address"] == account.address
    assert res.body["credits"] == 0

    # It is listed (a bare array, no secrets).
    res = api("GET", "/v1/api-keys", headers=bearer(access))
    assert res.status == 200, res.body
    assert isinstance(res.body, list), res.body
    listed = {k["key_id"]: k for k in res.body}
    assert key_id in listed and listed[key_id]["key_name"] == "ci-key", res.body
    assert api_key not in str(res.body)

    # Revoked: refused at once, and no longer listed.
    res = api("DELETE", f"/v1/api-keys/{key_id}", headers=bearer(access))
    assert res.status == 200, res.body
    assert res.body == {"status": "revoked", "key_id": key_id}
    assert_error(credits_with_key(api, api_key), 401, "invalid_api_key")
    res = api("GET", "/v1/api-keys", headers=bearer(access))
    assert res.status == 200 and key_id not in {k["key_id"] for k in res.body}, res.body


def test_api_key_for_another_wallet_is_403(api: Api, siwe: Siwe) -> None:
    account, other = new_account(), new_account()
    res = api(
        "POST",
        "/v1/api-keys",
        headers=bearer(siwe.access_token(account)),
        json_body={"wallet_address": other.address, "key_name": "not-mine"},
    )
    assert_error(res, 403, "wallet_mismatch")


def test_api_keys_are_private_to_their_wallet(api: Api, siwe: Siwe) -> None:
    """Another wallet's JWT neither lists nor revokes a key."""
    owner, other = new_account(), new_account()
    owner_access, other_access = siwe.access_token(owner), siwe.access_token(other)
    res = api(
        "POST",
        "/v1/api-keys",
        headers=bearer(owner_access),
        json_body={"wallet_address": owner.address, "key_name": "owned"},
    )
    assert res.status == 201, res.body
    api_key, key_id = res.body["api_key"], res.body["metadata"]["key_id"]

    res = api("GET", "/v1/api-keys", headers=bearer(other_access))
    assert res.status == 200 and res.body == [], res.body
    res = api("DELETE", f"/v1/api-keys/{key_id}", headers=bearer(other_access))
    assert 400 <= res.status < 500, res.body
    assert credits_with_key(api, api_key).status == 200


# --------------------------------------------------------------------------------------------
# agent-router aliases: SIWE in the body or the query
# --------------------------------------------------------------------------------------------


def router_list(api: Api, siwe: Siwe, account: LocalAccount, quote_via: Any) -> HttpResult:
    """``GET /v1/auth/keys`` with a freshly signed message in the (URL-encoded) query."""
    message, signature = siwe.signed(account)
    query = urlencode({"message": message, "signature": signature}, quote_via=quote_via)
    return api("GET", f"/v1/auth/keys?{query}")


def router_create(api: Api, siwe: Siwe, account: LocalAccount, label: str) -> HttpResult:
    message, signature = siwe.signed(account)
    return api(
        "POST",
        "/v1/auth/keys",
        json_body={"message": message, "signature": signature, "label": label},
    )


def test_router_key_flow(api: Api, siwe: Siwe) -> None:
    """Create (SIWE in the body) -> list (SIWE in the query) -> revoke -> key refused -> the
    list shows it revoked."""
    account = new_account()

    res = router_create(api, siwe, account, "agent")
    assert res.status == 201, res.body
    key_id, api_key = res.body["id"], res.body["key"]
    assert set(res.body) >= {"id", "key", "label", "created_at"}, res.body
    assert res.body["label"] == "agent"
    assert api_key.startswith(f"vw_{key_id}_")
    assert RFC3339_UTC_RE.match(res.body["created_at"]), res.body

    res = credits_with_key(api, api_key)
    assert res.status == 200 and res.body["wallet_address"] == account.address, res.body

    # Both query encodings: form style (spaces as '+') and percent style (spaces as %20).
    for quote_via in (quote_plus, quote):
        res = router_list(api, siwe, account, quote_via)
        assert res.status == 200, res.body
        entries = {k["id"]: k for k in res.body["data"]}
        assert key_id in entries, res.body
        entry = entries[key_id]
        assert entry["label"] == "agent"
        assert entry["revoked_at"] is None
        assert set(entry) >= {"id", "label", "created_at", "last_used_at", "revoked_at"}
        assert api_key not in str(res.body)

    message, signature = siwe.signed(account)
    res = api(
        "DELETE", f"/v1/auth/keys/{key_id}", json_body={"message": message, "signature": signature}
    )
    assert res.status == 200, res.body
    assert res.body == {"revoked": True}
    assert_error(credits_with_key(api, api_key), 401, "invalid_api_key")

    res = router_list(api, siwe, account, quote_plus)
    assert res.status == 200, res.body
    entry = {k["id"]: k for k in res.body["data"]}[key_id]
    assert isinstance(entry["revoked_at"], str) and RFC3339_UTC_RE.match(entry["revoked_at"])


def test_router_key_nonces_are_single_use(api: Api, siwe: Siwe) -> None:
    account = new_account()
    message, signature = siwe.signed(account)
    body = {"message": message, "signature": signature, "label": "once"}
    assert api("POST", "/v1/auth/keys", json_body=body).status == 201
    res = api("POST", "/v1/auth/keys", json_body={**body, "label": "twice"})
    assert_error(res, 401, "siwe_nonce_invalid")
    # The same signed message cannot be replayed on the query surface either.
    query = urlencode({"message": message, "signature": signature})
    assert_error(api("GET", f"/v1/auth/keys?{query}"), 401, "siwe_nonce_invalid")


def test_router_rejects_a_foreign_signature(api: Api, siwe: Siwe) -> None:
    account, impostor = new_account(), new_account()
    message = siwe.challenge(account)
    res = api(
        "POST",
        "/v1/auth/keys",
        json_body={"message": message, "signature": sign(impostor, message), "label": "x"},
    )
    assert_error(res, 401, "siwe_signature_invalid")
    assert api("GET", "/v1/auth/keys").status == 401  # no credentials at all


def test_router_cannot_revoke_another_wallets_key(api: Api, siwe: Siwe) -> None:
    owner, other = new_account(), new_account()
    res = router_create(api, siwe, owner, "owned")
    assert res.status == 201, res.body
    key_id, api_key = res.body["id"], res.body["key"]
    message, signature = siwe.signed(other)
    res = api(
        "DELETE", f"/v1/auth/keys/{key_id}", json_body={"message": message, "signature": signature}
    )
    assert 400 <= res.status < 500, res.body
    assert credits_with_key(api, api_key).status == 200


def test_usage_by_wallet(api: Api, siwe: Siwe) -> None:
    """``/v1/usage/{wallet}``: own wallet with its key (any address case) or SIWE; others 403."""
    account, other = new_account(), new_account()
    res = router_create(api, siwe, account, "usage")
    assert res.status == 201, res.body
    key_id, api_key = res.body["id"], res.body["key"]

    for spelling in (account.address, account.address.lower()):
        res = api("GET", f"/v1/usage/{spelling}", headers={"x-api-key": api_key})
        assert res.status == 200, res.body
        body = res.body
        assert body["wallet"] == account.address
        for field in ("balance_usdc", "locked_usdc", "available_usdc"):
            assert body[field] == 0, body
        keys = {k["api_key_id"]: k for k in body["keys"]}
        assert key_id in keys and keys[key_id]["label"] == "usage", body
        assert keys[key_id]["request_count"] == 0

    # The same answer with a SIWE message in the query instead of a key.
    message, signature = siwe.signed(account)
    query = urlencode({"message": message, "signature": signature})
    res = api("GET", f"/v1/usage/{account.address}?{query}")
    assert res.status == 200 and res.body["wallet"] == account.address, res.body

    # Another wallet's usage with this wallet's key is forbidden.
    res = api("GET", f"/v1/usage/{other.address}", headers={"x-api-key": api_key})
    assert_error(res, 403, "wallet_mismatch")
