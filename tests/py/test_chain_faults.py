"""x402 fault paths on a real chain: anvil + Circle's USDC, through the x402 SDK's facilitator.

The parts are those of test_chain.py (tests/py/chain.py, tests/py/sdk_facilitator.py): real
EVM transactions, the SDK's own verification and settlement. The faults are things a payer or a
chain really does, injected between the gateway's ``/verify`` and its ``/settle`` by the
facilitator wrapper's ``before_settle`` hook:

* the payer moves its USDC away (an ordinary ``transfer``) or cancels the authorization it
  signed (``cancelAuthorization``, EIP-3009) after ``/verify`` passed: a unary answer is
  withheld (402, nothing credited, no transfer on chain); a stream was delivered, so its loss is
  counted and the payer may not stream again until a payment of theirs settles;
* the chain stops answering (anvil SIGSTOPped) while the settlement is under way: the client
  gets a 5xx with a stable code, the intent stays, and once the chain is back (SIGCONT) the
  payment is resolved without anyone's help;
* a slow confirmation (anvil's automine off): 504 ``x402_settlement_pending`` after
  ``x402.settle_pending_wait_ms``, then the payer gets what they paid for once it is mined;
* a facilitator whose ``/supported`` lacks a configured network stops the start; one that cannot
  be reached at start leaves the gateway up but not ready (``/readyz`` 503) until it answers.

Waits are bounded polls with deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

import chain as chainmod
from conftest import (
    UPSTREAM_API_KEY,
    Gateway,
    ManagedProcess,
    _wait_for_gateway,
    child_env,
    http_request,
)
from sdk_facilitator import SdkFacilitator
from test_chain import (  # noqa: F401 (fixtures)
    Books,
    api_of,
    chain_payer,
    credits_of,
    eventually,
    facilitator,
    generations,
    ledger,
    pay_to,
    payer_key,
    receipt_of,
)
from test_x402 import CHAT, TOPUP, chat_body, parse_sse, pay, quote_of, usd_micros

#: One /settle attempt (and one chain read) gives up after this long; one retry. Shorter than
#: the SDK facilitator's own receipt wait (1.5 s): a slow confirmation outlasts the gateway's
#: /settle, not just the facilitator's receipt wait.
SETTLE_TIMEOUT_MS = 1_000
#: How long a request waits for an outcome left open (small: the time-out path is tested).
PENDING_WAIT_MS = 1_000
FUNDS = 5_000_000


@pytest.fixture(autouse=True)
def _no_faults_left(facilitator: SdkFacilitator) -> Iterator[None]:  # noqa: F811
    yield
    facilitator.clear_faults()


def gateway_env(
    data_dir: Path, simulator: ManagedProcess, chain: chainmod.Chain, facilitator_url: str,  # noqa: F811
    pay_to: str, chain_id: int = chainmod.CHAIN_ID,  # noqa: F811
) -> dict[str, str]:
    return child_env({
        "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
        "VECTORWAY_STORE__DATA_DIR": str(data_dir),
        "VECTORWAY_UPSTREAM__BASE_URL": simulator.wait_for_url(),
        "VECTORWAY_X402__FACILITATOR_URL": facilitator_url,
        "VECTORWAY_X402__PAY_TO": pay_to,
        **chain.network_env(chain_id=chain_id),
        "VECTORWAY_X402__SETTLE_TIMEOUT_MS": str(SETTLE_TIMEOUT_MS),
        "VECTORWAY_X402__SETTLE_RETRIES": "1",
        "VECTORWAY_X402__SETTLE_PENDING_WAIT_MS": str(PENDING_WAIT_MS),
        "VECTORWAY_LIMITS__IP_PER_MIN": "100000000",
        "VECTORWAY_LIMITS__IP_BURST": "100000000",
        "GEMINI_API_KEY": UPSTREAM_API_KEY,
    })


def start_gateway(request, tmp_path_factory, binary, log_dir, env, name) -> Gateway:
    proc = ManagedProcess(f"gateway-{name}", [str(binary), "serve"], env, log_dir / f"{name}.log")
    request.addfinalizer(proc.stop)
    data_dir = Path(env["VECTORWAY_STORE__DATA_DIR"])
    url = _wait_for_gateway(proc, data_dir)
    return Gateway(url=url, data_dir=data_dir, binary=binary, process=proc, env=env)


@pytest.fixture(scope="module")
def gw(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator,  # noqa: F811
       pay_to):  # noqa: F811
    """A gateway that reads the chain, with short settlement time-outs."""
    data_dir = tmp_path_factory.mktemp("vectorway-faults")
    env = gateway_env(data_dir, simulator, chain, facilitator.url, pay_to)
    return start_gateway(request, tmp_path_factory, vectorway_bin, log_dir, env, "chain-faults")


@pytest.fixture(scope="module")
def gw2(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator,  # noqa: F811
        pay_to):  # noqa: F811
    """A second replica: its own store, so it has not seen the first one's nonces."""
    data_dir = tmp_path_factory.mktemp("vectorway-faults-2")
    env = gateway_env(data_dir, simulator, chain, facilitator.url, pay_to)
    return start_gateway(request, tmp_path_factory, vectorway_bin, log_dir, env, "chain-faults-2")


