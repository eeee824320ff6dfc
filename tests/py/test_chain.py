"""x402 settled on a real EVM chain: anvil + Circle's USDC, through the x402 SDK's facilitator.

Everything that moves money here is real: a local anvil chain (tests/py/chain.py) runs Circle's
compiled FiatTokenV2_2 at whatever address the deployment gave it, on chain id 31337; the
gateway is told about that token only by configuration (``[x402.networks.anvil]`` through
``VECTORWAY_X402__NETWORKS__ANVIL__*``: chain id, asset, EIP-712 name); payers are fresh wallets
holding minted USDC and paying with the official SDK (``x402ClientSync``, EVM ``exact``); the
facilitator is the SDK's own (tests/py/sdk_facilitator.py), which simulates the transfer on
``/verify`` and sends ``transferWithAuthorization`` transactions on ``/settle``. The Gemini side
is the simulator of conftest.py.

Checked on the chain itself: ``balanceOf`` of the payer and of ``payTo`` move by exactly what
the receipts say was settled, every receipt names a mined transaction whose ``Transfer`` log
matches, and the gateway's own books (refunds, top-ups, ``usd_cost``) add up to the same sums.

Two gateways share the chain and the facilitator: one that can read the chain (the network has
an ``rpc_url``) and one that can only ask the facilitator. The failure tests make the SDK's
facilitator misbehave the way it does on a real chain (sdk_facilitator.py): an answer lost after
the transfer mined (the gateway's retry is refused with ``transaction_failed``), and a
confirmation slower than the SDK waits for (``settlement_pending``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from eth_account import Account
from web3.logs import DISCARD

import chain as chainmod
from conftest import (
    UPSTREAM_API_KEY,
    Gateway,
    ManagedProcess,
    _wait_for_gateway,
    child_env,
    http_request,
)
from sdk_facilitator import CONFIRMATION_TIMEOUT_S, SdkFacilitator
from test_x402 import (
    CHAT,
    MIN_QUOTE,
    PURCHASE,
    TOPUP,
    TX_HASH_RE,
    Payer,
    chat_body,
    parse_sse,
    pay,
    usd_micros,
)

NETWORK = chainmod.CAIP2
#: The gateway gives up on one /settle attempt after this long (and retries once).
SETTLE_TIMEOUT_MS = 3_000
#: How long a request waits for an outcome the facilitator left open: the gateway that reads
#: the chain waits long, the blind one briefly (so its background reconciliation is seen).
PENDING_WAIT_MS = {True: 12_000, False: 2_000}
#: A payer's starting USDC: $5.
FUNDS = 5_000_000


# --------------------------------------------------------------------------------------------
# Fixtures: the chain, the facilitator, two gateways
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def facilitator(chain: chainmod.Chain) -> Iterator[SdkFacilitator]:
    f = SdkFacilitator(chain)
    yield f
    f.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(facilitator: SdkFacilitator) -> Iterator[None]:
    yield
    facilitator.clear_faults()


def _start_gateway(
    request: pytest.FixtureRequest,
    tmp: pytest.TempPathFactory,
    binary: Path,
    log_dir: Path,
    simulator: ManagedProcess,
    chain: chainmod.Chain,
    facilitator: SdkFacilitator,
    pay_to: str,
    name: str,
    rpc: bool,
) -> Gateway:
    data_dir = tmp.mktemp(f"vectorway-{name}")
    env = {
        "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
        "VECTORWAY_STORE__DATA_DIR": str(data_dir),
        "VECTORWAY_UPSTREAM__BASE_URL": simulator.wait_for_url(),
        "VECTORWAY_X402__FACILITATOR_URL": facilitator.url,
        "VECTORWAY_X402__PAY_TO": pay_to,
        **chain.network_env(rpc=rpc),
        "VECTORWAY_X402__SETTLE_TIMEOUT_MS": str(SETTLE_TIMEOUT_MS),
        "VECTORWAY_X402__SETTLE_RETRIES": "1",
        "VECTORWAY_X402__SETTLE_PENDING_WAIT_MS": str(PENDING_WAIT_MS[rpc]),
        "VECTORWAY_LIMITS__IP_PER_MIN": "100000000",
        "VECTORWAY_LIMITS__IP_BURST": "100000000",
        "GEMINI_API_KEY": UPSTREAM_API_KEY,
    }
    env = child_env(env)
    proc = ManagedProcess(f"gateway-{name}", [str(binary), "serve"], env, log_dir / f"{name}.log")
    request.addfinalizer(proc.stop)
    url = _wait_for_gateway(proc, data_dir)
    return Gateway(url=url, data_dir=data_dir, binary=binary, process=proc, env=env)


@pytest.fixture(scope="module")
def pay_to() -> str:
    """A fresh payTo: its on-chain balance is what the gateways were paid."""
    return Account.create().address


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator, pay_to):
    """The gateway that can read the chain (the network has an rpc_url)."""
    return _start_gateway(
        request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator,
        pay_to, "chain-rpc", rpc=True,
    )


@pytest.fixture(scope="module")
def gw_blind(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator,
             pay_to):
    """A gateway without an rpc_url: it can only ask the facilitator."""
    return _start_gateway(
        request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator,
        pay_to, "chain-blind", rpc=False,
    )


def api_of(gateway: Gateway) -> Callable[..., Any]:
    def call(method: str, path: str, *, headers=None, json_body=None) -> Any:
        return http_request(
            method, f"{gateway.url}{path}", headers=headers, json_body=json_body, timeout=60
        )

    return call


def generations(simulator: ManagedProcess) -> int:
    res = http_request("GET", f"{simulator.wait_for_url()}/_sim/stats")
    return int(res.body["generations"])


# --------------------------------------------------------------------------------------------
# Chain checks
# --------------------------------------------------------------------------------------------


class Books:
    """On-chain balances of a payer and payTo, before a payment."""

    def __init__(self, chain: chainmod.Chain, payer: str, pay_to: str) -> None:
        self.chain, self.payer, self.pay_to = chain, payer, pay_to
        self.payer0 = chain.balance_of(payer)
        self.pay_to0 = chain.balance_of(pay_to)

    def moved(self) -> tuple[int, int]:
        """(paid by the payer, received by payTo) since construction."""
        return (
            self.payer0 - self.chain.balance_of(self.payer),
            self.chain.balance_of(self.pay_to) - self.pay_to0,
        )


def assert_mined_transfer(chain: chainmod.Chain, tx: str, payer: str, pay_to: str, value: int):
    """``tx`` is a mined, successful transaction whose one Transfer is payer → payTo, ``value``."""
    assert TX_HASH_RE.match(tx), tx
    receipt = chain.w3.eth.get_transaction_receipt(tx)
    assert receipt["status"] == 1, receipt
    # (the receipt's other log, AuthorizationUsed, is not a Transfer: skipped quietly)
    transfers = chain.token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert [(t["args"]["from"], t["args"]["to"], t["args"]["value"]) for t in transfers] == [
        (payer, pay_to, value)
    ], transfers


def chain_payer(chain: chainmod.Chain, funds: int) -> Payer:
    """An SDK payer holding ``funds`` atomic USDC on the chain. The SDK pays only tokens it
    knows unless told otherwise: this one is allowed, capped at $10 a payment."""
    payer = Payer(chain.funded_wallet(funds))
    payer.client.set_spend_controls(
        {
            "max_amount_per_payment": "$10",
            "allowed_assets": [
                {"network": NETWORK, "asset": chain.asset, "max_amount_per_payment": "10000000"}
            ],
        }
    )
    return payer


def payer_key(gateway: Gateway, wallet: str, name: str) -> str:
    return gateway.provision(wallet, None, name).api_key


def ledger(api: Callable[..., Any], key: str, kind: str) -> list[dict[str, Any]]:
    res = api("GET", f"/v1/credits/ledger?kind={kind}", headers={"x-api-key": key})
    assert res.status == 200, res.body
    return res.body["events"]


def credits_of(api: Callable[..., Any], key: str) -> int:
    res = api("GET", "/v1/credits/me", headers={"x-api-key": key})
    assert res.status == 200, res.body
    return res.body["credits"]


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def receipt_of(paid: Any) -> dict[str, Any]:
    from x402.http import decode_payment_response_header

    return decode_payment_response_header(paid.reply.headers["payment-response"]).model_dump(
        by_alias=True
    )


# --------------------------------------------------------------------------------------------
# Money that moves: chat, stream, purchase, top-up, replay
# --------------------------------------------------------------------------------------------


def test_the_supported_kinds_name_the_anvil_chain(facilitator: SdkFacilitator) -> None:
    kinds = facilitator.supported()["kinds"]
    assert {"x402Version": 2, "scheme": "exact", "network": NETWORK} in [
        {k: v for k, v in kind.items() if k != "extra"} for kind in kinds
    ], kinds


def test_a_402_offers_the_configured_token(gw: Gateway, chain: chainmod.Chain, pay_to: str):
    res = api_of(gw)("POST", CHAT, json_body=chat_body())
    assert res.status == 402, res.body
    (offer,) = res.body["accepts"]
    assert offer["network"] == "anvil", offer
    assert offer["asset"] == chain.asset and offer["payTo"] == pay_to, offer
    assert offer["extra"] == {"name": "USD Coin", "version": "2"}, offer


def test_unary_chat_settles_on_chain_and_the_change_comes_back(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    paid = pay(api, payer, "v2", CHAT, chat_body())
    assert paid.reply.status == 200, paid.reply.body
    receipt = receipt_of(paid)
    assert receipt["success"] is True and receipt["network"] == NETWORK, receipt
    assert receipt["amount"] == str(paid.quote)
    assert_mined_transfer(chain, receipt["transaction"], payer.address, pay_to, paid.quote)
    assert books.moved() == (paid.quote, paid.quote), "exactly the quote moved, once"

    # The gateway's books: kept (usage) + change (refund, referencing the transaction) = paid.
    kept = usd_micros(paid.reply.body["usage"]["usd_cost"])
    assert MIN_QUOTE <= kept < paid.quote
    key = payer_key(gw, payer.address, "chain-change")
    assert eventually(lambda: credits_of(api, key) == paid.quote - kept)
    (refund,) = ledger(api, key, "refund")
    assert refund["credits"] == paid.quote - kept and refund["ref"] == receipt["transaction"]


def test_a_stream_settles_on_chain(gw: Gateway, chain: chainmod.Chain, pay_to: str) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    paid = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    assert paid.reply.status == 200, paid.reply.body
    events = parse_sse(paid.reply.body)
    name, last = events[-1]
    assert name == "x402-receipt", paid.reply.body
    receipt = json.loads(last)
    assert receipt["network"] == NETWORK and receipt["amount"] == str(paid.quote), receipt
    assert_mined_transfer(chain, receipt["transaction"], payer.address, pay_to, paid.quote)
    assert books.moved() == (paid.quote, paid.quote)
    kept = int(receipt["kept"])
    key = payer_key(gw, payer.address, "chain-stream")
    assert eventually(lambda: credits_of(api, key) == paid.quote - kept)


def test_purchase_and_topup_credit_exactly_what_moved(
    gw: Gateway, chain: chainmod.Chain, pay_to: str
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    onboard = pay(
        api, payer, "v2", "/v1/auth/agent-onboard",
        {"wallet_address": payer.address, "credits": 500_000, "key_name": "chain"},
    )
    assert onboard.reply.status == 200, onboard.reply.body
    key = onboard.reply.body["api_key"]
    bought = pay(api, payer, "v2", PURCHASE, {"wallet_address": payer.address, "credits": 750_000})
    assert bought.reply.status == 200, bought.reply.body
    assert bought.reply.body["credits"] == 1_250_000
    topped = pay(api, payer, "v2", TOPUP, {"amount": 1})
    assert topped.reply.status == 200, topped.reply.body
    assert topped.reply.body["balance_usdc"] == 2_250_000
    for paid, amount in ((onboard, 500_000), (bought, 750_000), (topped, 1_000_000)):
        assert_mined_transfer(
            chain, receipt_of(paid)["transaction"], payer.address, pay_to, amount
        )
    assert books.moved() == (2_250_000, 2_250_000)
    topups = ledger(api, key, "topup")
    assert sorted(e["credits"] for e in topups) == [500_000, 750_000, 1_000_000]
    assert credits_of(api, key) == 2_250_000


def test_a_replay_is_refused_without_a_second_transfer(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str, simulator
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    paid = pay(api, payer, "v2", TOPUP, {"amount": 1})
    assert paid.reply.status == 200, paid.reply.body
    books = Books(chain, payer.address, pay_to)
    settles = facilitator.calls["settle"]
    again = api("POST", TOPUP, headers=paid.header, json_body={"amount": 1})
    assert again.status == 409 and again.body["error"]["code"] == "x402_nonce_reused", again.body
    assert facilitator.calls["settle"] == settles
    assert books.moved() == (0, 0)


# --------------------------------------------------------------------------------------------
# The failures of issue 16, on the chain
# --------------------------------------------------------------------------------------------


def test_an_empty_wallet_gets_no_answer_and_no_stream_and_costs_no_generation(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, simulator
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, 0)
    gens, settles = generations(simulator), facilitator.calls["settle"]
    nonce = chain.w3.eth.get_transaction_count(facilitator.account.address)
    for stream in (False, True):
        paid = pay(api, payer, "v2", CHAT, chat_body(stream=stream))
        res = paid.reply
        assert res.status == 402, f"stream={stream}: {res.status} {res.body!r}"
        assert isinstance(res.body, dict) and "choices" not in res.body
        assert res.body["error"] == "invalid_exact_evm_insufficient_balance", res.body
        assert "payment-required" in res.headers
    assert generations(simulator) == gens, "the model never ran for an unpaid call"
    assert facilitator.calls["settle"] == settles, "nothing was sent to /settle"
    assert chain.w3.eth.get_transaction_count(facilitator.account.address) == nonce, (
        "no transaction was sent"
    )


@pytest.mark.parametrize("which", ["rpc", "blind"])
def test_a_settle_answer_lost_after_the_transfer_mined_still_pays_the_call(
    which: str, request: pytest.FixtureRequest, chain: chainmod.Chain,
    facilitator: SdkFacilitator, pay_to: str,
) -> None:
    """The first /settle mines the transfer but its answer comes after the gateway's timeout;
    the gateway's retry is refused (the SDK resends the transfer, which reverts:
    ``transaction_failed``). That refusal proves nothing: the gateway looks the authorization up
    (on the chain, or through the facilitator's /verify) and answers with the paid call."""
    gateway = request.getfixturevalue("gw" if which == "rpc" else "gw_blind")
    api = api_of(gateway)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    seen = len(facilitator.settlements)
    facilitator.delay_after_settle(SETTLE_TIMEOUT_MS / 1000 + 1.0)
    paid = pay(api, payer, "v2", CHAT, chat_body())
    answers = facilitator.settlements[seen:]
    assert [a["success"] for a in answers] == [True, False], answers
    assert answers[1]["errorReason"] == "transaction_failed", answers
    first_tx = answers[0]["transaction"]
    assert paid.reply.status == 200, f"{paid.reply.status} {paid.reply.body!r}"
    assert paid.reply.body["choices"][0]["message"]["content"]
    receipt = receipt_of(paid)
    assert receipt["success"] is True, receipt
    if which == "rpc":
        assert receipt["transaction"] == first_tx, "the chain names the transfer"
    assert books.moved() == (paid.quote, paid.quote), "paid once"
    kept = usd_micros(paid.reply.body["usage"]["usd_cost"])
    key = payer_key(gateway, payer.address, f"lost-{which}")
    assert eventually(lambda: credits_of(api, key) == paid.quote - kept)


def test_a_purchase_whose_settle_answer_was_lost_is_credited(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    onboard = pay(
        api, payer, "v2", "/v1/auth/agent-onboard",
        {"wallet_address": payer.address, "credits": 500_000, "key_name": "lost"},
    )
    assert onboard.reply.status == 200, onboard.reply.body
    books = Books(chain, payer.address, pay_to)
    facilitator.delay_after_settle(SETTLE_TIMEOUT_MS / 1000 + 1.0)
    bought = pay(api, payer, "v2", PURCHASE, {"wallet_address": payer.address, "credits": 800_000})
    assert bought.reply.status == 200, f"{bought.reply.status} {bought.reply.body!r}"
    assert bought.reply.body["credits"] == 1_300_000
    assert books.moved() == (800_000, 800_000)
    assert credits_of(api, onboard.reply.body["api_key"]) == 1_300_000


@pytest.mark.parametrize("what", ["chat", "topup"])
def test_without_a_chain_every_settle_attempt_timing_out_is_resolved_by_verify(
    what: str, gw_blind: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator,
    pay_to: str,
) -> None:
    """No rpc_url, and every /settle attempt outlives the gateway's time-out (the first mines
    the transfer, its answer and the retry's come too late): that is no proof of anything, so
    the gateway does not answer 502 "facilitator failed" with the payer's money gone. It asks
    the facilitator's /verify, whose ``invalid_exact_evm_nonce_already_used`` is the chain's
    word that the authorization was used (only the facilitator and the payer hold it), and
    answers with the paid call or the credits, once."""
    api = api_of(gw_blind)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    seen, verifies = len(facilitator.settlements), facilitator.calls["verify"]
    facilitator.delay_after_settle(SETTLE_TIMEOUT_MS / 1000 + 1.0, times=2)
    path, body = (CHAT, chat_body()) if what == "chat" else (TOPUP, {"amount": 1})
    paid = pay(api, payer, "v2", path, body)
    answers = facilitator.settlements[seen:]
    assert len(answers) == 2 and answers[0]["success"] is True, answers
    assert paid.reply.status == 200, f"{paid.reply.status} {paid.reply.body!r}"
    # One /verify before the work, at least one more to resolve the unknown outcome.
    assert facilitator.calls["verify"] >= verifies + 2
    assert receipt_of(paid)["success"] is True
    amount = paid.quote if what == "chat" else 1_000_000
    assert books.moved() == (amount, amount), "paid once"
    key = payer_key(gw_blind, payer.address, f"blind-timeouts-{what}")
    if what == "chat":
        assert paid.reply.body["choices"][0]["message"]["content"]
        kept = usd_micros(paid.reply.body["usage"]["usd_cost"])
        assert eventually(lambda: credits_of(api, key) == paid.quote - kept)
        assert [e["credits"] for e in ledger(api, key, "refund")] == [paid.quote - kept]
    else:
        assert credits_of(api, key) == 1_000_000
        assert [e["credits"] for e in ledger(api, key, "topup")] == [1_000_000]
    assert books.moved() == (amount, amount)


@pytest.mark.parametrize("which", ["rpc", "blind"])
def test_a_pending_settlement_is_answered_once_it_confirms(
    which: str, request: pytest.FixtureRequest, chain: chainmod.Chain,
    facilitator: SdkFacilitator, pay_to: str,
) -> None:
    """The transfer is broadcast but not mined within the SDK's receipt wait: the SDK answers
    ``settlement_pending`` with the hash. The block is mined a second later; the gateway,
    instead of refusing the payer whose money is about to move, waits for it and answers."""
    gateway = request.getfixturevalue("gw" if which == "rpc" else "gw_blind")
    api = api_of(gateway)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    seen = len(facilitator.settlements)
    facilitator.pending_once(mine_after=1.0)
    paid = pay(api, payer, "v2", CHAT, chat_body())
    first = facilitator.settlements[seen]
    assert first["success"] is False and first["errorReason"] == "settlement_pending", first
    assert paid.reply.status == 200, f"{paid.reply.status} {paid.reply.body!r}"
    receipt = receipt_of(paid)
    assert receipt["success"] is True and receipt["transaction"] == first["transaction"], receipt
    assert_mined_transfer(chain, first["transaction"], payer.address, pay_to, paid.quote)
    assert books.moved() == (paid.quote, paid.quote)
    kept = usd_micros(paid.reply.body["usage"]["usd_cost"])
    key = payer_key(gateway, payer.address, f"pending-{which}")
    assert eventually(lambda: credits_of(api, key) == paid.quote - kept)


def test_a_settlement_pending_past_the_wait_is_credited_when_it_confirms(
    gw_blind: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,
    simulator,
) -> None:
    """The transfer confirms only after the request stopped waiting: the answer is withheld
    (504 ``x402_settlement_pending``, never a 402 while the money is on its way), and the whole
    payment is credited to the payer the moment the gateway's background look sees it settled."""
    api = api_of(gw_blind)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    facilitator.pending_once(mine_after=4.0)
    paid = pay(api, payer, "v2", CHAT, chat_body())
    res = paid.reply
    assert res.status == 504, f"{res.status} {res.body!r}"
    assert res.body["error"]["code"] == "x402_settlement_pending", res.body
    assert "choices" not in res.body
    failed = receipt_of(paid)
    assert failed["success"] is False and failed["errorReason"] == "settlement_pending", failed
    # The block is mined 4 s after the SDK's answer; the gateway finds out on its own.
    assert eventually(lambda: books.moved() == (paid.quote, paid.quote), timeout=15)
    key = payer_key(gw_blind, payer.address, "pending-late")
    assert eventually(lambda: credits_of(api, key) == paid.quote, timeout=20), (
        "the whole payment comes back as credits (the answer was withheld)"
    )
    (refund,) = ledger(api, key, "refund")
    assert refund["credits"] == paid.quote, refund
    assert books.moved() == (paid.quote, paid.quote), "and it moved once"


def test_a_stream_whose_settlement_confirms_late_keeps_what_it_delivered(
    gw_blind: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str
) -> None:
    """A stream's content is delivered before it settles. When the settlement is still pending
    at the end of the wait, the stream ends with an ``x402_settlement_pending`` error event;
    once the transfer confirms, the payer gets the change only: the call keeps what it cost."""
    api = api_of(gw_blind)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    facilitator.pending_once(mine_after=4.0)
    paid = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    assert paid.reply.status == 200, paid.reply.body
    datas = [data for _, data in parse_sse(paid.reply.body)]
    assert "[DONE]" not in datas, "no [DONE] before the payment settles"
    chunks = [json.loads(d) for d in datas]
    assert chunks[-1]["error"]["code"] == "x402_settlement_pending", chunks[-1]
    kept = usd_micros([c for c in chunks if c.get("usage")][-1]["usage"]["usd_cost"])
    assert MIN_QUOTE <= kept < paid.quote
    assert eventually(lambda: books.moved() == (paid.quote, paid.quote), timeout=15)
    key = payer_key(gw_blind, payer.address, "stream-late")
    assert eventually(lambda: credits_of(api, key) == paid.quote - kept, timeout=20), (
        credits_of(api, key), paid.quote, kept,
    )
    (refund,) = ledger(api, key, "refund")
    assert refund["credits"] == paid.quote - kept, refund


# --------------------------------------------------------------------------------------------
# MCP: a paid tool call settles on chain like the REST call it stands for
# --------------------------------------------------------------------------------------------


def mcp_chat_is_paid_on_chain(gateway: Gateway, chain: chainmod.Chain, pay_to: str) -> None:
    """The x402 SDK's MCP client pays for the ``chat`` tool (probe, PaymentRequired, retry with
    the payment in ``_meta``) with an authorization on the anvil token: the transfer is mined,
    payTo receives exactly what the payer lost, and the change comes back as credits. Also run
    under ``self`` (test_self_facilitator.py)."""
    from mcp import ClientSession
    from x402 import x402Client
    from x402.mcp import x402MCPSession
    from x402.mechanisms.evm.exact import register_exact_evm_client

    from test_mcp import CHAT_ARGS, run_session

    payer = chain_payer(chain, FUNDS)
    client = x402Client()
    register_exact_evm_client(client, payer.account)
    client.set_spend_controls(
        {
            "max_amount_per_payment": "$10",
            "allowed_assets": [
                {"network": NETWORK, "asset": chain.asset, "max_amount_per_payment": "10000000"}
            ],
        }
    )
    books = Books(chain, payer.address, pay_to)

    async def body(s: ClientSession) -> Any:
        return await x402MCPSession(s, client).call_tool("chat", CHAT_ARGS)

    result = run_session(gateway.url, {}, body)
    assert result.payment_made and not result.is_error, result
    assert result.content[0].text
    receipt = result.payment_response
    assert receipt is not None and receipt.success and receipt.network == NETWORK, receipt
    paid, received = books.moved()
    assert paid == received > 0, "payTo received exactly what the payer lost"
    assert_mined_transfer(chain, receipt.transaction, payer.address, pay_to, paid)
    api = api_of(gateway)
    key = payer_key(gateway, payer.address, "mcp-on-chain")
    assert eventually(lambda: 0 < credits_of(api, key) < paid), credits_of(api, key)
    (refund,) = ledger(api, key, "refund")
    assert refund["ref"] == receipt.transaction, refund


def test_an_mcp_tool_call_is_paid_on_chain(gw: Gateway, chain: chainmod.Chain, pay_to: str) -> None:
    mcp_chat_is_paid_on_chain(gw, chain, pay_to)
