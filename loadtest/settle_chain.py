#!/usr/bin/env python3
"""loadtest/settle_chain.py — N x402 payments settled by the gateway itself on a real chain.

What it runs (everything on 127.0.0.1, ports chosen by the OS, every process stopped at the end):

1. anvil with Circle's FiatTokenV2_2 deployed (tests/py/chain.py; `npm ci` in tests/chain
   installs both), P payer wallets minted USDC, and `vectorway simulate` answering instantly
   (`--ttft-ms 0`, 10⁶ tokens/s: the model is not what is measured);
2. **self**: `vectorway serve` with `x402.facilitator = "self"` (settlement key: anvil dev
   account #7, through `$VAR`), N paid chat calls (`X-PAYMENT` v1, EIP-3009 authorizations
   pre-signed round-robin over the P payers, each nonce used once) sent by C concurrent
   clients; each answer is released only after its `transferWithAuthorization` is mined;
3. **baseline, same run**: (a) the same N calls through a second gateway settling with the
   facilitator simulator (`vectorway simulate`'s `/facilitator`: no chain) — the gateway's
   x402 path without a chain; (b) N `transferWithAuthorization` transactions signed by the
   script and sent straight to anvil from another dev account by C concurrent senders, each
   waiting for its receipt (polled every 10 ms) — what the chain itself settles.

It prints and writes (`loadtest/results/settle-chain-<stamp>.json`) settlements/s, client
p50/p99 (request sent → answer; for self that is verification + settlement + an instant
generation), the gateway's own settle timing (`vectorway_x402_settle_seconds`, p50/p99 from the
histogram's buckets, linear inside a bucket), the ratios self/baseline, and the books:

* on chain: payTo's `balanceOf` delta, and the sum of the payers' deltas;
* in the gateway's ledger, read through its API (an admin-made key per payer): every payer's
  `refund` entries (the change, referenced by the settlement transaction) plus the credits its
  usage events kept. Each payment's price is refund + kept, so their sum is the x402 income.

It exits 1 unless every call was answered 200 and payTo delta == Σ payer deltas == Σ quotes ==
ledger income, exactly (integers). Usage:

  settle_chain.py [--count 1000] [--concurrency 16] [--payers 50] [--binary PATH]
                  [--no-baseline] [--out FILE]

Needs the tests/py venv (web3, eth-account, the x402 SDK): `.ci/run` creates it at
/tmp/vectorway-ci-venv. Builds nothing: expects target/release/vectorway.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "py"))

from eth_account import Account  # noqa: E402
from web3 import Web3  # noqa: E402

import chain as chainmod  # noqa: E402
from conftest import ManagedProcess, _wait_for_gateway, child_env, http_request  # noqa: E402

SETTLER_INDEX = 7
RAW_SENDER_INDEX = 8
#: The raw baseline polls receipts this often (the chain's own pace; the gateway polls at once,
#: then every 150 ms).
RECEIPT_POLL_S = 0.010
BASE_SEPOLIA = {"name": "USDC", "version": "2", "chainId": 84532,
                "verifyingContract": "0x036CbD53842c5426634e7929541eC2318f3dCF7e"}
TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ]
}
#: A worst case (1,000 tokens) well above what the instant simulator's answer costs: every call
#: gets change back, so the books check both ledger kinds (refund + kept).
BODY = {"messages": [{"role": "user", "content": "settle this"}], "max_tokens": 1000,
        "memory_read": False, "memory_write": False}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def authorization(key: bytes, frm: str, to: str, value: int, domain: dict[str, Any]) -> dict:
    now = int(time.time())
    auth = {"from": frm, "to": to, "value": value, "validAfter": now - 600,
            "validBefore": now + 3600, "nonce": "0x" + os.urandom(32).hex()}
    message = dict(auth, nonce=bytes.fromhex(auth["nonce"][2:]))
    signed = Account.sign_typed_data(key, domain, TYPES, message)
    return {"auth": auth, "sig": "0x" + signed.signature.hex().removeprefix("0x"),
            "v": signed.v, "r": signed.r, "s": signed.s}


def x_payment(network: str, a: dict) -> str:
    payload = {"x402Version": 1, "scheme": "exact", "network": network,
               "payload": {"signature": a["sig"],
                           "authorization": {k: str(v) for k, v in a["auth"].items()}}}
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


def _sign_job(job: tuple) -> dict:
    key, frm, to, value, domain = job
    return authorization(key, frm, to, value, domain)


def presign(pool: cf.Executor, payers: list, to: str, value: int, count: int,
            domain: dict[str, Any]) -> list[dict]:
    jobs = [(payers[i % len(payers)].key, payers[i % len(payers)].address, to, value, domain)
            for i in range(count)]
    return list(pool.map(_sign_job, jobs, chunksize=16))


def quantiles(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    if not s:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))] * 1000

    return {"p50_ms": round(q(0.50), 1), "p99_ms": round(q(0.99), 1),
            "max_ms": round(s[-1] * 1000, 1)}


def scrape(url: str, secret: str) -> str:
    res = http_request("GET", f"{url}/metrics", headers={"authorization": f"Bearer {secret}"})
    assert res.status == 200, res.body
    return res.body if isinstance(res.body, str) else res.body.decode()


BUCKET_RE = re.compile(r'^vectorway_x402_settle_seconds_bucket\{le="([^"]+)"\} (\d+)', re.M)


def buckets(text: str) -> list[tuple[float, int]]:
    return sorted((float("inf") if le == "+Inf" else float(le), int(n))
                  for le, n in BUCKET_RE.findall(text))


def settle_timing(before: str, after: str) -> dict[str, float]:
    """p50/p99 of the settlements between two scrapes, from the histogram's buckets."""
    b0 = dict(buckets(before))
    diff = [(le, n - b0.get(le, 0)) for le, n in buckets(after)]
    total = diff[-1][1] if diff else 0

    def q(p: float) -> float:
        want, lo, below = p * total, 0.0, 0
        for le, n in diff:
            if n >= want:
                if le == float("inf"):
                    return lo * 1000
                inside = n - below
                return (lo + (le - lo) * ((want - below) / inside if inside else 0)) * 1000
            lo, below = le, n
        return lo * 1000

    return {"settlements": total, "p50_ms": round(q(0.50), 1), "p99_ms": round(q(0.99), 1)}


