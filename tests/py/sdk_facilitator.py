"""The x402 SDK's own facilitator behind HTTP, settling on the test chain (tests/py/chain.py).

The ``x402`` Python SDK ships a facilitator (``x402FacilitatorSync`` with the EVM ``exact``
scheme registered through ``register_exact_evm_facilitator`` around a ``FacilitatorWeb3Signer``)
but no HTTP server. ``SdkFacilitator`` is that server: ``POST /verify``, ``POST /settle`` and
``GET /supported`` with the bodies of the facilitator HTTP API (reference §3:
``{x402Version, paymentPayload, paymentRequirements}`` in, the SDK's ``VerifyResponse`` /
``SettleResponse`` / ``SupportedResponse`` out, camelCase, ``None`` fields left out), on
127.0.0.1 and a port the OS picks. Every verification and settlement is the SDK's: signature
recovery, an ``eth_call`` simulation of ``transferWithAuthorization``, and a real transaction
sent by the facilitator's account (anvil dev account #2) whose receipt it waits for.

Test-controlled faults, each for the next ``times`` settlements, model what the SDK itself does
on a real chain rather than inventing answers:

* ``delay_after_settle(seconds)``: settle for real, then hold the answer back (a facilitator
  whose answer is late or lost after the transfer mined, so the gateway times out and retries);
* ``pending_once(mine_after)``: stop anvil's automatic mining before settling, so the SDK's
  receipt wait runs out and it answers ``settlement_pending`` with the broadcast hash (the
  SDK's own outcome for a slow confirmation); ``mine_after`` seconds later the block is mined
  and automatic mining resumes;
* ``before_settle(hook)``: run ``hook(payload)`` (the parsed SDK payment payload) just before
  settling, after the gateway's ``/verify`` passed: the payer moves the funds away or cancels
  the authorization, or the chain stops, between verification and settlement.

``calls`` counts requests per endpoint and ``settlements`` keeps every settle answer.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from x402 import x402FacilitatorSync
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import register_exact_evm_facilitator
from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements

from chain import CAIP2, Chain, dev_account

#: Seconds the SDK waits for a settlement's receipt before answering ``settlement_pending``.
#: anvil mines each transaction at once, so only ``pending_once`` ever reaches it.
CONFIRMATION_TIMEOUT_S = 1.5


@dataclass
class _Fault:
    kind: str
    seconds: float
    times: int
    hook: Callable[[Any], None] | None = None


class SdkFacilitator:
    """See the module docstring."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.account = dev_account(2)
        self.signer = FacilitatorWeb3Signer(
            private_key=self.account.key.hex(),
            rpc_url=chain.rpc_url,
            confirmation_timeout_seconds=CONFIRMATION_TIMEOUT_S,
        )
        self.facilitator = x402FacilitatorSync()
        register_exact_evm_facilitator(self.facilitator, self.signer, networks=CAIP2)
        self.calls = {"verify": 0, "settle": 0, "supported": 0}
        self.settlements: list[dict[str, Any]] = []
        self._fault: _Fault | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sdk-facilitator", daemon=True
        )
        self._thread.start()

    # ---- faults ------------------------------------------------------------------------------

    def delay_after_settle(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._fault = _Fault("delay_after", seconds, times)

    def pending_once(self, mine_after: float) -> None:
        with self._lock:
            self._fault = _Fault("pending", mine_after, 1)

    def before_settle(self, hook: Callable[[Any], None], times: int = 1) -> None:
        with self._lock:
            self._fault = _Fault("before", 0.0, times, hook)

    def clear_faults(self) -> None:
        with self._lock:
            self._fault = None

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            f = self._fault
            if f is None:
                return None
            f.times -= 1
            if f.times <= 0:
                self._fault = None
            return f

    # ---- the three endpoints -----------------------------------------------------------------

    def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        payload, requirements = _parse(body)
        return _dump(self.facilitator.verify(payload, requirements))

    def settle(self, body: dict[str, Any]) -> dict[str, Any]:
        payload, requirements = _parse(body)
        fault = self._take_fault()
        if fault is not None and fault.kind == "pending":
            self.chain.set_automine(False)
            try:
                answer = _dump(self.facilitator.settle(payload, requirements))
            finally:
                threading.Timer(fault.seconds, self._resume_mining).start()
            self.settlements.append(answer)
            return answer
        if fault is not None and fault.hook is not None:
            fault.hook(payload)
        answer = _dump(self.facilitator.settle(payload, requirements))
        self.settlements.append(answer)
        if fault is not None and fault.kind == "delay_after":
            time.sleep(fault.seconds)
        return answer

    def _resume_mining(self) -> None:
        self.chain.mine()
        self.chain.set_automine(True)

    def supported(self) -> dict[str, Any]:
        return _dump(self.facilitator.get_supported())

    # ---- HTTP --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fac = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet: the tests read `calls` and `settlements`

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway gave up waiting (a delayed answer): nothing to deliver

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") == "/supported":
                    fac.calls["supported"] += 1
                    self._send(200, fac.supported())
                else:
                    self._send(404, {"error": f"no endpoint GET {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                what = self.path.strip("/")
                if what not in ("verify", "settle"):
                    self._send(404, {"error": f"no endpoint POST {self.path}"})
                    return
                fac.calls[what] += 1
                try:
                    body = json.loads(raw)
                    answer = fac.verify(body) if what == "verify" else fac.settle(body)
                except (ValueError, KeyError, TypeError) as e:
                    self._send(400, {"error": f"bad request: {e}"})
                    return
                except Exception as e:  # the SDK raised (no scheme for the network, …)
                    self._send(500, {"error": f"{type(e).__name__}: {e}"})
                    return
                self._send(200, answer)

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _parse(body: dict[str, Any]) -> tuple[Any, Any]:
    payload = parse_payment_payload(body["paymentPayload"])
    requirements = parse_payment_requirements(
        int(body["x402Version"]), body["paymentRequirements"]
    )
    return payload, requirements


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True)
