"""The OpenAI Agents SDK (``openai-agents``) running its agent loop against the real gateway.

One agent with two function tools runs to a final answer, unmodified, through the SDK's Chat
Completions model (``OpenAIChatCompletionsModel``: ``Runner.run_sync`` and ``Runner.run_streamed``)
and through its default Responses model (``OpenAIResponsesModel``, ``POST /v1/responses``).
Tracing is disabled so nothing leaves the machine; every model call is paid with a funded API
key, and one run is paid with x402 instead (the SDK's client given an x402-paying transport).

The simulator calls every declared tool the last user turn names (schema-valid arguments) and
answers a turn of tool results with ``The tool NAME returned {"result": ...}.``, so a run is:
model turn 1 -> both tools called in parallel -> the SDK runs them -> model turn 2 -> final text.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Literal
from urllib.parse import quote

import httpx
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import ToolCallItem, ToolCallOutputItem
from agents.models.openai_provider import OpenAIProvider
from eth_account import Account
from x402 import x402Client
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact import register_exact_evm_client

from conftest import CLIENT_TIMEOUT_S, http_request

#: Chat Completions runs use a Gemini 3 model, so the thought signature the SDK must carry back
#: on the second turn is exercised; the Responses run uses 2.5.
MODEL_3 = "gemini-3.5-flash"
MODEL_25 = "gemini-2.5-flash"
#: The wallet this file bills; the billing check has one of its own, so no earlier charge can
#: still be settling while it reads its starting balance.
WALLET = "0x" + "a1" * 20
BILLING_WALLET = "0x" + "a2" * 20
CREDITS = 20_000_000
#: How long a charge may take to show up in GET /v1/credits/me (debits are group-committed).
CHARGE_VISIBLE_WITHIN_S = 1.5
PROMPT = "Call get_weather and get_population for Paris, then summarise."

set_tracing_disabled(True)


class Recorder:
    """Two function tools that record how the SDK invoked them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def tools(self) -> list[Any]:
        @function_tool
        def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
            """Current weather in a city.

            Args:
                city: The city name.
                unit: Temperature unit.
            """
            self.calls.append(("get_weather", {"city": city, "unit": unit}))
            return f"sunny, 21 degrees {unit}"

        @function_tool
        def get_population(city: str, year: int) -> int:
            """Population of a city in a given year.

            Args:
                city: The city name.
                year: The census year.
            """
            self.calls.append(("get_population", {"city": city, "year": year}))
            return 2_100_000 + year

        return [get_weather, get_population]

    def assert_both_invoked_with_valid_args(self) -> None:
        names = sorted(name for name, _ in self.calls)
        assert names == ["get_population", "get_weather"], self.calls
        for name, args in self.calls:
            assert isinstance(args["city"], str) and args["city"], (name, args)
            if name == "get_weather":
                assert args["unit"] in ("celsius", "fahrenheit"), args
            else:
                assert isinstance(args["year"], int) and not isinstance(args["year"], bool), args


@pytest.fixture(scope="module")
def agents_key(gateway) -> str:
    return gateway.provision(WALLET, CREDITS, "agents-sdk").api_key


def async_client(gateway_url: str, api_key: str, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gateway_url}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=CLIENT_TIMEOUT_S,
        **kwargs,
    )


class Wire:
    """What went over the wire: JSON request bodies, and the JSON (unary) answers."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.answers: list[Any] = []

    async def request(self, request: httpx.Request) -> None:
        self.sent.append(json.loads(request.content))

    async def response(self, response: httpx.Response) -> None:
        if response.headers.get("content-type", "").startswith("application/json"):
            await response.aread()  # kept by httpx: the SDK reads the same bytes
            self.answers.append(response.json())


def recording_client(gateway_url: str, api_key: str) -> tuple[openai.AsyncOpenAI, Wire]:
    """A client whose traffic is kept, to see what the SDK put on the wire and got back."""
    wire = Wire()
    http = httpx.AsyncClient(
        trust_env=False,
        event_hooks={"request": [wire.request], "response": [wire.response]},
    )
    return async_client(gateway_url, api_key, http_client=http), wire


def assert_signature_carried_back(sent: list[Any]) -> None:
    """Gemini 3: the SDK kept the thought signature the gateway put in the first answer's tool
    call (extra_content.google.thought_signature) and sent it back on the second request; the
    simulator refuses a corrupted one, so the run finishing proves it reached Gemini intact."""
    assert len(sent) == 2, sent
    (assistant,) = [m for m in sent[1]["messages"] if m.get("tool_calls")]
    sigs = [c.get("extra_content", {}).get("google", {}).get("thought_signature") for c in assistant["tool_calls"]]
    assert isinstance(sigs[0], str) and sigs[0], assistant
    assert sigs[0] != "skip_thought_signature_validator", assistant


def assert_final_output_reflects_tools(output: Any) -> None:
    """The final answer is the simulator's text quoting both tool results the SDK sent back."""
    assert isinstance(output, str), output
    assert "get_weather" in output and "sunny, 21 degrees" in output, output
    assert "get_population" in output, output
    populations = [int(n) for n in re.findall(r"\b21\d{5}\b", output)]
    assert populations and all(p > 2_100_000 for p in populations), output


