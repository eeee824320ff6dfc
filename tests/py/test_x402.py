"""x402 pay-per-request tests: the official ``x402`` Python SDK paying the real gateway.

Every payment in this module is made by the official SDK (PyPI ``x402``, pinned in
requirements.txt), exactly as an agent would make it: an ``x402ClientSync`` with the EVM
``exact`` scheme registered for an ``eth_account`` wallet (``register_exact_evm_client``, which
registers v2 on ``eip155:*`` and v1 on the legacy network names), fed the gateway's own 402
answer. Nothing here signs an authorization by hand. The SDK picks the protocol version from
the 402 it is given, so both versions are driven from the same answer:

* **v1** (``X-PAYMENT``): the SDK parses the 402's JSON body (``x402Version: 1``), as a client
  that ignores the ``PAYMENT-REQUIRED`` header would;
* **v2** (``PAYMENT-SIGNATURE``): the SDK decodes the ``PAYMENT-REQUIRED`` header (the SDK's
  own precedence when both are present).

Headers are built with the SDK's ``x402HTTPClientSync.encode_payment_signature_header`` and
receipts read with its ``decode_payment_response_header``. The SDK's automatic transports are
exercised too: the sync ``requests`` adapter (``x402_requests``) and the async httpx transport
(``x402HttpxClient``), which see the 402, pay and retry on their own.

The gateway is started by conftest.py with ``x402.facilitator_url`` pointing at the simulator's
facilitator (``<simulator>/facilitator``), so these tests can read and set the very USDC ledger
the gateway settles against: ``GET/POST /facilitator/_balance`` and ``GET /facilitator/_stats``
(``settle``/``settled``/``refused`` counters); ``GET /_sim/stats`` counts upstream generations.

Covered: chat (unary and streaming, with the change credited back as a ``refund``), the money-in
routes (``/v1/auth/agent-onboard``, ``/v1/credits/purchase`` incl. its 403 for a wallet that is
not the payer, ``/v1/topup``), a replayed SDK payment (409 ``x402_nonce_reused``, nothing
generated or settled), and a payer with no USDC (402, no answer, nothing settled).

Every test uses fresh random wallets (``Account.create()``); unseen addresses start with
1,000 USDC at the simulated facilitator.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlparse

import pytest
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402Client, x402ClientSync
from x402.http import (
    decode_payment_required_header,
    decode_payment_response_header,
    decode_payment_signature_header,
    x402HTTPClientSync,
)
from x402.http.clients.httpx import x402HttpxClient
from x402.http.clients.requests import x402_requests
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.schemas import PaymentRequired, SettleResponse
from x402.schemas.v1 import PaymentRequiredV1

# --------------------------------------------------------------------------------------------
# What the gateway offers by default (config x402.*)
# --------------------------------------------------------------------------------------------

NETWORK_V1 = "base-sepolia"
NETWORK_V2 = "eip155:84532"
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
#: The EIP-712 domain of USDC on Base Sepolia (``extra``).
USDC_DOMAIN = {"name": "USDC", "version": "2"}
#: x402.min_quote: the smallest quote, and the least a paid chat call keeps (atomic USDC).
MIN_QUOTE = 1_000
#: What an unseen address holds at the simulated facilitator ($1000).
DEFAULT_FACILITATOR_BALANCE = 1_000_000_000
#: The SDK refuses, client-side, to pay more than $1 per payment unless told otherwise
#: (``DEFAULT_MAX_AMOUNT_PER_PAYMENT``); money-in tests pay more, so clients allow up to this.
SPEND_CAP = "$10"

CHAT = "/v1/chat/completions"
ONBOARD = "/v1/auth/agent-onboard"
PURCHASE = "/v1/credits/purchase"
TOPUP = "/v1/topup"

VERSIONS = ("v1", "v2")
TX_HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")

#: The ``api`` fixture of conftest.py: ``api(method, path, headers=, json_body=)`` -> HttpResult.
Api = Callable[..., Any]


def chat_body(stream: bool = False, content: str = "pay per call") -> dict[str, Any]:
    """A chat request whose worst case (2000 tokens) is well above the floor: calls get change."""
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 2000,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# --------------------------------------------------------------------------------------------
# The simulator's facilitator (the USDC ledger the gateway settles against)
# --------------------------------------------------------------------------------------------


@dataclass
class Simulator:
    """Control endpoints of ``vectorway simulate``: its facilitator ledger and its counters."""

    url: str
    session: requests.Session

    def _get(self, path: str) -> Any:
        res = self.session.get(f"{self.url}{path}", timeout=10)
        assert res.status_code == 200, f"GET {path}: {res.status_code} {res.text}"
        return res.json()

    def balance(self, address: str) -> int:
        """The address's atomic-USDC balance at the facilitator."""
        return int(self._get(f"/facilitator/_balance?address={quote(address)}")["balance"])

    def set_balance(self, address: str, amount: int) -> None:
        res = self.session.post(
            f"{self.url}/facilitator/_balance",
            json={"address": address, "amount": amount},
            timeout=10,
        )
        assert res.status_code == 200, f"POST /facilitator/_balance: {res.status_code} {res.text}"
        assert self.balance(address) == amount

    def stats(self) -> dict[str, int]:
        """``{verify, settle, settled, refused, supported}`` call counters."""
        return self._get("/facilitator/_stats")

    def generations(self) -> int:
        """Generation requests the upstream simulator has answered so far."""
        return int(self._get("/_sim/stats")["generations"])


