"""Fault paths of ``x402.facilitator = "self"`` on a real chain (anvil + Circle's USDC).

The payer pulls out between the gateway's verification and its settlement: it moves its USDC
away (an ordinary ``transfer``) or cancels the authorization it signed
(``cancelAuthorization``, EIP-3009). With our own facilitator there is no facilitator process
to hold a hook, so the gateway's ``rpc_url`` points at ``rpc_tap.RpcTap``, a pass-through
JSON-RPC endpoint in front of anvil that runs the payer's transaction (against anvil directly)
just before it forwards the gateway's ``eth_estimateGas`` of that payer's
``transferWithAuthorization``: after every verification read, before anything is sent. What
the gateway then reads is anvil's own answer (a revert), exactly as on a public chain.

* a unary answer is withheld (402, nothing moved, nothing credited, no transaction sent, no
  intent left open; funded again, the same signed payment goes through when it was not
  canceled);
* a stream was delivered: its loss is counted, the payer is blocked (counted once: one
  failure, one block) and may not stream again until a payment of theirs settles.

And the chain's side, with short time-outs (``gw_short``): a confirmation slower than the
gateway's wait (anvil's automine off) is 504 ``x402_settlement_pending``, then credited once it
is mined; a chain that stops just as the gateway broadcasts (SIGSTOP when the tap sees the
``eth_sendRawTransaction``) leaves the transaction's fate unknown, which is never "not paid":
504, the intent kept, and once the chain is back the transfer is found and credited, once.

The SDK-facilitator versions of these tests are in test_chain_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any, Iterator

import pytest
from eth_account import Account

import chain as chainmod
from conftest import Gateway, ManagedProcess
from rpc_tap import RpcTap, broadcasts_from, settles_from
from test_chain import (
    Books,
    assert_mined_transfer,
    api_of,
    chain_payer,
    credits_of,
    eventually,
    generations,
    ledger,
    payer_key,
)
from test_chain_faults import (
    cancel_authorization,
    metric,
    move_funds_away,
    nonce_of_header,
    status_of,
    stream_frames,
)
from test_self_facilitator import account_nonce, settler, start_self_gateway
from test_x402 import CHAT, TOPUP, chat_body, pay, quote_of

FUNDS = 5_000_000


@pytest.fixture(scope="module")
def pay_to() -> str:
    return Account.create().address


@pytest.fixture(scope="module")
def tap(chain: chainmod.Chain) -> Iterator[RpcTap]:
    t = RpcTap(chain.rpc_url)
    yield t
    t.stop()


@pytest.fixture(autouse=True)
def _no_hooks_left(tap: RpcTap) -> Iterator[None]:
    yield
    tap.clear()


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, pay_to, tap) -> Gateway:
    return start_self_gateway(
        request, log_dir, vectorway_bin, simulator, chain, pay_to,
        tmp_path_factory.mktemp("vectorway-self-faults"), "self-faults", settler().key.hex(),
        {"VECTORWAY_X402__NETWORKS__ANVIL__RPC_URL": tap.url},
    )


@pytest.fixture(scope="module")
def gw_short(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, pay_to, tap):
    """The same, with a 1 s receipt wait and a 1 s in-request lookup: the time-out paths."""
    return start_self_gateway(
        request, log_dir, vectorway_bin, simulator, chain, pay_to,
        tmp_path_factory.mktemp("vectorway-self-short"), "self-short", settler().key.hex(),
        {
            "VECTORWAY_X402__NETWORKS__ANVIL__RPC_URL": tap.url,
            "VECTORWAY_X402__SETTLE_TIMEOUT_MS": "1000",
            "VECTORWAY_X402__SETTLE_PENDING_WAIT_MS": "1000",
        },
    )


def signed(api: Any, payer: Any, body: dict[str, Any]) -> tuple[dict[str, str], int]:
    """A payment header for ``body`` and its quote (the 402 round trip, not yet sent)."""
    challenge = api("POST", CHAT, json_body=body)
    return payer.payment_header(payer.payment_required(challenge, "v2")), quote_of(challenge)


def pull_out_before_settlement(
    how: str, tap: RpcTap, chain: chainmod.Chain, payer: Any, header: dict[str, str]
) -> None:
    """Arms the tap: right before the gateway estimates the settlement of ``payer``'s
    authorization, the payer moves its funds away or cancels that authorization."""
    if how == "move":
        tap.before(settles_from(payer.address), lambda: move_funds_away(chain, payer.account))
    else:
        nonce = nonce_of_header(header)
        tap.before(
            settles_from(payer.address),
            lambda: cancel_authorization(chain, payer.account, nonce),
        )


@pytest.mark.parametrize("how", ["move", "cancel"])
def test_a_unary_call_whose_payer_pulls_out_before_self_settles_gets_no_answer(
    how: str, gw: Gateway, chain: chainmod.Chain, tap: RpcTap, pay_to: str,
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    block = chain.block_number()
    header, quote = signed(api, payer, chat_body())
    pull_out_before_settlement(how, tap, chain, payer, header)
    sent = account_nonce(chain, settler().address)
    fired = tap.fired
    res = api("POST", CHAT, headers=header, json_body=chat_body())
    assert tap.fired == fired + 1, "the payer pulled out between verification and settlement"
    assert res.status == 402, f"{res.status} {res.body!r}"
    assert "choices" not in res.body, "the answer is withheld"
    from x402.http import decode_payment_response_header

    receipt = decode_payment_response_header(res.headers["payment-response"])
    assert receipt.success is False and receipt.error_reason, receipt
    assert res.body["error"] == receipt.error_reason, (res.body, receipt)
    # Nothing moved to payTo, no transaction was sent, nothing credited, no intent left open.
    assert books.moved()[1] == 0
    assert chain.transfers_to(pay_to, from_block=block) == []
    assert account_nonce(chain, settler().address) == sent, "the revert was caught before sending"
    key = payer_key(gw, payer.address, f"self-pulled-{how}")
    assert credits_of(api, key) == 0
    assert ledger(api, key, "refund") == []
    assert eventually(lambda: status_of(gw)["open_intents"] == 0)
    if how == "move":
        # Nothing moved, so the payment was given back: funded again, it goes through, once.
        chain.mint(payer.address, FUNDS)
        books = Books(chain, payer.address, pay_to)
        again = api("POST", CHAT, headers=header, json_body=chat_body())
        assert again.status == 200, f"{again.status} {again.body!r}"
        assert again.body["choices"][0]["message"]["content"]
        assert books.moved() == (quote, quote)


@pytest.mark.parametrize("how", ["move", "cancel"])
def test_a_stream_whose_payer_pulls_out_before_self_settles_records_the_loss_and_blocks_once(
    how: str, gw: Gateway, chain: chainmod.Chain, tap: RpcTap, pay_to: str,
    simulator: ManagedProcess,
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    block = chain.block_number()
    losses = metric(gw, "vectorway_x402_unpaid_streams_total")
    lost_credits = metric(gw, "vectorway_x402_unpaid_stream_credits_total")
    blocks = metric(gw, "vectorway_x402_payers_blocked_total")
    header, _ = signed(api, payer, chat_body(stream=True))
    pull_out_before_settlement(how, tap, chain, payer, header)
    res = api("POST", CHAT, headers=header, json_body=chat_body(stream=True))
    assert res.status == 200, res.body
    frames = stream_frames(res)
    assert "[DONE]" not in frames, "no [DONE] for a payment that did not settle"
    chunks = [json.loads(f) for f in frames]
    assert any(c.get("choices") for c in chunks), "the content was delivered"
    assert chunks[-1]["error"]["code"] == "x402_settlement_failed", chunks[-1]
    # No transfer, nothing credited; the loss is counted and the payer blocked, once each.
    assert books.moved()[1] == 0 and chain.transfers_to(pay_to, from_block=block) == []
    assert eventually(lambda: metric(gw, "vectorway_x402_unpaid_streams_total") == losses + 1)
    assert metric(gw, "vectorway_x402_unpaid_stream_credits_total") > lost_credits
    assert eventually(lambda: status_of(gw)["open_intents"] == 0)
    assert metric(gw, "vectorway_x402_payers_blocked_total") == blocks + 1, "one failure, one block"
    key = payer_key(gw, payer.address, f"self-stream-pulled-{how}")
    assert credits_of(api, key) == 0
    # Funded again, with a fresh authorization: no stream byte until a payment settles.
    chain.mint(payer.address, FUNDS)
    gens = generations(simulator)
    header, _ = signed(api, payer, chat_body(stream=True))
    again = api("POST", CHAT, headers=header, json_body=chat_body(stream=True))
    assert again.status == 402, f"{again.status} {again.body!r}"
    assert isinstance(again.body, dict), "not one stream byte"
    assert generations(simulator) == gens, "the model never ran"
    # A unary call settles on chain: the payer may stream again.
    header, quote = signed(api, payer, chat_body())
    books = Books(chain, payer.address, pay_to)
    unary = api("POST", CHAT, headers=header, json_body=chat_body())
    assert unary.status == 200, unary.body
    assert books.moved() == (quote, quote)
    header, _ = signed(api, payer, chat_body(stream=True))
    back = api("POST", CHAT, headers=header, json_body=chat_body(stream=True))
    assert back.status == 200 and "[DONE]" in stream_frames(back)


def test_a_confirmation_slower_than_the_wait_is_pending_then_credited_once(
    gw_short: Gateway, chain: chainmod.Chain, pay_to: str,
) -> None:
    api = api_of(gw_short)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    sent = account_nonce(chain, settler().address)
    chain.set_automine(False)
    try:
        paid = pay(api, payer, "v2", TOPUP, {"amount": 1})
        assert books.moved() == (0, 0), "in anvil's pool, not mined"
    finally:
        chain.mine()
        chain.set_automine(True)
    res = paid.reply
    assert res.status == 504, f"{res.status} {res.body!r}"
    assert res.body["error"]["code"] == "x402_settlement_pending", res.body
    key = payer_key(gw_short, payer.address, "self-slow")
    assert eventually(lambda: credits_of(api, key) == 1_000_000, timeout=30), credits_of(api, key)
    assert books.moved() == (1_000_000, 1_000_000), "moved once"
    (entry,) = ledger(api, key, "topup")
    assert_mined_transfer(chain, entry["ref"], payer.address, pay_to, 1_000_000)
    assert account_nonce(chain, settler().address) == sent + 1, "one transaction"
    assert eventually(lambda: status_of(gw_short)["open_intents"] == 0)


def test_a_chain_that_stops_as_self_broadcasts_is_pending_then_credited_once(
    gw_short: Gateway, chain: chainmod.Chain, tap: RpcTap, pay_to: str,
) -> None:
    api = api_of(gw_short)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    sent = account_nonce(chain, settler().address)
    stopped = threading.Event()

    def stop_the_chain() -> None:
        os.kill(chain.proc.pid, signal.SIGSTOP)
        stopped.set()

    tap.before(broadcasts_from(payer.address), stop_the_chain)
    try:
        paid = pay(api, payer, "v2", TOPUP, {"amount": 1})
    finally:
        os.kill(chain.proc.pid, signal.SIGCONT)
    assert stopped.is_set(), "the chain stopped as the transaction went out"
    res = paid.reply
    # The node may have the transaction: not a 502 "nothing settled", not a released nonce.
    assert res.status == 504, f"{res.status} {res.body!r}"
    assert res.body["error"]["code"] == "x402_settlement_pending", res.body
    again = api("POST", TOPUP, headers=paid.header, json_body={"amount": 1})
    assert again.status == 409, "the payment stays spent while its outcome is open"
    key = payer_key(gw_short, payer.address, "self-stopped")
    assert eventually(lambda: credits_of(api, key) == 1_000_000, timeout=40), (
        credits_of(api, key), books.moved(),
    )
    assert books.moved() == (1_000_000, 1_000_000), "moved once"
    assert len(ledger(api, key, "topup")) == 1, "credited once"
    assert account_nonce(chain, settler().address) == sent + 1, "never a second transaction"
    assert eventually(lambda: status_of(gw_short)["open_intents"] == 0)
