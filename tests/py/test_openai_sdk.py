"""OpenAI Python SDK compatibility tests for the vectorway gateway.

Every test talks to the real `vectorway serve` binary (backed by the real `vectorway simulate`
Gemini simulator) through the official ``openai`` package, exactly as a user would, and checks
that the SDK parses what the gateway sends: plain and streamed chat completions, usage
accounting, the model list, error-to-exception mapping, and that billing charges exactly the
``usage.credit_cost`` the gateway reports. Fixtures live in conftest.py.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import openai
import pytest

from openai.types.chat import ChatCompletionChunk

#: The model used by most tests, and the full set /v1/models must advertise.
MODEL = "gemini-2.5-flash"
EXPECTED_MODELS = {
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.5-flash-lite",
    "gemini-3.1-flash-lite",
    "gemini-3.5-flash",
}
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in one short sentence."},
]
MAX_TOKENS = 64
FINISH_REASONS = ("stop", "length")

#: How long a charge may take to show up in GET /v1/credits/me (debits are group-committed).
CHARGE_VISIBLE_WITHIN_S = 1.5

#: Wallets used only by the balance tests, so no other test's charges can interfere.
BALANCE_WALLET = "0x" + "3" * 40
STREAM_BALANCE_WALLET = "0x" + "4" * 40
BALANCE_CREDITS = 10_000_000


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    """True for a JSON integer (bool is an int subclass in Python, so exclude it)."""
    return isinstance(value, int) and not isinstance(value, bool)


def collect_stream(client: openai.OpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    """Runs a streamed chat completion to the end and returns every chunk."""
    with client.chat.completions.create(
        model=kwargs.pop("model", MODEL),
        messages=kwargs.pop("messages", MESSAGES),
        max_tokens=kwargs.pop("max_tokens", MAX_TOKENS),
        stream=True,
        **kwargs,
    ) as stream:
        chunks = list(stream)
    assert chunks, "the stream produced no chunks"
    return chunks


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    """The concatenation of every ``delta.content`` in the stream."""
    return "".join(
        choice.delta.content or "" for chunk in chunks for choice in chunk.choices
    )


def wait_for_balance(read: Callable[[], int], expected: int) -> int:
    """Polls the balance until it equals ``expected`` or the deadline passes; returns the last."""
    deadline = time.monotonic() + CHARGE_VISIBLE_WITHIN_S
    while True:
        value = read()
        if value == expected or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Harness contract (the things the fixtures rely on)
# --------------------------------------------------------------------------------------------


def test_server_json_describes_the_running_gateway(gateway) -> None:
    """``<data_dir>/server.json`` names the bound address and the gateway's pid."""
    info = json.loads((gateway.data_dir / "server.json").read_text())
    assert gateway.url == f"http://{info['addr']}"
    assert info["pid"] == gateway.process.pid


def test_admin_cli_outputs(funded_account) -> None:
    """`admin grant` reports the new balance; `admin create-key` a ``vw_<key_id>_<secret>`` key."""
    grant = funded_account.grant_output
    assert grant is not None
    assert grant["wallet"].lower() == funded_account.wallet
    assert grant["credits"] == funded_account.granted  # a fresh wallet: new balance == grant

    key_id = funded_account.key_id
    assert len(key_id) == 12
    assert funded_account.api_key.startswith(f"vw_{key_id}_")
    assert len(funded_account.api_key) > len(f"vw_{key_id}_")


# --------------------------------------------------------------------------------------------
# Chat completions
# --------------------------------------------------------------------------------------------


