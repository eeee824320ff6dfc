//! Fuzz target: any bytes as `memory.log` either open (a torn tail cut off) or are refused, never
//! a panic; an opened log reads back every record it counts, and reopening it, or compacting it
//! and reopening, finds the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vectorway::storage::memlog::{COMPACT_MIN, MemoryLog};

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("memory.log");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(log) = MemoryLog::open(&path, COMPACT_MIN) else { return };
    let records = log.snapshot().expect("every counted record reads back");
    let end = log.file_bytes();
    assert_eq!(records.len(), log.len());
    assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(end), "the tail is cut");
    drop(log);
    let log = MemoryLog::open(&path, COMPACT_MIN).expect("a log that opened once opens again");
    assert_eq!(log.snapshot().ok(), Some(records.clone()), "reopening changes nothing");
    log.compact().expect("compaction");
    assert_eq!(log.snapshot().ok(), Some(records.clone()), "compaction keeps every record");
    drop(log);
    let log = MemoryLog::open(&path, COMPACT_MIN).expect("a compacted log opens");
    assert_eq!(log.snapshot().ok(), Some(records), "and holds the same records");
});