@pytest.fixture(scope="session")
def sim(simulator: Any) -> Iterator[Simulator]:
    """The simulator the gateway is configured against (upstream and facilitator)."""
    session = requests.Session()
    session.trust_env = False  # never send loopback traffic through a CI machine's proxy
    yield Simulator(simulator.url, session)
    session.close()


# --------------------------------------------------------------------------------------------
# The SDK payer
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """An HTTP answer in the shape of conftest's HttpResult (lower-cased header names)."""

    status: int
    headers: dict[str, str]
    body: Any


def reply_of(status: int, headers: Any, text: str) -> Reply:
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = text
    return Reply(status, {k.lower(): v for k, v in headers.items()}, body)


class Payer:
    """A wallet paying with the official SDK: ``x402ClientSync`` + EVM exact (v1 and v2)."""

    def __init__(self, account: LocalAccount | None = None) -> None:
        self.account = account or Account.create()
        self.client = x402ClientSync()
        register_exact_evm_client(self.client, self.account)
        self.client.set_spend_controls({"max_amount_per_payment": SPEND_CAP})
        self.http = x402HTTPClientSync(self.client)

    @property
    def address(self) -> str:
        """EIP-55 checksummed address."""
        return self.account.address

    def payment_required(self, challenge: Any, version: str) -> PaymentRequired | PaymentRequiredV1:
        """The SDK's reading of a 402: v2 from ``PAYMENT-REQUIRED``, v1 from the JSON body."""
        assert challenge.status == 402, f"expected a 402, got {challenge.status}: {challenge.body!r}"
        if version == "v2":
            headers = challenge.headers

            def get_header(name: str) -> str | None:
                return headers.get(name.lower())

        else:  # a v1 client: looks at the JSON body only

            def get_header(name: str) -> str | None:
                return None

        required = self.http.get_payment_required_response(get_header, challenge.body)
        assert required.x402_version == (2 if version == "v2" else 1), required
        return required

    def payment_header(self, required: PaymentRequired | PaymentRequiredV1) -> dict[str, str]:
        """``{"X-PAYMENT": …}`` (v1) or ``{"PAYMENT-SIGNATURE": …}`` (v2), signed by the SDK."""
        payload = self.client.create_payment_payload(required)
        return self.http.encode_payment_signature_header(payload)