def assert_tool_items(items: list[Any]) -> None:
    """The run's items hold both calls (arguments as JSON the tool accepted) and their outputs."""
    calls = [i for i in items if isinstance(i, ToolCallItem)]
    outputs = [i for i in items if isinstance(i, ToolCallOutputItem)]
    assert len(calls) == 2 and len(outputs) == 2, items
    for call in calls:
        raw = call.raw_item
        args = json.loads(raw.arguments if hasattr(raw, "arguments") else raw["arguments"])
        assert isinstance(args["city"], str), args


def test_run_sync_through_chat_completions(gateway, gateway_url: str, read_credits) -> None:
    """Runner.run_sync: two parallel tool calls, the SDK runs both, the final answer quotes them,
    and the wallet pays exactly the credit_cost the two answers reported."""
    key = gateway.provision(BILLING_WALLET, CREDITS, "agents-sdk-billing").api_key
    before = read_credits(key)
    tools = Recorder()
    client, wire = recording_client(gateway_url, key)
    agent = Agent(
        name="city-facts",
        instructions="Answer with the tools' results.",
        model=OpenAIChatCompletionsModel(MODEL_3, client),
        tools=tools.tools(),
    )
    result = Runner.run_sync(agent, PROMPT, max_turns=4)
    tools.assert_both_invoked_with_valid_args()
    assert_tool_items(result.new_items)
    assert_final_output_reflects_tools(result.final_output)
    # Two model calls, both with usage the SDK parsed from the gateway's answers.
    assert len(result.raw_responses) == 2
    usage = result.context_wrapper.usage
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0, usage
    assert_signature_carried_back(wire.sent)
    # Billing: the balance drops by exactly the sum of the answers' credit_cost.
    assert [a["choices"][0]["finish_reason"] for a in wire.answers] == ["tool_calls", "stop"]
    total = sum(a["usage"]["credit_cost"] for a in wire.answers)
    assert total > 0
    deadline = time.monotonic() + CHARGE_VISIBLE_WITHIN_S
    while (after := read_credits(key)) != before - total and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after == before - total, f"balance {before} -> {after}, answers reported {total}"


def test_run_streamed_through_chat_completions(gateway_url: str, agents_key: str) -> None:
    """Runner.run_streamed: the SDK assembles the streamed tool-call deltas into calls it runs."""
    tools = Recorder()
    client, wire = recording_client(gateway_url, agents_key)
    agent = Agent(
        name="city-facts-stream",
        instructions="Answer with the tools' results.",
        model=OpenAIChatCompletionsModel(MODEL_3, client),
        # The SDK asks for the usage chunk (stream_options.include_usage) when told to.
        model_settings=ModelSettings(include_usage=True),
        tools=tools.tools(),
    )

    async def run() -> tuple[Any, list[str]]:
        streamed = Runner.run_streamed(agent, PROMPT, max_turns=4)
        kinds: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "run_item_stream_event":
                kinds.append(event.name)
        return streamed, kinds

    streamed, kinds = asyncio.run(run())
    tools.assert_both_invoked_with_valid_args()
    assert kinds.count("tool_called") == 2 and kinds.count("tool_output") == 2, kinds
    assert "message_output_created" in kinds, kinds
    assert_tool_items(streamed.new_items)
    assert_final_output_reflects_tools(streamed.final_output)
    usage = streamed.context_wrapper.usage
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0, usage
    assert all(body.get("stream") is True for body in wire.sent), wire.sent
    assert_signature_carried_back(wire.sent)


