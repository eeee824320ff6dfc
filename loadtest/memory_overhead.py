#!/usr/bin/env python3
"""loadtest/memory_overhead.py — what wallet memory costs a chat call, with the local embedding
model (all-MiniLM-L6-v2 in process) as the embedder, in ONE run on one gateway:

  off        memory_read/memory_write false: the proxy path (the baseline)
  identical  memory on (chat defaults: embed the query, top-k recall, remember the turn), every
             request the same prompt: after the first call the embedding cache answers both the
             query and the turn, and what is left is recall and the write
  distinct   memory on, every request a new prompt (a wrk Lua counter): every call embeds its
             query and its turn with the model, and the wallet's index grows by one per call

For each: max req/s at c=32 and latency p50/p99 at c=1 (wrk -t1), through the Gemini simulator at
zero delay, and the ratio to `off` of the same run. Phases run off, distinct, identical, then off
again (the second `off` shows the drift of the machine over the run).

Needs target/release/vectorway (cargo build --release), wrk, and the model's files
(`vectorway model fetch`, or --model-dir). Writes loadtest/results/memory-<UTC time>.json and
prints the README rows.

Usage: loadtest/memory_overhead.py [--model-dir DIR] [--secs N] [--c1-secs N]
"""
import argparse
import datetime
import json
import os
import sys
import time

import overhead as oh  # spawn / stop_all / serve / the wrk target, shared with overhead.py

# overhead.py's wrk script with a request function instead of a fixed body.
DISTINCT_LUA = oh.WRK_LUA.replace("wrk.body = [==[%(body)s]==]\n", """local n = 0
request = function()
  n = n + 1
  local body = string.format([==[%(body)s]==], "%(tag)s " .. n)
  return wrk.format(nil, nil, nil, body)
end
""")
assert DISTINCT_LUA != oh.WRK_LUA


class DistinctTarget(oh.Target):
    """A wrk target whose every request carries a new prompt ("... <tag> <n>")."""

    def __init__(self, name, base, path, headers, tag):
        super().__init__(name, base, path, b"{}", headers)
        body = {"model": oh.MODEL, "max_tokens": 64,
                "messages": [{"role": "user", "content": "Note for later: remember item %s, please."}]}
        hdr = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        # The body is Lua's string.format template: its one %s takes "<tag> <n>".
        with open(self.lua, "w") as f:
            f.write(DISTINCT_LUA % {"body": json.dumps(body), "headers": hdr, "tag": tag})


def body(memory):
    b = {"model": oh.MODEL, "max_tokens": 64,
         "messages": [{"role": "user", "content": oh.PROMPT}]}
    if not memory:
        b["memory_read"] = False
        b["memory_write"] = False
    return json.dumps(b).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=os.environ.get("VECTORWAY_MODEL_DIR"),
                    help="the model's files (default: $VECTORWAY_MODEL_DIR, else the gateway's data dir)")
    ap.add_argument("--secs", type=int, default=10, help="seconds of each c=32 phase")
    ap.add_argument("--c1-secs", type=int, default=10, help="seconds of each c=1 phase")
    a = ap.parse_args()
    oh.setup_run("vw-memory-")
    started = time.time()
    res = {"machine": oh.machine(), "date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z",
           "phases": {}, "loadavg": []}
    try:
        sim, sim_url = oh.start_sim()
        extra = {"VECTORWAY_MEMORY__EMBEDDER": "local-model"}
        if a.model_dir:
            extra["VECTORWAY_MEMORY__MODEL_DIR"] = a.model_dir
        gw, url, data = oh.serve("memory", sim_url, **extra)
        adm = lambda *x: oh.subprocess.run([oh.BIN, "admin", "--data-dir", data, *x], capture_output=True,
                                           text=True, check=True, timeout=30).stdout
        adm("grant", "--wallet", oh.WALLET, "--credits", "1000000000000000")
        key = json.loads(adm("create-key", "--wallet", oh.WALLET, "--name", "memory"))["api_key"]
        hdr = {"x-api-key": key}
        targets = {
            "off": lambda tag: oh.Target("off", url, oh.CHAT, body(False), hdr),
            "identical": lambda tag: oh.Target("identical", url, oh.CHAT, body(True), hdr),
            "distinct": lambda tag: DistinctTarget("distinct-" + tag, url, oh.CHAT, hdr, tag),
        }
        # Warm-up: the connections, then one memory call (the model's first forward pass, the
        # wallet's index). Not a load of memory calls: each would leave a turn to embed (the
        # simulator's answers differ), and the model's queue would still be busy with them
        # when the measured phases start.
        targets["off"]("w").wrk(4, 2)
        oh.http("POST", url + oh.CHAT, body(True), dict(hdr, **{"content-type": "application/json"}))
        for name, tag in (("off", "a"), ("distinct", "a"), ("identical", "a"), ("off", "b")):
            oh.log(f"phase {name} ({tag})")
            res["loadavg"].append(oh.loadavg())
            key_name = name if tag == "a" else f"{name}-again"
            c32 = targets[name](tag + "32").wrk(32, a.secs)
            c1 = targets[name](tag + "1").wrk(1, a.c1_secs)
            res["phases"][key_name] = {"c32": c32, "c1": c1}
            oh.log(f"  c=32 {c32['rps']:.0f} req/s (errors {c32['error_rate']:.4%}); "
                   f"c=1 p50 {c1['p50']} µs p99 {c1['p99']} µs")
    finally:
        oh.stop_all()
    res["elapsed_s"] = time.time() - started
    os.makedirs(os.path.join(oh.HERE, "results"), exist_ok=True)
    out = os.path.join(oh.HERE, "results", f"memory-{datetime.datetime.utcnow():%Y%m%dT%H%M%S}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    off = res["phases"]["off"]
    m = res["machine"]
    print(f"{m['nproc']} × {m['cpu']}, {m['memory']}; load average at the phases "
          f"{', '.join(f'{x:.1f}' for x in res['loadavg'])}; {res['elapsed_s']:.0f} s; {out}")
    print("| phase | req/s at c=32 | vs off | c=1 p50 | c=1 p99 | p99 added vs off | errors |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, p in res["phases"].items():
        print(f"| {name} | {p['c32']['rps']:,.0f} | {p['c32']['rps'] / off['c32']['rps']:.3f}× | "
              f"{p['c1']['p50']} µs | {p['c1']['p99']} µs | {p['c1']['p99'] - off['c1']['p99']:+d} µs | "
              f"{p['c32']['error_rate']:.4%} |")


if __name__ == "__main__":
    sys.exit(main())
