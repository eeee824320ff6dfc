//! Wallet memory records in one append-only, checksummed log, compacted in the background.
//!
//! Why not sled: memory records are written newest-in, oldest-out at a per-namespace cap, and
//! under that churn sled's resident memory swings between 65 and 85 MB for 10,000 live records
//! of 3.5 KB (`loadtest/sled-churn`), which made the soak's RSS slope noise. Here the records
//! live in a file and memory holds one `Loc` (offset and length) per live record.
//!
//! Layout of a frame (integers little-endian):
//!
//! ```text
//! magic 0xB3 | kind u8 | len u32 | crc32 u32 | wallet [20] | id [16] | payload [len]
//! ```
//!
//! Kind 1 puts (or replaces) a wallet's record, kind 2 forgets it (no payload); `crc32` covers
//! everything after it. Open replays the file in order. A torn tail (a crash during a write
//! nobody was told about) is cut at the last whole frame; damage followed by whole frames is
//! refused, as in `history.log`, because cutting there would drop synced records.
//!
//! Compaction: once the file is past `compact_min` and more than twice the live bytes, a
//! background thread copies the live frames, in file order, into `memory.log.compact` without
//! holding any lock, then the frames appended meanwhile (puts and forgets, verbatim) until
//! little is left. It then takes the locks, copies the last of them, syncs, renames the copy
//! over the log and moves every location. Readers
//! hold the file they looked a location up in, so a read racing the switch still reads the old
//! (unlinked) file at the old offset. A crash before the rename leaves a stray copy that the
//! next open deletes; after it, the new log is complete.
//!
//! Every frame names its wallet and id, and a read checks them and the checksum, so a location
//! bug can never hand one wallet another wallet's record.
//!
//! Durability is the caller's: `sync` makes everything up to a `Mark` durable. `Memory` syncs a
//! write before a search may show it and a delete before answering it; forgetting the oldest
//! records at the cap is not synced, so a crash may bring some back until the next index load
//! trims them again.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::StorageError;
use super::history::{At, cut_torn_tail, read_whole};
use crate::locks::{lock, read, write};
use crate::wallet::Wallet;

const MAGIC: u8 = 0xB3;
const HEADER: usize = 46;
const PUT: u8 = 1;
const FORGET: u8 = 2;
/// The largest payload accepted (a record is a text of at most 32 KiB and a vector of at most
/// 3,072 floats).
const MAX_PAYLOAD: usize = 1 << 20;
/// Frames appended during a compaction's copy that it leaves for its locked step (in tests,
/// none: every racing write goes through the catch-up).
const CATCH_UP_SLACK: u64 = if cfg!(test) { 1 } else { 256 << 10 };
/// The log size below which it is never compacted.
pub const COMPACT_MIN: u64 = 64 << 20;

/// A record as `snapshot` lists it: wallet, id, payload.
pub type Record = (Wallet, [u8; 16], Vec<u8>);

/// Where a live record's frame is, and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    offset: u64,
    len: u32,
}

/// A point in the log's history: everything appended up to it. A compaction starts a new
/// epoch whose file holds everything of the older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    epoch: u64,
    offset: u64,
}

struct State {
    file: Arc<File>,
    end: u64,
    epoch: u64,
    wallets: HashMap<Wallet, BTreeMap<[u8; 16], Loc>>,
    live_bytes: u64,
}

/// The log. Share it behind an `Arc`.
pub struct MemoryLog {
    path: PathBuf,
    state: RwLock<State>,
    /// What is known to be on disk. Its lock also makes fsyncs and compaction switches take
    /// turns.
    synced: Mutex<Mark>,
    /// A write could not be undone or an fsync failed: nothing more is written until restart.
    broken: AtomicBool,
    compacting: AtomicBool,
    /// After a failed compaction, the log size before which none is tried again.
    retry_at: AtomicU64,
    compact_min: u64,
    /// Held while this log is open: one writer per file, even within a process.
    _lock: File,
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = read(&self.state);
        f.debug_struct("MemoryLog")
            .field("end", &s.end)
            .field("live_bytes", &s.live_bytes)
            .finish()
    }
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Sled(format!("memory log: {e}"))
}

fn checksum(kind: u8, wallet: &[u8; 20], id: &[u8; 16], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(wallet);
    h.update(id);
    h.update(payload);
    h.finalize()
}