@pytest.fixture(scope="module")
def gw_no_rpc(request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator,  # noqa: F811
              pay_to):  # noqa: F811
    """A gateway without an rpc_url: only the facilitator can tell it what happened."""
    data_dir = tmp_path_factory.mktemp("vectorway-faults-no-rpc")
    env = gateway_env(data_dir, simulator, chain, facilitator.url, pay_to)
    del env["VECTORWAY_X402__NETWORKS__ANVIL__RPC_URL"]
    return start_gateway(request, tmp_path_factory, vectorway_bin, log_dir, env, "faults-no-rpc")


# --------------------------------------------------------------------------------------------
# The payer's side of the chain: moving funds away, canceling an authorization
# --------------------------------------------------------------------------------------------


def send_as(chain: chainmod.Chain, account: LocalAccount, call: Any) -> None:  # noqa: F811
    """``account`` sends ``call`` itself (given gas money first: EIP-3009 payers hold no ETH)."""
    chain.w3.provider.make_request(
        "anvil_setBalance", [account.address, hex(10**18)]
    )
    chainmod._transact(chain.w3, account, call)


def move_funds_away(chain: chainmod.Chain, account: LocalAccount) -> str:  # noqa: F811
    """The payer transfers all its USDC to a fresh address; returns that address."""
    sink = Account.create().address
    amount = chain.balance_of(account.address)
    send_as(chain, account, chain.token.functions.transfer(sink, amount))
    assert chain.balance_of(account.address) == 0
    return sink


def cancel_authorization(chain: chainmod.Chain, account: LocalAccount, nonce: str) -> None:  # noqa: F811
    """``cancelAuthorization(authorizer, nonce, v, r, s)``, signed by the payer (EIP-3009)."""
    domain = {
        "name": chainmod.TOKEN_NAME,
        "version": chainmod.TOKEN_VERSION,
        "chainId": chainmod.CHAIN_ID,
        "verifyingContract": chain.asset,
    }
    types = {
        "CancelAuthorization": [
            {"name": "authorizer", "type": "address"},
            {"name": "nonce", "type": "bytes32"},
        ]
    }
    raw = bytes.fromhex(nonce.removeprefix("0x"))
    signed = Account.sign_typed_data(
        account.key, domain, types, {"authorizer": account.address, "nonce": raw}
    )
    cancel = chain.token.get_function_by_signature(
        "cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)"
    )
    call = cancel(
        account.address, raw, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
    )
    send_as(chain, account, call)
    assert chain.authorization_state(account.address, raw)


def nonce_of_header(header: dict[str, str]) -> str:
    (value,) = header.values()
    payload = json.loads(base64.b64decode(value))
    return payload["payload"]["authorization"]["nonce"]


def nonce_of_payload(payload: Any) -> str:
    return payload.payload["authorization"]["nonce"]


def metric(gateway: Gateway, name: str) -> int:
    secret = (gateway.data_dir / "admin.secret").read_text().strip()
    res = http_request(
        "GET", f"{gateway.url}/metrics", headers={"authorization": f"Bearer {secret}"}
    )
    assert res.status == 200, res.body
    text = res.body if isinstance(res.body, str) else res.body.decode()
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def status_of(gateway: Gateway) -> dict[str, Any]:
    res = http_request("GET", f"{gateway.url}/status")
    assert res.status == 200, res.body
    return res.body["x402"]["settlements"]