def counter(text: str, name: str, labels: str = "") -> int:
    pat = rf'^{re.escape(name)}\{{[^}}]*{re.escape(labels)}[^}}]*\}} (\d+)' if labels else \
        rf'^{re.escape(name)} (\d+)'
    m = re.search(pat, text, re.M)
    return int(m.group(1)) if m else 0


def drive(url: str, headers: list[str], concurrency: int) -> dict[str, Any]:
    """Sends one paid call per header with `concurrency` clients; latencies and answers."""
    def one(h: str) -> tuple[float, Any]:
        t0 = time.monotonic()
        res = http_request("POST", f"{url}/v1/chat/completions",
                           headers={"x-payment": h}, json_body=BODY, timeout=120)
        return time.monotonic() - t0, res

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one, headers))
    wall = time.monotonic() - t0
    ok = [r for _, r in results if r.status == 200]
    bad = [(r.status, r.body) for _, r in results if r.status != 200]
    return {"wall_s": wall, "latencies": [lat for lat, _ in results], "ok": ok, "bad": bad}


def start_sim(binary: Path, tmp: Path) -> ManagedProcess:
    sim = ManagedProcess("simulator", [str(binary), "simulate", "--listen", "127.0.0.1:0",
                                       "--ttft-ms", "0", "--tokens-per-sec", "1000000"],
                         child_env(), tmp / "simulator.log")
    try:
        sim.wait_for_url()
    except BaseException:
        sim.stop()
        raise
    return sim


def start_gateway(binary: Path, tmp: Path, name: str, extra: dict[str, str]) -> tuple:
    data = tmp / name
    data.mkdir()
    env = child_env({
        "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
        "VECTORWAY_STORE__DATA_DIR": str(data),
        "VECTORWAY_LIMITS__IP_PER_MIN": "100000000",
        "VECTORWAY_LIMITS__IP_BURST": "100000000",
        "GEMINI_API_KEY": "loadtest",
        **extra,
    })
    proc = ManagedProcess(f"gateway-{name}", [str(binary), "serve"], env, tmp / f"{name}.log")
    try:
        url = _wait_for_gateway(proc, data)
    except BaseException:  # a gateway that did not come up is not left running
        proc.stop()
        raise
    secret = (data / "admin.secret").read_text().strip()
    return proc, url, secret