def test_non_streaming_completion(client: openai.OpenAI) -> None:
    """A plain completion parses in the SDK and carries the Vectorway usage extras."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
    )
    completion = raw.parse()

    # What the SDK user sees.
    assert completion.object == "chat.completion"
    assert completion.id
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    content = choice.message.content
    assert isinstance(content, str) and content, "empty message content"
    assert choice.finish_reason in FINISH_REASONS
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    # The Vectorway extras, read from the raw JSON body.
    body = raw.http_response.json()
    assert body["output_text"] == content
    raw_usage = body["usage"]
    assert is_int(raw_usage["credit_cost"]) and raw_usage["credit_cost"] > 0, raw_usage
    assert "usd_cost" in raw_usage and raw_usage["usd_cost"] is None, raw_usage
    assert raw_usage["model"] == MODEL

    # Every response is tagged with a request id (the SDK exposes it too).
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.request_id == raw.headers["x-request-id"]


def test_streaming_with_include_usage(client: openai.OpenAI) -> None:
    """``include_usage`` adds exactly one final usage chunk with no choices."""
    chunks = collect_stream(client, stream_options={"include_usage": True})

    assert streamed_text(chunks), "the streamed deltas are empty"
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    ids = {chunk.id for chunk in chunks}
    assert len(ids) == 1 and next(iter(ids)), f"chunk ids differ or are empty: {ids}"

    finish_reasons = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finish_reasons, "no chunk carried a finish_reason"
    assert all(reason in FINISH_REASONS for reason in finish_reasons), finish_reasons

    with_usage = [i for i, chunk in enumerate(chunks) if chunk.usage is not None]
    assert with_usage == [len(chunks) - 1], f"usage chunks at {with_usage} of {len(chunks)}"
    last = chunks[-1]
    assert last.choices == []
    usage = last.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streaming_without_include_usage(client: openai.OpenAI) -> None:
    """Without ``include_usage`` no chunk carries usage."""
    chunks = collect_stream(client)

    assert streamed_text(chunks), "the streamed deltas are empty"
    assert [i for i, chunk in enumerate(chunks) if chunk.usage is not None] == []
    assert any(c.finish_reason for chunk in chunks for c in chunk.choices)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    """/v1/models lists every supported Gemini model."""
    ids = {model.id for model in client.models.list()}
    missing = EXPECTED_MODELS - ids
    assert not missing, f"missing models {sorted(missing)}; listed: {sorted(ids)}"


def test_provider_prefixed_model_alias(client: openai.OpenAI) -> None:
    """The ``gemini/<id>`` spelling is accepted as a model for chat."""
    completion = client.chat.completions.create(
        model=f"gemini/{MODEL}", messages=MESSAGES, max_tokens=MAX_TOKENS
    )
    assert completion.choices[0].message.content


# --------------------------------------------------------------------------------------------
# Errors map onto the SDK's exception classes
# --------------------------------------------------------------------------------------------


def assert_openai_error_body(exc: openai.APIStatusError, code: str) -> None:
    """The body is OpenAI's ``error`` object (the SDK unwraps ``{"error": ...}``)."""
    assert exc.code == code, f"code {exc.code!r}, body {exc.body!r}"
    assert isinstance(exc.body, dict), exc.body
    assert exc.body.get("code") == code
    assert isinstance(exc.body.get("message"), str) and exc.body["message"]
    assert isinstance(exc.body.get("type"), str) and exc.body["type"]


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="gemini-0.0-does-not-exist", messages=MESSAGES, max_tokens=MAX_TOKENS
        )
    assert info.value.status_code == 404
    assert_openai_error_body(info.value, "model_not_found")


def test_invalid_api_key_is_authentication_error(make_client) -> None:
    bogus = make_client("vw_aaaaaaaaaaaa_" + "a" * 43)
    with pytest.raises(openai.AuthenticationError) as info:
        bogus.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert info.value.status_code == 401
    assert_openai_error_body(info.value, "invalid_api_key")


def test_unfunded_wallet_gets_402(make_client, unfunded_account, read_credits) -> None:
    assert read_credits(unfunded_account.api_key) == 0
    broke = make_client(unfunded_account.api_key)
    with pytest.raises(openai.APIStatusError) as info:
        broke.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
    assert info.value.status_code == 402
    assert_openai_error_body(info.value, "insufficient_credits")


# --------------------------------------------------------------------------------------------
# Billing: the balance moves by exactly the reported credit cost
# --------------------------------------------------------------------------------------------


def test_balance_drops_by_reported_credit_cost(gateway, make_client, read_credits) -> None:
    """After N calls the balance is lower by exactly the sum of their ``usage.credit_cost``.

    Uses its own freshly funded wallet so that charges of earlier tests cannot still be
    settling while the starting balance is read.
    """
    account = gateway.provision(BALANCE_WALLET, BALANCE_CREDITS, "py-balance")
    api = make_client(account.api_key)
    before = read_credits(account.api_key)
    assert before == BALANCE_CREDITS

    total = 0
    for max_tokens in (16, 32, 64):
        raw = api.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=max_tokens
        )
        cost = raw.http_response.json()["usage"]["credit_cost"]
        assert is_int(cost) and cost > 0
        total += cost

    after = wait_for_balance(lambda: read_credits(account.api_key), before - total)
    assert after == before - total, (
        f"balance {before} -> {after} (charged {before - after}), reported costs sum to {total}"
    )