def stream_frames(reply: Any) -> list[str]:
    return [data for _, data in parse_sse(reply.body)]


# --------------------------------------------------------------------------------------------
# Funds moved away, or the authorization canceled, between /verify and /settle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["move", "cancel"])
def test_a_unary_call_whose_payer_pulls_out_after_verify_gets_no_answer(
    how: str, gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    block = chain.block_number()
    if how == "move":
        facilitator.before_settle(lambda _: move_funds_away(chain, payer.account))
    else:
        facilitator.before_settle(
            lambda p: cancel_authorization(chain, payer.account, nonce_of_payload(p))
        )
    verifies = facilitator.calls["verify"]
    paid = pay(api, payer, "v2", CHAT, chat_body())
    res = paid.reply
    assert facilitator.calls["verify"] > verifies, "the gateway's /verify passed first"
    assert res.status == 402, f"{res.status} {res.body!r}"
    assert "choices" not in res.body, "the answer is withheld"
    receipt = receipt_of(paid)
    assert receipt["success"] is False and receipt["errorReason"], receipt
    assert res.body["error"] == receipt["errorReason"], (res.body, receipt)
    # Nothing moved to payTo, nothing credited, no intent left open.
    assert books.moved()[1] == 0
    assert chain.transfers_to(pay_to, from_block=block) == []
    key = payer_key(gw, payer.address, f"pulled-{how}")
    assert credits_of(api, key) == 0
    assert ledger(api, key, "refund") == []
    assert eventually(lambda: status_of(gw)["open_intents"] == 0)


@pytest.mark.parametrize("how", ["move", "cancel"])
def test_a_stream_whose_payer_pulls_out_after_verify_records_the_loss_and_blocks_the_payer(
    how: str, gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
    simulator: ManagedProcess,
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    block = chain.block_number()
    losses = metric(gw, "vectorway_x402_unpaid_streams_total")
    lost_credits = metric(gw, "vectorway_x402_unpaid_stream_credits_total")
    if how == "move":
        facilitator.before_settle(lambda _: move_funds_away(chain, payer.account))
    else:
        facilitator.before_settle(
            lambda p: cancel_authorization(chain, payer.account, nonce_of_payload(p))
        )
    paid = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    assert paid.reply.status == 200, paid.reply.body
    frames = stream_frames(paid.reply)
    assert "[DONE]" not in frames, "no [DONE] for a payment that did not settle"
    chunks = [json.loads(f) for f in frames]
    assert any(c.get("choices") for c in chunks), "the content was delivered"
    assert chunks[-1]["error"]["code"] == "x402_settlement_failed", chunks[-1]
    # No transfer, nothing credited; the loss is counted and the payer is blocked.
    assert books.moved()[1] == 0 and chain.transfers_to(pay_to, from_block=block) == []
    assert eventually(lambda: metric(gw, "vectorway_x402_unpaid_streams_total") == losses + 1)
    assert metric(gw, "vectorway_x402_unpaid_stream_credits_total") > lost_credits
    key = payer_key(gw, payer.address, f"stream-pulled-{how}")
    assert credits_of(api, key) == 0
    assert status_of(gw)["blocked_payers"] >= 1
    # A fresh authorization from a wallet that holds the money again: no stream byte until a
    # payment of this payer settles.
    chain.mint(payer.address, FUNDS)
    gens = generations(simulator)
    again = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    assert again.reply.status == 402, f"{again.reply.status} {again.reply.body!r}"
    assert "data:" not in (again.reply.body if isinstance(again.reply.body, str) else "")
    assert generations(simulator) == gens, "the model never ran"
    # A unary call settles: the payer may stream again.
    unary = pay(api, payer, "v2", CHAT, chat_body())
    assert unary.reply.status == 200, unary.reply.body
    back = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    assert back.reply.status == 200 and "[DONE]" in stream_frames(back.reply)


def test_an_authorization_canceled_before_it_is_sent_is_refused_at_verify(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, simulator,  # noqa: F811
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    for stream in (False, True):
        challenge = api("POST", CHAT, json_body=chat_body(stream=stream))
        header = payer.payment_header(payer.payment_required(challenge, "v2"))
        cancel_authorization(chain, payer.account, nonce_of_header(header))
        gens, settles = generations(simulator), facilitator.calls["settle"]
        res = api("POST", CHAT, headers=header, json_body=chat_body(stream=stream))
        assert res.status == 402, f"stream={stream}: {res.status} {res.body!r}"
        assert isinstance(res.body, dict) and "choices" not in res.body, res.body
        assert res.body["error"].startswith("invalid_"), res.body
        assert generations(simulator) == gens, "the model never ran"
        assert facilitator.calls["settle"] == settles, "nothing was sent to /settle"
    assert chain.balance_of(payer.address) == FUNDS


def test_an_authorization_already_used_on_chain_streams_nothing_from_another_replica(
    gw: Gateway, gw2: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
    simulator: ManagedProcess,
) -> None:
    """A replica that never saw a nonce cannot tell it is spent; the chain can: its ``/verify``
    refuses a settled authorization before the first stream byte."""
    payer = chain_payer(chain, FUNDS)
    paid = pay(api_of(gw), payer, "v2", CHAT, chat_body(stream=True))
    assert paid.reply.status == 200 and "[DONE]" in stream_frames(paid.reply)
    assert chain.authorization_state(payer.address, nonce_of_header(paid.header))
    books = Books(chain, payer.address, pay_to)
    gens, settles = generations(simulator), facilitator.calls["settle"]
    res = api_of(gw2)("POST", CHAT, headers=paid.header, json_body=chat_body(stream=True))
    assert res.status == 402, f"{res.status} {res.body!r}"
    assert isinstance(res.body, dict), "not one stream byte"
    assert "nonce" in res.body["error"], res.body
    assert generations(simulator) == gens and facilitator.calls["settle"] == settles
    assert books.moved() == (0, 0)


# --------------------------------------------------------------------------------------------
# The chain stops answering mid-settlement, then comes back
# --------------------------------------------------------------------------------------------


def test_a_chain_that_stops_mid_settlement_is_resolved_once_it_is_back(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
) -> None:
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    block = chain.block_number()
    stopped = threading.Event()

    def stop_the_chain(_: Any) -> None:
        os.kill(chain.proc.pid, signal.SIGSTOP)
        stopped.set()

    facilitator.before_settle(stop_the_chain)
    try:
        paid = pay(api, payer, "v2", CHAT, chat_body())
    finally:
        # The client has its answer; the chain comes back.
        os.kill(chain.proc.pid, signal.SIGCONT)
    assert stopped.is_set()
    res = paid.reply
    # The settlement reached the facilitator and the chain cannot say: pending, not failed.
    assert res.status == 504, f"{res.status} {res.body!r}"
    assert res.body["error"]["code"] == "x402_settlement_pending", res.body
    assert "choices" not in res.body
    # Nothing is lost: the intent stays until the chain says what happened.
    assert status_of(gw)["open_intents"] >= 1
    # Back: the transfer the facilitator sent is mined, and the gateway finds it on its own. The
    # answer was withheld, so all of the payment comes back as credits.
    key = payer_key(gw, payer.address, "chain-stopped")
    assert eventually(lambda: credits_of(api, key) == paid.quote, timeout=30), (
        credits_of(api, key), paid.quote, books.moved(),
    )
    assert books.moved() == (paid.quote, paid.quote), "paid once"
    assert len(chain.transfers_to(pay_to, from_block=block)) == 1
    (refund,) = ledger(api, key, "refund")
    assert refund["credits"] == paid.quote
    assert eventually(lambda: status_of(gw)["open_intents"] == 0)


def test_without_a_chain_a_settlement_stuck_on_a_stopped_chain_is_pending_then_credited(
    gw_no_rpc: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
) -> None:
    """No rpc_url: the facilitator's /settle hangs on a stopped chain, every attempt times out,
    and /verify cannot answer either. Nothing proves the money did not move, so the answer is
    504 ``x402_settlement_pending`` (not a 502 "facilitator failed"), the intent stays, and once
    the chain is back the gateway's background look (the facilitator's /verify:
    ``nonce_already_used``) finds the transfer and credits the withheld call in full, once."""
    api = api_of(gw_no_rpc)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    facilitator.before_settle(lambda _: os.kill(chain.proc.pid, signal.SIGSTOP))
    try:
        paid = pay(api, payer, "v2", CHAT, chat_body())
    finally:
        os.kill(chain.proc.pid, signal.SIGCONT)
    res = paid.reply
    assert res.status == 504, f"{res.status} {res.body!r}"
    assert res.body["error"]["code"] == "x402_settlement_pending", res.body
    assert "choices" not in res.body
    assert status_of(gw_no_rpc)["open_intents"] >= 1
    key = payer_key(gw_no_rpc, payer.address, "no-rpc-chain-stopped")
    assert eventually(lambda: credits_of(api, key) == paid.quote, timeout=40), (
        credits_of(api, key), paid.quote, books.moved(),
    )
    assert books.moved() == (paid.quote, paid.quote), "paid once"
    (refund,) = ledger(api, key, "refund")
    assert refund["credits"] == paid.quote
    assert eventually(lambda: status_of(gw_no_rpc)["open_intents"] == 0)


def test_a_chain_stopped_before_the_request_is_a_502_and_the_same_payment_works_later(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
    simulator: ManagedProcess,
) -> None:
    """``/verify`` cannot read a stopped chain: 502 ``x402_facilitator_error`` before the model
    runs, and the nonce is given back (``/verify`` moves no money), so the same signed payment
    is good once the chain answers again."""
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    challenge = api("POST", CHAT, json_body=chat_body())
    header = payer.payment_header(payer.payment_required(challenge, "v2"))
    books = Books(chain, payer.address, pay_to)
    gens = generations(simulator)
    os.kill(chain.proc.pid, signal.SIGSTOP)
    try:
        res = api("POST", CHAT, headers=header, json_body=chat_body())
    finally:
        os.kill(chain.proc.pid, signal.SIGCONT)
    assert res.status == 502, f"{res.status} {res.body!r}"
    assert res.body["error"]["code"] == "x402_facilitator_error", res.body
    assert generations(simulator) == gens, "the model never ran"
    assert books.moved() == (0, 0)
    again = api("POST", CHAT, headers=header, json_body=chat_body())
    assert again.status == 200, f"{again.status} {again.body!r}"
    assert again.body["choices"][0]["message"]["content"]
    assert books.moved() == (quote_of(challenge), quote_of(challenge)), "paid once"


def test_a_stream_whose_chain_stops_keeps_what_it_delivered_once_the_chain_is_back(
    gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
) -> None:
    """The chain stops while a stream is paid for: the stream ends with an
    ``x402_settlement_pending`` error event (no ``[DONE]``); its intent records what the
    delivered content keeps, so once the chain is back the payer gets exactly the change."""
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    facilitator.before_settle(lambda _: os.kill(chain.proc.pid, signal.SIGSTOP))
    try:
        paid = pay(api, payer, "v2", CHAT, chat_body(stream=True))
    finally:
        os.kill(chain.proc.pid, signal.SIGCONT)
    assert paid.reply.status == 200, paid.reply.body
    frames = stream_frames(paid.reply)
    assert "[DONE]" not in frames
    chunks = [json.loads(f) for f in frames]
    assert chunks[-1]["error"]["code"] == "x402_settlement_pending", chunks[-1]
    kept = usd_micros([c for c in chunks if c.get("usage")][-1]["usage"]["usd_cost"])
    assert 0 < kept < paid.quote
    key = payer_key(gw, payer.address, "stream-chain-stopped")
    assert eventually(lambda: credits_of(api, key) == paid.quote - kept, timeout=30), (
        credits_of(api, key), paid.quote, kept,
    )
    assert books.moved() == (paid.quote, paid.quote), "paid once"
    assert eventually(lambda: status_of(gw)["open_intents"] == 0)


# --------------------------------------------------------------------------------------------
# Slow confirmation: the time-out path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["chat", "topup"])
def test_a_confirmation_slower_than_the_wait_answers_504_then_pays_out(
    what: str, gw: Gateway, chain: chainmod.Chain, facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
) -> None:
    """automine off: the SDK waits 1.5 s for the receipt, longer than the gateway's /settle
    time-out (1 s, twice), so the gateway polls the chain for ``settle_pending_wait_ms`` (1 s
    here), answers 504 ``x402_settlement_pending`` (not a facilitator failure: the money may
    be moving), and when the block is mined (3 s after the SDK's answer) the payer gets what
    they paid for: the top-up's credits, or for a chat call whose answer was withheld, the
    whole payment as credits (main's rule: a withheld answer keeps nothing)."""
    api = api_of(gw)
    payer = chain_payer(chain, FUNDS)
    books = Books(chain, payer.address, pay_to)
    facilitator.pending_once(mine_after=3.0)
    path, body = (CHAT, chat_body()) if what == "chat" else (TOPUP, {"amount": 1})
    paid = pay(api, payer, "v2", path, body)
    res = paid.reply
    assert res.status == 504, f"{res.status} {res.body!r}"
    assert res.body["error"]["code"] == "x402_settlement_pending", res.body
    assert books.moved() == (0, 0), "not mined yet when the request answered"
    amount = paid.quote if what == "chat" else 1_000_000
    assert eventually(lambda: books.moved() == (amount, amount), timeout=15)
    key = payer_key(gw, payer.address, f"slow-{what}")
    assert eventually(lambda: credits_of(api, key) == amount, timeout=20), credits_of(api, key)
    kind = "refund" if what == "chat" else "topup"
    (entry,) = ledger(api, key, kind)
    assert entry["credits"] == amount, entry
    assert books.moved() == (amount, amount), "moved once"


# --------------------------------------------------------------------------------------------
# /supported at start
# --------------------------------------------------------------------------------------------


def test_a_network_the_facilitator_does_not_support_stops_the_start(
    tmp_path: Path, vectorway_bin: Path, simulator: ManagedProcess, chain: chainmod.Chain,  # noqa: F811
    facilitator: SdkFacilitator, pay_to: str,  # noqa: F811
) -> None:
    # The SDK facilitator settles eip155:31337 only.
    env = gateway_env(tmp_path, simulator, chain, facilitator.url, pay_to, chain_id=31338)
    supported = facilitator.calls["supported"]
    done = subprocess.run(
        [str(vectorway_bin), "serve"], env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0, done
    out = done.stdout + done.stderr
    assert "does not support network anvil (eip155:31338)" in out, out
    assert facilitator.calls["supported"] > supported
    assert not (tmp_path / "server.json").exists()


class LateFacilitator:
    """A facilitator that cannot be reached (its port is bound but not listening: connections
    are refused) until ``open``; then it answers ``/supported`` like the SDK facilitator."""

    def __init__(self, sdk: SdkFacilitator) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.sdk = sdk
        self.server: ThreadingHTTPServer | None = None

    def open(self) -> None:
        sdk = self.sdk

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                raw = json.dumps(sdk.supported()).encode()
                self.send_response(200 if self.path.rstrip("/") == "/supported" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = self.sock
        server.server_activate()  # listen(): from now on connections are accepted
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        else:
            self.sock.close()


def test_an_unreachable_facilitator_starts_the_gateway_not_ready_until_it_answers(
    request, tmp_path_factory, vectorway_bin, log_dir, simulator, chain, facilitator, pay_to,  # noqa: F811
) -> None:
    late = LateFacilitator(facilitator)
    request.addfinalizer(late.stop)
    data_dir = tmp_path_factory.mktemp("vectorway-late")
    env = gateway_env(data_dir, simulator, chain, late.url, pay_to)
    gateway = start_gateway(request, tmp_path_factory, vectorway_bin, log_dir, env, "late")
    ready = http_request("GET", f"{gateway.url}/readyz")
    assert ready.status == 503, ready.body
    assert ready.body["status"] == "not_ready", ready.body
    assert "/supported unreadable" in ready.body["facilitator"], ready.body
    assert http_request("GET", f"{gateway.url}/healthz").status == 200
    late.open()

    def is_ready() -> bool:
        return http_request("GET", f"{gateway.url}/readyz").status == 200

    assert eventually(is_ready, timeout=15), http_request("GET", f"{gateway.url}/readyz").body
    assert http_request("GET", f"{gateway.url}/readyz").body["facilitator"] == "ok"
