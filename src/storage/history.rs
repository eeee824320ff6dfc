//! The per-call history: ledger entries and usage events in one append-only, checksummed log.
//!
//! Why not sled: sled's resident memory grows with the data it holds, whatever its cache
//! setting, and every call adds a debit and a usage event that are kept forever; the soak
//! measured that growth at the rate the history was written. Here the history lives in a file
//! and memory holds one `Head` per wallet and stream, however many calls a wallet has made.
//!
//! Each record names the previous record of the same wallet and stream, so a wallet's history
//! is a chain that is read newest first with one positioned read per step, and a page costs the
//! page, not the history. Layout of a record (integers little-endian):
//!
//! ```text
//! magic 0xA7 | stream u8 | len u32 | crc32 u32 | wallet [20] | prev u64 | payload [len]
//! ```
//!
//! `crc32` covers everything after it. Writers append under one lock and publish a record's
//! offset only after it is written, so readers never see a half-written record. On open the
//! file is scanned once: a torn or corrupt tail (a crash in the middle of a write that was
//! never acknowledged) is cut off at the last whole record.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::StorageError;
use crate::wallet::Wallet;

const MAGIC: u8 = 0xA7;
const HEADER: usize = 38;
/// No offset: the first record of a chain.
const NONE: u64 = u64::MAX;
/// The largest payload accepted (a usage event or ledger entry is a few hundred bytes).
const MAX_PAYLOAD: usize = 1 << 20;

/// Which chain a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Ledger = 1,
    Usage = 2,
    /// A tombstone (empty payload): the wallet's ledger and usage chains written before it are
    /// forgotten (an agent account swept before it was funded). The bytes stay in the file;
    /// no head points at them again, and a scan resets the wallet at this record.
    Forget = 3,
}

impl Stream {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Ledger),
            2 => Some(Self::Usage),
            3 => Some(Self::Forget),
            _ => None,
        }
    }
}

/// The chains a `Forget` record ends.
const CHAINS: [Stream; 2] = [Stream::Ledger, Stream::Usage];

/// The newest record of one chain, and how many records the chain has.
#[derive(Debug, Clone, Copy)]
struct Head {
    offset: u64,
    count: u64,
}

/// No record yet (or none since a tombstone).
const EMPTY: Head = Head {
    offset: NONE,
    count: 0,
};

struct Writer {
    file: File,
    end: u64,
}

/// The log. Cheap to share behind an `Arc`.
pub struct History {
    writer: Mutex<Writer>,
    reader: File,
    heads: DashMap<(Wallet, Stream), Head>,
    /// Everything before this offset is on disk.
    synced: AtomicU64,
    /// A write could not be undone or an fsync failed: what is on disk is unknown, so nothing
    /// more is written (and nothing more acknowledged) until a restart re-reads the file.
    broken: AtomicBool,
    sync_lock: Mutex<()>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("chains", &self.heads.len())
            .field("synced", &self.synced.load(Ordering::Relaxed))
            .finish()
    }
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Sled(format!("history log: {e}"))
}

/// One record as found by a scan.
pub struct Scanned {
    pub stream: Stream,
    pub wallet: Wallet,
    pub payload: Vec<u8>,
}

fn checksum(stream: u8, wallet: &[u8; 20], prev: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[stream]);
    h.update(wallet);
    h.update(&prev.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode(out: &mut Vec<u8>, stream: Stream, wallet: &Wallet, prev: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.push(MAGIC);
    out.push(stream as u8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(stream as u8, wallet.as_bytes(), prev, payload).to_le_bytes());
    out.extend_from_slice(wallet.as_bytes());
    out.extend_from_slice(&prev.to_le_bytes());
    out.extend_from_slice(payload);
}

struct RawHeader {
    stream: u8,
    len: usize,
    crc: u32,
    wallet: [u8; 20],
    prev: u64,
}

fn parse_header(h: &[u8; HEADER]) -> Option<RawHeader> {
    if h[0] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[2..6].try_into().ok()?) as usize;
    if len > MAX_PAYLOAD {
        return None;
    }
    Some(RawHeader {
        stream: h[1],
        len,
        crc: u32::from_le_bytes(h[6..10].try_into().ok()?),
        wallet: h[10..30].try_into().ok()?,
        prev: u64::from_le_bytes(h[30..38].try_into().ok()?),
    })
}

