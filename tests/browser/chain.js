// A local EVM chain with real USDC for the browser tests: Foundry's anvil and Circle's compiled
// FiatTokenV2_2, both from tests/chain/node_modules (`npm ci` there, as .ci/run stage 5 does).
// The Node twin of tests/py/chain.py, with ethers (already a dependency here) in place of web3:
//
// `Chain.start()` runs anvil on a port it picks itself (`--port 0`, read from its `Listening on`
// line), chain id 31337, anvil's default mnemonic; deploys the SignatureChecker library, links
// its address into the token's bytecode at the artifact's `linkReferences`, deploys the token and
// initializes it as Circle does (`initialize`, `initializeV2`, `initializeV2_1`,
// `initializeV2_2`, `configureMinter`). Its EIP-712 domain is "USD Coin", version "2". `mint`
// funds a payer, `receipt` and `transfers` read what a settlement did, `networkEnv` is the
// gateway's `[x402.networks.anvil]`. Nothing is mocked: transfers are anvil executing Circle's
// bytecode.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { Contract, ContractFactory, HDNodeWallet, JsonRpcProvider, NonceManager, getAddress } from 'ethers';

import { REPO_ROOT } from '../node/harness.js';

const CHAIN_DIR = join(REPO_ROOT, 'tests', 'chain', 'node_modules');
const ANVIL = join(CHAIN_DIR, '@foundry-rs', 'anvil-linux-amd64', 'bin', 'anvil');
const HARDHAT = join(CHAIN_DIR, '@offchainlabs', 'stablecoin-evm', 'artifacts', 'hardhat', 'contracts');
const TOKEN = join(HARDHAT, 'v2', 'FiatTokenV2_2.sol', 'FiatTokenV2_2.json');
const CHECKER = join(HARDHAT, 'util', 'SignatureChecker.sol', 'SignatureChecker.json');

export const CHAIN_ID = 31337;
/** anvil's default mnemonic: public dev keys, fine for a throw-away chain. */
const MNEMONIC = 'test test test test test test test test test test test junk';
const TOKEN_NAME = 'USD Coin';
const TOKEN_VERSION = '2';
const STARTUP_TIMEOUT_MS = 30_000;

/** anvil's funded dev account `index` (0..9), unconnected. */
export function devAccount(index) {
  return HDNodeWallet.fromPhrase(MNEMONIC, undefined, `m/44'/60'/0'/0/${index}`);
}

function artifact(path) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`the test chain is not installed (${path}: ${err.message}); run \`npm ci --ignore-scripts\` in tests/chain`);
  }
}

/** The token's creation code with the library's address at every link slot. */
function linked(art, library) {
  const refs = art.linkReferences['contracts/util/SignatureChecker.sol'].SignatureChecker;
  let code = art.bytecode.replace(/^0x/, '');
  const address = library.replace(/^0x/, '').toLowerCase();
  for (const { start, length } of refs) {
    if (length !== 20 || code.slice(start * 2, start * 2 + 3) !== '__$') throw new Error(`bad link slot at ${start}`);
    code = code.slice(0, start * 2) + address + code.slice(start * 2 + 40);
  }
  if (!/^[0-9a-f]*$/i.test(code)) throw new Error('the token bytecode is not fully linked');
  return `0x${code}`;
}

export class Chain {
  /** Starts anvil and deploys USDC; on failure anvil is stopped. */
  static async start() {
    const chain = new Chain();
    try {
      await chain.launch();
      await chain.deploy();
      return chain;
    } catch (err) {
      await chain.stop();
      throw new Error(`${err.message}\n--- anvil ---\n${chain.lines.slice(-40).join('\n')}`);
    }
  }

  constructor() {
    this.lines = [];
    this.proc = null;
  }

