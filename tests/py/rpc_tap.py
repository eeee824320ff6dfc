"""A pass-through JSON-RPC endpoint in front of anvil, for faults *between* two of the gateway's
chain calls.

With ``x402.facilitator = "self"`` there is no facilitator process to hold a hook: the gateway
verifies and settles on the chain itself. ``RpcTap`` sits between the gateway (its ``rpc_url``)
and anvil and forwards every request and answer byte for byte; the one thing it adds is
``before(predicate, hook)``: the next request the predicate picks runs ``hook()`` first, against
anvil directly, and is then forwarded. So a payer can move its USDC away, or cancel its
authorization, after the gateway's verification read the chain and just before the gateway's
settlement touches it (``eth_estimateGas`` of ``transferWithAuthorization``). Every answer the
gateway reads is anvil's own; the tap invents nothing.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

#: The 4-byte selector of ``transferWithAuthorization(address,address,uint256,uint256,uint256,
#: bytes32,uint8,bytes32,bytes32)``, the call the gateway settles with.
TRANSFER_WITH_AUTHORIZATION = "0xe3ee160e"


def settles_from(payer: str) -> Callable[[dict[str, Any]], bool]:
    """Picks the gateway's gas estimate of a settlement of ``payer``'s authorization."""
    word = payer.lower().removeprefix("0x").rjust(64, "0")

    def pick(req: dict[str, Any]) -> bool:
        if req.get("method") != "eth_estimateGas":
            return False
        params = req.get("params") or [{}]
        data = str(params[0].get("data") or params[0].get("input") or "").lower()
        return data.startswith(TRANSFER_WITH_AUTHORIZATION) and data[10:74] == word

    return pick


def broadcasts_from(payer: str) -> Callable[[dict[str, Any]], bool]:
    """Picks the gateway's ``eth_sendRawTransaction`` of a settlement of ``payer``'s
    authorization (the payer's address is an argument in the signed calldata)."""
    word = payer.lower().removeprefix("0x")

    def pick(req: dict[str, Any]) -> bool:
        params = req.get("params") or [""]
        return req.get("method") == "eth_sendRawTransaction" and word in str(params[0]).lower()

    return pick


class RpcTap:
    """See the module docstring."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: dict[str, int] = {}
        self._hooks: list[tuple[Callable[[dict[str, Any]], bool], Callable[[], None]]] = []
        self._lock = threading.Lock()
        self.fired = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, name="rpc-tap", daemon=True).start()

    def before(self, pick: Callable[[dict[str, Any]], bool], hook: Callable[[], None]) -> None:
        """The next request ``pick`` accepts runs ``hook()`` before it is forwarded (once)."""
        with self._lock:
            self._hooks.append((pick, hook))

    def clear(self) -> None:
        with self._lock:
            self._hooks.clear()

    def _take(self, reqs: list[dict[str, Any]]) -> list[Callable[[], None]]:
        due = []
        with self._lock:
            for r in reqs:
                self.seen[str(r.get("method"))] = self.seen.get(str(r.get("method")), 0) + 1
                for i, (pick, hook) in enumerate(self._hooks):
                    if pick(r):
                        due.append(hook)
                        del self._hooks[i]
                        break
        return due

    def _forward(self, raw: bytes) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.upstream, data=raw, headers={"content-type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as res:
                return res.status, res.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    body = json.loads(raw)
                    reqs = body if isinstance(body, list) else [body]
                    hooks = tap._take([r for r in reqs if isinstance(r, dict)])
                except ValueError:
                    hooks = []
                for hook in hooks:
                    hook()
                    tap.fired += 1
                status, answer = tap._forward(raw)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
