//! Credit leases: each statement that moves credits between a wallet's free balance, a replica's
//! lease and the committed debits (ARCHITECTURE.md, "Credit leases").
//!
//! A wallet's `balances` row holds `granted`, `committed` and `leased`; its CHECK
//! `leased + committed <= granted` makes an overdraft a constraint violation. `credit_leases` has
//! one row per (wallet, replica): `amount` leased so far, of which `used` is already committed.
//! So `balances.leased = Σ (amount − used)` over the wallet's lease rows, after every statement
//! here (each is one statement, or one transaction, that changes both tables together). Every
//! change locks the `balances` row before any lease row (`LOCK_WALLETS`, in wallet order when
//! there are several), so concurrent changes to one wallet queue on that row, never deadlock,
//! and each sees the lease rows as the one before it left them.

use super::{PgStore, to_i64, to_u64};
use crate::storage::StorageError;
use crate::wallet::Wallet;

/// What the database says about one wallet after a statement: its money in and its debits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub granted: u64,
    pub committed: u64,
}

/// What this gateway last learned of one wallet: the highest `granted` and `committed` any
/// statement returned (both only grow, so the highest is the newest, whatever order answers
/// arrive in), and `pending`, its own debits charged in memory but not yet in a committed batch.
/// One lock, so a batch landing moves `committed` and `pending` together for every reader.
#[derive(Debug, Default)]
pub struct SeenCell(std::sync::Mutex<Totals>);

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    granted: u64,
    committed: u64,
    pending: u64,
}

impl SeenCell {
    fn with<T>(&self, f: impl FnOnce(&mut Totals) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The balance this gateway knows of: `granted − committed − pending`, never below 0.
    pub fn balance(&self) -> u64 {
        self.with(|t| {
            t.granted
                .saturating_sub(t.committed)
                .saturating_sub(t.pending)
        })
    }
}

/// Leases `n` credits of `wallet`'s free balance to `replica`, or nothing when less is free.
const LEASE: &str = "
WITH b AS (
    UPDATE balances SET leased = leased + $3
    WHERE wallet = $1 AND granted - committed - leased >= $3
    RETURNING wallet, granted, committed),
l AS (
    INSERT INTO credit_leases AS c (wallet, replica, amount, used, granted_ms, expires_ms)
    SELECT wallet, $2, $3, 0, $4, $5 FROM b
    ON CONFLICT (wallet, replica) DO UPDATE
        SET amount = c.amount + EXCLUDED.amount, expires_ms = EXCLUDED.expires_ms
    RETURNING 1)
SELECT granted, committed, (SELECT count(*) FROM l) AS leased FROM b";

/// Locks the `balances` rows of the wallets whose lease rows match `{cond}`, in wallet order.
const LOCK_WALLETS: &str = "
SELECT 1 FROM balances WHERE wallet IN (SELECT wallet FROM credit_leases WHERE {cond})
ORDER BY wallet FOR UPDATE";

/// Returns `n` unused credits of a replica's lease to the wallet's free balance.
const UNLEASE: &str = "
WITH l AS (
    UPDATE credit_leases SET amount = amount - $3
    WHERE wallet = $1 AND replica = $2 AND amount - used >= $3
    RETURNING wallet)
UPDATE balances b SET leased = b.leased - $3 FROM l WHERE b.wallet = l.wallet
RETURNING b.granted, b.committed";

/// Deletes the lease rows matching the condition (`$1`: a replica, or a time) and gives what they
/// had not used back to each wallet's free balance.
const DROP_LEASES: &str = "
WITH gone AS (
    DELETE FROM credit_leases WHERE {cond} RETURNING wallet, amount - used AS rest),
per AS (SELECT wallet, sum(rest)::bigint AS rest FROM gone GROUP BY wallet)
UPDATE balances b SET leased = b.leased - per.rest FROM per WHERE b.wallet = per.wallet
RETURNING per.rest";

impl PgStore {
    fn cell(&self, wallet: &Wallet) -> std::sync::Arc<SeenCell> {
        if let Some(c) = self.seen.get(wallet) {
            return c.clone();
        }
        self.seen.entry(*wallet).or_default().clone()
    }

    /// Records what a statement returned about `wallet`; `landed` of this gateway's pending
    /// debits are in it (a journal window), all in one step.
    pub(crate) fn observe(&self, wallet: &Wallet, seen: Seen, landed: u64) {
        self.cell(wallet).with(|t| {
            t.granted = t.granted.max(seen.granted);
            t.committed = t.committed.max(seen.committed);
            t.pending = t.pending.saturating_sub(landed);
        });
    }

    /// A debit charged in memory, on its way to the database.
    pub fn note_pending(&self, wallet: &Wallet, credits: u64) {
        self.cell(wallet).with(|t| t.pending += credits);
    }

    /// The balance this gateway knows of (`SeenCell::balance`).
    pub fn known_balance(&self, wallet: &Wallet) -> u64 {
        self.seen.get(wallet).map_or(0, |c| c.balance())
    }

    /// Reads every wallet's totals into the cache (start-up).
    pub async fn load_seen(&self) -> Result<(), StorageError> {
        let c = self.client().await?;
        for r in c
            .query("SELECT wallet, granted, committed FROM balances", &[])
            .await?
        {
            let raw: &[u8] = r.try_get(0)?;
            let wallet = Wallet::from_slice(raw)
                .ok_or_else(|| StorageError::Codec("balances: not a wallet".into()))?;
            self.observe(
                &wallet,
                Seen {
                    granted: to_u64(r.try_get(1)?),
                    committed: to_u64(r.try_get(2)?),
                },
                0,
            );
        }
        Ok(())
    }

