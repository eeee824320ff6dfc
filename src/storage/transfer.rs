//! `vectorway store export|import`: a portable, versioned JSON Lines image of a store.
//!
//! The file is line-oriented JSON: a header line `{"format":"vectorway-store","version":1,…}`,
//! then one record per line tagged by `record` (`Item`: `account`, `key`, `ledger`, …), then a
//! trailer `{"record":"end",…}` with the number of records and the SHA-256 of every byte
//! before it (`kind` is a ledger entry's own field). A reader refuses a file without
//! its trailer (truncated), with a wrong digest or count (corrupt), of another format or a newer
//! version, or with a kind it does not know (written by a newer binary: nothing is ever skipped).
//! New kinds (settlement intents, agents) are new `Item` variants; adding one keeps version 1
//! readable. Money is integer credits throughout (JSON integers, never floats).
//!
//! What is carried: accounts, API keys (hashes only), refresh tokens and revoked families,
//! idempotency records, x402 nonce claims (so a payment cannot be replayed after a move), the
//! whole ledger and usage history in commit order with their commit keys, live memory records
//! (the stored bytes: text, vector, namespace, embedder fingerprint, timestamps), and each
//! wallet's `granted`/`committed` totals as the source had them. Not carried: credit leases and
//! replica rows (transient: a lease's unused credits are the wallet's again), SIWE challenges
//! (minutes long), rate-limit buckets, memory tombstones.
//!
//! The backends' halves are `Store::export_into`/`import_from` (`transfer/embedded.rs`) and
//! `PgStore`'s (`pg/transfer.rs`); `Storage::export`/`import` pick one.

mod embedded;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::{AccountRecord, IdemRecord, KeyRecord, LedgerEntry, RefreshRecord, UsageEvent};
use crate::wallet::Wallet;

/// The header's `format`.
pub const FORMAT: &str = "vectorway-store";
/// The newest version this binary writes and reads.
pub const VERSION: u32 = 1;

/// The first line of a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The backend it was exported from (`embedded` or `postgres`).
    pub source: String,
    pub exported_ms: u64,
    /// The exporting binary's version.
    pub vectorway: String,
}

/// One record of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Item {
    Account(AccountRecord),
    Key(KeyRecord),
    Refresh {
        id: String,
        #[serde(flatten)]
        fields: RefreshRecord,
    },
    RevokedFamily {
        family: String,
        revoked_at: u64,
    },
    Idempotency {
        /// The slot (scope ‖ key), hex.
        slot: String,
        #[serde(flatten)]
        fields: IdemRecord,
    },
    X402Nonce {
        /// chain id (8) ‖ asset (20) ‖ from (20) ‖ nonce (32), hex.
        key: String,
        valid_before: u64,
        /// `claimed`, `settled` or `failed` (the embedded store keeps no state: `claimed`).
        state: String,
        claimed_ms: u64,
        resolved_ms: Option<u64>,
    },
    Ledger {
        /// The row id on PostgreSQL (commit order); absent from an embedded export, whose
        /// order is the file's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        commit_key: Option<String>,
        #[serde(flatten)]
        entry: LedgerEntry,
    },
    Usage {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<i64>,
        wallet: Wallet,
        commit_key: Option<String>,
        #[serde(flatten)]
        event: UsageEvent,
    },
    Memory {
        wallet: Wallet,
        /// The record id, hex.
        id: String,
        namespace: Option<String>,
        created_ms: u64,
        /// The stored record (`memory::record`'s encoding), base64.
        value: String,
    },
    /// A wallet's totals as the source had them: money in and debits (Σ ledger = the difference).
    Balance {
        wallet: Wallet,
        granted: u64,
        committed: u64,
    },
    End {
        records: u64,
        sha256: String,
    },
}

impl Item {
    fn kind(&self) -> &'static str {
        match self {
            Item::Account(_) => "account",
            Item::Key(_) => "key",
            Item::Refresh { .. } => "refresh",
            Item::RevokedFamily { .. } => "revoked_family",
            Item::Idempotency { .. } => "idempotency",
            Item::X402Nonce { .. } => "x402_nonce",
            Item::Ledger { .. } => "ledger",
            Item::Usage { .. } => "usage",
            Item::Memory { .. } => "memory",
            Item::Balance { .. } => "balance",
            Item::End { .. } => "end",
        }
    }
}