def test_handoff_to_a_second_agent(gateway_url: str, agents_key: str) -> None:
    """A triage agent hands off through the SDK's ``transfer_to_<agent>`` tool; the second agent
    gets the history (the call and its output) and answers from the handoff's result."""
    client = async_client(gateway_url, agents_key)
    specialist = Agent(
        name="city facts",
        instructions="Answer with the tools' results.",
        model=OpenAIChatCompletionsModel(MODEL_3, client),
        tools=Recorder().tools(),
    )
    triage = Agent(
        name="triage",
        instructions="Route the user.",
        model=OpenAIChatCompletionsModel(MODEL_3, client),
        handoffs=[specialist],
    )
    result = Runner.run_sync(triage, "Please transfer_to_city_facts.", max_turns=4)
    assert result.last_agent is specialist
    assert len(result.raw_responses) == 2
    assert "transfer_to_city_facts" in result.final_output, result.final_output
    assert "city facts" in result.final_output, result.final_output


def test_run_through_the_default_responses_model(gateway_url: str, agents_key: str) -> None:
    """The SDK's default model class speaks POST /v1/responses (function_call items and
    function_call_output items on the second turn)."""
    tools = Recorder()
    client = async_client(gateway_url, agents_key)
    agent = Agent(
        name="city-facts-responses",
        instructions="Answer with the tools' results.",
        model=MODEL_25,
        tools=tools.tools(),
    )
    # The default provider with the gateway's client: OpenAIResponsesModel, as a user gets it.
    provider = OpenAIProvider(openai_client=client, use_responses=True)
    assert isinstance(provider.get_model(MODEL_25), OpenAIResponsesModel)
    result = Runner.run_sync(
        agent, PROMPT, max_turns=4, run_config=RunConfig(model_provider=provider)
    )
    tools.assert_both_invoked_with_valid_args()
    assert_tool_items(result.new_items)
    assert_final_output_reflects_tools(result.final_output)


def test_x402_paid_run(gateway_url: str, simulator: Any) -> None:
    """A run paid per call with x402 v2 and no API key: the SDK's AsyncOpenAI client sends its
    requests through the x402 SDK's httpx client, which answers each 402 with a signed USDC
    authorization. Both model calls are paid, settled and answered."""
    account = Account.create()  # unseen addresses start with $1000 at the simulated facilitator
    payer = x402Client()
    register_exact_evm_client(payer, account)
    payer.set_spend_controls({"max_amount_per_payment": "$10"})
    payments: list[Any] = []
    payer.on_after_payment_creation(lambda ctx: payments.append(ctx.payment_payload))
    before = usdc_balance(simulator.url, account.address)

    async def run() -> Any:
        # The SDK insists on an API key and sends it as a bearer token; an x402 caller has none,
        # and the gateway refuses a request that carries both kinds of payment, so a request
        # hook drops it before the paying transport sees the request.
        async def drop_bearer(request: Any) -> None:
            request.headers.pop("authorization", None)

        async with x402HttpxClient(
            payer,
            timeout=CLIENT_TIMEOUT_S,
            trust_env=False,
            event_hooks={"request": [drop_bearer]},
        ) as http:
            client = async_client(gateway_url, "x402", http_client=http)
            tools = Recorder()
            agent = Agent(
                name="city-facts-x402",
                instructions="Answer with the tools' results.",
                model=OpenAIChatCompletionsModel(MODEL_25, client),
                tools=tools.tools(),
            )
            result = await Runner.run(agent, PROMPT, max_turns=4)
            return tools, result

    tools, result = asyncio.run(run())
    tools.assert_both_invoked_with_valid_args()
    assert_final_output_reflects_tools(result.final_output)
    # One x402 v2 payment per model call, each settled: the payer's USDC moved by their sum.
    assert [p.x402_version for p in payments] == [2, 2], payments
    spent = before - usdc_balance(simulator.url, account.address)
    assert spent == sum(int(p.accepted.amount) for p in payments) > 0, (before, spent, payments)


def usdc_balance(sim_url: str, address: str) -> int:
    """The address's atomic-USDC balance at the simulated facilitator."""
    res = http_request("GET", f"{sim_url}/facilitator/_balance?address={quote(address)}")
    assert res.status == 200, res
    return int(res.body["balance"])