fn encode(kind: u8, wallet: &Wallet, id: &[u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(MAGIC);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(kind, wallet.as_bytes(), id, payload).to_le_bytes());
    out.extend_from_slice(wallet.as_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(payload);
    out
}

struct Header {
    kind: u8,
    len: usize,
    crc: u32,
    wallet: [u8; 20],
    id: [u8; 16],
}

impl Header {
    fn parse(h: &[u8]) -> Option<Self> {
        let h: &[u8; HEADER] = h.get(..HEADER)?.try_into().ok()?;
        let len = u32::from_le_bytes(h[2..6].try_into().ok()?) as usize;
        if h[0] != MAGIC || !(h[1] == PUT || h[1] == FORGET) || len > MAX_PAYLOAD {
            return None;
        }
        if h[1] == FORGET && len != 0 {
            return None;
        }
        Some(Self {
            kind: h[1],
            len,
            crc: u32::from_le_bytes(h[6..10].try_into().ok()?),
            wallet: h[10..30].try_into().ok()?,
            id: h[30..46].try_into().ok()?,
        })
    }

    fn valid(&self, payload: &[u8]) -> bool {
        checksum(self.kind, &self.wallet, &self.id, payload) == self.crc
    }
}

/// Replays whole, valid frames from the start of `file` into `each(offset, header)`; returns
/// the offset just past the last one.
fn scan(file: &File, mut each: impl FnMut(u64, &Header)) -> Result<u64, StorageError> {
    let mut r = BufReader::with_capacity(1 << 16, At { file, pos: 0 });
    let (mut at, mut header, mut payload) = (0u64, [0u8; HEADER], Vec::new());
    loop {
        if !read_whole(&mut r, &mut header)? {
            return Ok(at);
        }
        let Some(h) = Header::parse(&header) else {
            return Ok(at);
        };
        payload.resize(h.len, 0);
        if !read_whole(&mut r, &mut payload)? {
            return Ok(at);
        }
        if !h.valid(&payload) {
            return Ok(at);
        }
        each(at, &h);
        at += (HEADER + h.len) as u64;
    }
}

/// How the memory log reads a frame at the start of `b`: its whole length and whether its
/// checksum holds, or `None` where no header parses (see `history::cut_torn_tail`).
fn probe_frame(b: &[u8]) -> Option<(usize, bool)> {
    let h = Header::parse(b)?;
    let whole = b.get(HEADER..HEADER + h.len).is_some_and(|p| h.valid(p));
    Some((HEADER + h.len, whole))
}

/// Copies `len` bytes from `src` at `from` to `dst` at `to`, a MiB at a time.
fn copy_range(src: &File, from: u64, dst: &File, to: u64, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], from + done)?;
        dst.write_all_at(&buf[..n], to + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Makes a file's directory entry durable (after a create or a rename).
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Removes the compaction's copy unless it was renamed into place.
struct Stray<'a>(&'a Path, bool);

impl Drop for Stray<'_> {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_file(self.0);
        }
    }
}