def accepts(url: str) -> dict[str, Any]:
    res = http_request("POST", f"{url}/v1/chat/completions", json_body=BODY)
    assert res.status == 402, (res.status, res.body)
    return res.body["accepts"][0]


def receipt_tx(res: Any) -> str:
    """The settlement transaction named by a paid answer's receipt header."""
    raw = res.headers.get("x-payment-response") or res.headers.get("payment-response") or ""
    return json.loads(base64.b64decode(raw)).get("transaction", "") if raw else ""


def ledger_income(url: str, secret: str, payers: list) -> dict[str, Any]:
    """Per payer through the API: refund entries (the change) + usage credits (what was kept)."""
    refunds = kept = 0
    refs: set[str] = set()
    balances = 0
    for p in payers:
        k = http_request("POST", f"{url}/admin/keys", headers={"x-admin-secret": secret},
                         json_body={"wallet": p.address, "name": "loadtest-books"})
        assert k.status in (200, 201), k.body
        h = {"x-api-key": k.body["api_key"]}
        for kind, sink in (("refund", "r"), ("usage", "u")):
            cursor = 0
            while True:
                path = (f"/v1/credits/ledger?kind=refund&limit=100&cursor={cursor}"
                        if kind == "refund" else
                        f"/v1/usage?filter=/v1/chat/completions&limit=100&cursor={cursor}")
                page = http_request("GET", f"{url}{path}", headers=h)
                assert page.status == 200, page.body
                for e in page.body["events"]:
                    if sink == "r":
                        refunds += int(e["credits"])
                        refs.add(e["ref"])
                    elif e["status"] == 200:
                        kept += int(e["credits"])
                if page.body.get("next_cursor") is None:
                    break
                cursor = page.body["next_cursor"]
        b = http_request("GET", f"{url}/admin/balance?wallet={p.address}",
                         headers={"x-admin-secret": secret})
        balances += int(b.body["credits"])
    return {"refunds": refunds, "kept": kept, "income": refunds + kept,
            "refund_refs": sorted(refs), "payer_credit_balances": balances}


def raw_baseline(chain: chainmod.Chain, auths: list[dict], concurrency: int) -> dict[str, Any]:
    """transferWithAuthorization straight to anvil: sign N transactions, send, await receipts."""
    sender = chainmod.dev_account(RAW_SENDER_INDEX)
    w3 = chain.w3
    nonce0 = w3.eth.get_transaction_count(sender.address, "pending")
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    tip = w3.eth.max_priority_fee
    f = chain.token.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,"
        "bytes32,bytes32)")
    raws = []
    for i, a in enumerate(auths):
        x = a["auth"]
        tx = f(x["from"], x["to"], x["value"], x["validAfter"], x["validBefore"],
               bytes.fromhex(x["nonce"][2:]), a["v"], a["r"].to_bytes(32, "big"),
               a["s"].to_bytes(32, "big")).build_transaction({
                   "from": sender.address, "nonce": nonce0 + i, "chainId": chainmod.CHAIN_ID,
                   "gas": 200_000, "maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip})
        raws.append(sender.sign_transaction(tx).raw_transaction)

    def rpc(method: str, params: list) -> Any:
        r = http_request("POST", chain.rpc_url, json_body={"jsonrpc": "2.0", "id": 1,
                                                           "method": method, "params": params})
        return r.body.get("result"), r.body.get("error")

    def one(raw: bytes) -> tuple[float, bool]:
        t0 = time.monotonic()
        h, err = rpc("eth_sendRawTransaction", ["0x" + raw.hex()])
        assert err is None, err
        while True:
            rec, _ = rpc("eth_getTransactionReceipt", [h])
            if rec:
                return time.monotonic() - t0, int(rec["status"], 16) == 1
            time.sleep(RECEIPT_POLL_S)

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one, raws))
    wall = time.monotonic() - t0
    return {"wall_s": wall, "latencies": [lat for lat, _ in results],
            "succeeded": sum(ok for _, ok in results)}


