"""MCP compatibility: the official ``mcp`` Python SDK and the ``x402`` SDK's MCP client.

The gateway serves ``POST /mcp`` (Streamable HTTP, stateless, JSON response mode). These tests
connect with ``mcp.client.streamable_http.streamablehttp_client`` + ``ClientSession`` exactly as an
agent would, list the tools and call every one of them with an API key, then pay for ``chat``
with x402 through ``x402.mcp.x402MCPSession`` (probe, PaymentRequired from ``structuredContent``,
retry with the payment in ``_meta``), and check the settlement against the simulator's USDC
ledger. Also: a replayed payment is refused, and a failed settlement withholds the answer.

Versions (pinned in requirements.txt): ``mcp==1.30.0`` with ``x402==2.25.0``; the x402 MCP client
reads the camelCase result fields of the 1.x SDK.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import quote

import requests
from eth_account import Account
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from x402 import x402Client
from x402.mcp import MCP_PAYMENT_META_KEY, x402MCPSession
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.schemas import PaymentRequired

T = TypeVar("T")

CHAT_ARGS = {
    "messages": [{"role": "user", "content": "pay per tool call"}],
    "max_tokens": 2000,
    "memory_read": False,
    "memory_write": False,
}


def run_session(
    url: str, headers: dict[str, str], body: Callable[[ClientSession], Awaitable[T]]
) -> T:
    """Opens a Streamable HTTP MCP session, initializes it, runs ``body``, closes it."""

    async def go() -> T:
        async with streamablehttp_client(f"{url}/mcp", headers=headers) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)

    return asyncio.run(go())


def structured(result: Any) -> dict[str, Any]:
    assert isinstance(result.structuredContent, dict), result
    return result.structuredContent


def sim_get(sim_url: str, path: str) -> Any:
    res = requests.get(f"{sim_url}{path}", timeout=10)
    assert res.status_code == 200, res.text
    return res.json()


def sim_balance(sim_url: str, address: str) -> int:
    return int(sim_get(sim_url, f"/facilitator/_balance?address={quote(address)}")["balance"])


def set_sim_balance(sim_url: str, address: str, amount: int) -> None:
    res = requests.post(
        f"{sim_url}/facilitator/_balance", json={"address": address, "amount": amount}, timeout=10
    )
    assert res.status_code == 200, res.text


def test_the_mcp_sdk_lists_and_calls_every_tool(gateway_url: str, funded_account: Any) -> None:
    headers = {"x-api-key": funded_account.api_key}

    async def body(s: ClientSession) -> None:
        tools = await s.list_tools()
        names = [t.name for t in tools.tools]
        assert names == ["chat", "memory_search", "memory_delete", "credits_balance", "usage_recent"]
        for t in tools.tools:
            assert t.inputSchema["type"] == "object"

        before = structured(await s.call_tool("credits_balance", {}))["credits"]
        chat = await s.call_tool(
            "chat",
            {
                "messages": [{"role": "user", "content": "remember the copper kettle"}],
                "memory_write": True,
            },
        )
        assert not chat.isError, chat
        answer = structured(chat)
        assert chat.content[0].text == answer["text"] and answer["text"]
        cost = answer["usage"]["credit_cost"]
        assert cost > 0
        after = structured(await s.call_tool("credits_balance", {}))
        assert after["credits"] == before - cost, "charged exactly the reported cost"
        assert after["held"] == 0

        matches: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not matches:
            found = await s.call_tool("memory_search", {"q": "copper kettle", "k": 3})
            assert not found.isError, found
            matches = structured(found)["matches"]
            if not matches:
                await asyncio.sleep(0.1)
        assert matches, "the chat tool wrote a memory the search tool finds"
        deleted = await s.call_tool("memory_delete", {"id": matches[0]["id"]})
        assert not deleted.isError, deleted

        # Usage events are group-committed by a background journal a few ms after the call, so
        # poll until the chat shows up rather than reading the history once.
        usage: dict[str, Any] = {}
        logged = False
        deadline = time.monotonic() + 20
        while True:
            recent = await s.call_tool("usage_recent", {"limit": 20})
            assert not recent.isError, recent
            usage = structured(recent)
            logged = any(e["path"] == "/v1/chat/completions" for e in usage["events"])
            if logged or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        assert logged, f"the chat never appeared in usage_recent within 20 s: {usage}"

        bad = await s.call_tool("memory_search", {})
        assert bad.isError and structured(bad)["error"]["code"] == "validation_error"

    run_session(gateway_url, headers, body)


def test_free_tools_need_an_api_key(gateway_url: str) -> None:
    async def body(s: ClientSession) -> None:
        res = await s.call_tool("credits_balance", {})
        assert res.isError
        assert structured(res)["error"]["code"] == "missing_credentials"

    run_session(gateway_url, {}, body)


def test_x402_mcp_client_pays_for_chat(gateway_url: str, simulator: Any) -> None:
    account = Account.create()
    payer = x402Client()
    register_exact_evm_client(payer, account)
    funds = sim_balance(simulator.url, account.address)
    assert funds > 0, "the simulator funds new wallets"
    gens = int(sim_get(simulator.url, "/_sim/stats")["generations"])

    async def body(s: ClientSession) -> Any:
        paid = x402MCPSession(s, payer)
        return await paid.call_tool("chat", CHAT_ARGS)

    result = run_session(gateway_url, {}, body)
    assert result.payment_made
    assert not result.is_error, result
    assert result.content[0].text
    receipt = result.payment_response
    assert receipt is not None and receipt.success, receipt
    assert receipt.payer.lower() == account.address.lower()
    assert receipt.network == "eip155:84532"
    spent = funds - sim_balance(simulator.url, account.address)
    assert spent > 0, "the quote was settled on the simulator's USDC ledger"
    assert int(sim_get(simulator.url, "/_sim/stats")["generations"]) == gens + 1


def _probe_and_sign(s: ClientSession, payer: x402Client) -> Awaitable[dict[str, Any]]:
    async def go() -> dict[str, Any]:
        probe = await s.call_tool("chat", CHAT_ARGS)
        assert probe.isError
        required = structured(probe)
        assert required["resource"]["url"] == "mcp://tool/chat"
        assert json.loads(probe.content[0].text) == required
        payload = await payer.create_payment_payload(PaymentRequired.model_validate(required))
        return payload.model_dump(by_alias=True)

    return go()


def test_a_replayed_mcp_payment_is_refused(gateway_url: str, simulator: Any) -> None:
    account = Account.create()
    payer = x402Client()
    register_exact_evm_client(payer, account)

    async def body(s: ClientSession) -> tuple[Any, Any, int, int]:
        payment = await _probe_and_sign(s, payer)
        first = await s.call_tool("chat", CHAT_ARGS, meta={MCP_PAYMENT_META_KEY: payment})
        gens = int(sim_get(simulator.url, "/_sim/stats")["generations"])
        second = await s.call_tool("chat", CHAT_ARGS, meta={MCP_PAYMENT_META_KEY: payment})
        return first, second, gens, int(sim_get(simulator.url, "/_sim/stats")["generations"])

    first, second, gens_before, gens_after = run_session(gateway_url, {}, body)
    assert not first.isError, first
    assert first.meta and first.meta["x402/payment-response"]["success"] is True
    assert second.isError
    assert structured(second)["error"]["code"] == "x402_nonce_reused"
    assert gens_after == gens_before, "a replay never reaches the model"


def test_a_failed_settlement_withholds_the_answer(gateway_url: str, simulator: Any) -> None:
    account = Account.create()
    set_sim_balance(simulator.url, account.address, 0)
    payer = x402Client()
    register_exact_evm_client(payer, account)

    async def body(s: ClientSession) -> Any:
        payment = await _probe_and_sign(s, payer)
        return await s.call_tool("chat", CHAT_ARGS, meta={MCP_PAYMENT_META_KEY: payment})

    res = run_session(gateway_url, {}, body)
    assert res.isError
    refusal = structured(res)
    assert refusal["error"] == "insufficient_funds"
    assert refusal["accepts"], "fresh requirements to pay again"
    assert "text" not in refusal, "no answer without a settled payment"
    assert sim_balance(simulator.url, account.address) == 0
