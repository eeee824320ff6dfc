//! Tests of the memory log: replay, torn tails, wallet isolation, compaction (alone, racing
//! writers, and started by itself), and the one-handle lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

fn w(b: u8) -> Wallet {
    Wallet([b; 20])
}

fn id(n: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id
}

fn payload(n: u32) -> Vec<u8> {
    format!("record {n} ")
        .repeat(1 + n as usize % 7)
        .into_bytes()
}

fn all(log: &MemoryLog, wallet: &Wallet) -> Vec<([u8; 16], Vec<u8>)> {
    log.records_of(wallet).map(|r| r.unwrap()).collect()
}

fn open(path: &Path, compact_min: u64) -> Arc<MemoryLog> {
    Arc::new(MemoryLog::open(path, compact_min).unwrap())
}

#[test]
fn records_replay_per_wallet_in_id_order_and_forgets_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    {
        let log = open(&path, COMPACT_MIN);
        for n in [3, 1, 2] {
            log.put(&w(1), &id(n), &payload(n)).unwrap();
        }
        log.put(&w(2), &id(9), b"other wallet").unwrap();
        log.put(&w(1), &id(2), b"replaced").unwrap();
        assert!(log.forget(&w(1), &id(3)).unwrap());
        assert!(!log.forget(&w(1), &id(3)).unwrap(), "already forgotten");
        assert!(!log.forget(&w(1), &id(9)).unwrap(), "another wallet's id");
        assert_eq!(log.get(&w(1), &id(9)).unwrap(), None);
        log.sync(log.mark()).unwrap();
    }
    let log = open(&path, COMPACT_MIN);
    assert_eq!(
        all(&log, &w(1)),
        [(id(1), payload(1)), (id(2), b"replaced".to_vec())]
    );
    assert_eq!(all(&log, &w(2)), [(id(9), b"other wallet".to_vec())]);
    assert_eq!(log.get(&w(1), &id(3)).unwrap(), None);
    assert_eq!(log.len(), 3);
    assert!(all(&log, &w(3)).is_empty());
}

#[test]
fn a_torn_tail_is_cut_and_damage_before_whole_frames_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    let first;
    {
        let log = open(&path, COMPACT_MIN);
        log.put(&w(1), &id(1), b"kept").unwrap();
        first = log.file_bytes();
        log.put(&w(1), &id(2), b"torn").unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    for cut in first..bytes.len() as u64 {
        std::fs::write(&path, &bytes[..cut as usize]).unwrap();
        let log = open(&path, COMPACT_MIN);
        assert_eq!(
            all(&log, &w(1)),
            [(id(1), b"kept".to_vec())],
            "cut at {cut}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), first);
        // Writes after the cut land where the cut ended.
        log.put(&w(1), &id(3), b"after").unwrap();
        assert_eq!(
            log.get(&w(1), &id(3)).unwrap().as_deref(),
            Some(&b"after"[..])
        );
    }
    let mut damaged = bytes.clone();
    damaged[HEADER + 1] ^= 0xFF; // the first frame's payload; the second frame is whole
    std::fs::write(&path, &damaged).unwrap();
    let err = MemoryLog::open(&path, COMPACT_MIN).unwrap_err();
    assert!(
        err.to_string().contains("followed by valid records"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "left as it was");
}

#[test]
fn a_location_pointing_at_another_wallets_frame_is_an_error_not_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    let log = open(&path, COMPACT_MIN);
    log.put(&w(1), &id(1), b"mine").unwrap();
    let loc = read(&log.state).wallets[&w(1)][&id(1)];
    let file = Arc::clone(&read(&log.state).file);
    assert!(MemoryLog::read_frame(&file, loc, &w(2), &id(1)).is_err());
    assert!(MemoryLog::read_frame(&file, loc, &w(1), &id(2)).is_err());
    assert_eq!(
        MemoryLog::read_frame(&file, loc, &w(1), &id(1)).unwrap(),
        b"mine"
    );
}

#[test]
fn compaction_keeps_every_live_record_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    let log = open(&path, u64::MAX);
    let mut model = BTreeMap::new();
    for n in 0..2_000u32 {
        let wallet = w((n % 3) as u8);
        log.put(&wallet, &id(n), &payload(n)).unwrap();
        model.insert((wallet, id(n)), payload(n));
        if n >= 300 {
            let old = n - 300;
            assert!(log.forget(&w((old % 3) as u8), &id(old)).unwrap());
            model.remove(&(w((old % 3) as u8), id(old)));
        }
    }
    let before = log.file_bytes();
    let old_mark = log.mark();
    let saved = log.compact().unwrap();
    assert_eq!(log.file_bytes(), before - saved);
    assert!(
        log.file_bytes() * 5 < before,
        "{} of {before}",
        log.file_bytes()
    );
    log.sync(old_mark).unwrap();
    let check = |log: &MemoryLog, model: &BTreeMap<(Wallet, [u8; 16]), Vec<u8>>| {
        for b in 0..3 {
            let want: Vec<_> = model
                .iter()
                .filter(|((wallet, _), _)| *wallet == w(b))
                .map(|((_, id), p)| (*id, p.clone()))
                .collect();
            assert_eq!(all(log, &w(b)), want);
        }
    };
    check(&log, &model);
    // Writes after the switch land in the new file.
    log.put(&w(0), &id(5_000), b"new").unwrap();
    model.insert((w(0), id(5_000)), b"new".to_vec());
    check(&log, &model);
    drop(log);
    assert!(!MemoryLog::compact_path(&path).exists());
    check(&open(&path, u64::MAX), &model);
}