@dataclass
class Paid:
    """One SDK payment round trip: the unpaid 402, the header the SDK sent, the paid answer."""

    challenge: Any
    quote: int
    header: dict[str, str]
    reply: Any

    @property
    def header_name(self) -> str:
        return next(iter(self.header))

    def receipt(self) -> SettleResponse:
        """The settlement receipt header, decoded by the SDK; the other version's is absent."""
        name, other = (
            ("x-payment-response", "payment-response")
            if self.header_name == "X-PAYMENT"
            else ("payment-response", "x-payment-response")
        )
        assert name in self.reply.headers, f"no {name} header: {self.reply.headers}"
        assert other not in self.reply.headers, self.reply.headers
        return decode_payment_response_header(self.reply.headers[name])


def quote_of(challenge: Any) -> int:
    """The price of a 402 (v1 body), checked against the v2 header's."""
    assert challenge.status == 402, f"expected 402, got {challenge.status}: {challenge.body!r}"
    v1 = challenge.body["accepts"][0]["maxAmountRequired"]
    v2 = decode_payment_required_header(challenge.headers["payment-required"]).accepts[0].amount
    assert v1 == v2, f"v1 asks {v1}, v2 asks {v2}"
    return int(v1)


def pay(api: Api, payer: Payer, version: str, path: str, body: Any) -> Paid:
    """Unpaid request -> 402 -> SDK payment (``version``) -> the same request, paid."""
    challenge = api("POST", path, json_body=body)
    quote_ = quote_of(challenge)
    header = payer.payment_header(payer.payment_required(challenge, version))
    expected = "X-PAYMENT" if version == "v1" else "PAYMENT-SIGNATURE"
    assert list(header) == [expected], header
    reply = api("POST", path, headers=header, json_body=body)
    return Paid(challenge, quote_, header, reply)


def assert_error(res: Any, status: int, code: str) -> dict[str, Any]:
    """``res`` is ``status`` with an OpenAI-shaped error body carrying ``code``."""
    assert res.status == status, f"expected {status} {code}, got {res.status}: {res.body!r}"
    assert isinstance(res.body, dict) and isinstance(res.body.get("error"), dict), res.body
    error = res.body["error"]
    assert error.get("code") == code, f"expected code {code!r}: {res.body!r}"
    assert isinstance(error.get("message"), str) and error["message"], res.body
    return error


def assert_paid_headers(reply: Any, payer: Payer) -> None:
    assert reply.headers.get("x-payment-method") == "x402", reply.headers
    assert reply.headers.get("x-payer-address") == payer.address, reply.headers


def assert_receipt(paid: Paid, payer: Payer, version: str) -> SettleResponse:
    receipt = paid.receipt()
    assert receipt.success is True, receipt
    assert receipt.network == (NETWORK_V1 if version == "v1" else NETWORK_V2), receipt
    assert (receipt.payer or "").lower() == payer.address.lower(), receipt
    assert receipt.amount == str(paid.quote), receipt
    assert TX_HASH_RE.match(receipt.transaction), receipt
    return receipt