def test_streaming_call_is_charged(gateway, make_client, read_credits) -> None:
    """A streamed call is charged; if its usage chunk reports a credit cost, exactly that."""
    account = gateway.provision(STREAM_BALANCE_WALLET, BALANCE_CREDITS, "py-stream-balance")
    api = make_client(account.api_key)
    before = read_credits(account.api_key)
    assert before == BALANCE_CREDITS

    chunks = collect_stream(api, stream_options={"include_usage": True})
    usage = chunks[-1].usage
    assert usage is not None
    cost = (usage.model_extra or {}).get("credit_cost")

    if cost is not None:
        assert is_int(cost) and cost > 0
        after = wait_for_balance(lambda: read_credits(account.api_key), before - cost)
        assert after == before - cost, f"balance {before} -> {after}, usage chunk said {cost}"
    else:
        deadline = time.monotonic() + CHARGE_VISIBLE_WITHIN_S
        after = read_credits(account.api_key)
        while after == before and time.monotonic() < deadline:
            time.sleep(0.05)
            after = read_credits(account.api_key)
        assert 0 < before - after, f"streamed call was not charged (balance stayed {before})"


def test_embeddings_with_both_encodings(client: openai.OpenAI) -> None:
    """`embeddings.create` with the SDK's default (base64, decoded by the SDK) and with floats."""
    texts = ["the fleet budget is 300 credits", "the orbital run finished"]
    default = client.embeddings.create(model="gemini-embedding-001", input=texts)
    floats = client.embeddings.create(model="gemini-embedding-001", input=texts, encoding_format="float")
    assert len(default.data) == len(floats.data) == 2
    for a, b in zip(default.data, floats.data):
        assert len(a.embedding) == len(b.embedding) == 768
        # base64 little-endian float32 decodes to the same vector the float encoding gives.
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
        assert abs(sum(x * x for x in a.embedding) - 1.0) < 1e-3
    assert default.usage.prompt_tokens > 0
    single = client.embeddings.create(model="gemini-embedding-001", input="one text", dimensions=256)
    assert len(single.data[0].embedding) == 256


# --------------------------------------------------------------------------------------------
# Tool calling (the simulator calls a declared tool the user names, and answers its result)
# --------------------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3.5-flash"])
def test_tool_calls_round_trip_through_the_sdk(client: openai.OpenAI, model: str) -> None:
    """Unary: the SDK parses tool_calls, and the assistant message it hands back (with the
    Gemini 3 thought signature in extra_content) is accepted on the next turn."""
    messages: list[Any] = [{"role": "user", "content": "Please call get_weather for Paris."}]
    first = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], max_tokens=MAX_TOKENS,
        extra_body={"memory_read": False, "memory_write": False},
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)
    # The SDK keeps unknown fields: the message goes back as the SDK returned it.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp_c": 21}'})
    second = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER_TOOL], max_tokens=MAX_TOKENS,
        extra_body={"memory_read": False, "memory_write": False},
    )
    assert second.choices[0].finish_reason == "stop"
    assert "21" in (second.choices[0].message.content or "")


def test_streamed_tool_calls_accumulate_in_the_sdk(client: openai.OpenAI) -> None:
    """Stream: the SDK's stream helper accumulates the tool call deltas into one call."""
    with client.beta.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "Please call get_weather for Rome."}],
        tools=[WEATHER_TOOL],
        max_tokens=MAX_TOKENS,
        extra_body={"memory_read": False, "memory_write": False},
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert isinstance(json.loads(choice.message.tool_calls[0].function.arguments)["city"], str)


