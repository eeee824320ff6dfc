#!/usr/bin/env python3
"""loadtest/replicas.py — the replicas benchmark of issue 17, in ONE run on this machine:

  embedded   = one gateway on its embedded store (sled + logs): the baseline
  pg × N     = N gateways (N = 1, 2, 3) sharing one PostgreSQL cluster, the wallet's credits
               leased per replica (ARCHITECTURE.md, "Credit leases")

Every configuration serves the same funded wallet's chat completions (API key, the Gemini
simulator at zero delay) under wrk: `--conns` connections in all, split evenly over the replicas,
one wrk per replica running at the same time, for `--seconds` each. Figures:

  requests/s (sum over replicas) and its ratio to the embedded baseline
  latency p50 / p99 under that load (the worst replica's), and at c=1 against one replica
  database statements per served request: pg_stat_statements' `calls` over the run, minus the
  statements the same replicas make idle for as long (the auth change feed, lease heartbeats),
  divided by the requests served. The hot path's target is 0; amortised ≤ 0.05.

PostgreSQL is Debian's (initdb into a temp dir, pg_ctl on a free port, as the `postgres` user when
run as root), started with pg_stat_statements preloaded. Needs target/release/vectorway
(cargo build --release) and wrk (apt-get install -y wrk). Everything listens on 127.0.0.1 on ports
chosen at run time; every process started here is stopped on exit. Prints a markdown table and
writes loadtest/results/replicas-<UTC stamp>.json.

Usage: loadtest/replicas.py [--seconds 10] [--conns 32] [--replicas 3]
"""
import argparse
import datetime
import glob
import json
import os
import platform
import pwd
import shutil
import subprocess
import threading
import time

import overhead as oh  # spawn / stop_all / wait_listening / the wrk target, shared with overhead.py


def pg_bin():
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    dirs = sorted(d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(d + "/initdb"))
    if not dirs:
        oh.die("PostgreSQL is not installed (apt-get install -y postgresql)")
    return dirs[-1]