def usd_micros(usd: str) -> int:
    """``"0.001000"`` -> 1000 (atomic USDC)."""
    assert re.fullmatch(r"\d+\.\d+", usd), f"not a decimal dollar string: {usd!r}"
    micros = Decimal(usd) * 1_000_000
    assert micros == micros.to_integral_value(), usd
    return int(micros)


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """``(event name or None, data)`` for every server-sent event in ``text``."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def key_for(gateway: Any, wallet: str, name: str) -> str:
    """An API key for ``wallet`` from the admin CLI (to read what x402 credited to it)."""
    return gateway.provision(wallet, None, name).api_key


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def refunds(api: Api, api_key: str) -> list[dict[str, Any]]:
    res = api("GET", "/v1/credits/ledger?kind=refund", headers={"x-api-key": api_key})
    assert res.status == 200, f"GET /v1/credits/ledger: {res.status} {res.body!r}"
    return res.body["events"]


def credits(api: Api, api_key: str) -> int:
    res = api("GET", "/v1/credits/me", headers={"x-api-key": api_key})
    assert res.status == 200, f"GET /v1/credits/me: {res.status} {res.body!r}"
    return res.body["credits"]


# --------------------------------------------------------------------------------------------
# The 402 answer, as the SDK reads it
# --------------------------------------------------------------------------------------------


def test_unpaid_chat_is_a_402_the_sdk_reads_in_both_versions(api: Api) -> None:
    challenge = api("POST", CHAT, json_body=chat_body())
    quote_ = quote_of(challenge)
    assert quote_ >= MIN_QUOTE
    assert challenge.body["x402Version"] == 1 and isinstance(challenge.body["error"], str)

    payer = Payer()
    v1 = payer.payment_required(challenge, "v1")
    assert isinstance(v1, PaymentRequiredV1)
    (r1,) = v1.accepts
    assert (r1.scheme, r1.network, r1.asset, r1.pay_to) == ("exact", NETWORK_V1, USDC, PAY_TO)
    assert r1.max_amount_required == str(quote_)
    assert urlparse(r1.resource).path == CHAT
    assert r1.description and r1.mime_type == "application/json"
    assert r1.max_timeout_seconds >= 10
    assert r1.extra == USDC_DOMAIN

    v2 = payer.payment_required(challenge, "v2")
    assert isinstance(v2, PaymentRequired)
    assert v2.error and v2.resource is not None and v2.resource.url == r1.resource
    (r2,) = v2.accepts
    assert (r2.scheme, r2.network, r2.asset, r2.pay_to) == ("exact", NETWORK_V2, USDC, PAY_TO)
    assert r2.amount == str(quote_)
    assert r2.max_timeout_seconds == r1.max_timeout_seconds
    assert {k: r2.extra[k] for k in ("name", "version")} == USDC_DOMAIN

    # What the SDK signs from each: an EIP-3009 authorization for exactly the quote to payTo.
    for version, required in (("v1", v1), ("v2", v2)):
        header = payer.payment_header(required)
        (value,) = header.values()
        payload = decode_payment_signature_header(value)
        auth = payload.payload["authorization"]
        assert auth["from"].lower() == payer.address.lower(), version
        assert auth["to"].lower() == PAY_TO.lower(), version
        assert auth["value"] == str(quote_), version


# --------------------------------------------------------------------------------------------
# Chat, paid per call
# --------------------------------------------------------------------------------------------


def _pay_chat_with_transport(api: Api, gateway_url: str, payer: Payer, transport: str) -> Paid:
    """The SDK's automatic 402 handling (it always picks v2: the header wins)."""
    body = chat_body()
    quote_ = quote_of(api("POST", CHAT, json_body=body))
    sent: dict[str, str] = {}
    if transport == "requests":
        payer.client.on_after_payment_creation(
            lambda ctx: sent.update(payer.http.encode_payment_signature_header(ctx.payment_payload))
        )
        session = x402_requests(payer.client)
        session.trust_env = False
        with session:
            res = session.post(f"{gateway_url}{CHAT}", json=body, timeout=30)
            reply = reply_of(res.status_code, res.headers, res.text)
    else:  # httpx: the async client and transport
        client = x402Client()
        register_exact_evm_client(client, payer.account)
        client.set_spend_controls({"max_amount_per_payment": SPEND_CAP})
        client.on_after_payment_creation(
            lambda ctx: sent.update(payer.http.encode_payment_signature_header(ctx.payment_payload))
        )

        async def run() -> Reply:
            async with x402HttpxClient(client, timeout=30, trust_env=False) as http:
                res = await http.post(f"{gateway_url}{CHAT}", json=body)
                return reply_of(res.status_code, res.headers, res.text)

        reply = asyncio.run(run())
    assert list(sent) == ["PAYMENT-SIGNATURE"], f"the SDK did not pay (v2): {sent}"
    return Paid(None, quote_, sent, reply)