def png_bytes(width: int, height: int) -> bytes:
    """A real (all-black, grayscale) PNG of the given size, built with zlib."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def test_image_data_url_through_the_sdk(client: openai.OpenAI) -> None:
    """An image content part as the SDK types it (a base64 PNG data URL) reaches Gemini as
    inline data and is counted by Gemini's tile rule: a 1000×800 image is 2×2 tiles of 258."""
    import base64

    question = "What is in this picture?"
    url = "data:image/png;base64," + base64.b64encode(png_bytes(1000, 800)).decode()
    extra = {"memory_read": False, "memory_write": False}
    text_only = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}],
        max_tokens=MAX_TOKENS, extra_body=extra,
    )
    messages: list[Any] = [{"role": "user", "content": [
        {"type": "text", "text": question},
        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
    ]}]
    with_image = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=MAX_TOKENS, extra_body=extra,
    )
    assert with_image.choices[0].message.content
    assert with_image.usage.prompt_tokens == text_only.usage.prompt_tokens + 4 * 258
    chunks = collect_stream(client, messages=messages, stream_options={"include_usage": True},
                            extra_body=extra)
    assert streamed_text(chunks)
    assert chunks[-1].usage.prompt_tokens == with_image.usage.prompt_tokens
    # A remote URL pointing at the gateway's own loopback is refused (SSRF), as a 400 the SDK
    # raises as BadRequestError.
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, max_tokens=MAX_TOKENS, extra_body=extra,
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://127.0.0.1/secret.png"}}]}],
        )
    assert_openai_error_body(err.value, "image_url_forbidden")

# --------------------------------------------------------------------------------------------
# Structured outputs, n, logprobs (issue 15: the chat request surface)
# --------------------------------------------------------------------------------------------

from typing import Literal, Optional  # noqa: E402

from pydantic import BaseModel  # noqa: E402


class Address(BaseModel):
    city: str
    street: str


class Person(BaseModel):
    name: str
    age: int
    tags: list[str]
    address: Address
    nickname: Optional[str]
    mood: Literal["happy", "sad"]


NO_MEMORY = {"memory_read": False, "memory_write": False}


def test_json_schema_with_a_pydantic_model_through_parse(client: openai.OpenAI) -> None:
    """``chat.completions.parse`` sends the model's strict JSON Schema ($defs/$ref, anyOf with
    null, an enum) and parses the answer back into the model."""
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Ada Lovelace lived in London on St James's Square."}],
        response_format=Person,
        max_tokens=512,
        extra_body=NO_MEMORY,
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person), completion.choices[0].message
    assert person.tags and isinstance(person.address, Address)
    assert person.mood in ("happy", "sad")
    # The same through the stream helper: the SDK parses the accumulated JSON.
    with client.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": "Grace Hopper lived in Arlington."}],
        response_format=Person,
        max_tokens=512,
        extra_body=NO_MEMORY,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Person)


def test_json_schema_as_a_plain_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 1}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a big city."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "city", "schema": schema, "strict": True}},
        max_tokens=256,
        extra_body=NO_MEMORY,
    )
    value = json.loads(completion.choices[0].message.content or "")
    assert isinstance(value["city"], str) and value["population"] >= 1
    # A schema Gemini cannot enforce under strict is a 400 naming the path.
    bad = dict(schema, properties={"city": {"type": "string", "pattern": "^[A-Z]"}})
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "city", "schema": bad, "strict": True}},
            extra_body=NO_MEMORY,
        )
    assert err.value.code == "invalid_schema"
    assert err.value.param == "response_format.json_schema.schema.properties.city.pattern"


def test_n_choices_unary_and_streamed(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, extra_body=NO_MEMORY
    )
    two = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, n=2, extra_body=NO_MEMORY
    )
    assert [c.index for c in two.choices] == [0, 1]
    texts = [c.message.content for c in two.choices]
    assert texts[0] != texts[1] and all(texts)
    assert two.usage.completion_tokens == 2 * one.usage.completion_tokens
    chunks = collect_stream(client, n=2, stream_options={"include_usage": True},
                            extra_body=NO_MEMORY)
    streamed = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert streamed == {0: texts[0], 1: texts[1]}
    assert set(finishes) == {0, 1}
    assert chunks[-1].usage.completion_tokens == two.usage.completion_tokens


def test_logprobs_unary_and_accumulated_by_the_stream_helper(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, logprobs=True, top_logprobs=3,
        extra_body=NO_MEMORY,
    )
    choice = completion.choices[0]
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes) == t.token.encode()
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
    with client.chat.completions.stream(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, logprobs=True, top_logprobs=3,
        n=2, extra_body=NO_MEMORY,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert len(final.choices) == 2
    for c in final.choices:
        assert "".join(t.token for t in c.logprobs.content) == c.message.content
    assert [t.model_dump() for t in final.choices[0].logprobs.content] == [
        t.model_dump() for t in content
    ]