/// What can go wrong moving a store; `exit_code` is the CLI's (sysexits).
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The file is truncated, corrupt, of another format, or newer than this binary.
    #[error("the export file is unusable: {0}")]
    File(String),
    /// The imported store's totals differ from the file's.
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// The target store already holds data.
    #[error("the target store is not empty ({0}); import only into an empty store")]
    NotEmpty(String),
    /// A gateway runs on the store.
    #[error("{0}")]
    Busy(String),
    /// The store holds records this format does not carry yet (agents, settlement intents):
    /// exporting it would lose them, so nothing is written.
    #[error("the store holds {0}, which this version cannot export yet; nothing was written")]
    Uncarried(String),
    #[error("cannot read or write the file: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StorageError),
}

impl TransferError {
    /// 65 (EX_DATAERR) for a bad file or a failed verification, 73 (EX_CANTCREAT) for a target
    /// that holds data, 75 (EX_TEMPFAIL) while a gateway runs on the store, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TransferError::File(_) | TransferError::Mismatch(_) | TransferError::Uncarried(_) => 65,
            TransferError::NotEmpty(_) => 73,
            TransferError::Busy(_) => 75,
            TransferError::Io(_) | TransferError::Store(_) => 1,
        }
    }
}

impl From<sled::Error> for TransferError {
    fn from(e: sled::Error) -> Self {
        TransferError::Store(e.into())
    }
}

impl From<std::io::Error> for TransferError {
    fn from(e: std::io::Error) -> Self {
        TransferError::Io(e.to_string())
    }
}

/// Per-wallet totals: what the summary prints and the import verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub granted: u64,
    pub committed: u64,
}