@pytest.mark.parametrize("mode", ["v1", "v2", "requests", "httpx"])
def test_chat_paid_by_the_sdk_settles_and_credits_the_change(
    mode: str, api: Api, gateway: Any, gateway_url: str, sim: Simulator
) -> None:
    payer = Payer()
    before, stats = sim.balance(payer.address), sim.stats()
    if mode in VERSIONS:
        paid = pay(api, payer, mode, CHAT, chat_body())
    else:
        paid = _pay_chat_with_transport(api, gateway_url, payer, mode)
    version = "v1" if mode == "v1" else "v2"
    res = paid.reply
    assert res.status == 200, f"{mode}: {res.status} {res.body!r}"
    assert_paid_headers(res, payer)
    receipt = assert_receipt(paid, payer, version)

    assert res.body["object"] == "chat.completion"
    assert res.body["choices"][0]["message"]["content"]
    usage = res.body["usage"]
    assert usage["credit_cost"] is None, usage
    assert isinstance(usage["usd_cost"], str), usage
    kept = usd_micros(usage["usd_cost"])
    assert MIN_QUOTE <= kept < paid.quote, f"kept {kept} of {paid.quote}"

    # The whole quote moved at the facilitator, settled exactly once.
    assert before - sim.balance(payer.address) == paid.quote
    after = sim.stats()
    assert (after["settle"] - stats["settle"], after["settled"] - stats["settled"]) == (1, 1)

    # Paid − kept came back to the payer's wallet as a `refund`, referencing the transaction.
    change = paid.quote - kept
    key = key_for(gateway, payer.address, f"change-{mode}")
    assert eventually(lambda: credits(api, key) == change), (credits(api, key), change)
    (refund,) = refunds(api, key)
    assert refund["credits"] == change and refund["ref"] == receipt.transaction, refund


@pytest.mark.parametrize("version", VERSIONS)
def test_streaming_chat_paid_by_the_sdk_ends_with_a_receipt(
    version: str, api: Api, gateway: Any, sim: Simulator
) -> None:
    payer = Payer()
    before = sim.balance(payer.address)
    paid = pay(api, payer, version, CHAT, chat_body(stream=True))
    res = paid.reply
    assert res.status == 200, f"{res.status} {res.body!r}"
    assert res.headers["content-type"].startswith("text/event-stream"), res.headers
    assert_paid_headers(res, payer)
    assert isinstance(res.body, str)

    events = parse_sse(res.body)
    datas = [data for _, data in events]
    assert "[DONE]" in datas, res.body
    done = datas.index("[DONE]")
    name, last = events[-1]
    assert name == "x402-receipt" and done == len(events) - 2, f"receipt after [DONE]:\n{res.body}"
    assert res.body.index("data: [DONE]") < res.body.index("event: x402-receipt")

    chunks = [json.loads(d) for d in datas[:done]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"]
    ), "no content streamed"
    usage = [c["usage"] for c in chunks if c.get("usage")][-1]
    assert usage["credit_cost"] is None and isinstance(usage["usd_cost"], str), usage

    receipt = json.loads(last)
    assert receipt["object"] == "chat.completion.chunk" and receipt["choices"] == [], receipt
    assert receipt["network"] == (NETWORK_V1 if version == "v1" else NETWORK_V2), receipt
    assert receipt["payer"].lower() == payer.address.lower(), receipt
    assert receipt["amount"] == str(paid.quote), receipt
    assert TX_HASH_RE.match(receipt["transaction"]), receipt
    kept = int(receipt["kept"])
    assert kept == usd_micros(usage["usd_cost"]), (receipt, usage)
    assert MIN_QUOTE <= kept < paid.quote, receipt
    # The receipt also reads as an x402 SettleResponse.
    settle = SettleResponse.model_validate({**receipt, "success": True})
    assert settle.amount == str(paid.quote)

    assert before - sim.balance(payer.address) == paid.quote
    key = key_for(gateway, payer.address, f"stream-{version}")
    change = paid.quote - kept
    assert eventually(lambda: credits(api, key) == change), (credits(api, key), change)


# --------------------------------------------------------------------------------------------
# Money in: onboarding, credit purchase, top-up
# --------------------------------------------------------------------------------------------


def onboard(api: Api, payer: Payer, version: str, amount: int, key_name: str) -> Paid:
    body = {"wallet_address": payer.address, "credits": amount, "key_name": key_name}
    return pay(api, payer, version, ONBOARD, body)