/// Positioned reads from the start of a file, leaving the descriptor's shared offset alone
/// (writers append through a clone of the same descriptor).
pub(super) struct At<'a> {
    pub(super) file: &'a File,
    pub(super) pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// How the history log reads a record at the start of `b`: its whole length and whether its
/// checksum holds, or `None` where no header parses (see `cut_torn_tail`).
fn probe_record(b: &[u8]) -> Option<(usize, bool)> {
    let h = parse_header(b.get(..HEADER)?.try_into().ok()?)?;
    Stream::from_u8(h.stream)?;
    let whole = b
        .get(HEADER..HEADER + h.len)
        .is_some_and(|p| checksum(h.stream, &h.wallet, h.prev, p) == h.crc);
    Some((HEADER + h.len, whole))
}

/// Fills `buf` from `r`; `Ok(false)` when the file ends first (a torn tail).
pub(super) fn read_whole(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, StorageError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Settles a log whose replay stopped at `end`: a torn tail (a crash in the middle of a write
/// nobody was told about) is cut off; unreadable bytes followed by whole records are refused,
/// because the damage is then elsewhere and cutting would drop synced records. `probe(b)` reads
/// the record at the start of `b` as the log's format has it: `None` where no header parses,
/// else its whole length and whether it is there in full with a holding checksum; `magic` is the
/// byte every record starts with.
///
/// The unreadable record's own extent counts when its header parses: a record running past the
/// end is a torn write, and "records" inside its payload are data (a user's text can hold a
/// whole, checksummed frame), not the log's framing.
pub(super) fn cut_torn_tail(
    file: &File,
    path: &Path,
    end: u64,
    magic: u8,
    probe: impl Fn(&[u8]) -> Option<(usize, bool)>,
) -> Result<(), StorageError> {
    let io = |e: std::io::Error| StorageError::Sled(format!("{}: {e}", path.display()));
    let len = file.metadata().map_err(io)?.len();
    if len <= end {
        return Ok(());
    }
    let mut rest = vec![0u8; usize::try_from(len - end).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut rest, end).map_err(io)?;
    let first = probe(&rest).map(|(n, _)| n);
    let skip = match first {
        Some(n) if n > rest.len() => rest.len(),
        Some(n) => n,
        None => 0,
    };
    let next_whole = memchr::memchr_iter(magic, &rest)
        .filter(|i| *i >= skip)
        .find(|i| matches!(probe(&rest[*i..]), Some((_, true))));
    if let Some(i) = next_whole {
        let at = end + i as u64;
        return Err(StorageError::Codec(format!(
            "{}: unreadable bytes at offset {end} are followed by valid records (at {at}); \
             refusing to cut the log (restore it from a backup or cut it by hand)",
            path.display()
        )));
    }
    tracing::warn!(
        path = %path.display(),
        kept = end,
        dropped = len - end,
        "log had a torn tail (a write interrupted by a crash); cut it off"
    );
    file.set_len(end).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads whole, valid records from the start of `file`; calls `each` with every one and its
/// offset, and returns the offset just past the last valid record.
fn scan(file: &File, mut each: impl FnMut(u64, Scanned)) -> Result<u64, StorageError> {
    let mut r = BufReader::with_capacity(1 << 16, At { file, pos: 0 });
    let mut at = 0u64;
    let mut header = [0u8; HEADER];
    loop {
        if !read_whole(&mut r, &mut header)? {
            return Ok(at);
        }
        let Some(h) = parse_header(&header) else {
            return Ok(at);
        };
        let Some(stream) = Stream::from_u8(h.stream) else {
            return Ok(at);
        };
        let mut payload = vec![0u8; h.len];
        if !read_whole(&mut r, &mut payload)? {
            return Ok(at);
        }
        if checksum(h.stream, &h.wallet, h.prev, &payload) != h.crc {
            return Ok(at);
        }
        each(
            at,
            Scanned {
                stream,
                wallet: Wallet(h.wallet),
                payload,
            },
        );
        at += (HEADER + h.len) as u64;
    }
}

impl History {
    /// Opens or creates `path`, rebuilding the chains' heads; a torn tail is cut off.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let heads: DashMap<(Wallet, Stream), Head> = DashMap::new();
        let end = scan(&file, |offset, rec| {
            if rec.stream == Stream::Forget {
                for s in CHAINS {
                    heads.remove(&(rec.wallet, s));
                }
                return;
            }
            let mut head = heads
                .entry((rec.wallet, rec.stream))
                .or_insert(Head { offset, count: 0 });
            head.offset = offset;
            head.count += 1;
        })?;
        cut_torn_tail(&file, path, end, MAGIC, probe_record)?;
        let reader = file.try_clone().map_err(io)?;
        Ok(Self {
            writer: Mutex::new(Writer { file, end }),
            reader,
            heads,
            synced: AtomicU64::new(end),
            broken: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
        })
    }

    /// Appends records in order (not yet durable: see `sync`). Returns the end offset.
    pub fn append<'a>(
        &self,
        records: impl IntoIterator<Item = (Stream, &'a Wallet, Vec<u8>)>,
    ) -> Result<u64, StorageError> {
        let mut w = self.writer.lock().map_err(|_| poisoned())?;
        self.usable()?;
        let mut buf = Vec::with_capacity(4096);
        // Heads move only after the bytes are written; until then chains end where they were.
        let mut moved: HashMap<(Wallet, Stream), Head> = HashMap::new();
        for (stream, wallet, payload) in records {
            if payload.len() > MAX_PAYLOAD {
                return Err(StorageError::Codec("history record too large".into()));
            }
            if stream == Stream::Forget {
                // Chains restart after a tombstone; a head at `NONE` is removed below.
                encode(&mut buf, stream, wallet, NONE, &payload);
                for s in CHAINS {
                    moved.insert((*wallet, s), EMPTY);
                }
                continue;
            }
            let key = (*wallet, stream);
            let prev = moved
                .get(&key)
                .copied()
                .or_else(|| self.heads.get(&key).map(|h| *h))
                .unwrap_or(EMPTY);
            let offset = w.end + buf.len() as u64;
            encode(&mut buf, stream, wallet, prev.offset, &payload);
            moved.insert(
                key,
                Head {
                    offset,
                    count: prev.count + 1,
                },
            );
        }
        if buf.is_empty() {
            return Ok(w.end);
        }
        // Positioned at the published end, so a retry after a failed write lands where the
        // chains expect it.
        if let Err(e) = w.file.write_all_at(&buf, w.end) {
            // A partial write leaves bytes no chain points at (possibly whole records that a
            // restart would read): cut them, or stop writing if even that fails.
            if w.file.set_len(w.end).is_err() {
                self.broken.store(true, Ordering::Release);
            }
            return Err(io(e));
        }
        w.end += buf.len() as u64;
        for (key, head) in moved {
            if head.offset == NONE {
                self.heads.remove(&key);
            } else {
                self.heads.insert(key, head);
            }
        }
        Ok(w.end)
    }

    /// Waits (blocking) until everything up to `upto` is on disk. Concurrent callers share one
    /// `fdatasync`.
    pub fn sync(&self, upto: u64) -> Result<(), StorageError> {
        if self.synced.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        let _one = self.sync_lock.lock().map_err(|_| poisoned())?;
        if self.synced.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        self.usable()?;
        let covers = self.writer.lock().map_err(|_| poisoned())?.end;
        if let Err(e) = self.reader.sync_data() {
            // After a failed fdatasync Linux marks the pages clean and reports the error once:
            // a retry would "succeed" without the data on disk. Stop here instead.
            self.broken.store(true, Ordering::Release);
            tracing::error!(%e, "history log fsync failed; refusing further writes until restart");
            return Err(io(e));
        }
        self.synced.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }

    fn usable(&self) -> Result<(), StorageError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(StorageError::Sled(
                "history log stopped after a failed write or fsync; restart to re-read it".into(),
            ));
        }
        Ok(())
    }

    /// A wallet's records of one stream, newest first, as payloads.
    pub fn chain(self: &Arc<Self>, wallet: &Wallet, stream: Stream) -> Chain {
        self.chain_counted(wallet, stream).0
    }

    /// `chain` and the number of records it walks, read from the same head (a page's `total`
    /// then agrees with what it walked, whatever is appended meanwhile).
    pub fn chain_counted(self: &Arc<Self>, wallet: &Wallet, stream: Stream) -> (Chain, u64) {
        let head = self.heads.get(&(*wallet, stream)).map(|h| *h);
        let chain = Chain {
            log: Arc::clone(self),
            wallet: *wallet,
            stream,
            next: head.map_or(NONE, |h| h.offset),
        };
        (chain, head.map_or(0, |h| h.count))
    }

    /// Every record from the start, in order (start-up folds, migrations, tests).
    pub fn scan_all(&self, mut each: impl FnMut(Scanned)) -> Result<(), StorageError> {
        let end = self.writer.lock().map_err(|_| poisoned())?.end;
        scan(&self.reader, |offset, rec| {
            if offset < end {
                each(rec);
            }
        })?;
        Ok(())
    }

    fn read_at(&self, offset: u64) -> Result<(RawHeader, Vec<u8>), StorageError> {
        let mut header = [0u8; HEADER];
        self.reader.read_exact_at(&mut header, offset).map_err(io)?;
        let h = parse_header(&header)
            .ok_or_else(|| StorageError::Codec(format!("history record at {offset}")))?;
        let mut payload = vec![0u8; h.len];
        self.reader
            .read_exact_at(&mut payload, offset + HEADER as u64)
            .map_err(io)?;
        Ok((h, payload))
    }
}

