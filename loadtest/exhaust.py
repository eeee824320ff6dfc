#!/usr/bin/env python3
"""loadtest/exhaust.py — a bounded unauthenticated-exhaustion attack on a fresh local gateway.

Starts `vectorway serve` on 127.0.0.1 (OS-chosen port, temp data dir, built-in simulator), then:

  before  10 s: the idle gateway;
  during  two attacks at once, each bounded in count and time:
          * exhaustion: up to --requests SIWE challenges (default 250,000, at most --attack-s,
            default 90 s), each naming a new random wallet, pipelined 50 at a time over keep-alive
            connections; every connection comes from a new loopback source address
            (127.0.1.1 … 127.0.255.254: Linux routes all of 127/8 to lo) and sends at most 250
            requests, like a botnet that rotates addresses to stay under per-IP limits;
          * one address: up to --flood (default 20,000) GET /v1/models from 127.0.0.2 alone;
          * slow bodies: --slow sockets (default 100) announce a 1,000-byte body for
            POST /v1/auth/siwe/challenge and send one byte every 2 s for up to 45 s;
  after   15 s after the attack stopped.

Throughout it samples the gateway's open file descriptors (/proc/PID/fd), resident memory
(VmRSS) every second and `GET /healthz` latency five times a second from 127.0.0.1 (a source
address the attack never uses), and reports them per phase with the attack's status counts and
how many slow sockets were still open after 10, 29 and 44 s. Writes
loadtest/results/exhaust-<stamp>.{json,md} and prints the markdown.

Targets 127.0.0.1 only, stops by itself (about 2.5 minutes) and kills what it started.

    python3 loadtest/exhaust.py [--bin target/debug/vectorway] [--requests N] [--attack-s S]
                                [--slow N] [--flood N] [--set section.key=value ...]

--set passes configuration overrides (VECTORWAY_<SECTION>__<KEY>); a binary that does not know
a key refuses to start, so the same command works against an older build only without them.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = re.compile(r"vectorway listening on http://([0-9.]+):([0-9]+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def child_env(overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORWAY_") and k != "GEMINI_API_KEY"}
    env["NO_COLOR"] = "1"
    env.update(overrides)
    return env


def start_gateway(binary, data_dir, sets):
    overrides = {
        "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
        "VECTORWAY_STORE__DATA_DIR": data_dir,
    }
    for s in sets:
        key, _, value = s.partition("=")
        section, _, name = key.partition(".")
        if not section or not name:
            sys.exit(f"--set {s}: want section.key=value")
        overrides[f"VECTORWAY_{section.upper()}__{name.upper()}"] = value
    log_path = os.path.join(data_dir, "..", "serve.log")
    logf = open(log_path, "wb")
    proc = subprocess.Popen([binary, "serve"], env=child_env(overrides), stdout=subprocess.DEVNULL,
                            stderr=logf, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve exited with {proc.returncode}:\n{open(log_path, errors='replace').read()}")
        m = GATEWAY.search(ANSI.sub("", open(log_path, errors="replace").read()))
        if m:
            if m.group(1) != "127.0.0.1":
                proc.kill()
                sys.exit(f"the gateway is not on 127.0.0.1: {m.group(0)}")
            return proc, int(m.group(2)), log_path
        time.sleep(0.1)
    proc.kill()
    sys.exit("serve did not report 'vectorway listening on' within 30 s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Recorder:
    """Per-second fd/RSS samples and 5/s /healthz probes, tagged with the current phase."""

    def __init__(self, pid, port):
        self.pid, self.port = pid, port
        self.phase = "before"
        self.samples = []  # (t, phase, fds, rss_kb)
        self.probes = []  # (t, phase, latency_ms or None, status)
        self.done = threading.Event()
        self.t0 = time.time()

    def run_samples(self):
        while not self.done.wait(1.0):
            self.samples.append((time.time() - self.t0, self.phase, fd_count(self.pid), rss_kb(self.pid)))

    def run_probes(self):
        req = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        while not self.done.wait(0.2):
            t = time.time()
            status = 0
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                              source_address=("127.0.0.1", 0)) as s:
                    s.sendall(req)
                    buf = b""
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    status = int(buf[9:12]) if buf.startswith(b"HTTP/1.1 ") else 0
                latency = (time.time() - t) * 1000
            except OSError:
                latency = None
            self.probes.append((t - self.t0, self.phase, latency, status))


def source_addresses():
    """127.0.1.1 … 127.0.255.254, round and round."""
    while True:
        for b in range(1, 256):
            for c in range(1, 255):
                yield f"127.0.{b}.{c}"


def challenge(i):
    body = json.dumps({"wallet_address": "0x%040x" % (0xA77AC000000000000000 + i)}).encode()
    return (b"POST /v1/auth/siwe/challenge HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


def models(_i):
    return b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


class Exhaustion:
    """Requests pipelined 50 at a time over keep-alive connections, each connection from the next
    of `addrs`, at most `per_conn` requests per connection."""

    BATCH = 50

    def __init__(self, port, limit, seconds, request, addrs, per_conn=250, threads=4):
        self.port, self.limit, self.seconds, self.threads = port, limit, seconds, threads
        self.request, self.per_conn = request, per_conn
        self.sent = 0
        self.codes = {}
        self.errors = 0
        self.lock = threading.Lock()
        self.addrs = addrs
        self.stop = threading.Event()
        self.seq = 0

    def next_batch(self, n):
        with self.lock:
            if self.sent >= self.limit:
                return None, None
            n = min(n, self.limit - self.sent)
            self.sent += n
            start = self.seq
            self.seq += n
            return start, n

    def record(self, key):
        with self.lock:
            self.codes[key] = self.codes.get(key, 0) + 1

    def worker(self, deadline):
        while not self.stop.is_set() and time.time() < deadline:
            with self.lock:
                src = next(self.addrs)
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10, source_address=(src, 0))
            except OSError:
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)
                continue
            try:
                done = 0
                while done < self.per_conn and time.time() < deadline:
                    start, n = self.next_batch(self.BATCH)
                    if n is None:
                        return
                    s.sendall(b"".join(self.request(i) for i in range(start, start + n)))
                    got, closed = read_responses(s, n)
                    for status, code in got:
                        self.record(f"{status} {code}" if code else str(status))
                    done += n
                    if closed:
                        break
            except OSError:
                with self.lock:
                    self.errors += 1
            finally:
                s.close()

    def run(self):
        deadline = time.time() + self.seconds
        ts = [threading.Thread(target=self.worker, args=(deadline,), daemon=True) for _ in range(self.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(self.seconds + 30)


def read_responses(s, n):
    """Reads n HTTP/1.1 responses with content-length bodies: [(status, error code)], closed."""
    buf = b""
    out = []
    while len(out) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            chunk = s.recv(65536)
            if not chunk:
                return out, True
            buf += chunk
            continue
        head = buf[:head_end].decode("latin-1")
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        while len(buf) < head_end + 4 + length:
            chunk = s.recv(65536)
            if not chunk:
                return out, True
            buf += chunk
        body = buf[head_end + 4:head_end + 4 + length]
        buf = buf[head_end + 4 + length:]
        status = int(head[9:12])
        code = ""
        if status >= 400:
            cm = re.search(rb'"code":"([a-z_0-9]+)"', body)
            code = cm.group(1).decode() if cm else ""
        out.append((status, code))
        if re.search(r"(?im)^connection:\s*close", head):
            return out, True
    return out, False


class SlowBodies:
    """Sockets that announce a body and trickle it, one byte every 2 s."""

    def __init__(self, port, count, seconds=45):
        self.port, self.count, self.seconds = port, count, seconds
        self.socks = []
        self.closed_at = {}
        self.answers = {}
        self.open_at = {}

    def run(self, t0):
        head = (b"POST /v1/auth/siwe/challenge HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
        addrs = source_addresses()
        for _ in range(50_000):  # skip the exhaustion's first addresses: no shared bucket
            next(addrs)
        for i in range(self.count):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(next(addrs), 0))
            s.sendall(head)
            s.setblocking(False)
            self.socks.append(s)
        started = time.time()
        checkpoints = [10, 29, 44]
        next_byte = started + 2.0
        while time.time() - started < self.seconds:
            send = time.time() >= next_byte
            if send:
                next_byte += 2.0
            for i, s in enumerate(self.socks):
                if i in self.closed_at:
                    continue
                try:
                    data = s.recv(65536)
                    if data == b"":
                        self.closed_at[i] = time.time() - started
                        continue
                    self.answers[i] = self.answers.get(i, b"") + data
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_at[i] = time.time() - started
                    continue
                if not send:
                    continue
                try:
                    s.send(b" ")
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_at.setdefault(i, time.time() - started)
            elapsed = time.time() - started
            while checkpoints and elapsed >= checkpoints[0]:
                self.open_at[checkpoints.pop(0)] = self.count - len(self.closed_at)
            time.sleep(0.25)
        for c in checkpoints:
            self.open_at[c] = self.count - len(self.closed_at)
        for s in self.socks:
            s.close()

    def statuses(self):
        out = {}
        for data in self.answers.values():
            key = data[9:12].decode() if data.startswith(b"HTTP/1.1 ") else "?"
            m = re.search(rb'"code":"([a-z_0-9]+)"', data)
            if m:
                key += " " + m.group(1).decode()
            out[key] = out.get(key, 0) + 1
        return out


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def summarize(rec):
    phases = {}
    for name in ("before", "during", "after"):
        s = [x for x in rec.samples if x[1] == name]
        p = [x for x in rec.probes if x[1] == name]
        lat = [x[2] for x in p if x[2] is not None]
        phases[name] = {
            "fds_min": min((x[2] for x in s), default=None),
            "fds_max": max((x[2] for x in s), default=None),
            "rss_mb_start": round(s[0][3] / 1024, 1) if s else None,
            "rss_mb_max": round(max(x[3] for x in s) / 1024, 1) if s else None,
            "rss_mb_end": round(s[-1][3] / 1024, 1) if s else None,
            "healthz_probes": len(p),
            "healthz_failed": sum(1 for x in p if x[2] is None or x[3] != 200),
            "healthz_p50_ms": round(statistics.median(lat), 2) if lat else None,
            "healthz_p99_ms": round(pct(lat, 99), 2) if lat else None,
            "healthz_max_ms": round(max(lat), 2) if lat else None,
        }
    return phases


def markdown(report):
    ph = report["phases"]
    rows = [
        ("open fds (min–max)", lambda p: f"{p['fds_min']}–{p['fds_max']}"),
        ("RSS start / max / end (MB)", lambda p: f"{p['rss_mb_start']} / {p['rss_mb_max']} / {p['rss_mb_end']}"),
        ("/healthz p50 / p99 / max (ms)", lambda p: f"{p['healthz_p50_ms']} / {p['healthz_p99_ms']} / {p['healthz_max_ms']}"),
        ("/healthz probes (not 200)", lambda p: f"{p['healthz_probes']} ({p['healthz_failed']})"),
    ]
    lines = [f"binary: `{report['binary']}`; {report['when']}", "",
             "| figure | before | during | after |", "|---|---|---|---|"]
    for label, f in rows:
        lines.append(f"| {label} | " + " | ".join(f(ph[n]) for n in ("before", "during", "after")) + " |")
    ex = report["exhaustion"]
    sl = report["slow_bodies"]
    lines += ["",
              f"exhaustion: {ex['sent']} challenges sent in {ex['seconds']} s ({ex['rate_per_s']}/s), "
              f"answers {json.dumps(ex['codes'], sort_keys=True)}, connection errors {ex['errors']}",
              f"one address (127.0.0.2, GET /v1/models): {report['one_address']['sent']} sent, answers "
              f"{json.dumps(report['one_address']['codes'], sort_keys=True)}",
              f"slow bodies: {sl['count']} sockets; still open after 10 / 29 / 44 s: "
              f"{sl['open_at'].get(10)} / {sl['open_at'].get(29)} / {sl['open_at'].get(44)}; "
              f"closed after (s, min–max): {sl['closed_min_s']}–{sl['closed_max_s']}; "
              f"answers {json.dumps(sl['statuses'], sort_keys=True)}"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("VW_BIN", os.path.join(ROOT, "target/release/vectorway")))
    ap.add_argument("--requests", type=int, default=250_000)
    ap.add_argument("--attack-s", type=int, default=90)
    ap.add_argument("--slow", type=int, default=100)
    ap.add_argument("--flood", type=int, default=20_000)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=os.path.join(ROOT, "loadtest/results"))
    a = ap.parse_args()
    if not (1 <= a.requests <= 1_000_000 and 1 <= a.attack_s <= 300 and 0 <= a.slow <= 1000
            and 1 <= a.flood <= 1_000_000):
        sys.exit("bounds: --requests 1..1e6, --attack-s 1..300, --slow 0..1000, --flood 1..1e6")
    if not os.access(a.bin, os.X_OK):
        sys.exit(f"{a.bin} is missing: build it first (cargo build --release), or pass --bin")
    tmp = tempfile.mkdtemp(prefix="vectorway-exhaust.")
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    proc = None
    try:
        proc, port, _ = start_gateway(a.bin, data, a.set)
        log(f"gateway pid {proc.pid} on 127.0.0.1:{port}")
        rec = Recorder(proc.pid, port)
        ts = [threading.Thread(target=rec.run_samples, daemon=True),
              threading.Thread(target=rec.run_probes, daemon=True)]
        for t in ts:
            t.start()
        time.sleep(10)
        rec.phase = "during"
        log(f"attack: up to {a.requests} challenges in {a.attack_s} s, {a.slow} slow bodies")
        ex = Exhaustion(port, a.requests, a.attack_s, challenge, source_addresses())
        # One address that does not rotate: 127.0.0.2 (the rotation starts at 127.0.1.1).
        one = Exhaustion(port, a.flood, a.attack_s, models, iter(lambda: "127.0.0.2", None),
                         per_conn=10**9, threads=1)
        sl = SlowBodies(port, a.slow)
        t_ex = threading.Thread(target=ex.run, daemon=True)
        t_one = threading.Thread(target=one.run, daemon=True)
        t_sl = threading.Thread(target=sl.run, args=(rec.t0,), daemon=True)
        t_start = time.time()
        t_ex.start()
        t_one.start()
        if a.slow:
            t_sl.start()
        t_ex.join(a.attack_s + 60)
        t_one.join(a.attack_s + 60)
        ex_seconds = round(time.time() - t_start, 1)
        if a.slow:
            t_sl.join(120)
        ex.stop.set()
        one.stop.set()
        rec.phase = "after"
        log("attack over; 15 s more")
        time.sleep(15)
        rec.done.set()
        for t in ts:
            t.join(10)
        closed = list(sl.closed_at.values())
        report = {
            "binary": os.path.relpath(a.bin, ROOT) if a.bin.startswith(ROOT) else a.bin,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "settings": a.set,
            "phases": summarize(rec),
            "exhaustion": {"sent": ex.sent, "seconds": ex_seconds,
                           "rate_per_s": round(ex.sent / max(ex_seconds, 0.1)), "codes": ex.codes,
                           "errors": ex.errors},
            "one_address": {"sent": one.sent, "codes": one.codes, "errors": one.errors},
            "slow_bodies": {"count": a.slow, "open_at": sl.open_at,
                            "closed_min_s": round(min(closed), 1) if closed else None,
                            "closed_max_s": round(max(closed), 1) if closed else None,
                            "statuses": sl.statuses()},
            "samples": rec.samples,
            "probes": rec.probes,
        }
        os.makedirs(a.out, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        md = markdown(report)
        with open(os.path.join(a.out, f"exhaust-{stamp}.json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(a.out, f"exhaust-{stamp}.md"), "w") as f:
            f.write(md)
        print(md)
        log(f"wrote {a.out}/exhaust-{stamp}.{{json,md}}")
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
