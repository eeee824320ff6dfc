"""x402 with ``x402.facilitator = "self"``: the gateway verifies and settles on anvil itself.

No facilitator process here: the gateway reads the chain (``rpc_url``) for verification
(token domain, signature, ``balanceOf``, ``authorizationState``, time window at the chain's
clock) and sends ``transferWithAuthorization`` from its own settlement account (a dev account of
anvil, key given as ``$VAR``). Every check is on the chain: ``balanceOf`` of payer and payTo,
the mined transactions, the settlement account's nonce.

The crash test turns anvil's automine off, waits until the gateway's settlement transaction
is in anvil's pool (the settlement account's pending nonce), SIGKILLs the gateway from outside,
restarts it on the same data directory, mines, and checks the payment is settled and credited
exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from eth_account import Account
from web3 import Web3

import chain as chainmod
from conftest import (
    UPSTREAM_API_KEY,
    Gateway,
    ManagedProcess,
    _wait_for_gateway,
    child_env,
    http_request,
)
from test_chain import (
    Books,
    api_of,
    assert_mined_transfer,
    chain_payer,
    credits_of,
    eventually,
    generations,
    ledger,
    payer_key,
    receipt_of,
)
from test_x402 import CHAT, MIN_QUOTE, TOPUP, chat_body, parse_sse, pay, usd_micros

NETWORK = chainmod.CAIP2
SETTLE_TIMEOUT_MS = 8_000
FUNDS = 5_000_000
#: anvil's dev account #7 settles (10,000 ETH of gas); payers are fresh wallets.
SETTLER_INDEX = 7


@pytest.fixture(scope="module")
def pay_to() -> str:
    return Account.create().address


def settler() -> Any:
    return chainmod.dev_account(SETTLER_INDEX)


def start_self_gateway(
    request: pytest.FixtureRequest,
    log_dir: Path,
    binary: Path,
    simulator: ManagedProcess,
    chain: chainmod.Chain,
    pay_to: str,
    data_dir: Path,
    name: str,
    key: str,
    extra: dict[str, str] | None = None,
) -> Gateway:
    env = {
        "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
        "VECTORWAY_STORE__DATA_DIR": str(data_dir),
        "VECTORWAY_UPSTREAM__BASE_URL": simulator.wait_for_url(),
        "VECTORWAY_X402__FACILITATOR": "self",
        # The key through an environment variable the config names: never a literal here.
        "VECTORWAY_X402__SETTLEMENT_KEY": "$TEST_SETTLEMENT_KEY",
        "TEST_SETTLEMENT_KEY": key,
        "VECTORWAY_X402__PAY_TO": pay_to,
        **chain.network_env(),
        "VECTORWAY_X402__SETTLE_TIMEOUT_MS": str(SETTLE_TIMEOUT_MS),
        "VECTORWAY_X402__SETTLE_PENDING_WAIT_MS": "10000",
        "VECTORWAY_LIMITS__IP_PER_MIN": "100000000",
        "VECTORWAY_LIMITS__IP_BURST": "100000000",
        "GEMINI_API_KEY": UPSTREAM_API_KEY,
    }
    env.update(extra or {})
    env = child_env(env)
    proc = ManagedProcess(f"gateway-{name}", [str(binary), "serve"], env, log_dir / f"{name}.log")
    request.addfinalizer(proc.stop)
    url = _wait_for_gateway(proc, data_dir)
    return Gateway(url=url, data_dir=data_dir, binary=binary, process=proc, env=env)


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, pay_to) -> Gateway:
    return start_self_gateway(
        request, log_dir, vectorway_bin, simulator, chain, pay_to,
        tmp_path_factory.mktemp("vectorway-self"), "self", settler().key.hex(),
    )


def account_nonce(chain: chainmod.Chain, address: str) -> int:
    return int(chain.w3.eth.get_transaction_count(Web3.to_checksum_address(address), "latest"))


def sender_of(chain: chainmod.Chain, tx: str) -> tuple[str, int]:
    t = chain.w3.eth.get_transaction(tx)
    return t["from"], int(t["nonce"])


# --------------------------------------------------------------------------------------------


def test_status_names_the_settlement_account_and_never_its_key(gw: Gateway) -> None:
    res = http_request("GET", f"{gw.url}/status")
    assert res.status == 200, res.body
    text = json.dumps(res.body)
    assert settler().address in text, res.body
    assert settler().key.hex().removeprefix("0x") not in text.lower()
    ready = http_request("GET", f"{gw.url}/readyz")
    assert ready.status == 200 and ready.body["settlement"] == "ok", ready.body
    log = gw.process.log_path.read_text()
    assert settler().key.hex().removeprefix("0x") not in log.lower()


def test_unary_chat_is_settled_by_the_gateway_itself(
    gw: Gateway, chain: chainmod.Chain, pay_to: str
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    paid = pay(api, payer, "v2", CHAT, chat_body())
    assert paid.reply.status == 200, paid.reply.body
    receipt = receipt_of(paid)
    assert receipt["success"] is True and receipt["network"] == NETWORK, receipt
    assert_mined_transfer(chain, receipt["transaction"], payer.address, pay_to, paid.quote)
    assert sender_of(chain, receipt["transaction"])[0] == settler().address
    assert books.moved() == (paid.quote, paid.quote)
    kept = usd_micros(paid.reply.body["usage"]["usd_cost"])
    assert MIN_QUOTE <= kept < paid.quote
    key = payer_key(gw, payer.address, "self-change")
    assert eventually(lambda: credits_of(api, key) == paid.quote - kept)


def test_a_stream_is_settled_by_the_gateway_itself(
    gw: Gateway, chain: chainmod.Chain, pay_to: str
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    paid = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    assert paid.reply.status == 200, paid.reply.body
    name, last = parse_sse(paid.reply.body)[-1]
    assert name == "x402-receipt", paid.reply.body
    receipt = json.loads(last)
    assert_mined_transfer(chain, receipt["transaction"], payer.address, pay_to, paid.quote)
    assert books.moved() == (paid.quote, paid.quote)


def test_purchase_and_topup_credit_exactly_what_moved_and_a_replay_moves_nothing(
    gw: Gateway, chain: chainmod.Chain, pay_to: str
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    onboard = pay(
        api, payer, "v2", "/v1/auth/agent-onboard",
        {"wallet_address": payer.address, "credits": 500_000, "key_name": "self"},
    )
    assert onboard.reply.status == 200, onboard.reply.body
    key = onboard.reply.body["api_key"]
    bought = pay(
        api, payer, "v2", "/v1/credits/purchase",
        {"wallet_address": payer.address, "credits": 750_000},
    )
    assert bought.reply.status == 200, bought.reply.body
    topped = pay(api, payer, "v2", TOPUP, {"amount": 1})
    assert topped.reply.status == 200, topped.reply.body
    for p, amount in ((onboard, 500_000), (bought, 750_000), (topped, 1_000_000)):
        assert_mined_transfer(chain, receipt_of(p)["transaction"], payer.address, pay_to, amount)
    assert books.moved() == (2_250_000, 2_250_000)
    assert credits_of(api, key) == 2_250_000
    # The same signed top-up again: refused, and nothing more moves on chain.
    nonce = account_nonce(chain, settler().address)
    again = api("POST", TOPUP, headers=topped.header, json_body={"amount": 1})
    assert again.status == 409 and again.body["error"]["code"] == "x402_nonce_reused", again.body
    assert books.moved() == (2_250_000, 2_250_000)
    assert account_nonce(chain, settler().address) == nonce, "no transaction was sent"
    assert sorted(e["credits"] for e in ledger(api, key, "topup")) == [500_000, 750_000, 1_000_000]


def test_twenty_concurrent_payments_settle_with_distinct_account_nonces(
    gw: Gateway, chain: chainmod.Chain, pay_to: str
) -> None:
    api = api_of(gw)
    payers = [chain_payer(chain, FUNDS) for _ in range(20)]
    # Sign all first (the 402 round trip), then send the paid calls at once.
    signed: list[dict[str, str]] = []
    for p in payers:
        challenge = api("POST", TOPUP, json_body={"amount": 1})
        signed.append(p.payment_header(p.payment_required(challenge, "v2")))
    received0 = chain.balance_of(pay_to)
    nonce0 = account_nonce(chain, settler().address)
    replies: list[Any] = [None] * len(payers)

    def go(i: int) -> None:
        replies[i] = api("POST", TOPUP, headers=signed[i], json_body={"amount": 1})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(payers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r is not None and r.status == 200 for r in replies), [
        (r.status, r.body) if r else None for r in replies
    ]
    from x402.http import decode_payment_response_header

    txs = [
        decode_payment_response_header(r.headers["payment-response"]).transaction for r in replies
    ]
    assert len(set(txs)) == 20, txs
    nonces = sorted(sender_of(chain, tx)[1] for tx in txs)
    assert nonces == list(range(nonce0, nonce0 + 20)), nonces
    assert account_nonce(chain, settler().address) == nonce0 + 20, "none stuck, none extra"
    assert chain.balance_of(pay_to) - received0 == 20 * 1_000_000
    for p in payers:
        assert chain.balance_of(p.address) == FUNDS - 1_000_000


def test_an_empty_wallet_is_refused_before_the_model_runs(
    gw: Gateway, chain: chainmod.Chain, simulator: ManagedProcess, pay_to: str
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, 0)
    before = generations(simulator)
    nonce = account_nonce(chain, settler().address)
    for stream in (False, True):
        paid = pay(api, payer, "v2", CHAT, chat_body(stream=stream))
        assert paid.reply.status == 402, paid.reply.body
        assert "insufficient_balance" in json.dumps(paid.reply.body), paid.reply.body
    assert generations(simulator) == before, "no generation for an empty wallet"
    assert account_nonce(chain, settler().address) == nonce, "no transaction was sent"


def test_a_settlement_account_without_gas_is_an_operator_error(
    request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, pay_to
) -> None:
    broke = Account.create()
    gw = start_self_gateway(
        request, log_dir, vectorway_bin, simulator, chain, pay_to,
        tmp_path_factory.mktemp("vectorway-broke"), "self-broke", broke.key.hex(),
    )
    ready = http_request("GET", f"{gw.url}/readyz")
    assert ready.status == 503, ready.body
    assert "no gas" in ready.body["settlement"] and broke.address in ready.body["settlement"]
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    before = generations(simulator)
    paid = pay(api, payer, "v2", CHAT, chat_body())
    assert paid.reply.status == 502, paid.reply.body
    assert paid.reply.body["error"]["code"] == "x402_facilitator_error", paid.reply.body
    assert "no gas" in paid.reply.body["error"]["message"], paid.reply.body
    assert generations(simulator) == before
    assert chain.balance_of(payer.address) == FUNDS, "the payer lost nothing"
    # The refusal gave the payment back: once the operator funds the account it goes through.
    chainmod._transact_value(chain.w3, chain.deployer, broke.address, 10**18)
    again = api("POST", CHAT, headers=paid.header, json_body=chat_body())
    assert again.status == 200, again.body
    assert chain.balance_of(payer.address) == FUNDS - paid.quote


def test_a_crash_right_after_broadcast_settles_and_credits_once_after_restart(
    request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, pay_to
) -> None:
    """SIGKILL from outside between "sent" and "confirmed": anvil holds the transaction in its
    pool (automine off); the test waits until it is there, kills the gateway, restarts it on the
    same data directory and mines. The restarted gateway finds its recorded transaction, awaits
    it and credits once; no second transaction is ever sent."""
    data_dir = tmp_path_factory.mktemp("vectorway-crash")
    account = Account.create()
    chainmod._transact_value(chain.w3, chain.deployer, account.address, 10**18)
    first = start_self_gateway(
        request, log_dir, vectorway_bin, simulator, chain, pay_to, data_dir, "self-crash",
        account.key.hex(),
    )
    api = api_of(first)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    challenge = api("POST", TOPUP, json_body={"amount": 1})
    header = payer.payment_header(payer.payment_required(challenge, "v2"))
    replies: list[Any] = []

    def send() -> None:
        try:
            replies.append(api("POST", TOPUP, headers=header, json_body={"amount": 1}))
        except OSError as e:
            replies.append(e)

    def pending() -> int:
        return int(chain.w3.eth.get_transaction_count(account.address, "pending"))

    chain.set_automine(False)
    try:
        client = threading.Thread(target=send)
        client.start()
        assert eventually(lambda: pending() == 1, timeout=20), "the settlement was broadcast"
        first.process.proc.kill()  # SIGKILL, from outside the process
        first.process.proc.wait(timeout=10)
        assert first.process.proc.returncode == -9
        client.join(timeout=30)
        assert len(replies) == 1 and isinstance(replies[0], OSError), replies
        assert books.moved() == (0, 0), "broadcast, not mined"
        second = start_self_gateway(
            request, log_dir, vectorway_bin, simulator, chain, pay_to, data_dir,
            "self-crash-2", account.key.hex(),
        )
        time.sleep(0.5)
        chain.mine()
    finally:
        chain.set_automine(True)
    key = payer_key(second, payer.address, "crash")
    api2 = api_of(second)
    assert eventually(lambda: credits_of(api2, key) == 1_000_000, timeout=20)
    assert books.moved() == (1_000_000, 1_000_000), "settled once"
    assert len(ledger(api2, key, "topup")) == 1, "credited once"
    assert account_nonce(chain, account.address) == 1, "one transaction, never a second"
    # The same payment again is a replay; a new one settles with the next account nonce.
    again = api2("POST", TOPUP, headers=header, json_body={"amount": 1})
    assert again.status == 409, again.body
    paid = pay(api2, payer, "v2", TOPUP, {"amount": 1})
    assert paid.reply.status == 200, paid.reply.body
    assert sender_of(chain, receipt_of(paid)["transaction"]) == (account.address, 1)
    assert books.moved() == (2_000_000, 2_000_000)


def test_a_nonce_taken_behind_the_gateways_back_does_not_stall_settlements(
    gw: Gateway, chain: chainmod.Chain, pay_to: str
) -> None:
    """Someone else sends from the settlement account: the gateway's cached account nonce is
    stale, its broadcast is refused, and it re-reads the pending count and settles with the next
    nonce instead of failing (or leaving a gap)."""
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    first = pay(api, payer, "v2", TOPUP, {"amount": 1})
    assert first.reply.status == 200, first.reply.body
    receipt = chainmod._transact_value(chain.w3, settler(), Account.create().address, 1)
    outside = chain.w3.eth.get_transaction(receipt["transactionHash"])["nonce"]
    paid = pay(api, payer, "v2", TOPUP, {"amount": 1})
    assert paid.reply.status == 200, paid.reply.body
    assert sender_of(chain, receipt_of(paid)["transaction"]) == (settler().address, outside + 1)
    assert chain.balance_of(payer.address) == FUNDS - 2_000_000


def test_an_mcp_tool_call_is_settled_by_the_gateway_itself(
    gw: Gateway, chain: chainmod.Chain, pay_to: str
) -> None:
    from test_chain import mcp_chat_is_paid_on_chain

    nonce = account_nonce(chain, settler().address)
    mcp_chat_is_paid_on_chain(gw, chain, pay_to)
    assert account_nonce(chain, settler().address) == nonce + 1, "one transaction, ours"
