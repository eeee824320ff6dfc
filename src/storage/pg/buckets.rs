//! Shared rate-limit buckets: one token bucket per (wallet, class) in `rate_buckets`, from which
//! every gateway borrows tokens in batches (`ratelimit::shared`).
//!
//! Tokens are counted in thousandths (`tokens_milli`) and refill by the database's clock, so
//! gateways with skewed clocks still agree on one bucket. A borrow is one transaction: an upsert
//! that creates a full bucket or locks the existing row and returns it with the time, then the
//! update that refills it and takes what was asked for (whole tokens, at most what is there).

use super::{PgStore, to_i64, to_u64};
use crate::storage::StorageError;

/// What a borrow got from the shared bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Borrowed {
    /// Whole tokens taken, `0..=want`.
    pub granted: u32,
    /// Whole tokens left in the shared bucket after the take.
    pub left: u32,
    /// Milliseconds until the shared bucket holds a whole token again (0 when it does).
    pub wait_ms: u64,
}

/// The bucket after `elapsed_ms` of refill at `per_min` a minute, capped at `capacity`, with up
/// to `want` whole tokens taken: `(new tokens_milli, borrowed)`. Pure, for the unit tests.
pub fn take(
    tokens_milli: i64,
    elapsed_ms: i64,
    capacity: u32,
    per_min: u32,
    want: u32,
) -> (i64, Borrowed) {
    let cap = i64::from(capacity) * 1000;
    let per_min = i64::from(per_min.max(1));
    // per_min tokens per 60,000 ms = per_min / 60 thousandths of a token per ms.
    let refill = elapsed_ms.max(0).saturating_mul(per_min) / 60;
    let refilled = tokens_milli.saturating_add(refill).clamp(0, cap);
    let whole = refilled / 1000;
    let granted = whole.min(i64::from(want));
    let rest = refilled - granted * 1000;
    let wait_ms = if rest >= 1000 {
        0
    } else {
        // ceil((1000 - rest) * 60 / per_min)
        ((1000 - rest) * 60 + per_min - 1) / per_min
    };
    (
        rest,
        Borrowed {
            granted: u32::try_from(granted).unwrap_or(0),
            left: u32::try_from(rest / 1000).unwrap_or(u32::MAX),
            wait_ms: to_u64(wait_ms),
        },
    )
}

impl PgStore {
    /// Takes up to `want` whole tokens from the shared bucket of `(scope, class)`, which holds
    /// `capacity` and refills `per_min` a minute (a new bucket starts full).
    pub async fn borrow_rate_tokens(
        &self,
        scope: &str,
        class: &str,
        want: u32,
        capacity: u32,
        per_min: u32,
    ) -> Result<Borrowed, StorageError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO rate_buckets AS b (scope, class, tokens_milli, updated_ms)
                 VALUES ($1, $2, $3, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                 ON CONFLICT (scope, class) DO UPDATE SET scope = b.scope
                 RETURNING b.tokens_milli, b.updated_ms,
                           (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[&scope, &class, &(i64::from(capacity) * 1000)],
            )
            .await?;
        let (tokens, updated, now): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let (rest, borrowed) = take(tokens, now - updated, capacity, per_min, want);
        tx.execute(
            "UPDATE rate_buckets SET tokens_milli = $3, updated_ms = $4
             WHERE scope = $1 AND class = $2",
            &[&scope, &class, &rest, &to_i64(to_u64(now.max(updated)))],
        )
        .await?;
        tx.commit().await?;
        Ok(borrowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_whole_tokens_refills_by_time_and_caps_at_capacity() {
        // A full bucket of 10: take 3, 7 left.
        let (rest, b) = take(10_000, 0, 10, 60, 3);
        assert_eq!((rest, b.granted, b.left, b.wait_ms), (7_000, 3, 7, 0));
        // Asking for more than is there takes what is there.
        let (rest, b) = take(2_500, 0, 10, 60, 5);
        assert_eq!((rest, b.granted, b.left), (500, 2, 0));
        // 60 a minute is one a second: half a token missing is 500 ms away.
        assert_eq!(b.wait_ms, 500);
        // Refill: 1.5 s at 60 a minute adds 1.5 tokens; never past the capacity.
        let (rest, b) = take(500, 1_500, 10, 60, 5);
        assert_eq!((rest, b.granted), (0, 2));
        let (rest, b) = take(9_000, 3_600_000, 10, 60, 0);
        assert_eq!((rest, b.granted, b.left), (10_000, 0, 10));
        // A clock that went backwards refills nothing; 6 a minute waits 10 s for a token.
        let (rest, b) = take(0, -5_000, 10, 6, 1);
        assert_eq!((rest, b.granted, b.wait_ms), (0, 0, 10_000));
    }
}