@pytest.mark.parametrize(("version", "amount"), [("v1", 600_000), ("v2", 2_000_000)])
def test_agent_onboard_paid_by_the_sdk(
    version: str, amount: int, api: Api, sim: Simulator
) -> None:
    payer = Payer()
    before = sim.balance(payer.address)
    paid = onboard(api, payer, version, amount, f"agent-{version}")
    assert paid.quote == amount, "priced at the credits asked for"
    assert urlparse(paid.challenge.body["accepts"][0]["resource"]).path == ONBOARD
    res = paid.reply
    assert res.status == 200, f"{res.status} {res.body!r}"
    assert_paid_headers(res, payer)
    assert_receipt(paid, payer, version)
    v = res.body
    assert v["wallet_address"] == payer.address, v
    assert (v["credits"], v["created"], v["agent_only"]) == (amount, True, True), v
    assert v["api_key_metadata"]["key_name"] == f"agent-{version}", v
    assert before - sim.balance(payer.address) == amount

    # The key and the session work at once, and the credits are there.
    assert credits(api, v["api_key"]) == amount
    me = api("GET", "/v1/me", headers={"authorization": f"Bearer {v['tokens']['access_token']}"})
    assert me.status == 200 and me.body["wallet_address"] == payer.address, me.body
    ledger = api("GET", "/v1/credits/ledger?kind=topup", headers={"x-api-key": v["api_key"]})
    assert sum(e["credits"] for e in ledger.body["events"]) == amount, ledger.body


@pytest.mark.parametrize("version", VERSIONS)
def test_credits_purchase_paid_by_the_sdk(
    version: str, api: Api, sim: Simulator, funded_account: Any
) -> None:
    payer = Payer()
    first = onboard(api, payer, version, 500_000, "buyer")
    assert first.reply.status == 200, first.reply.body
    api_key = first.reply.body["api_key"]

    before = sim.balance(payer.address)
    paid = pay(api, payer, version, PURCHASE, {"wallet_address": payer.address, "credits": 750_000})
    assert paid.quote == 750_000
    res = paid.reply
    assert res.status == 200, f"{res.status} {res.body!r}"
    assert_paid_headers(res, payer)
    assert_receipt(paid, payer, version)
    assert res.body["wallet_address"] == payer.address, res.body
    assert res.body["credits"] == 1_250_000, res.body
    assert before - sim.balance(payer.address) == 750_000
    assert credits(api, api_key) == 1_250_000

    # Buying for an existing wallet that is not the payer: 403, and no money moves.
    before, stats = sim.balance(payer.address), sim.stats()
    other = {"wallet_address": funded_account.wallet, "credits": 500_000}
    mismatch = pay(api, payer, version, PURCHASE, other)
    assert_error(mismatch.reply, 403, "wallet_mismatch")
    assert sim.balance(payer.address) == before
    assert sim.stats()["settle"] == stats["settle"]
    assert credits(api, api_key) == 1_250_000


@pytest.mark.parametrize(("version", "dollars"), [("v1", 1), ("v2", 2)])
def test_topup_paid_by_the_sdk(version: str, dollars: int, api: Api, sim: Simulator) -> None:
    payer = Payer()
    first = onboard(api, payer, version, 500_000, "topper")
    assert first.reply.status == 200, first.reply.body

    before = sim.balance(payer.address)
    paid = pay(api, payer, version, TOPUP, {"amount": dollars})
    assert paid.quote == dollars * 1_000_000
    res = paid.reply
    assert res.status == 200, f"{res.status} {res.body!r}"
    assert_paid_headers(res, payer)
    assert_receipt(paid, payer, version)
    assert res.body["wallet"].lower() == payer.address.lower(), res.body
    assert res.body["credited_usdc"] == dollars * 1_000_000, res.body
    assert res.body["balance_usdc"] == 500_000 + dollars * 1_000_000, res.body
    assert before - sim.balance(payer.address) == dollars * 1_000_000
    assert credits(api, first.reply.body["api_key"]) == res.body["balance_usdc"]


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("route", ["chat", "topup"])
def test_a_replayed_sdk_payment_is_refused(
    route: str, version: str, api: Api, sim: Simulator
) -> None:
    payer = Payer()
    path, body = (CHAT, chat_body()) if route == "chat" else (TOPUP, {"amount": 1})
    paid = pay(api, payer, version, path, body)
    assert paid.reply.status == 200, paid.reply.body

    balance, stats, generations = sim.balance(payer.address), sim.stats(), sim.generations()
    again = api("POST", path, headers=paid.header, json_body=body)
    assert_error(again, 409, "x402_nonce_reused")
    assert "choices" not in again.body
    # Refused before any upstream or facilitator call: no generation, no settlement.
    assert sim.generations() == generations
    assert sim.stats()["settle"] == stats["settle"]
    assert sim.balance(payer.address) == balance