/// What a file held (or an export wrote): records per kind, and each wallet's totals as its
/// ledger adds them up (`ledger`) and as the source stated them (`stated`).
#[derive(Debug, Default)]
pub struct Summary {
    pub counts: BTreeMap<&'static str, u64>,
    pub ledger: BTreeMap<Wallet, Totals>,
    pub stated: BTreeMap<Wallet, Totals>,
    /// The unique key of every record that has one (kind and key), so a file holding one
    /// twice is refused before anything is written (the embedded store could not undo it).
    keys: std::collections::HashSet<(&'static str, String)>,
}

impl Summary {
    fn add(&mut self, item: &Item) -> Result<(), TransferError> {
        *self.counts.entry(item.kind()).or_default() += 1;
        let key = match item {
            Item::Account(a) => Some(a.wallet.to_string()),
            Item::Key(k) => Some(k.key_id.clone()),
            Item::Refresh { id, .. } => Some(id.clone()),
            Item::RevokedFamily { family, .. } => Some(family.clone()),
            Item::Idempotency { slot, .. } => Some(slot.to_lowercase()),
            Item::X402Nonce { key, .. } => Some(key.to_lowercase()),
            Item::Ledger { commit_key, .. } | Item::Usage { commit_key, .. } => commit_key.clone(),
            Item::Memory { wallet, id, .. } => Some(format!("{wallet}/{}", id.to_lowercase())),
            Item::Balance { .. } | Item::End { .. } => None,
        };
        if let Some(key) = key
            && !self.keys.insert((item.kind(), key.clone()))
        {
            return Err(TransferError::File(format!("{} {key} twice", item.kind())));
        }
        match item {
            Item::Ledger { entry, .. } => {
                let t = self.ledger.entry(entry.wallet).or_default();
                let c = entry.credits.unsigned_abs();
                let slot = match entry.credits >= 0 {
                    true => &mut t.granted,
                    false => &mut t.committed,
                };
                *slot = slot.checked_add(c).ok_or_else(|| {
                    TransferError::File(format!("{}'s totals overflow", entry.wallet))
                })?;
            }
            Item::Balance {
                wallet,
                granted,
                committed,
            } => {
                let t = Totals {
                    granted: *granted,
                    committed: *committed,
                };
                if self.stated.insert(*wallet, t).is_some() {
                    return Err(TransferError::File(format!("{wallet}'s balance twice")));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The ledger sum rule on the file: every wallet's stated totals are its ledger's.
    pub fn check(&self) -> Result<(), TransferError> {
        let zero = Totals::default();
        for w in self.ledger.keys().chain(self.stated.keys()) {
            let (l, s) = (
                self.ledger.get(w).unwrap_or(&zero),
                self.stated.get(w).unwrap_or(&zero),
            );
            if l != s {
                return Err(TransferError::Mismatch(format!(
                    "{w}: the ledger adds up to granted {} committed {}, the source stated {} and {}",
                    l.granted, l.committed, s.granted, s.committed
                )));
            }
        }
        Ok(())
    }

    /// Compares a store's balances (Σ ledger per wallet) after an import with the file's.
    pub fn verify_sums(&self, sums: &BTreeMap<Wallet, i128>) -> Result<(), TransferError> {
        let want: BTreeMap<Wallet, i128> = self
            .stated
            .iter()
            .map(|(w, t)| (*w, i128::from(t.granted) - i128::from(t.committed)))
            .filter(|(_, s)| *s != 0)
            .collect();
        let got: BTreeMap<Wallet, i128> = sums
            .iter()
            .filter(|(_, s)| **s != 0)
            .map(|(w, s)| (*w, *s))
            .collect();
        if want != got {
            return Err(TransferError::Mismatch(format!(
                "balances after import {got:?} differ from the file's {want:?}"
            )));
        }
        Ok(())
    }

    /// The JSON the CLI prints.
    pub fn to_json(&self, action: &str, backend: &str) -> serde_json::Value {
        let granted: u128 = self.stated.values().map(|t| u128::from(t.granted)).sum();
        let committed: u128 = self.stated.values().map(|t| u128::from(t.committed)).sum();
        serde_json::json!({
            "action": action,
            "backend": backend,
            "records": self.counts,
            "wallets": self.stated.len(),
            "granted": granted.to_string(),
            "committed": committed.to_string(),
            "balances": self.stated.iter().map(|(w, t)| (w.to_string(), serde_json::json!({
                "granted": t.granted, "committed": t.committed,
                "balance": (i128::from(t.granted) - i128::from(t.committed)).to_string(),
            }))).collect::<serde_json::Map<_, _>>(),
            "verified": true,
        })
    }
}

/// Writes a file: the header, records, and the trailer (`finish`).
pub struct Sink<W: Write> {
    out: W,
    digest: ring::digest::Context,
    records: u64,
    pub summary: Summary,
}

impl<W: Write> Sink<W> {
    pub fn new(mut out: W, source: &str) -> Result<Self, TransferError> {
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            source: source.into(),
            exported_ms: super::now_ms(),
            vectorway: env!("CARGO_PKG_VERSION").into(),
        };
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut line = serde_json::to_vec(&header).map_err(StorageError::from)?;
        line.push(b'\n');
        digest.update(&line);
        out.write_all(&line)?;
        Ok(Self {
            out,
            digest,
            records: 0,
            summary: Summary::default(),
        })
    }

    pub fn put(&mut self, item: &Item) -> Result<(), TransferError> {
        self.summary.add(item)?;
        let mut line = serde_json::to_vec(item).map_err(StorageError::from)?;
        line.push(b'\n');
        self.digest.update(&line);
        self.out.write_all(&line)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and flushes; returns what was written.
    pub fn finish(mut self) -> Result<Summary, TransferError> {
        let end = Item::End {
            records: self.records,
            sha256: hex::encode(self.digest.finish().as_ref()),
        };
        let mut line = serde_json::to_vec(&end).map_err(StorageError::from)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()?;
        self.summary.check()?;
        Ok(self.summary)
    }
}

/// Reads a file: `next` yields records until the trailer, which it checks (count and digest).
pub struct Source<R: BufRead> {
    input: R,
    digest: ring::digest::Context,
    records: u64,
    line_no: u64,
    done: bool,
    pub header: Header,
    pub summary: Summary,
}

impl<R: BufRead> Source<R> {
    pub fn open(mut input: R) -> Result<Self, TransferError> {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            return Err(TransferError::File("empty, or no header line".into()));
        }
        digest.update(&line);
        let header: Header = serde_json::from_slice(&line)
            .map_err(|e| TransferError::File(format!("line 1 is not a header: {e}")))?;
        if header.format != FORMAT {
            return Err(TransferError::File(format!(
                "format {:?}, not {FORMAT:?}",
                header.format
            )));
        }
        if header.version == 0 || header.version > VERSION {
            return Err(TransferError::File(format!(
                "version {} (this binary reads up to {VERSION}): use a newer vectorway",
                header.version
            )));
        }
        Ok(Self {
            input,
            digest,
            records: 0,
            line_no: 1,
            done: false,
            header,
            summary: Summary::default(),
        })
    }

    /// The next record; `None` once the trailer was read and matched (then the file is whole).
    pub fn next_item(&mut self) -> Result<Option<Item>, TransferError> {
        if self.done {
            return Ok(None);
        }
        let mut line = Vec::new();
        let n = self.input.read_until(b'\n', &mut line)?;
        self.line_no += 1;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(TransferError::File(format!(
                "truncated at line {}: no trailer",
                self.line_no
            )));
        }
        let item: Item = serde_json::from_slice(&line)
            .map_err(|e| TransferError::File(format!("line {}: {e}", self.line_no)))?;
        if let Item::End { records, sha256 } = &item {
            let digest = hex::encode(self.digest.clone().finish().as_ref());
            if *records != self.records || *sha256 != digest {
                return Err(TransferError::File(format!(
                    "the trailer says {records} records and digest {sha256}; the file has {} and {digest}",
                    self.records
                )));
            }
            let mut rest = Vec::new();
            if self.input.read_until(b'\n', &mut rest)? != 0 {
                return Err(TransferError::File("data after the trailer".into()));
            }
            self.summary.check()?;
            self.done = true;
            return Ok(None);
        }
        self.digest.update(&line);
        self.records += 1;
        self.summary.add(&item)?;
        Ok(Some(item))
    }

    /// Reads to the end without acting on anything: the whole file checks out.
    pub fn verify(mut self) -> Result<Summary, TransferError> {
        while self.next_item()?.is_some() {}
        Ok(self.summary)
    }
}

/// A ledger entry's commit key, as PostgreSQL derives it (`pg::history`).
pub fn ledger_commit_key(e: &LedgerEntry) -> Option<String> {
    e.reference.as_ref().map(|r| format!("{r}/{}", e.seq))
}

/// A usage event's commit key, as PostgreSQL derives it.
pub fn usage_commit_key(e: &UsageEvent) -> String {
    format!("{}/{}", e.request_id, e.seq)
}

/// Decodes a hex field of exactly `N` bytes.
pub fn hex_array<const N: usize>(field: &str, s: &str) -> Result<[u8; N], TransferError> {
    hex::decode(s)
        .ok()
        .and_then(|v| <[u8; N]>::try_from(v).ok())
        .ok_or_else(|| TransferError::File(format!("{field}: not {N} bytes of hex")))
}

/// Reads a memory record's namespace and creation time from its stored bytes; the memory
/// layer's codec, passed in by the caller (storage does not import `memory`).
pub type MemoryMeta = fn(&[u8]) -> Result<(Option<String>, u64), StorageError>;

/// Where an import reads from.
pub enum Input {
    File(std::path::PathBuf),
    /// Standard input (read whole into memory first when the target is the embedded store,
    /// which checks the file before writing).
    Stdin,
}

fn open_local(dir: &std::path::Path) -> Result<super::Store, TransferError> {
    super::Store::open(dir).map_err(|e| match e {
        StorageError::Locked(d) => TransferError::Busy(format!(
            "a gateway holds the data directory {d}; stop it first"
        )),
        other => other.into(),
    })
}

/// Refuses an export that would leave agents or open settlement intents behind.
pub(super) fn refuse_uncarried(agents: u64, intents: u64) -> Result<(), TransferError> {
    if agents + intents == 0 {
        return Ok(());
    }
    Err(TransferError::Uncarried(format!(
        "{agents} agent account(s) and {intents} open settlement intent(s)"
    )))
}

/// Exports the configured store (`store.backend`) to `out`; returns what was written.
pub async fn export(
    backend: &crate::config::StoreBackend,
    data_dir: &std::path::Path,
    out: &mut dyn Write,
    meta: MemoryMeta,
) -> Result<Summary, TransferError> {
    use crate::config::StoreBackend;
    match backend {
        StoreBackend::Embedded => {
            let store = open_local(data_dir)?;
            let mut sink = Sink::new(out, "embedded")?;
            store.export_into(&mut sink, meta)?;
            sink.finish()
        }
        StoreBackend::Postgres(cfg) => {
            let pg = super::pg::PgStore::open(cfg).await?;
            let mut sink = Sink::new(out, "postgres")?;
            pg.export_into(&mut sink).await?;
            sink.finish()
        }
    }
}

/// Imports a file into the configured store, which must be empty; returns what it held, once
/// the store's totals were checked against it.
pub async fn import(
    backend: &crate::config::StoreBackend,
    data_dir: &std::path::Path,
    input: Input,
    meta: MemoryMeta,
) -> Result<Summary, TransferError> {
    use crate::config::StoreBackend;
    use std::io::{BufReader, Cursor, Read};
    let open = |p: &std::path::Path| -> Result<BufReader<std::fs::File>, TransferError> {
        Ok(BufReader::new(std::fs::File::open(p).map_err(|e| {
            TransferError::Io(format!("{}: {e}", p.display()))
        })?))
    };
    match backend {
        StoreBackend::Embedded => {
            let bytes = match &input {
                Input::Stdin => {
                    let mut v = Vec::new();
                    std::io::stdin().lock().read_to_end(&mut v)?;
                    Some(v)
                }
                Input::File(_) => None,
            };
            let reader = || -> Result<Box<dyn BufRead>, TransferError> {
                Ok(match (&input, &bytes) {
                    (Input::File(p), _) => Box::new(open(p)?),
                    (_, Some(b)) => Box::new(Cursor::new(b.as_slice())),
                    (Input::Stdin, None) => Box::new(Cursor::new(&[][..])),
                })
            };
            // The whole file must check out before anything is written.
            Source::open(reader()?)?.verify()?;
            let store = open_local(data_dir)?;
            store.import_from(Source::open(reader()?)?).await
        }
        StoreBackend::Postgres(cfg) => {
            let pg = super::pg::PgStore::open(cfg).await?;
            match input {
                Input::File(p) => pg.import_from(Source::open(open(&p)?)?, meta).await,
                Input::Stdin => {
                    let stdin = std::io::stdin().lock();
                    pg.import_from(Source::open(stdin)?, meta).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LedgerKind;

    fn w() -> Wallet {
        "0x1111111111111111111111111111111111111111"
            .parse()
            .unwrap_or_else(|_| unreachable!())
    }

    fn entry(credits: i64) -> Item {
        let e = LedgerEntry {
            seq: credits.unsigned_abs(),
            ts_ms: 2,
            wallet: w(),
            kind: if credits < 0 {
                LedgerKind::Debit
            } else {
                LedgerKind::Grant
            },
            credits,
            reference: Some("r".into()),
            note: None,
        };
        Item::Ledger {
            id: None,
            commit_key: ledger_commit_key(&e),
            entry: e,
        }
    }

    /// A file with a grant of 10, a debit of 3, and the stated totals `granted`/`committed`.
    fn file(granted: u64, committed: u64) -> Result<Vec<u8>, TransferError> {
        let mut out = Vec::new();
        let mut sink = Sink::new(&mut out, "test")?;
        for item in [
            entry(10),
            entry(-3),
            Item::Balance {
                wallet: w(),
                granted,
                committed,
            },
        ] {
            sink.put(&item)?;
        }
        // `finish` checks the totals too: write the trailer by hand so a bad file can be made.
        let end = Item::End {
            records: sink.records,
            sha256: hex::encode(sink.digest.clone().finish().as_ref()),
        };
        let mut line = serde_json::to_vec(&end).map_err(StorageError::from)?;
        line.push(b'\n');
        sink.out.write_all(&line)?;
        Ok(out)
    }

    fn read(bytes: &[u8]) -> Result<Summary, TransferError> {
        Source::open(bytes)?.verify()
    }

    #[test]
    fn a_whole_file_reads_back_with_its_totals() {
        let bytes = file(10, 3).unwrap_or_default();
        let s = read(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.counts.get("ledger"), Some(&2));
        assert_eq!(
            s.stated.get(&w()),
            Some(&Totals {
                granted: 10,
                committed: 3
            })
        );
        assert!(String::from_utf8_lossy(&bytes).contains(r#""record":"ledger""#));
    }

    #[test]
    fn damaged_newer_or_inconsistent_files_are_refused() {
        let good = file(10, 3).unwrap_or_default();
        let text = String::from_utf8_lossy(&good).into_owned();
        let cases = [
            ("truncated", text[..text.len() - 5].to_string()),
            (
                "no trailer",
                text.lines().take(4).collect::<Vec<_>>().join("\n") + "\n",
            ),
            (
                "forged",
                text.replacen("\"credits\":-3", "\"credits\":-4", 1),
            ),
            ("after", format!("{text}{{}}\n")),
            ("newer", text.replacen("\"version\":1", "\"version\":2", 1)),
            (
                "kind",
                text.replacen("\"record\":\"balance\"", "\"record\":\"intent\"", 1),
            ),
        ];
        for (name, bad) in cases {
            assert!(
                matches!(read(bad.as_bytes()), Err(TransferError::File(_))),
                "{name}"
            );
        }
        let mut twice = Summary::default();
        assert!(twice.add(&entry(10)).is_ok());
        assert!(
            matches!(twice.add(&entry(10)), Err(TransferError::File(_))),
            "a commit key twice"
        );
        let mismatch = file(10, 2).unwrap_or_default();
        assert!(matches!(read(&mismatch), Err(TransferError::Mismatch(_))));
        assert_eq!(TransferError::File(String::new()).exit_code(), 65);
        assert_eq!(TransferError::NotEmpty(String::new()).exit_code(), 73);
        assert_eq!(TransferError::Busy(String::new()).exit_code(), 75);
    }
}