def machine() -> str:
    """CPU model, cores and memory of this machine (figures are meaningless without them)."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")))
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem = "? GiB"
    return f"{os.cpu_count()} cores ({model}), {mem}; load average {os.getloadavg()[0]:.1f} at start"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--payers", type=int, default=50)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "vectorway"))
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    binary = Path(args.binary)
    if not binary.is_file():
        sys.exit(f"{binary} is missing: run `cargo build --release` first")
    if chainmod.missing_parts():
        sys.exit("the test chain is not installed: run `npm ci --ignore-scripts` in tests/chain")
    n, conc = args.count, args.concurrency
    baseline = not args.no_baseline
    procs: list[ManagedProcess] = []
    chain = None
    tmp = Path(tempfile.mkdtemp(prefix="vectorway-settle-chain."))
    report: dict[str, Any] = {"count": n, "concurrency": conc, "payers": args.payers,
                              "machine": machine(), "binary": str(binary)}
    try:
        log("starting anvil + FiatTokenV2_2, the simulator and the self-settling gateway")
        chain = chainmod.Chain.start()
        sim = start_sim(binary, tmp)
        procs.append(sim)
        pay_to = Account.create().address
        settler = chainmod.dev_account(SETTLER_INDEX)
        gw, url, secret = start_gateway(binary, tmp, "self", {
            "VECTORWAY_UPSTREAM__BASE_URL": sim.wait_for_url(),
            "VECTORWAY_X402__FACILITATOR": "self",
            "VECTORWAY_X402__SETTLEMENT_KEY": "$LOADTEST_SETTLEMENT_KEY",
            "LOADTEST_SETTLEMENT_KEY": settler.key.hex(),
            "VECTORWAY_X402__PAY_TO": pay_to,
            **chain.network_env(),
            "VECTORWAY_X402__SETTLE_TIMEOUT_MS": "30000",
            "VECTORWAY_X402__SETTLE_PENDING_WAIT_MS": "30000",
        })
        procs.append(gw)
        req = accepts(url)
        quote = int(req["maxAmountRequired"])
        network = req["network"]
        assert req["payTo"].lower() == pay_to.lower() and req["asset"].lower() == chain.asset.lower()
        payers = [Account.create() for _ in range(args.payers)]
        per = -(-n // len(payers))
        log(f"minting {per * quote * (2 if baseline else 1)} atomic USDC to each of {len(payers)} payers")
        for p in payers:
            chain.mint(p.address, per * quote * (2 if baseline else 1))
        domain = {"name": chainmod.TOKEN_NAME, "version": chainmod.TOKEN_VERSION,
                  "chainId": chainmod.CHAIN_ID, "verifyingContract": chain.asset}
        t0 = time.monotonic()
        with cf.ProcessPoolExecutor(2) as pool:
            auths = presign(pool, payers, pay_to, quote, n, domain)
            raw_auths = presign(pool, payers, pay_to, quote, n, domain) if baseline else []
        log(f"pre-signed {n + len(raw_auths)} authorizations in {time.monotonic() - t0:.1f} s")
        headers = [x_payment(network, a) for a in auths]
        books0 = {"pay_to": chain.balance_of(pay_to),
                  "payers": sum(chain.balance_of(p.address) for p in payers)}
        settler_nonce0 = chain.w3.eth.get_transaction_count(settler.address)
        before = scrape(url, secret)
        log(f"self: {n} paid calls, {conc} clients")
        run = drive(url, headers, conc)
        after = scrape(url, secret)
        self_result = {
            "settlements_per_s": round(len(run["ok"]) / run["wall_s"], 1),
            "wall_s": round(run["wall_s"], 2), "ok": len(run["ok"]), "failed": len(run["bad"]),
            "client": quantiles(run["latencies"]), "gateway_settle": settle_timing(before, after),
            "settle_ok": counter(after, "vectorway_x402_settle_total", 'outcome="ok"')
            - counter(before, "vectorway_x402_settle_total", 'outcome="ok"'),
            "transactions_sent": chain.w3.eth.get_transaction_count(settler.address) - settler_nonce0,
        }
        report["self"] = self_result
        if run["bad"]:
            log(f"failures: {run['bad'][:5]}")
        # The books: on chain, and in the gateway's ledger.
        time.sleep(0.5)  # usage events are group-committed (a few ms)
        received = chain.balance_of(pay_to) - books0["pay_to"]
        paid = books0["payers"] - sum(chain.balance_of(p.address) for p in payers)
        ledger = ledger_income(url, secret, payers)
        txs = {receipt_tx(r) for r in run["ok"]}
        refs = set(ledger.pop("refund_refs"))
        books = {"quotes": quote * len(run["ok"]), "pay_to_delta": received,
                 "payer_deltas": paid, **ledger, "distinct_transactions": len(txs),
                 "refunds_referencing_them": len(refs & txs)}
        report["books"] = books
        # Every payment has its own mined transaction, and each change credit names one of
        # them (a payment whose call kept everything has no refund entry).
        exact = (received == paid == books["quotes"] == ledger["income"]
                 == ledger["refunds"] + ledger["kept"]
                 and ledger["payer_credit_balances"] == ledger["refunds"]
                 and len(txs) == len(run["ok"]) and refs <= txs)
        books["exact"] = exact
        if baseline:
            log("baseline (b): the same number of transferWithAuthorization straight to anvil")
            raw = raw_baseline(chain, raw_auths, conc)
            report["raw_chain"] = {
                "settlements_per_s": round(raw["succeeded"] / raw["wall_s"], 1),
                "wall_s": round(raw["wall_s"], 2), "succeeded": raw["succeeded"],
                "client": quantiles(raw["latencies"])}
            log("baseline (a): the same paid calls through the facilitator simulator")
            gw2, url2, secret2 = start_gateway(binary, tmp, "simfac", {
                "VECTORWAY_UPSTREAM__BASE_URL": sim.wait_for_url(),
                "VECTORWAY_X402__FACILITATOR_URL": f"{sim.wait_for_url()}/facilitator",
            })
            procs.append(gw2)
            req2 = accepts(url2)
            with cf.ProcessPoolExecutor(2) as pool:
                sim_auths = presign(pool, payers, req2["payTo"], int(req2["maxAmountRequired"]),
                                    n, BASE_SEPOLIA)
            before2 = scrape(url2, secret2)
            run2 = drive(url2, [x_payment(req2["network"], a) for a in sim_auths], conc)
            after2 = scrape(url2, secret2)
            report["facilitator_simulator"] = {
                "settlements_per_s": round(len(run2["ok"]) / run2["wall_s"], 1),
                "wall_s": round(run2["wall_s"], 2), "ok": len(run2["ok"]),
                "failed": len(run2["bad"]), "client": quantiles(run2["latencies"]),
                "gateway_settle": settle_timing(before2, after2)}
            s, fs, rc = report["self"], report["facilitator_simulator"], report["raw_chain"]
            report["ratios"] = {
                "self_vs_simulator_throughput": round(s["settlements_per_s"] / fs["settlements_per_s"], 3),
                "self_vs_raw_chain_throughput": round(s["settlements_per_s"] / rc["settlements_per_s"], 3),
                "self_vs_simulator_client_p50": round(s["client"]["p50_ms"] / max(fs["client"]["p50_ms"], 0.1), 2),
                "self_vs_raw_chain_p50": round(s["client"]["p50_ms"] / max(rc["client"]["p50_ms"], 0.1), 2),
            }
        print(json.dumps(report, indent=2))
        out = Path(args.out) if args.out else \
            HERE / "results" / f"settle-chain-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        log(f"books: on chain payTo +{received}, payers -{paid}; ledger income {ledger['income']} "
            f"(refunds {ledger['refunds']} + kept {ledger['kept']}); quotes {books['quotes']}: "
            f"{'EXACT' if exact else 'MISMATCH'}")
        failed = bool(run["bad"]) or not exact or self_result["transactions_sent"] != len(run["ok"])
        if baseline:
            failed |= report["facilitator_simulator"]["failed"] > 0 or raw["succeeded"] != n
        return 1 if failed else 0
    finally:
        for p in reversed(procs):
            p.stop()
        if chain is not None:
            chain.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
