//! vw-probe: opens SSE streams over raw HTTP/1.1 sockets and times every event.
//!
//! Used by `loadtest/overhead.py` where k6 cannot look inside a stream: it records, per stream,
//! the time from writing the request to the first SSE event (TTFT), the gap between consecutive
//! events, whether a frame arrived more than `--stall-ms` later than the nominal gap (a stall),
//! and how many streams were open at once. One current-thread runtime, so the probe itself uses
//! at most one core. Output: one JSON object on stdout.
//!
//! Usage:
//!   vw-probe --addr 127.0.0.1:PORT --path /v1/chat/completions --body-file body.json \
//!            [--header 'x-api-key: vw_…']… [--conns N] [--repeat M] [--ramp-ms R] \
//!            [--frames K] [--gap-ms G] [--stall-ms 1000] [--deadline-s 120]

use std::net::SocketAddr;
use std::rc::Rc;
use std::cell::RefCell;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone)]
struct Opts {
    addr: SocketAddr,
    path: String,
    body: Vec<u8>,
    headers: Vec<String>,
    conns: usize,
    repeat: usize,
    ramp_ms: u64,
    frames: usize,
    gap_ms: u64,
    stall_ms: u64,
    deadline: Duration,
}

#[derive(Default)]
struct Stats {
    ttft_us: Vec<u64>,
    gap_us: Vec<u64>,
    ok: u64,
    stalled_streams: u64,
    late_frames: u64,
    errors: std::collections::BTreeMap<String, u64>,
    open: usize,
    peak_open: usize,
    done_marker: u64,
    events: u64,
}

fn usage() -> ! {
    eprintln!("usage: vw-probe --addr HOST:PORT --path PATH --body-file FILE [--header 'k: v']... [--conns N] [--repeat M] [--ramp-ms R] [--frames K] [--gap-ms G] [--stall-ms MS] [--deadline-s S]");
    std::process::exit(2);
}

