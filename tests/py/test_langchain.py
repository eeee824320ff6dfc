"""LangChain (``langchain-openai``'s ``ChatOpenAI``) against the real gateway.

``ChatOpenAI(base_url=<gateway>/v1, api_key=<funded key>)``, unmodified: ``bind_tools`` with two
tools (unary and streamed, the streamed chunks summed as LangChain's docs do), a manual agent
loop that sends ``ToolMessage``s back, and ``with_structured_output`` with a Pydantic model, both
through its default method (``response_format`` json_schema) and through function calling.

The simulator calls every declared tool the last user turn names (schema-valid arguments) and
answers a turn of tool results with ``The tool NAME returned {"result": ...}.``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from conftest import CLIENT_TIMEOUT_S

MODEL = "gemini-2.5-flash"
#: Gemini 3: LangChain does not keep the gateway's thought-signature extension on tool calls, so
#: the loop below also covers a client that drops it (the gateway then does what Google's own
#: OpenAI layer does).
MODEL_3 = "gemini-3.5-flash"
#: A wallet only this file bills.
WALLET = "0x" + "b2" * 20
CREDITS = 20_000_000
PROMPT = "Call get_weather and get_population for Paris."


@tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather in a city.

    Args:
        city: The city name.
        unit: Temperature unit.
    """
    return f"sunny, 21 degrees {unit} in {city}"


@tool
def get_population(city: str, year: int) -> int:
    """Population of a city in a given year.

    Args:
        city: The city name.
        year: The census year.
    """
    return 2_100_000 + year


TOOLS = {t.name: t for t in (get_weather, get_population)}


class CityFacts(BaseModel):
    """Facts about a city."""

    city: str = Field(description="The city's name")
    population: int = Field(description="Inhabitants")
    sunny: bool
    districts: list[str]


@pytest.fixture(scope="module")
def llm_factory(gateway, gateway_url: str):
    key = gateway.provision(WALLET, CREDITS, "langchain").api_key

    def make(model: str = MODEL, **kwargs: Any) -> ChatOpenAI:
        return ChatOpenAI(
            model=model,
            base_url=f"{gateway_url}/v1",
            api_key=key,
            max_retries=0,
            timeout=CLIENT_TIMEOUT_S,
            max_tokens=256,
            **kwargs,
        )

    return make


def assert_two_valid_calls(message: AIMessage) -> None:
    """Both tools called, args parsed by LangChain into dicts its tools accept."""
    calls = message.tool_calls
    assert sorted(c["name"] for c in calls) == ["get_population", "get_weather"], calls
    assert not message.invalid_tool_calls, message.invalid_tool_calls
    ids = [c["id"] for c in calls]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == 2, ids
    for call in calls:
        args = call["args"]
        assert isinstance(args["city"], str) and args["city"], call
        if call["name"] == "get_population":
            assert isinstance(args["year"], int) and not isinstance(args["year"], bool), call
        # The tool's own argument schema accepts them.
        TOOLS[call["name"]].args_schema.model_validate(args)


def test_bind_tools_invoke_returns_parsed_tool_calls(llm_factory) -> None:
    message = llm_factory().bind_tools([get_weather, get_population]).invoke(PROMPT)
    assert isinstance(message, AIMessage)
    assert_two_valid_calls(message)
    assert message.response_metadata["finish_reason"] == "tool_calls"
    usage = message.usage_metadata
    assert usage and usage["input_tokens"] > 0 and usage["output_tokens"] > 0, usage


@pytest.mark.parametrize("model", [MODEL, MODEL_3])
def test_manual_tool_loop_with_tool_messages(llm_factory, model: str) -> None:
    """Turn 1 calls both tools, the tools run, ToolMessages go back, turn 2 answers from them."""
    llm = llm_factory(model).bind_tools([get_weather, get_population])
    messages: list[Any] = [HumanMessage(PROMPT)]
    first = llm.invoke(messages)
    assert_two_valid_calls(first)
    messages.append(first)
    results = {}
    for call in first.tool_calls:
        output = TOOLS[call["name"]].invoke(call)  # a ToolCall in gives a ToolMessage out
        assert isinstance(output, ToolMessage) and output.tool_call_id == call["id"]
        results[call["name"]] = output.content
        messages.append(output)
    final = llm.invoke(messages)
    assert not final.tool_calls, final.tool_calls
    assert final.response_metadata["finish_reason"] == "stop"
    text = final.content
    assert isinstance(text, str)
    # The answer quotes each tool result that went back.
    assert "get_weather" in text and results["get_weather"] in text, (text, results)
    assert "get_population" in text and results["get_population"] in text, (text, results)


def test_stream_with_tools_accumulates_tool_call_chunks(llm_factory) -> None:
    # stream_usage: LangChain asks for the usage chunk (stream_options.include_usage), which it
    # leaves off by default for a base_url that is not OpenAI's.
    llm = llm_factory(stream_usage=True).bind_tools([get_weather, get_population])
    chunks = list(llm.stream(PROMPT))
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert any(c.tool_call_chunks for c in chunks), chunks
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    # LangChain merges the chunks by index and parses the accumulated argument strings.
    assert len(full.tool_call_chunks) == 2, full.tool_call_chunks
    for piece in full.tool_call_chunks:
        json.loads(piece["args"])
    assert_two_valid_calls(full)
    assert full.response_metadata.get("finish_reason") == "tool_calls", full.response_metadata
    usage = full.usage_metadata
    assert usage and usage["input_tokens"] > 0 and usage["output_tokens"] > 0, usage
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"], usage


def assert_city_facts(facts: Any) -> None:
    assert isinstance(facts, CityFacts), facts
    assert facts.city and isinstance(facts.population, int) and facts.districts, facts


def test_structured_output_default_method_json_schema(llm_factory) -> None:
    """with_structured_output's default: response_format json_schema (strict), parsed."""
    structured = llm_factory().with_structured_output(CityFacts, include_raw=True)
    out = structured.invoke("Give me facts about Paris.")
    assert out["parsing_error"] is None, out
    assert_city_facts(out["parsed"])
    meta = out["raw"].response_metadata
    assert meta["finish_reason"] == "stop", meta


def test_structured_output_function_calling(llm_factory) -> None:
    """method="function_calling": the schema becomes a tool LangChain forces with tool_choice."""
    structured = llm_factory().with_structured_output(CityFacts, method="function_calling")
    assert_city_facts(structured.invoke("Give me facts about Paris."))