fn poisoned() -> StorageError {
    StorageError::Sled("history log lock poisoned".into())
}

/// Walks one chain newest first. Each step is one header read plus one payload read.
pub struct Chain {
    log: Arc<History>,
    wallet: Wallet,
    stream: Stream,
    next: u64,
}

impl Iterator for Chain {
    type Item = Result<Vec<u8>, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == NONE {
            return None;
        }
        let at = self.next;
        match self.log.read_at(at) {
            Ok((h, payload))
                if h.wallet == self.wallet.0
                    && h.stream == self.stream as u8
                    && (h.prev == NONE || h.prev < at) =>
            {
                self.next = h.prev;
                Some(Ok(payload))
            }
            Ok(_) => {
                self.next = NONE;
                Some(Err(StorageError::Codec(format!(
                    "history chain broken at {at}"
                ))))
            }
            Err(e) => {
                self.next = NONE;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(b: u8) -> Wallet {
        Wallet([b; 20])
    }

    fn chain(log: &Arc<History>, wallet: &Wallet, s: Stream) -> Vec<Vec<u8>> {
        log.chain(wallet, s).map(|r| r.unwrap()).collect()
    }

    #[test]
    fn chains_are_per_wallet_and_stream_newest_first_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.log");
        {
            let log = Arc::new(History::open(&path).unwrap());
            let (a, b) = (w(1), w(2));
            let end = log
                .append([
                    (Stream::Ledger, &a, b"a1".to_vec()),
                    (Stream::Usage, &a, b"u1".to_vec()),
                    (Stream::Ledger, &b, b"b1".to_vec()),
                    (Stream::Ledger, &a, b"a2".to_vec()),
                ])
                .unwrap();
            log.append([(Stream::Ledger, &a, b"a3".to_vec())]).unwrap();
            log.sync(end).unwrap();
            assert_eq!(chain(&log, &a, Stream::Ledger), [b"a3", b"a2", b"a1"]);
            assert_eq!(chain(&log, &a, Stream::Usage), [b"u1"]);
            assert_eq!(chain(&log, &b, Stream::Ledger), [b"b1"]);
            assert_eq!(log.chain_counted(&a, Stream::Ledger).1, 3);
            assert_eq!(log.chain_counted(&w(3), Stream::Ledger).1, 0);
            assert!(chain(&log, &w(3), Stream::Usage).is_empty());
        }
        let log = Arc::new(History::open(&path).unwrap());
        assert_eq!(chain(&log, &w(1), Stream::Ledger), [b"a3", b"a2", b"a1"]);
        assert_eq!(log.chain_counted(&w(1), Stream::Ledger).1, 3);
        log.append([(Stream::Ledger, &w(1), b"a4".to_vec())])
            .unwrap();
        assert_eq!(chain(&log, &w(1), Stream::Ledger)[..2], [b"a4", b"a3"]);
    }

    #[test]
    fn a_tombstone_forgets_a_wallets_chains_now_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.log");
        let (a, b) = (w(1), w(2));
        {
            let log = Arc::new(History::open(&path).unwrap());
            log.append([
                (Stream::Usage, &a, b"u1".to_vec()),
                (Stream::Ledger, &a, b"l1".to_vec()),
                (Stream::Usage, &b, b"kept".to_vec()),
            ])
            .unwrap();
            // A straggler in the same batch as the tombstone, and one after it.
            log.append([
                (Stream::Usage, &a, b"u2".to_vec()),
                (Stream::Forget, &a, Vec::new()),
                (Stream::Usage, &a, b"after".to_vec()),
            ])
            .unwrap();
            assert_eq!(chain(&log, &a, Stream::Usage), [b"after"]);
            assert!(chain(&log, &a, Stream::Ledger).is_empty());
            assert_eq!(log.chain_counted(&a, Stream::Usage).1, 1);
            assert_eq!(chain(&log, &b, Stream::Usage), [b"kept"]);
            let end = log.append([(Stream::Forget, &b, Vec::new())]).unwrap();
            log.sync(end).unwrap();
            assert!(chain(&log, &b, Stream::Usage).is_empty());
        }
        let log = Arc::new(History::open(&path).unwrap());
        assert_eq!(chain(&log, &a, Stream::Usage), [b"after"]);
        assert!(chain(&log, &a, Stream::Ledger).is_empty());
        assert!(chain(&log, &b, Stream::Usage).is_empty());
        assert_eq!(log.chain_counted(&b, Stream::Usage).1, 0);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_at_the_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.log");
        let whole;
        {
            let log = History::open(&path).unwrap();
            log.append([(Stream::Ledger, &w(1), b"kept".to_vec())])
                .unwrap();
            whole = log
                .append([(Stream::Ledger, &w(1), b"second".to_vec())])
                .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let first_len = (HEADER + 4) as u64;
        // Every cut inside the second record, and a flipped payload byte, keep only the first.
        for cut in first_len..whole {
            std::fs::write(&path, &bytes[..cut as usize]).unwrap();
            let log = Arc::new(History::open(&path).unwrap());
            assert_eq!(
                chain(&log, &w(1), Stream::Ledger),
                [b"kept"],
                "cut at {cut}"
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len(), first_len);
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let log = Arc::new(History::open(&path).unwrap());
        assert_eq!(chain(&log, &w(1), Stream::Ledger), [b"kept"]);
        // Appends after a cut chain onto the surviving record.
        log.append([(Stream::Ledger, &w(1), b"after".to_vec())])
            .unwrap();
        assert_eq!(
            chain(&log, &w(1), Stream::Ledger),
            [b"after".to_vec(), b"kept".to_vec()]
        );
    }

    #[test]
    fn damage_followed_by_whole_records_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.log");
        {
            let log = History::open(&path).unwrap();
            for p in [b"one", b"two", b"thr"] {
                let end = log.append([(Stream::Ledger, &w(1), p.to_vec())]).unwrap();
                log.sync(end).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 1] ^= 0xFF; // the first record's payload
        std::fs::write(&path, &bytes).unwrap();
        let err = History::open(&path).unwrap_err();
        assert!(
            err.to_string().contains("followed by valid records"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is left as it was"
        );
    }

    #[test]
    fn concurrent_appends_keep_every_chain_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(History::open(&dir.path().join("h.log")).unwrap());
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let log = Arc::clone(&log);
                s.spawn(move || {
                    for i in 0..200u32 {
                        let end = log
                            .append([(Stream::Usage, &w(t), i.to_le_bytes().to_vec())])
                            .unwrap();
                        if i % 50 == 0 {
                            log.sync(end).unwrap();
                        }
                    }
                });
            }
        });
        for t in 0..4u8 {
            let got: Vec<u32> = chain(&log, &w(t), Stream::Usage)
                .iter()
                .map(|p| u32::from_le_bytes(p[..4].try_into().unwrap()))
                .collect();
            assert_eq!(got, (0..200).rev().collect::<Vec<_>>());
        }
        let mut n = 0;
        log.scan_all(|_| n += 1).unwrap();
        assert_eq!(n, 800);
    }
}
