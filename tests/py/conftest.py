"""Pytest fixtures for the OpenAI-SDK compatibility suite (tests/py).

The suite drives the *real* `vectorway` binary, never a mock. Once per session it:

1. starts the Gemini simulator, ``vectorway simulate --listen 127.0.0.1:0``, and reads its URL
   from the ``listening on http://...`` line it prints on stderr;
2. starts the gateway, ``vectorway serve``, configured purely through the environment
   (ephemeral 127.0.0.1 port, a fresh temporary data directory, upstream = the simulator, x402
   facilitator = the simulator's ``/facilitator`` so tests and gateway share one USDC ledger),
   waits until it has written ``<data_dir>/server.json`` and ``GET /health`` answers 200;
3. provisions wallets and API keys with the admin CLI (``vectorway admin grant`` /
   ``vectorway admin create-key``), which finds the running server through the data directory
   (the wallet sign-in tests in test_siwe.py instead sign in with SIWE and create keys over
   HTTP, through the ``api`` fixture, a plain HTTP caller bound to the gateway's URL);
4. at the end sends SIGTERM to both processes, waits up to 10 s, then SIGKILLs.

The binary comes from ``$VECTORWAY_BIN`` (relative paths are taken from the repository root);
without it ``target/release/vectorway`` is used, falling back to ``target/debug/vectorway``.

The children get a scrubbed environment: every inherited ``VECTORWAY_*`` variable (including
``VECTORWAY_BIN`` itself) and ``GEMINI_API_KEY`` are removed, because the gateway maps every
``VECTORWAY_*`` variable onto its strict configuration and would reject unknown keys or pick up
a developer's local settings. Set ``VECTORWAY_TEST_LOG`` (e.g. ``debug``) to pass a log filter
through to the children as ``VECTORWAY_LOG``.

Everything the processes print is kept in memory (the tail is attached to every failing test's
report) and written to ``<tmp>/vectorway-logs*/{simulator,gateway}.log`` for post-mortems.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import openai
import pytest

#: The PostgreSQL cluster fixtures (tests/py/pg.py).
pytest_plugins = ["pg"]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

#: The repository root (this file lives in <root>/tests/py/).
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Matches the start-up line of both `serve` and `simulate`. The URL stops at whitespace and at
#: quote/comma characters so that it also works if the line is a JSON-formatted log record.
LISTENING_RE = re.compile(r"listening on (https?://[^\s\"'<>,;\x1b]+)")
#: ANSI colour/style escapes (tracing's console format may emit them even into a pipe).
ANSI_ESCAPE_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: Upper bound for a process to print its URL / for the gateway to become healthy.
STARTUP_TIMEOUT_S = 30.0
#: Grace period between SIGTERM and SIGKILL at teardown.
STOP_TIMEOUT_S = 10.0
#: Upper bound for one admin CLI invocation.
ADMIN_TIMEOUT_S = 30.0
#: Timeout for the SDK client (the simulator answers in well under a second).
CLIENT_TIMEOUT_S = 30.0

#: The wallet most tests bill against, and how much it is funded with.
FUNDED_WALLET = "0x" + "1" * 40
FUNDED_CREDITS = 50_000_000
#: A wallet that gets an API key but never any credits.
UNFUNDED_WALLET = "0x" + "2" * 40
#: The upstream key handed to the gateway; the simulator does not check it.
UPSTREAM_API_KEY = "test-key"

#: Every process started by this module, so failing tests can show their output.
_PROCESSES: list["ManagedProcess"] = []


# --------------------------------------------------------------------------------------------
# Environment hygiene
# --------------------------------------------------------------------------------------------


def _ensure_loopback_bypasses_proxies() -> None:
    """Make sure HTTP(S)_PROXY settings on a CI machine never intercept 127.0.0.1 traffic.

    Both the SDK's HTTP client and urllib honour ``NO_PROXY``/``no_proxy``.
    """
    for var in ("NO_PROXY", "no_proxy"):
        entries = [e.strip() for e in os.environ.get(var, "").split(",") if e.strip()]
        for host in ("127.0.0.1", "localhost"):
            if host not in entries:
                entries.append(host)
        os.environ[var] = ",".join(entries)


_ensure_loopback_bypasses_proxies()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a vectorway child process: ours minus VECTORWAY_*/GEMINI_API_KEY."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VECTORWAY_") and k != "GEMINI_API_KEY"
    }
    env["NO_COLOR"] = "1"  # plain log lines: easier to read and to parse
    log_filter = os.environ.get("VECTORWAY_TEST_LOG")
    if log_filter:
        env["VECTORWAY_LOG"] = log_filter
    env.update(extra or {})
    return env


def resolve_binary() -> Path:
    """Locates the vectorway executable (see the module docstring for the search order)."""
    explicit = os.environ.get("VECTORWAY_BIN")
    if explicit:
        path = Path(explicit)
        if not path.is_absolute():
            path = REPO_ROOT / path
        candidates = [path]
    else:
        candidates = [
            REPO_ROOT / "target" / "release" / "vectorway",
            REPO_ROOT / "target" / "debug" / "vectorway",
        ]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    tried = ", ".join(str(p) for p in candidates)
    pytest.fail(
        f"vectorway binary not found (tried: {tried}); build it with "
        "`cargo build --release` or point VECTORWAY_BIN at it",
        pytrace=False,
    )


# --------------------------------------------------------------------------------------------
# Plain HTTP helpers (stdlib only; the SDK is what is under test, not these)
# --------------------------------------------------------------------------------------------


@dataclass
class HttpResult:
    """A decoded HTTP response: status, headers (lower-cased names) and JSON or text body."""

    status: int
    headers: dict[str, str]
    body: Any


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    timeout: float = 10.0,
) -> HttpResult:
    """Performs one HTTP request; error statuses are returned, not raised."""
    data = None
    hdrs = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        hdrs.setdefault("content-type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            status, raw, resp_headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:  # a response with a 4xx/5xx status
        status, raw, resp_headers = err.code, err.read(), err.headers
    text = raw.decode("utf-8", errors="replace")
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = text
    return HttpResult(status, {k.lower(): v for k, v in resp_headers.items()}, body)


# --------------------------------------------------------------------------------------------
# Child process management
# --------------------------------------------------------------------------------------------


class ManagedProcess:
    """A child process whose stdout and stderr are drained by background threads.

    Draining continuously means the pipes never fill up (which would block the child). Every
    line is kept in a bounded in-memory buffer, appended to a log file, and scanned for the
    ``listening on <url>`` announcement.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.url: str | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=5000)
        self._cond = threading.Condition()
        self._log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self._log_file.write(f"$ {' '.join(argv)}\n")
        self._log_file.flush()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._threads = [
            threading.Thread(
                target=self._drain, args=(stream, tag), name=f"{name}-{tag}", daemon=True
            )
            for stream, tag in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr"))
        ]
        for t in self._threads:
            t.start()
        _PROCESSES.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self, stream: Any, tag: str) -> None:
        """Reads one pipe line by line until EOF."""
        for raw in iter(stream.readline, b""):
            line = ANSI_ESCAPE_RE.sub("", raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            with self._cond:
                self._lines.append(f"[{tag}] {line}")
                if not self._log_file.closed:
                    self._log_file.write(f"[{tag}] {line}\n")
                    self._log_file.flush()
                if self.url is None:
                    match = LISTENING_RE.search(line)
                    if match:
                        self.url = match.group(1).rstrip("/.")
                self._cond.notify_all()
        stream.close()

    def tail(self, n: int = 60) -> str:
        """The last ``n`` lines of output (both streams, interleaved as read)."""
        with self._cond:
            lines = list(self._lines)[-n:]
        return "\n".join(lines)

    def describe_failure(self, what: str) -> str:
        """A failure message with the exit status and recent output."""
        status = self.proc.poll()
        state = "still running" if status is None else f"exited with status {status}"
        return (
            f"{self.name}: {what} ({state}); command: {' '.join(self.argv)}\n"
            f"full log: {self.log_path}\n--- last output ---\n{self.tail()}"
        )

    def wait_for_url(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """Blocks until the ``listening on`` line was seen; fails if the process dies first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.url is None:
                if self.proc.poll() is not None:
                    # Give the drain threads a moment to pick up the final lines, then check again.
                    self._cond.wait(0.2)
                    if self.url is None:
                        pytest.fail(self.describe_failure("exited during start-up"), pytrace=False)
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        self.describe_failure(f"no 'listening on' line within {timeout:.0f}s"),
                        pytrace=False,
                    )
                self._cond.wait(min(remaining, 0.1))
            return self.url

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL. Safe to call more than once."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        for t in self._threads:
            t.join(timeout=5)
        with self._cond:
            if not self._log_file.closed:
                self._log_file.write(f"--- exited with status {self.proc.returncode}\n")
                self._log_file.close()


# --------------------------------------------------------------------------------------------
# The gateway and its admin CLI
# --------------------------------------------------------------------------------------------


@dataclass
class Account:
    """A wallet with an API key, as returned by the admin CLI."""

    wallet: str
    api_key: str
    key_id: str
    #: Credits granted when provisioning (None: the wallet was not funded).
    granted: int | None
    #: Raw JSON printed by `admin grant` (None when the wallet was not funded).
    grant_output: dict[str, Any] | None
    #: Raw JSON printed by `admin create-key`.
    key_output: dict[str, Any]


@dataclass
class Gateway:
    """A running `vectorway serve` plus helpers to administer it."""

    url: str
    data_dir: Path
    binary: Path
    process: ManagedProcess
    env: dict[str, str] = field(repr=False)

    def admin(self, subcommand: str, *args: str) -> dict[str, Any]:
        """Runs ``vectorway admin <subcommand> --data-dir <dir> <args...>``; returns its JSON."""
        argv = [str(self.binary), "admin", subcommand, "--data-dir", str(self.data_dir), *args]
        try:
            done = subprocess.run(
                argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=ADMIN_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as err:
            pytest.fail(f"`{' '.join(argv)}` timed out after {err.timeout}s", pytrace=False)
        stdout = done.stdout.decode("utf-8", errors="replace")
        stderr = done.stderr.decode("utf-8", errors="replace")
        if done.returncode != 0:
            pytest.fail(
                f"`{' '.join(argv)}` exited with status {done.returncode}\n"
                f"stdout:\n{stdout}\nstderr:\n{stderr}",
                pytrace=False,
            )
        parsed = _parse_json_object(stdout)
        if parsed is None:
            pytest.fail(
                f"`{' '.join(argv)}` did not print a JSON object\n"
                f"stdout:\n{stdout}\nstderr:\n{stderr}",
                pytrace=False,
            )
        return parsed

    def provision(self, wallet: str, credits: int | None, name: str) -> Account:
        """Optionally funds ``wallet`` with ``credits`` and creates an API key named ``name``."""
        grant = None
        if credits is not None:
            grant = self.admin("grant", "--wallet", wallet, "--credits", str(credits))
        key = self.admin("create-key", "--wallet", wallet, "--name", name)
        for required in ("api_key", "key_id"):
            if not isinstance(key.get(required), str):
                pytest.fail(f"admin create-key output lacks '{required}': {key}", pytrace=False)
        return Account(wallet, key["api_key"], key["key_id"], credits, grant, key)


def _parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``: the whole output, else the last line that is one."""
    candidates = [text.strip()] + [ln.strip() for ln in reversed(text.splitlines())]
    for candidate in candidates:
        if candidate.startswith("{"):
            try:
                value = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _wait_for_gateway(proc: ManagedProcess, data_dir: Path) -> str:
    """Waits for the URL, ``server.json`` and a 200 from ``/health``; returns the base URL."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    url = proc.wait_for_url(STARTUP_TIMEOUT_S)
    server_json = data_dir / "server.json"
    last_problem = "not polled yet"
    while True:
        if proc.proc.poll() is not None:
            pytest.fail(proc.describe_failure("exited during start-up"), pytrace=False)
        if not server_json.is_file():
            last_problem = f"{server_json} does not exist yet"
        else:
            try:
                health = http_request("GET", f"{url}/health", timeout=2.0)
            except OSError as err:  # connection refused, reset, timeout
                last_problem = f"GET /health failed: {err}"
            else:
                if health.status == 200:
                    return url
                last_problem = f"GET /health returned {health.status}: {health.body!r}"
        if time.monotonic() > deadline:
            pytest.fail(
                proc.describe_failure(f"not ready within {STARTUP_TIMEOUT_S:.0f}s: {last_problem}"),
                pytrace=False,
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> Iterator[Any]:
    """A fresh anvil with Circle's USDC deployed (tests/py/chain.py) for one test module; a
    missing part fails the run (``.ci/run`` installs it), never skips."""
    import chain as chainmod

    missing = chainmod.missing_parts()
    if missing:
        pytest.fail(
            "the test chain is not installed: run `npm ci --ignore-scripts` in tests/chain "
            f"(missing: {', '.join(str(p) for p in missing)})",
            pytrace=False,
        )
    c = chainmod.Chain.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def vectorway_bin() -> Path:
    """Absolute path of the vectorway executable under test."""
    return resolve_binary()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the children's output is written (kept by pytest for the last few runs)."""
    return tmp_path_factory.mktemp("vectorway-logs")


@pytest.fixture(scope="session")
def simulator(
    request: pytest.FixtureRequest, vectorway_bin: Path, log_dir: Path
) -> ManagedProcess:
    """The Gemini simulator (``vectorway simulate``) on an ephemeral port; ``.url`` is its base."""
    proc = ManagedProcess(
        "simulator",
        [str(vectorway_bin), "simulate", "--listen", "127.0.0.1:0"],
        child_env(),
        log_dir / "simulator.log",
    )
    request.addfinalizer(proc.stop)  # registered before waiting, so a failed start is cleaned up
    proc.wait_for_url()
    return proc


@pytest.fixture(scope="session")
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    vectorway_bin: Path,
    log_dir: Path,
    simulator: ManagedProcess,
) -> Gateway:
    """The gateway (``vectorway serve``) in front of the simulator, healthy and ready."""
    data_dir = tmp_path_factory.mktemp("vectorway-data")
    env = child_env(
        {
            "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
            "VECTORWAY_STORE__DATA_DIR": str(data_dir),
            "VECTORWAY_UPSTREAM__BASE_URL": simulator.wait_for_url(),  # already known: no wait
            # The simulator also serves an x402 facilitator under /facilitator; pointing the
            # gateway at it makes the gateway and the tests share one USDC ledger (test_x402.py).
            "VECTORWAY_X402__FACILITATOR_URL": f"{simulator.wait_for_url()}/facilitator",
            # Every test (and schemathesis) calls from 127.0.0.1; the per-IP limit on callerless
            # requests is tested in tests/it/exhaustion.rs, not tripped here.
            "VECTORWAY_LIMITS__IP_PER_MIN": "100000000",
            "VECTORWAY_LIMITS__IP_BURST": "100000000",
            "GEMINI_API_KEY": UPSTREAM_API_KEY,
        }
    )
    proc = ManagedProcess("gateway", [str(vectorway_bin), "serve"], env, log_dir / "gateway.log")
    request.addfinalizer(proc.stop)
    url = _wait_for_gateway(proc, data_dir)
    # The admin CLI gets the same environment so it resolves the same configuration.
    return Gateway(url=url, data_dir=data_dir, binary=vectorway_bin, process=proc, env=env)


@pytest.fixture(scope="session")
def gateway_url(gateway: Gateway) -> str:
    """Base URL of the gateway, e.g. ``http://127.0.0.1:41234`` (no trailing slash)."""
    return gateway.url


@pytest.fixture(scope="session")
def funded_account(gateway: Gateway) -> Account:
    """Wallet 0x1111…1111 with FUNDED_CREDITS credits and an API key named ``py``."""
    return gateway.provision(FUNDED_WALLET, FUNDED_CREDITS, "py")


@pytest.fixture(scope="session")
def unfunded_account(gateway: Gateway) -> Account:
    """Wallet 0x2222…2222 with an API key but zero credits."""
    return gateway.provision(UNFUNDED_WALLET, None, "py-unfunded")


@pytest.fixture(scope="session")
def make_client(gateway_url: str) -> Iterator[Callable[[str], openai.OpenAI]]:
    """Factory: an ``openai.OpenAI`` client for the gateway using the given API key.

    ``max_retries=0`` so that a failing request surfaces at once instead of being retried.
    All clients are closed at the end of the session.
    """
    clients: list[openai.OpenAI] = []

    def factory(api_key: str) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{gateway_url}/v1",
            api_key=api_key,
            max_retries=0,
            timeout=CLIENT_TIMEOUT_S,
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def client(make_client: Callable[[str], openai.OpenAI], funded_account: Account) -> openai.OpenAI:
    """An SDK client authenticated as the funded wallet."""
    return make_client(funded_account.api_key)


@pytest.fixture(scope="session")
def api(gateway_url: str) -> Callable[..., HttpResult]:
    """Callable: ``api(method, path, headers=..., json_body=...)`` against the gateway.

    ``path`` starts with ``/`` (query string included, already encoded); error statuses are
    returned as an :class:`HttpResult`, never raised. For endpoints outside the OpenAI SDK
    (wallet sign-in, key management, usage).
    """

    def call(
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> HttpResult:
        return http_request(method, f"{gateway_url}{path}", headers=headers, json_body=json_body)

    return call


@pytest.fixture(scope="session")
def read_credits(gateway_url: str) -> Callable[[str], int]:
    """Callable: the current balance behind an API key, via ``GET /v1/credits/me``."""

    def read(api_key: str) -> int:
        res = http_request("GET", f"{gateway_url}/v1/credits/me", headers={"x-api-key": api_key})
        assert res.status == 200, f"GET /v1/credits/me returned {res.status}: {res.body!r}"
        assert isinstance(res.body, dict), f"GET /v1/credits/me: not a JSON object: {res.body!r}"
        credits = res.body.get("credits")
        assert isinstance(credits, int) and not isinstance(credits, bool), res.body
        return credits

    return read


# --------------------------------------------------------------------------------------------
# Reporting: attach the children's recent output to every failing test
# --------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for proc in _PROCESSES:
            report.sections.append(
                (f"{proc.name} output (last 60 lines; full log: {proc.log_path})", proc.tail())
            )
    return report
