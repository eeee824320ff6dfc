#!/usr/bin/env python3
"""loadtest/presign.py — pre-signs x402 v1 payments for the k6 x402 scenario.

Asks the gateway for the price of one call (an unpaid POST of lib/x402-body.json must answer 402
with the v1 JSON body; `accepts[0].maxAmountRequired` is the price), then signs COUNT EIP-3009
`TransferWithAuthorization` messages for Base Sepolia USDC (domain "USDC", version "2", chain
84532, verifying contract 0x036CbD53842c5426634e7929541eC2318f3dCF7e) with eth-account: `to` is
the gateway's payTo, `value` the quoted price, a fresh random 32-byte nonce each, validAfter =
now − 600, validBefore = now + 3600. Writes one base64 `X-PAYMENT` header value per line.

Usage: presign.py --base-url http://127.0.0.1:PORT --count N --out FILE [--key 0x…] [--pay-to 0x…]
The default signer is the public Anvil/Hardhat dev key #0 (never a real wallet).
Exit status 3 (with a message) when the gateway does not answer 402 (x402 not live).
"""
import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request

from eth_account import Account

DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
DEFAULT_PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
BODY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "x402-body.json")

TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}


def quote(base_url):
    """The v1 402 body of an unpaid call, or exit 3 with the reason."""
    with open(BODY, "rb") as f:
        body = f.read()
    req = urllib.request.Request(
        base_url.rstrip("/") + "/v1/chat/completions", data=body, method="POST",
        headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            status, text = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if status != 402 or not isinstance(doc, dict) or doc.get("x402Version") != 1 or not doc.get("accepts"):
        sys.exit(f"presign: an unpaid POST /v1/chat/completions answered {status}, not a 402 with an "
                 f"x402 v1 body ({text[:200]!r}): the x402 path is not live in this binary")
    return doc


def sign(acct, pay_to, value, now):
    auth = {
        "from": acct.address,
        "to": pay_to,
        "value": int(value),
        "validAfter": now - 600,
        "validBefore": now + 3600,
        "nonce": "0x" + os.urandom(32).hex(),
    }
    typed = {
        "types": TYPES,
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "USDC", "version": "2", "chainId": 84532,
                   "verifyingContract": USDC_BASE_SEPOLIA},
        "message": auth,
    }
    signed = Account.sign_typed_data(acct.key, full_message=typed)
    sig = signed.signature.hex()
    payload = {
        "x402Version": 1,
        "scheme": "exact",
        "network": "base-sepolia",
        "payload": {
            "signature": sig if sig.startswith("0x") else "0x" + sig,
            "authorization": {k: str(v) for k, v in auth.items()},
        },
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.b64encode(raw).decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--key", default=os.environ.get("X402_PAYER_KEY", DEV_KEY))
    ap.add_argument("--pay-to", default=None, help="default: accepts[0].payTo, else the config default")
    args = ap.parse_args()
    doc = quote(args.base_url)
    req = doc["accepts"][0]
    if req.get("network") != "base-sepolia":
        sys.exit(f"presign: accepts[0] is for {req.get('network')!r}; this script signs for base-sepolia")
    if req.get("asset", USDC_BASE_SEPOLIA).lower() != USDC_BASE_SEPOLIA.lower():
        sys.exit(f"presign: accepts[0].asset is {req.get('asset')}, not Base Sepolia USDC")
    value = int(req["maxAmountRequired"])
    pay_to = args.pay_to or req.get("payTo") or DEFAULT_PAY_TO
    acct = Account.from_key(args.key)
    now = int(time.time())
    t0 = time.time()
    with open(args.out, "w") as f:
        for _ in range(args.count):
            f.write(sign(acct, pay_to, value, now) + "\n")
    print(json.dumps({"payments": args.count, "value": str(value), "pay_to": pay_to,
                      "from": acct.address, "seconds": round(time.time() - t0, 2)}))


if __name__ == "__main__":
    main()