#[test]
fn compaction_racing_writers_loses_nothing_and_resurrects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    let log = open(&path, u64::MAX);
    let stop = Arc::new(AtomicBool::new(false));
    let compactor = {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Acquire) {
                log.compact().unwrap();
                runs += 1;
            }
            runs
        })
    };
    let mut model = BTreeMap::new();
    for n in 0..6_000u32 {
        log.put(&w(1), &id(n), &payload(n)).unwrap();
        model.insert(id(n), payload(n));
        if n % 3 == 0 && n >= 90 {
            let old = n - 90;
            log.forget(&w(1), &id(old)).unwrap();
            model.remove(&id(old));
        }
        // Reads during the race see the record or an error-free absence, never garbage.
        if n % 50 == 0 {
            assert_eq!(log.get(&w(1), &id(n)).unwrap(), Some(payload(n)));
        }
    }
    stop.store(true, Ordering::Release);
    let runs = compactor.join().unwrap();
    assert!(runs > 0);
    let want: Vec<_> = model.into_iter().collect();
    assert_eq!(all(&log, &w(1)), want);
    log.sync(log.mark()).unwrap();
    drop(log);
    assert_eq!(all(&open(&path, u64::MAX), &w(1)), want, "after reopen");
}

#[test]
fn forgetting_starts_a_background_compaction_once_the_log_is_mostly_dead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    let log = open(&path, 64 << 10);
    let mut written = 0u64; // the file's size if nothing were compacted
    for n in 0..4_000u32 {
        log.put(&w(1), &id(n), &payload(n)).unwrap();
        written += (HEADER + payload(n).len()) as u64;
        if n >= 100 {
            log.forget(&w(1), &id(n - 100)).unwrap();
            written += HEADER as u64;
        }
    }
    // The flag is raised before the thread starts, so waiting for it to drop waits for a
    // compaction that was started, however slow the machine.
    let by = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log.compacting.load(Ordering::Acquire) && std::time::Instant::now() < by {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        log.file_bytes() < written,
        "{} of {written} bytes",
        log.file_bytes()
    );
    assert_eq!(log.len(), 100);
    let want: Vec<_> = (3_900..4_000).map(|n| (id(n), payload(n))).collect();
    assert_eq!(all(&log, &w(1)), want);
}

#[test]
fn one_open_handle_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    let first = open(&path, COMPACT_MIN);
    assert!(matches!(
        MemoryLog::open(&path, COMPACT_MIN),
        Err(StorageError::Locked(_))
    ));
    drop(first);
    open(&path, COMPACT_MIN);
}

#[test]
fn a_frame_planted_in_a_users_text_cannot_make_a_torn_tail_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.log");
    // A whole, checksummed forget frame hidden inside a record's text.
    let mut text = b"note: ".to_vec();
    text.extend_from_slice(&encode(FORGET, &w(9), &id(9), &[]));
    text.extend_from_slice(b" and more text after it");
    let (kept, whole);
    {
        let log = open(&path, COMPACT_MIN);
        log.put(&w(1), &id(1), b"kept").unwrap();
        kept = log.file_bytes();
        log.put(&w(2), &id(2), &text).unwrap();
        whole = log.file_bytes();
    }
    let bytes = std::fs::read(&path).unwrap();
    let planted_end = kept as usize + HEADER + 6 + HEADER;
    // Torn after the planted frame (the record runs past the end), or whole with a bad
    // checksum: either way the tail is cut, not refused.
    let mut bad_crc = bytes.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    for damaged in [bytes[..planted_end + 3].to_vec(), bad_crc] {
        std::fs::write(&path, &damaged).unwrap();
        let log = open(&path, COMPACT_MIN);
        assert_eq!(all(&log, &w(1)), [(id(1), b"kept".to_vec())]);
        assert!(all(&log, &w(2)).is_empty());
        assert_eq!(log.file_bytes(), kept);
    }
    assert!(whole > planted_end as u64);
}
