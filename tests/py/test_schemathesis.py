"""Property-based API conformance: schemathesis against the live gateway and its own /openapi.json.

Schemathesis reads the OpenAPI 3.1 document the gateway serves (generated from the route table,
src/api/openapi.rs) and, for every operation, generates requests from the schemas, valid ones
and deliberately invalid ones, sends them to a real ``vectorway serve`` in front of the Gemini
simulator, and checks every answer with all of its checks:

* no 5xx on any input (a 5xx on bad input is a gateway bug: bad input gets a 4xx with a code);
* the status, the content type, the headers and the body conform to the documented response
  (each error response narrows ``error.code`` to the codes it documents);
* schema-valid requests are accepted, schema-invalid ones rejected;
* undeclared methods get 405 with ``Allow``; auth is enforced where the spec declares it;
* in linked sequences (stateful), a created resource is usable and a deleted one is gone.

Every operation runs, none is excluded, each with the credentials its spec asks for: an API key
(``x-api-key`` or ``Bearer vw_…``) for a funded wallet, a session JWT from a real SIWE sign-in,
and the operator secret (from ``<data_dir>/admin.secret``) for ``/admin/*`` and ``/metrics``.
What cannot be given a static credential is still run and checked, with these documented
allowances (each an ``operations`` entry in ``CONFIG`` below):

* x402 money routes (``/v1/auth/agent-onboard``, ``/v1/credits/purchase``, ``/v1/topup``): a
  valid payment is an EIP-3009 signature over the exact amount in the generated body, so the
  fuzzer cannot make one; a schema-valid unpaid request is answered 402 with the payment
  requirements (x402's challenge), which the positive-data check is told to accept. Paid calls
  are covered by test_x402.py with the official x402 SDK.
* ``ignored_auth`` is off for those and for chat and responses: x402 answers a request without credentials
  with 402 and the price (not 401/403) by design; ``test_unpaid_calls_get_the_x402_challenge``
  below asserts that answer directly.
* SIWE-in-the-body/query routes (``/v1/auth/keys``): a SIWE message is single-use, so generated
  requests are refused with 401 ``siwe_*``, which schemathesis accepts for valid data; the real
  flow is covered by test_siwe.py.

The module starts its own gateway (sharing the session's simulator) with raised rate limits, so
the fuzzer's request rate is not throttled into 429s and no other test's wallet is touched. The
run is bounded (``MAX_EXAMPLES`` per operation and phase, derandomized so CI is reproducible; set
``VECTORWAY_ST_RANDOM=1`` to explore with fresh random data, ``VECTORWAY_ST_EXAMPLES=N`` to go
deeper) and takes under a minute on two cores (about 40 s; ``VECTORWAY_ST_EXAMPLES=80`` about
65 s).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from eth_account import Account
from eth_account.messages import encode_defunct

from conftest import (
    FUNDED_CREDITS,
    UPSTREAM_API_KEY,
    Gateway,
    ManagedProcess,
    _wait_for_gateway,
    child_env,
    http_request,
)

#: Examples per operation and generation phase.
MAX_EXAMPLES = int(os.environ.get("VECTORWAY_ST_EXAMPLES", "12"))
#: Derandomized (the same cases every run) unless exploring.
DETERMINISTIC = os.environ.get("VECTORWAY_ST_RANDOM", "") != "1"
#: The wallet the API key bills; its own, so no other module's balance moves.
ST_WALLET = "0x" + "5" * 40

#: Schemathesis's default expectations, extended per check in ``config``.
POSITIVE = ["2xx", "3xx", "401", "403", "404", "409", "429"]
NEGATIVE = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429"]

#: Operations whose unpaid, schema-valid requests are answered 402 (see the module docstring).
X402_ONLY = ["/v1/auth/agent-onboard", "/v1/credits/purchase", "/v1/topup"]


@pytest.fixture(scope="module")
def st_gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    vectorway_bin: Path,
    log_dir: Path,
    simulator: ManagedProcess,
) -> Gateway:
    """A gateway for this module only: own data dir, rate limits raised for the fuzzer."""
    data_dir = tmp_path_factory.mktemp("vectorway-st-data")
    sim = simulator.wait_for_url()
    env = child_env(
        {
            "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
            "VECTORWAY_STORE__DATA_DIR": str(data_dir),
            "VECTORWAY_UPSTREAM__BASE_URL": sim,
            "VECTORWAY_X402__FACILITATOR_URL": f"{sim}/facilitator",
            "VECTORWAY_LIMITS__RUNTIME_PER_MIN": "1000000",
            "VECTORWAY_LIMITS__CONTROL_PER_MIN": "1000000",
            "GEMINI_API_KEY": UPSTREAM_API_KEY,
        }
    )
    proc = ManagedProcess(
        "gateway-schemathesis", [str(vectorway_bin), "serve"], env, log_dir / "gateway-st.log"
    )
    request.addfinalizer(proc.stop)
    url = _wait_for_gateway(proc, data_dir)
    return Gateway(url=url, data_dir=data_dir, binary=vectorway_bin, process=proc, env=env)


def sign_in(url: str) -> str:
    """A session JWT for a fresh wallet, from a real SIWE challenge signed with eth-account."""
    account = Account.create()
    challenge = http_request(
        "POST",
        f"{url}/v1/auth/siwe/challenge",
        json_body={"wallet_address": account.address, "chain_id": 1},
    )
    assert challenge.status == 200, challenge.body
    message = challenge.body["message"]
    signed = account.sign_message(encode_defunct(text=message))
    verify = http_request(
        "POST",
        f"{url}/v1/auth/siwe/verify",
        json_body={
            "wallet_address": account.address,
            "message": message,
            "signature": "0x" + bytes(signed.signature).hex(),
        },
    )
    assert verify.status == 200, verify.body
    return verify.body["tokens"]["access_token"]


def config(gateway: Gateway) -> dict[str, Any]:
    """The schemathesis configuration (the schemathesis.toml layout, as a dict)."""
    key = gateway.provision(ST_WALLET, FUNDED_CREDITS, "schemathesis").api_key
    admin_secret = (gateway.data_dir / "admin.secret").read_text().strip()
    return {
        "base-url": gateway.url,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": DETERMINISTIC,
            "database": "none",
        },
        "auth": {
            "openapi": {
                "apiKey": {"api_key": key},
                "apiKeyBearer": {"bearer": key},
                "jwt": {"bearer": sign_in(gateway.url)},
                "admin": {"api_key": admin_secret},
            }
        },
        "checks": {
            # A body over the configured limit (server.body_limit_bytes, 1 MiB) is 413 before it
            # is parsed: a limit on the whole body that JSON Schema cannot state field by field.
            "positive_data_acceptance": {"expected-statuses": POSITIVE + ["413"]},
            "negative_data_rejection": {"expected-statuses": NEGATIVE + ["413"]},
        },
        "operations": [
            {
                # x402 answers "no credentials" with 402 and the price, not 401/403.
                "include-path-regex": "^(/v1/chat/completions|/v1/responses|"
                + "|".join(X402_ONLY)
                + ")$",
                "checks": {"ignored_auth": {"enabled": False}},
            },
            {
                # A schema-valid request without a payment is answered with the x402 challenge.
                # No static credential can pay, so none is generated: requests go unpaid.
                "include-path-regex": "^(" + "|".join(X402_ONLY) + ")$",
                "generation": {"with-security-parameters": False},
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": POSITIVE + ["402", "413"]}
                },
            },
        ],
    }


@pytest.fixture(scope="module")
def st_schema(st_gateway: Gateway) -> Any:
    return schemathesis.openapi.from_url(
        f"{st_gateway.url}/openapi.json",
        config=schemathesis.Config.from_dict(config(st_gateway)),
    )


schema = schemathesis.pytest.from_fixture("st_schema")


@schema.parametrize()
def test_every_operation_conforms_to_the_spec(case: Any) -> None:
    case.call_and_validate()


def test_unpaid_calls_get_the_x402_challenge(st_gateway: Gateway) -> None:
    """What ``ignored_auth`` is turned off for: no credentials is 402 with requirements."""
    for path, body in [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi"}),
        ("/v1/auth/agent-onboard", {"wallet_address": ST_WALLET, "credits": 500_000}),
        ("/v1/topup", {"amount": 5}),
    ]:
        res = http_request("POST", f"{st_gateway.url}{path}", json_body=body)
        assert res.status == 402, (path, res.status, res.body)
        assert res.body["x402Version"] == 1 and res.body["accepts"], res.body
        assert res.headers.get("payment-required"), res.headers


def test_stateful_sequences(st_schema: Any) -> None:
    """Sequences of linked calls (create a key, then list and revoke it; ...), checked the same way.

    The links are inferred by schemathesis from the schemas (a key's ``key_id`` feeds
    ``DELETE /v1/api-keys/{key_id}``), so its ``use_after_free`` and
    ``ensure_resource_availability`` checks run too.
    """
    machine = st_schema.as_state_machine()
    machine.run(
        settings=hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=DETERMINISTIC,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