fn parse() -> Opts {
    let mut a = std::env::args().skip(1);
    let mut addr = None;
    let mut path = "/".to_string();
    let mut body = Vec::new();
    let mut o = Opts {
        addr: "127.0.0.1:1".parse().unwrap_or_else(|_| usage()),
        path: String::new(),
        body: Vec::new(),
        headers: Vec::new(),
        conns: 1,
        repeat: 1,
        ramp_ms: 0,
        frames: 0,
        gap_ms: 0,
        stall_ms: 1000,
        deadline: Duration::from_secs(120),
    };
    while let Some(k) = a.next() {
        let mut v = || a.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--addr" => addr = Some(v().parse::<SocketAddr>().unwrap_or_else(|_| usage())),
            "--path" => path = v(),
            "--body-file" => body = std::fs::read(v()).unwrap_or_else(|e| { eprintln!("body: {e}"); usage() }),
            "--header" => o.headers.push(v()),
            "--conns" => o.conns = v().parse().unwrap_or_else(|_| usage()),
            "--repeat" => o.repeat = v().parse().unwrap_or_else(|_| usage()),
            "--ramp-ms" => o.ramp_ms = v().parse().unwrap_or_else(|_| usage()),
            "--frames" => o.frames = v().parse().unwrap_or_else(|_| usage()),
            "--gap-ms" => o.gap_ms = v().parse().unwrap_or_else(|_| usage()),
            "--stall-ms" => o.stall_ms = v().parse().unwrap_or_else(|_| usage()),
            "--deadline-s" => o.deadline = Duration::from_secs(v().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    o.addr = addr.unwrap_or_else(|| usage());
    o.path = path;
    o.body = body;
    o
}

fn request(o: &Opts) -> Vec<u8> {
    let mut r = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\n",
        o.path,
        o.addr,
        o.body.len()
    );
    for h in &o.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut b = r.into_bytes();
    b.extend_from_slice(&o.body);
    b
}

/// Incremental chunked-transfer decoder feeding an SSE event splitter.
struct Reader {
    // HTTP state
    head_done: bool,
    head: Vec<u8>,
    status: u16,
    chunked: bool,
    remaining: Option<usize>, // content-length bytes left (non-chunked)
    chunk_left: usize,
    chunk_state: u8, // 0 = size line, 1 = data, 2 = CRLF after data, 3 = trailer/end
    size_line: Vec<u8>,
    finished: bool,
    // SSE state
    at_line_start: bool,
    has_content: bool,
    cur: Vec<u8>,
    events: usize,
    saw_done: bool,
}

impl Reader {
    fn new() -> Self {
        Reader {
            head_done: false, head: Vec::new(), status: 0, chunked: false, remaining: None,
            chunk_left: 0, chunk_state: 0, size_line: Vec::new(), finished: false,
            at_line_start: true, has_content: false, cur: Vec::new(), events: 0, saw_done: false,
        }
    }

    /// Feeds raw socket bytes; returns the number of SSE events completed.
    fn feed(&mut self, mut data: &[u8]) -> Result<usize, String> {
        let before = self.events;
        if !self.head_done {
            self.head.extend_from_slice(data);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > 64 * 1024 { return Err("header too large".into()); }
                return Ok(0);
            };
            let head = String::from_utf8_lossy(&self.head[..end]).to_ascii_lowercase();
            self.status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            for line in head.split("\r\n").skip(1) {
                if let Some((k, v)) = line.split_once(':') {
                    let (k, v) = (k.trim(), v.trim());
                    if k == "transfer-encoding" && v.contains("chunked") { self.chunked = true; }
                    if k == "content-length" { self.remaining = v.parse().ok(); }
                }
            }
            self.head_done = true;
            let rest = self.head.split_off(end + 4);
            if self.status != 200 {
                return Err(format!("status {}", self.status));
            }
            self.body(&rest);
            return Ok(self.events - before);
        }
        if self.chunked {
            self.dechunk(&mut data);
        } else {
            self.body(data);
        }
        Ok(self.events - before)
    }

    fn dechunk(&mut self, data: &mut &[u8]) {
        while !data.is_empty() && !self.finished {
            match self.chunk_state {
                0 => {
                    let b = data[0];
                    *data = &data[1..];
                    if b == b'\n' {
                        let line = String::from_utf8_lossy(&self.size_line).trim().to_string();
                        let hex = line.split(';').next().unwrap_or("");
                        self.chunk_left = usize::from_str_radix(hex, 16).unwrap_or(0);
                        self.size_line.clear();
                        self.chunk_state = if self.chunk_left == 0 { 3 } else { 1 };
                        if self.chunk_left == 0 { self.finished = true; }
                    } else {
                        self.size_line.push(b);
                    }
                }
                1 => {
                    let n = self.chunk_left.min(data.len());
                    let (now, rest) = data.split_at(n);
                    self.sse(now);
                    *data = rest;
                    self.chunk_left -= n;
                    if self.chunk_left == 0 { self.chunk_state = 2; }
                }
                2 => {
                    let b = data[0];
                    *data = &data[1..];
                    if b == b'\n' { self.chunk_state = 0; }
                }
                _ => { *data = &[]; }
            }
        }
    }

    fn body(&mut self, data: &[u8]) {
        if self.chunked {
            let mut d = data;
            self.dechunk(&mut d);
            return;
        }
        let n = match self.remaining { Some(r) => r.min(data.len()), None => data.len() };
        self.sse(&data[..n]);
        if let Some(r) = self.remaining.as_mut() {
            *r -= n;
            if *r == 0 { self.finished = true; }
        }
    }

    fn sse(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                b'\r' => {}
                b'\n' => {
                    if self.at_line_start {
                        if self.has_content {
                            self.events += 1;
                            if self.cur.starts_with(b"data: [DONE]") { self.saw_done = true; }
                        }
                        self.has_content = false;
                        self.cur.clear();
                    }
                    self.at_line_start = true;
                }
                _ => {
                    self.at_line_start = false;
                    self.has_content = true;
                    if self.cur.len() < 16 { self.cur.push(b); }
                }
            }
        }
    }
}