def _assert_refused_for_funds(res: Any) -> None:
    assert res.status == 402, f"{res.status} {res.body!r}"
    assert isinstance(res.body, dict) and "choices" not in res.body, "no answer without payment"
    assert res.body.get("x402Version") == 1, res.body
    assert res.body.get("error") == "insufficient_funds", res.body
    assert "payment-required" in res.headers, "a fresh 402 challenge"
    assert "x-payment-method" not in res.headers


@pytest.mark.parametrize("mode", ["v1", "v2", "requests"])
def test_a_payer_without_usdc_gets_a_402_and_no_answer(
    mode: str, api: Api, gateway_url: str, sim: Simulator
) -> None:
    payer = Payer()
    sim.set_balance(payer.address, 0)
    stats, generations = sim.stats(), sim.generations()
    if mode in VERSIONS:
        paid = pay(api, payer, mode, CHAT, chat_body())
    else:
        paid = _pay_chat_with_transport(api, gateway_url, payer, mode)
    _assert_refused_for_funds(paid.reply)
    after = sim.stats()
    assert after["settled"] == stats["settled"], "nothing settled"
    # The facilitator's /verify refused it before the model ran: nothing went to /settle.
    assert after["verify"] - stats["verify"] == 1, (stats, after)
    assert after["settle"] == stats["settle"], (stats, after)
    assert sim.generations() == generations, "the model never ran"
    assert sim.balance(payer.address) == 0


def test_a_payer_without_usdc_gets_no_stream(api: Api, sim: Simulator) -> None:
    """A paid stream needs the facilitator's /verify before its first byte: an unfunded payer
    gets a 402 naming the reason and not one frame, and nothing settles."""
    payer = Payer()
    sim.set_balance(payer.address, 0)
    stats = sim.stats()
    paid = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    res = paid.reply
    _assert_refused_for_funds(res)
    assert sim.stats()["settled"] == stats["settled"]
    assert sim.stats()["settle"] == stats["settle"], "nothing was sent to /settle"
    assert sim.balance(payer.address) == 0


def test_after_a_refused_settlement_the_fresh_402_is_payable(api: Api, sim: Simulator) -> None:
    """The 402 answering a refused settlement must ask for what the route costs.

    A client that pays from that fresh 402 (here: after funding its wallet) must be accepted.
    """
    payer = Payer()
    sim.set_balance(payer.address, 0)
    paid = pay(api, payer, "v2", CHAT, chat_body())
    refusal = paid.reply
    _assert_refused_for_funds(refusal)
    assert quote_of(refusal) == paid.quote, (
        f"the 402 after a refused settlement asks {quote_of(refusal)} atomic USDC, but "
        f"the route is quoted at {paid.quote} (its unpaid 402); a payment of the re-offered "
        "amount is refused"
    )
    sim.set_balance(payer.address, DEFAULT_FACILITATOR_BALANCE)
    header = payer.payment_header(payer.payment_required(refusal, "v2"))
    retry = api("POST", CHAT, headers=header, json_body=chat_body())
    assert retry.status == 200, f"{retry.status} {retry.body!r}"