  async launch() {
    artifact(TOKEN);
    this.proc = spawn(ANVIL, ['--host', '127.0.0.1', '--port', '0', '--chain-id', String(CHAIN_ID), '--mnemonic', MNEMONIC], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.exited = new Promise((done) => this.proc.once('exit', done));
    const url = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('anvil printed no Listening line')), STARTUP_TIMEOUT_MS);
      this.proc.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      for (const stream of [this.proc.stdout, this.proc.stderr]) {
        createInterface({ input: stream }).on('line', (line) => {
          this.lines.push(line);
          if (this.lines.length > 2000) this.lines.shift();
          const m = /Listening on ([0-9.]+):(\d+)/.exec(line);
          if (m) {
            clearTimeout(timer);
            resolve(`http://${m[1]}:${m[2]}`);
          }
        });
      }
    });
    this.rpcUrl = await url;
    this.provider = new JsonRpcProvider(this.rpcUrl, CHAIN_ID, { staticNetwork: true, pollingInterval: 50 });
  }

  async deploy() {
    this.deployer = new NonceManager(devAccount(0).connect(this.provider));
    const checkerArt = artifact(CHECKER);
    const tokenArt = artifact(TOKEN);
    const checker = await new ContractFactory(checkerArt.abi, checkerArt.bytecode, this.deployer).deploy();
    await checker.waitForDeployment();
    const factory = new ContractFactory(tokenArt.abi, linked(tokenArt, await checker.getAddress()), this.deployer);
    const token = await factory.deploy();
    await token.waitForDeployment();
    this.asset = getAddress(await token.getAddress());
    this.token = new Contract(this.asset, tokenArt.abi, this.deployer);
    const me = await this.deployer.getAddress();
    const send = async (tx) => {
      const receipt = await (await tx).wait();
      if (receipt.status !== 1) throw new Error(`deployment step reverted: ${receipt.hash}`);
    };
    await send(this.token.initialize(TOKEN_NAME, 'USDC', 'USD', 6, me, me, me, me));
    await send(this.token.initializeV2(TOKEN_NAME));
    await send(this.token.initializeV2_1(me));
    await send(this.token.initializeV2_2([], 'USDC'));
    await send(this.token.configureMinter(me, 2n ** 255n));
    if ((await this.token.version()) !== TOKEN_VERSION) throw new Error('unexpected token version');
  }

  /** Mints `amount` atomic USDC to `to` and waits for it. */
  async mint(to, amount) {
    const receipt = await (await this.token.mint(getAddress(to), amount)).wait();
    if (receipt.status !== 1) throw new Error('mint reverted');
  }

  balanceOf(address) {
    return this.token.balanceOf(getAddress(address));
  }

  /** The receipt of a transaction (null when the chain does not know it). */
  receipt(hash) {
    return this.provider.getTransactionReceipt(hash);
  }

  /** The USDC `Transfer` events a transaction emitted, as {from, to, value}. */
  async transfersIn(hash) {
    const receipt = await this.receipt(hash);
    const out = [];
    for (const log of receipt?.logs ?? []) {
      if (getAddress(log.address) !== this.asset) continue;
      const parsed = this.token.interface.parseLog(log);
      if (parsed?.name === 'Transfer') out.push({ from: parsed.args.from, to: parsed.args.to, value: parsed.args.value });
    }
    return out;
  }

  /** The gateway's `[x402.networks.anvil]` for this chain, as `VECTORWAY_*` variables. */
  networkEnv() {
    return {
      VECTORWAY_X402__NETWORKS__ANVIL__CHAIN_ID: String(CHAIN_ID),
      VECTORWAY_X402__NETWORKS__ANVIL__ASSET: this.asset,
      VECTORWAY_X402__NETWORKS__ANVIL__EIP712_NAME: TOKEN_NAME,
      VECTORWAY_X402__NETWORKS__ANVIL__EIP712_VERSION: TOKEN_VERSION,
      VECTORWAY_X402__NETWORKS__ANVIL__RPC_URL: this.rpcUrl,
    };
  }

  async stop() {
    this.provider?.destroy();
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
  }
}
