"""The official OpenAI Python SDK against POST /v1/responses (the Responses API, stateless).

Every test talks to the real ``vectorway serve`` binary (backed by ``vectorway simulate``)
through ``client.responses``, as a user would: a text response, a stream read with the SDK's
``responses.stream`` helper and with ``create(stream=True)`` event iteration, and a function tool
over two turns where the first response's output items go back in ``input`` exactly as the
OpenAI Agents SDK replays them (``model_dump(exclude_unset=True)``), so a Gemini 3 thought
signature riding on the ``function_call`` item must survive the SDK's models. Billing: the
balance drops by exactly the ``usage.credit_cost`` the Response reports. Fixtures live in
conftest.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseTextDeltaEvent,
)

MODEL = "gemini-2.5-flash"
NO_MEMORY = {"memory_read": False, "memory_write": False}
#: A wallet only the billing test uses, so no other test's charges interfere.
RESPONSES_BALANCE_WALLET = "0x" + "7" * 40
BALANCE_CREDITS = 10_000_000

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_a_text_response(client: openai.OpenAI) -> None:
    """``responses.create`` parses into the SDK's Response model, ``output_text`` included."""
    resp = client.responses.create(
        model=MODEL,
        instructions="You are terse.",
        input="Say hello in one short sentence.",
        max_output_tokens=64,
        extra_body=NO_MEMORY,
    )
    assert resp.id.startswith("resp_")
    assert resp.object == "response"
    assert resp.status == "completed"
    assert resp.model == MODEL
    assert isinstance(resp.output[0], ResponseOutputMessage)
    assert resp.output[0].content[0].type == "output_text"
    assert resp.output_text and resp.output_text == resp.output[0].content[0].text
    assert resp.instructions == "You are terse."
    assert resp.usage is not None
    assert resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert (resp.usage.model_extra or {}).get("credit_cost", 0) > 0


def test_the_stream_helper_accumulates_the_final_response(client: openai.OpenAI) -> None:
    """``responses.stream``: the SDK's accumulator rebuilds the response from the events."""
    kinds: list[str] = []
    deltas: list[str] = []
    with client.responses.stream(
        model=MODEL, input="Tell me a short story.", extra_body=NO_MEMORY
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
                assert event.snapshot.endswith(event.delta)
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert len(deltas) > 1
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)
    assert final.usage is not None and final.usage.output_tokens > 0


def test_create_with_stream_true_yields_typed_events(client: openai.OpenAI) -> None:
    """``create(stream=True)``: every event parses into its SDK class, numbered in order."""
    events = list(
        client.responses.create(model=MODEL, input="Count to five.", stream=True, extra_body=NO_MEMORY)
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.output_text == text


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3.5-flash"])
def test_a_function_tool_over_two_turns(client: openai.OpenAI, model: str) -> None:
    """The model calls the tool; its output items go back as the Agents SDK replays them, with
    the tool's output; the second response answers from it."""
    items: list[Any] = [{"role": "user", "content": "Please call get_weather for Paris."}]
    first = client.responses.create(
        model=model, input=items, tools=[WEATHER_TOOL], extra_body=NO_MEMORY
    )
    calls = [o for o in first.output if isinstance(o, ResponseFunctionToolCall)]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    signature = ((calls[0].model_extra or {}).get("extra_content") or {}).get("google", {})
    if model.startswith("gemini-3"):
        assert signature.get("thought_signature"), "Gemini 3 calls carry a thought signature"
    replayed = [o.model_dump(exclude_unset=True) for o in first.output]
    if model.startswith("gemini-3"):
        assert replayed[-1]["extra_content"] == calls[0].model_extra["extra_content"], (
            "the SDK keeps the signature when it dumps the item"
        )
    items += replayed
    items.append(
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp_c": 21}'}
    )
    second = client.responses.create(
        model=model, input=items, tools=[WEATHER_TOOL], extra_body=NO_MEMORY
    )
    assert second.status == "completed"
    assert "21" in second.output_text


def test_a_streamed_function_call(client: openai.OpenAI) -> None:
    """The stream helper accumulates the call's argument deltas into the final item."""
    kinds: list[str] = []
    with client.responses.stream(
        model=MODEL,
        input="Please call get_weather for Rome.",
        tools=[WEATHER_TOOL],
        extra_body=NO_MEMORY,
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = next(o for o in final.output if o.type == "function_call")
    assert call.name == "get_weather"
    assert json.loads(call.arguments)["city"]


def test_stateless_and_hosted_tool_requests_are_bad_requests(client: openai.OpenAI) -> None:
    """What a stateless gateway without hosted tools cannot do is a 400 with a stable code."""
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
    assert info.value.code == "unsupported_parameter"
    assert info.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="hi", tools=[{"type": "web_search"}])
    assert info.value.code == "invalid_tool"
    assert info.value.param == "tools[0].type"


def test_the_balance_drops_by_the_reported_credit_cost(gateway, make_client, read_credits) -> None:
    """Two responses (one streamed) cost exactly the ``usage.credit_cost`` they report."""
    account = gateway.provision(RESPONSES_BALANCE_WALLET, BALANCE_CREDITS, "py-responses")
    api = make_client(account.api_key)
    before = read_credits(account.api_key)
    assert before == BALANCE_CREDITS
    unary = api.responses.create(model=MODEL, input="hello", extra_body=NO_MEMORY)
    with api.responses.stream(model=MODEL, input="hello again", extra_body=NO_MEMORY) as stream:
        streamed = stream.get_final_response()
    costs = [(r.usage.model_extra or {})["credit_cost"] for r in (unary, streamed)]
    assert all(isinstance(c, int) and c > 0 for c in costs)
    deadline = time.monotonic() + 1.5
    after = read_credits(account.api_key)
    while after != before - sum(costs) and time.monotonic() < deadline:
        time.sleep(0.05)
        after = read_credits(account.api_key)
    assert after == before - sum(costs), f"balance {before} -> {after}, reported {costs}"