impl MemoryLog {
    /// Opens or creates `path`, replaying it; a torn tail is cut off. Compacts past
    /// `compact_min` bytes. `Locked` while another handle has the same file open.
    pub fn open(path: &Path, compact_min: u64) -> Result<Self, StorageError> {
        let lock_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.with_extension("log.lock"))
            .map_err(io)?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StorageError::Locked(path.display().to_string()));
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let _ = std::fs::remove_file(Self::compact_path(path));
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut wallets: HashMap<Wallet, BTreeMap<[u8; 16], Loc>> = HashMap::new();
        let end = scan(&file, |offset, h| {
            let records = wallets.entry(Wallet(h.wallet)).or_default();
            if h.kind == PUT {
                let len = (HEADER + h.len) as u32;
                records.insert(h.id, Loc { offset, len });
            } else {
                records.remove(&h.id);
            }
        })?;
        if created {
            // A synced record is worth nothing if the file's name is not on disk.
            sync_parent(path).map_err(io)?;
        }
        wallets.retain(|_, records| !records.is_empty());
        cut_torn_tail(&file, path, end, MAGIC, probe_frame)?;
        let live_bytes = wallets
            .values()
            .flat_map(|r| r.values())
            .map(|l| u64::from(l.len))
            .sum();
        Ok(Self {
            path: path.to_path_buf(),
            state: RwLock::new(State {
                file: Arc::new(file),
                end,
                epoch: 0,
                wallets,
                live_bytes,
            }),
            synced: Mutex::new(Mark {
                epoch: 0,
                offset: end,
            }),
            broken: AtomicBool::new(false),
            compacting: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            compact_min,
            _lock: lock_file,
        })
    }

    fn compact_path(path: &Path) -> PathBuf {
        path.with_extension("log.compact")
    }

    fn usable(&self) -> Result<(), StorageError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(StorageError::Sled(
                "memory log stopped after a failed write or fsync; restart to re-read it".into(),
            ));
        }
        Ok(())
    }

    /// Appends one frame at the end; undoes a partial write (or stops the log if it cannot).
    fn append(&self, s: &mut State, frame: &[u8]) -> Result<Loc, StorageError> {
        self.usable()?;
        if let Err(e) = s.file.write_all_at(frame, s.end) {
            if s.file.set_len(s.end).is_err() {
                self.broken.store(true, Ordering::Release);
            }
            return Err(io(e));
        }
        let loc = Loc {
            offset: s.end,
            len: frame.len() as u32,
        };
        s.end += frame.len() as u64;
        Ok(loc)
    }

    /// Stores (or replaces) a wallet's record. Not durable until `sync` covers the mark.
    pub fn put(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
        payload: &[u8],
    ) -> Result<Mark, StorageError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(StorageError::Codec("memory record too large".into()));
        }
        let frame = encode(PUT, wallet, id, payload);
        let mut s = write(&self.state);
        let loc = self.append(&mut s, &frame)?;
        s.live_bytes += u64::from(loc.len);
        if let Some(old) = s.wallets.entry(*wallet).or_default().insert(*id, loc) {
            s.live_bytes -= u64::from(old.len);
        }
        Ok(Mark {
            epoch: s.epoch,
            offset: s.end,
        })
    }

    /// `put` only while the wallet still has a record under `id` (checked under the same lock
    /// as `forget`, so a record deleted meanwhile is never brought back); `Ok(None)` when it
    /// has none.
    pub fn replace(
        &self,
        wallet: &Wallet,
        id: &[u8; 16],
        payload: &[u8],
    ) -> Result<Option<Mark>, StorageError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(StorageError::Codec("memory record too large".into()));
        }
        let frame = encode(PUT, wallet, id, payload);
        let mut s = write(&self.state);
        if !s.wallets.get(wallet).is_some_and(|r| r.contains_key(id)) {
            return Ok(None);
        }
        let loc = self.append(&mut s, &frame)?;
        s.live_bytes += u64::from(loc.len);
        if let Some(old) = s.wallets.entry(*wallet).or_default().insert(*id, loc) {
            s.live_bytes -= u64::from(old.len);
        }
        Ok(Some(Mark {
            epoch: s.epoch,
            offset: s.end,
        }))
    }

    /// Forgets a wallet's record; `Ok(false)` when that wallet has no such record. Starts a
    /// background compaction when one is due.
    pub fn forget(self: &Arc<Self>, wallet: &Wallet, id: &[u8; 16]) -> Result<bool, StorageError> {
        let mut s = write(&self.state);
        let Some(records) = s.wallets.get(wallet) else {
            return Ok(false);
        };
        let Some(old) = records.get(id).copied() else {
            return Ok(false);
        };
        self.append(&mut s, &encode(FORGET, wallet, id, &[]))?;
        if let Some(records) = s.wallets.get_mut(wallet) {
            records.remove(id);
            if records.is_empty() {
                s.wallets.remove(wallet);
            }
        }
        s.live_bytes -= u64::from(old.len);
        let due = s.end >= self.compact_min
            && s.end > 2 * s.live_bytes
            && s.end >= self.retry_at.load(Ordering::Relaxed);
        drop(s);
        if due {
            self.compact_in_background();
        }
        Ok(true)
    }

    /// Reads one frame and checks that it is the put of (`wallet`, `id`).
    fn read_frame(
        file: &File,
        loc: Loc,
        wallet: &Wallet,
        id: &[u8; 16],
    ) -> Result<Vec<u8>, StorageError> {
        let mut frame = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut frame, loc.offset).map_err(io)?;
        match Header::parse(&frame) {
            Some(h)
                if h.kind == PUT
                    && h.wallet == wallet.0
                    && h.id == *id
                    && HEADER + h.len == frame.len()
                    && h.valid(&frame[HEADER..]) =>
            {
                frame.drain(..HEADER);
                Ok(frame)
            }
            _ => Err(StorageError::Codec(format!(
                "memory record at {} does not match its location",
                loc.offset
            ))),
        }
    }

    /// One record of a wallet.
    pub fn get(&self, wallet: &Wallet, id: &[u8; 16]) -> Result<Option<Vec<u8>>, StorageError> {
        let (file, loc) = {
            let s = read(&self.state);
            let Some(loc) = s.wallets.get(wallet).and_then(|r| r.get(id)).copied() else {
                return Ok(None);
            };
            (Arc::clone(&s.file), loc)
        };
        Self::read_frame(&file, loc, wallet, id).map(Some)
    }

    /// Every record of one wallet as of the call, as `(id, payload)`, in id order. Never
    /// another wallet's.
    pub fn records_of(
        &self,
        wallet: &Wallet,
    ) -> impl DoubleEndedIterator<Item = Result<([u8; 16], Vec<u8>), StorageError>> + use<> {
        let (file, locs): (Arc<File>, Vec<([u8; 16], Loc)>) = {
            let s = read(&self.state);
            let locs = s
                .wallets
                .get(wallet)
                .map(|r| r.iter().map(|(id, loc)| (*id, *loc)).collect())
                .unwrap_or_default();
            (Arc::clone(&s.file), locs)
        };
        let wallet = *wallet;
        locs.into_iter()
            .map(move |(id, loc)| Ok((id, Self::read_frame(&file, loc, &wallet, &id)?)))
    }

    /// Every live record in wallet and id order (tests, fuzzing).
    pub fn snapshot(&self) -> Result<Vec<Record>, StorageError> {
        self.wallets()
            .into_iter()
            .flat_map(|w| {
                self.records_of(&w)
                    .map(move |r| r.map(|(id, payload)| (w, id, payload)))
            })
            .collect()
    }

    /// Every wallet with a live record, in order.
    pub fn wallets(&self) -> Vec<Wallet> {
        let mut wallets: Vec<Wallet> = read(&self.state).wallets.keys().copied().collect();
        wallets.sort_unstable();
        wallets
    }

    /// Live records in the whole log.
    pub fn len(&self) -> usize {
        read(&self.state).wallets.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        read(&self.state).wallets.is_empty()
    }

    /// The log's size in bytes, dead frames included.
    pub fn file_bytes(&self) -> u64 {
        read(&self.state).end
    }

    /// Everything appended so far, as a mark for `sync`.
    pub fn mark(&self) -> Mark {
        let s = read(&self.state);
        Mark {
            epoch: s.epoch,
            offset: s.end,
        }
    }

    /// Waits (blocking) until everything up to `upto` is on disk. Concurrent callers share one
    /// `fdatasync`.
    pub fn sync(&self, upto: Mark) -> Result<(), StorageError> {
        let mut synced = lock(&self.synced);
        if *synced >= upto {
            return Ok(());
        }
        self.usable()?;
        let (file, covers) = {
            let s = read(&self.state);
            let covers = Mark {
                epoch: s.epoch,
                offset: s.end,
            };
            (Arc::clone(&s.file), covers)
        };
        if let Err(e) = file.sync_data() {
            // Linux reports a failed fdatasync once and marks the pages clean: a retry would
            // "succeed" without the data on disk.
            self.broken.store(true, Ordering::Release);
            tracing::error!(%e, "memory log fsync failed; refusing further writes until restart");
            return Err(io(e));
        }
        *synced = covers;
        Ok(())
    }

    fn compact_in_background(self: &Arc<Self>) {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let log = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("vw-memlog-compact".into())
            .spawn(move || {
                if let Err(e) = log.compact_claimed() {
                    // Not again until the log has grown by another half of its threshold: a
                    // full disk must not be rewritten on every forget.
                    let end = log.file_bytes();
                    log.retry_at
                        .store(end.saturating_add(log.compact_min / 2), Ordering::Relaxed);
                    tracing::warn!(%e, "memory log compaction failed; the log keeps growing until the next try");
                }
                log.compacting.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.compacting.store(false, Ordering::Release);
        }
    }

    /// Compacts now, unless a compaction is already running (then `Ok(0)`).
    pub fn compact(&self) -> Result<u64, StorageError> {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        let done = self.compact_claimed();
        self.compacting.store(false, Ordering::Release);
        done
    }

    /// Rewrites the log with only its live records (see the module docs). Returns the bytes
    /// saved. The caller holds the `compacting` flag.
    fn compact_claimed(&self) -> Result<u64, StorageError> {
        let tmp = Self::compact_path(&self.path);
        let _ = std::fs::remove_file(&tmp);
        let mut stray = Stray(&tmp, false);
        // Phase 1: the live frames as of now, copied in file order without the lock.
        let (src, epoch, snap_end, mut live) = {
            let s = read(&self.state);
            let live: Vec<Loc> = s
                .wallets
                .values()
                .flat_map(|r| r.values().copied())
                .collect();
            (Arc::clone(&s.file), s.epoch, s.end, live)
        };
        live.sort_unstable_by_key(|l| l.offset);
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        let mut moved_to = Vec::with_capacity(live.len());
        let mut pos = 0u64;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &out);
            let mut frame = Vec::new();
            for loc in &live {
                frame.resize(loc.len as usize, 0);
                src.read_exact_at(&mut frame, loc.offset).map_err(io)?;
                w.write_all(&frame).map_err(io)?;
                moved_to.push(pos);
                pos += u64::from(loc.len);
            }
            w.flush().map_err(io)?;
        }
        // Catch up with the frames appended meanwhile, still without the lock, so that what is
        // left for the locked step (and its fsyncs) is small.
        let mut copied = snap_end;
        for _ in 0..8 {
            let end = read(&self.state).end;
            if end - copied < CATCH_UP_SLACK {
                break;
            }
            copy_range(&src, copied, &out, pos + (copied - snap_end), end - copied).map_err(io)?;
            copied = end;
        }
        out.sync_data().map_err(io)?;
        if let Err(e) = src.sync_data() {
            self.broken.store(true, Ordering::Release);
            return Err(io(e));
        }
        // Phase 2: the last frames appended, then the switch, with writers held off.
        let mut synced = lock(&self.synced);
        let mut s = write(&self.state);
        self.usable()?;
        if s.epoch != epoch {
            return Err(StorageError::Sled(
                "memory log compacted twice at once".into(),
            ));
        }
        let tail = s.end - snap_end;
        copy_range(
            &s.file,
            copied,
            &out,
            pos + (copied - snap_end),
            s.end - copied,
        )
        .map_err(io)?;
        out.sync_data().map_err(io)?;
        let new_of = |loc: &Loc| -> Option<u64> {
            if loc.offset >= snap_end {
                return Some(loc.offset - snap_end + pos);
            }
            let i = live.binary_search_by_key(&loc.offset, |l| l.offset).ok()?;
            Some(moved_to[i])
        };
        // Every live record must have moved before the copy may replace the log.
        if s.wallets
            .values()
            .flat_map(|r| r.values())
            .any(|l| new_of(l).is_none())
        {
            return Err(StorageError::Sled(
                "memory log compaction lost track of a record; the log is left as it was".into(),
            ));
        }
        // Until the rename is on disk, a crash may bring the old file back: it must hold
        // everything acknowledged so far too.
        if let Err(e) = s.file.sync_data() {
            self.broken.store(true, Ordering::Release);
            return Err(io(e));
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        stray.1 = true;
        // From here the name is the new file's, so the state must switch whatever happens; if
        // the rename cannot be made durable, nothing more is acknowledged until a restart.
        let dir_synced = sync_parent(&self.path);
        let saved = s.end - (pos + tail);
        for records in s.wallets.values_mut() {
            for loc in records.values_mut() {
                loc.offset = new_of(loc).unwrap_or(loc.offset);
            }
        }
        s.file = Arc::new(out);
        s.end = pos + tail;
        s.epoch += 1;
        if let Err(e) = dir_synced {
            self.broken.store(true, Ordering::Release);
            return Err(io(e));
        }
        *synced = Mark {
            epoch: s.epoch,
            offset: s.end,
        };
        metrics::counter!("vectorway_memory_log_compactions_total").increment(1);
        tracing::debug!(saved, end = s.end, "memory log compacted");
        Ok(saved)
    }
}

#[cfg(test)]
#[path = "memlog_tests.rs"]
mod tests;