class Cluster:
    """A throwaway PostgreSQL cluster with pg_stat_statements."""

    def __init__(self):
        self.bin = pg_bin()
        self.dir = os.path.join(oh.TMP, "pg")
        self.port = oh.free_port()
        self.user = None
        if os.geteuid() == 0:
            for u in ("postgres", "vectorway-pg"):
                try:
                    pwd.getpwnam(u)
                    self.user = u
                    break
                except KeyError:
                    continue
            if self.user is None:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", "vectorway-pg"], check=True)
                self.user = "vectorway-pg"
        os.makedirs(self.dir)
        if self.user:
            os.chmod(oh.TMP, 0o755)
            shutil.chown(self.dir, self.user)
        self.run("initdb", "-D", self.dir, "-U", "vw", "--auth=trust", "-E", "UTF8")
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c shared_preload_libraries=pg_stat_statements -c max_connections=200 "
                "-c fsync=on -c synchronous_commit=on")
        self.run("pg_ctl", "-D", self.dir, "-o", opts, "-l", self.dir + "/server.log", "-w", "start")
        self.sql("postgres", "CREATE DATABASE vectorway")
        self.sql("vectorway", "CREATE EXTENSION pg_stat_statements")

    def run(self, program, *args):
        argv = [os.path.join(self.bin, program), *args]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def url(self, db="vectorway"):
        return f"postgres://vw@127.0.0.1:{self.port}/{db}"

    def sql(self, db, query):
        argv = [os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "vw",
                "-d", db, "-At", "-c", query]
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()

    def calls(self):
        """Statements executed in the gateway's database so far (pg_stat_statements)."""
        return int(self.sql("vectorway", "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                                         "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'vectorway'") or 0)

    def reset(self):
        self.sql("vectorway", "SELECT pg_stat_statements_reset()")

    def stop(self):
        try:
            self.run("pg_ctl", "-D", self.dir, "-m", "fast", "-w", "stop")
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


SHARED_SECRET = "replicas-bench-shared-jwt-secret-0123456789"


def start_gateway(name, sim_url, pg_url=None):
    """`overhead.serve`, on the shared PostgreSQL when `pg_url` is given."""
    extra = {}
    if pg_url:
        extra = dict(VECTORWAY_STORE__BACKEND="postgres", VECTORWAY_STORE__POSTGRES_URL=pg_url,
                     VECTORWAY_AUTH__JWT_SECRET=SHARED_SECRET)
    return oh.serve(name, sim_url, **extra)


def admin(data, *args):
    out = subprocess.run([oh.BIN, "admin", "--data-dir", data, *args], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        oh.die(f"vectorway admin {' '.join(args)}: {out.stderr[-800:]}")
    return out.stdout


def fund(data):
    admin(data, "grant", "--wallet", oh.WALLET, "--credits", "1000000000000000")
    return json.loads(admin(data, "create-key", "--wallet", oh.WALLET, "--name", "replicas"))["api_key"]


def load(urls, key, conns, secs):
    """One wrk per replica at once, `conns` connections in all; returns the summed figures."""
    body = oh.openai_body(False, max_tokens=64)
    per = max(1, conns // len(urls))
    targets = [oh.Target(f"r{i}", u, "/v1/chat/completions", body, {"x-api-key": key})
               for i, u in enumerate(urls)]
    results = [None] * len(targets)

    def run(i):
        results[i] = targets[i].wrk(per, secs)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = sum(r["requests"] for r in results)
    errors = sum(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] for r in results)
    return {
        "rps": sum(r["rps"] for r in results),
        "requests": served,
        "errors": errors,
        "p50_ms": max(r["p50"] for r in results) / 1000,
        "p99_ms": max(r["p99"] for r in results) / 1000,
        "per_replica": results,
    }


def c1_latency(url, key, secs):
    body = oh.openai_body(False, max_tokens=64)
    r = oh.Target("c1", url, "/v1/chat/completions", body, {"x-api-key": key}).wrk(1, secs)
    return {"p50_ms": r["p50"] / 1000, "p99_ms": r["p99"] / 1000, "rps": r["rps"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--replicas", type=int, default=3)
    args = ap.parse_args()
    oh.setup_run("vw-replicas-")
    cluster = None
    rows = []
    try:
        sim, sim_url = oh.start_sim()
        # Baseline: one gateway on the embedded store.
        _, url, data = start_gateway("embedded", sim_url)
        key = fund(data)
        c1 = c1_latency(url, key, args.seconds)
        res = load([url], key, args.conns, args.seconds)
        rows.append({"config": "embedded", "replicas": 1, **res, "c1": c1, "statements_per_request": None})
        cluster = Cluster()
        urls, datas = [], []
        for n in range(1, args.replicas + 1):
            _, u, d = start_gateway(f"pg{n}", sim_url, cluster.url())
            urls.append(u)
            datas.append(d)
            if n == 1:
                key = fund(d)
            # Idle: what these replicas say to the database with no requests (feeds, heartbeats).
            cluster.reset()
            time.sleep(args.seconds)
            idle = cluster.calls()
            cluster.reset()
            c1 = c1_latency(urls[0], key, args.seconds) if n == 1 else None
            cluster.reset()
            res = load(urls, key, args.conns, args.seconds)
            busy = cluster.calls()
            per_req = max(0, busy - idle) / max(1, res["requests"])
            rows.append({"config": f"postgres × {n}", "replicas": n, **res, "c1": c1,
                         "statements": busy, "idle_statements": idle,
                         "statements_per_request": per_req})
    finally:
        oh.stop_all()
        if cluster:
            cluster.stop()
    base = rows[0]["rps"]
    machine = f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    print(f"\nreplicas benchmark, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {machine}, "
          f"wrk {args.conns} connections in all, {args.seconds} s each\n")
    print("| store | requests/s | × embedded | p50 / p99 under load | c=1 p50 / p99 | DB statements per request |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c1 = f"{r['c1']['p50_ms']:.2f} / {r['c1']['p99_ms']:.2f} ms" if r["c1"] else "—"
        spr = "—" if r["statements_per_request"] is None else f"{r['statements_per_request']:.3f}"
        print(f"| {r['config']} | {r['rps']:.0f} | {r['rps'] / base:.2f} | "
              f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms | {c1} | {spr} |")
        if r["errors"]:
            print(f"|   (errors: {r['errors']} of {r['requests']}) |||||")
    os.makedirs(os.path.join(oh.HERE, "results"), exist_ok=True)
    out = os.path.join(oh.HERE, "results", f"replicas-{datetime.datetime.utcnow():%Y%m%dT%H%M%S}.json")
    with open(out, "w") as f:
        json.dump({"machine": machine, "args": vars(args), "rows": rows}, f, indent=1)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