async fn one_stream(sock: &mut TcpStream, req: &[u8], o: &Opts, st: &Rc<RefCell<Stats>>) -> Result<bool, String> {
    let t0 = Instant::now();
    sock.write_all(req).await.map_err(|e| format!("write: {}", e.kind()))?;
    let mut r = Reader::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut times: Vec<Instant> = Vec::with_capacity(o.frames.max(8) + 4);
    let mut counted_open = false;
    let result = loop {
        let n = match tokio::time::timeout_at((t0 + o.deadline).into(), sock.read(&mut buf)).await {
            Err(_) => break Err("deadline".to_string()),
            Ok(Err(e)) => break Err(format!("read: {}", e.kind())),
            Ok(Ok(0)) => break if r.finished { Ok(()) } else { Err("eof before end".into()) },
            Ok(Ok(n)) => n,
        };
        let now = Instant::now();
        match r.feed(&buf[..n]) {
            Err(e) => break Err(e),
            Ok(k) => {
                for _ in 0..k { times.push(now); }
                if k > 0 && !counted_open {
                    counted_open = true;
                    let mut s = st.borrow_mut();
                    s.open += 1;
                    s.peak_open = s.peak_open.max(s.open);
                }
            }
        }
        if r.finished { break Ok(()); }
    };
    let mut s = st.borrow_mut();
    if counted_open { s.open -= 1; }
    result?;
    if times.is_empty() { return Err("no events".into()); }
    if o.frames > 0 && times.len() < o.frames { return Err(format!("short stream ({} < {} events)", times.len(), o.frames)); }
    s.events += times.len() as u64;
    if r.saw_done { s.done_marker += 1; }
    let ttft = times[0].duration_since(t0);
    s.ttft_us.push(ttft.as_micros() as u64);
    let limit = Duration::from_millis(o.gap_ms + o.stall_ms);
    let mut stalled = ttft > Duration::from_millis(o.stall_ms);
    let k = if o.frames > 0 { o.frames } else { times.len() };
    for w in times[..k].windows(2) {
        let g = w[1].duration_since(w[0]);
        s.gap_us.push(g.as_micros() as u64);
        if g > limit { stalled = true; s.late_frames += 1; }
    }
    if stalled { s.stalled_streams += 1; }
    s.ok += 1;
    Ok(r.finished)
}

async fn worker(i: usize, o: Rc<Opts>, req: Rc<Vec<u8>>, st: Rc<RefCell<Stats>>) {
    if o.ramp_ms > 0 && o.conns > 1 {
        tokio::time::sleep(Duration::from_millis(o.ramp_ms * i as u64 / o.conns as u64)).await;
    }
    let mut sock: Option<TcpStream> = None;
    for _ in 0..o.repeat {
        if sock.is_none() {
            match TcpStream::connect(o.addr).await {
                Ok(s) => { let _ = s.set_nodelay(true); sock = Some(s); }
                Err(e) => { *st.borrow_mut().errors.entry(format!("connect: {}", e.kind())).or_default() += 1; continue; }
            }
        }
        let Some(s) = sock.as_mut() else { continue };
        match one_stream(s, &req, &o, &st).await {
            Ok(true) => {}
            Ok(false) => sock = None,
            Err(e) => { *st.borrow_mut().errors.entry(e).or_default() += 1; sock = None; }
        }
    }
}

fn pct(v: &mut [u64]) -> String {
    if v.is_empty() { return "null".into(); }
    v.sort_unstable();
    let at = |p: f64| v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "{{\"n\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{}}}",
        v.len(), at(50.0), at(90.0), at(99.0), at(99.9), v[v.len() - 1],
        v.iter().sum::<u64>() / v.len() as u64
    )
}

fn main() {
    let o = parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| { eprintln!("runtime: {e}"); std::process::exit(1) });
    let started = Instant::now();
    let st = Rc::new(RefCell::new(Stats::default()));
    rt.block_on(async {
        let local = tokio::task::LocalSet::new();
        let o = Rc::new(o.clone());
        let req = Rc::new(request(&o));
        for i in 0..o.conns {
            local.spawn_local(worker(i, o.clone(), req.clone(), st.clone()));
        }
        local.await;
    });
    let mut s = st.borrow_mut();
    let errors: Vec<String> = s.errors.iter().map(|(k, v)| format!("\"{}\":{}", k.replace('"', "'"), v)).collect();
    let (ok, stalled, late, peak, done, events) = (s.ok, s.stalled_streams, s.late_frames, s.peak_open, s.done_marker, s.events);
    let ttft = pct(&mut s.ttft_us);
    let gap = pct(&mut s.gap_us);
    println!(
        "{{\"conns\":{},\"repeat\":{},\"ok\":{},\"errors\":{{{}}},\"stalled_streams\":{},\"late_frames\":{},\"peak_open\":{},\"done_marker\":{},\"events\":{},\"elapsed_s\":{:.3},\"ttft_us\":{},\"gap_us\":{}}}",
        o.conns, o.repeat, ok, errors.join(","), stalled, late, peak, done, events, started.elapsed().as_secs_f64(), ttft, gap
    );
}