    /// This gateway's name in `replicas` and `credit_leases` (random per start).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Leases `n` credits of `wallet` to `replica` until `expires_ms` (renewed by `heartbeat`):
    /// `Some` with the wallet's totals when that much was free, else `None`. One statement.
    pub async fn lease(
        &self,
        wallet: &Wallet,
        replica: &str,
        n: u64,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<Option<Seen>, StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let row = c
            .query_opt(
                LEASE,
                &[
                    &w,
                    &replica,
                    &to_i64(n),
                    &to_i64(now_ms),
                    &to_i64(expires_ms),
                ],
            )
            .await?;
        self.seen_row(wallet, row)
    }

    /// Gives `n` unused credits of `replica`'s lease back; `None` when the lease does not hold
    /// that much unused (it expired and was recovered meanwhile).
    pub async fn unlease(
        &self,
        wallet: &Wallet,
        replica: &str,
        n: u64,
    ) -> Result<Option<Seen>, StorageError> {
        let mut c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let tx = c.transaction().await?;
        tx.execute("SELECT 1 FROM balances WHERE wallet = $1 FOR UPDATE", &[&w])
            .await?;
        let row = tx.query_opt(UNLEASE, &[&w, &replica, &to_i64(n)]).await?;
        tx.commit().await?;
        self.seen_row(wallet, row)
    }

    /// The replica's heartbeat: records it alive and pushes its leases' expiry to `expires_ms`.
    /// Returns how many lease rows it holds (a recovered lease is no longer among them).
    pub async fn heartbeat(
        &self,
        replica: &str,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<u64, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO replicas (id, started_ms, heartbeat_ms) VALUES ($1, $2, $2)
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = EXCLUDED.heartbeat_ms",
            &[&replica, &to_i64(now_ms)],
        )
        .await?;
        let n = tx
            .execute(
                "UPDATE credit_leases SET expires_ms = $2 WHERE replica = $1",
                &[&replica, &to_i64(expires_ms)],
            )
            .await?;
        // Its settlement intents are held by the same beat (`pg::intents`).
        tx.execute(
            "UPDATE intents SET lease_until = $2 WHERE owner = $1 AND lease_until > 0",
            &[&replica, &to_i64(expires_ms)],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Recovers every lease that expired before `now_ms` (its replica stopped beating): what it
    /// had not used goes back to the free balance. Returns the credits recovered.
    pub async fn recover_expired(&self, now_ms: u64) -> Result<u64, StorageError> {
        let rows = self.drop_leases("expires_ms < $1", &to_i64(now_ms)).await?;
        let c = self.client().await?;
        c.execute(
            "DELETE FROM replicas r WHERE heartbeat_ms < $1
               AND NOT EXISTS (SELECT 1 FROM credit_leases l WHERE l.replica = r.id)",
            &[&to_i64(now_ms.saturating_sub(3_600_000))],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(to_u64(r.try_get::<_, i64>(0)?)))
            .sum()
    }

    /// Returns all of `replica`'s leases (a clean shutdown, once its debits are committed) and
    /// forgets the replica. Returns the credits given back.
    pub async fn release_replica(&self, replica: &str) -> Result<u64, StorageError> {
        let rows = self.drop_leases("replica = $1", &replica).await?;
        let c = self.client().await?;
        c.execute("DELETE FROM replicas WHERE id = $1", &[&replica])
            .await?;
        // Intents it still holds (outcomes it could not learn) go to the next reconcile pass.
        c.execute(
            "UPDATE intents SET lease_until = 0 WHERE owner = $1",
            &[&replica],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(to_u64(r.try_get::<_, i64>(0)?)))
            .sum()
    }

    /// Deletes the lease rows matching `cond` (on `$1`) and gives their unused credits back, in
    /// one transaction that locks the wallets' `balances` rows first.
    async fn drop_leases(
        &self,
        cond: &str,
        arg: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Vec<tokio_postgres::Row>, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(&LOCK_WALLETS.replace("{cond}", cond), &[arg])
            .await?;
        let rows = tx
            .query(&DROP_LEASES.replace("{cond}", cond), &[arg])
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A wallet's totals now (`None`: nothing ever reached it).
    pub async fn seen(&self, wallet: &Wallet) -> Result<Option<Seen>, StorageError> {
        let c = self.client().await?;
        let w = wallet.as_bytes().as_slice();
        let row = c
            .query_opt(
                "SELECT granted, committed FROM balances WHERE wallet = $1",
                &[&w],
            )
            .await?;
        self.seen_row(wallet, row)
    }

    /// Reads `(granted, committed)` from a returned row and records it.
    fn seen_row(
        &self,
        wallet: &Wallet,
        row: Option<tokio_postgres::Row>,
    ) -> Result<Option<Seen>, StorageError> {
        let Some(r) = row else { return Ok(None) };
        let seen = Seen {
            granted: to_u64(r.try_get(0)?),
            committed: to_u64(r.try_get(1)?),
        };
        self.observe(wallet, seen, 0);
        Ok(Some(seen))
    }
}
