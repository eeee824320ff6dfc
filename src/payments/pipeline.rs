//! The verification pipeline: a bounded lock-free queue drained in batches by dedicated OS threads.
//!
//! Signature recovery costs tens of microseconds of pure CPU, which does not belong on the tokio
//! reactor; the nonce claim (`Storage::claim_x402_nonce`, a store write) follows on the caller's
//! task once the threads have checked the payment. A request pushes a `Job` (the
//! decoded payment, the quote, the resource, the time, and a oneshot sender) onto an `ArrayQueue`
//! and awaits the answer. `verifier_threads` threads pop up to `BATCH` jobs at a time, verify
//! each one, and answer through its oneshot. An idle thread parks; a submitter unparks one parked
//! thread after each push (a `SeqCst` fence on both sides closes the lost-wake-up window, and
//! parking times out after `PARK_TIMEOUT` as a backstop). A full queue is `PaymentError::Busy`
//! at once, never an unbounded backlog. A job whose requester went away is skipped without
//! claiming its nonce. Dropping the pipeline lets the threads finish the queue, then joins them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::sync::oneshot;

use super::header::DecodedPayment;
use super::{PaymentError, Verified, verify};
use crate::config::X402Config;
use crate::storage::Storage;

/// Jobs one thread takes off the queue at a time.
pub const BATCH: usize = 32;
/// Jobs waiting at most, over all threads.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Longest a parked thread sleeps without being woken (a safety net, not the wake-up path).
const PARK_TIMEOUT: Duration = Duration::from_millis(20);

/// One verification request.
struct Job {
    payment: DecodedPayment,
    quote: u64,
    resource: String,
    now: u64,
    reply: oneshot::Sender<Result<Verified, PaymentError>>,
}

/// What the threads share with the submitters.
struct Shared {
    queue: ArrayQueue<Job>,
    cfg: Arc<X402Config>,
    store: Storage,
    stop: AtomicBool,
    /// One flag per thread: set while it is (about to be) parked.
    parked: Vec<AtomicBool>,
    /// Where the next wake-up scan starts, so wake-ups spread over the threads.
    next: AtomicUsize,
}

/// The verifier threads and their queue.
pub struct Pipeline {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts `cfg.verifier_threads` threads behind a queue of `capacity` jobs.
    pub fn start(cfg: Arc<X402Config>, store: Storage, capacity: usize) -> Self {
        let n = cfg.verifier_threads.max(1);
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(capacity.max(1)),
            cfg,
            store,
            stop: AtomicBool::new(false),
            parked: (0..n).map(|_| AtomicBool::new(false)).collect(),
            next: AtomicUsize::new(0),
        });
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let sh = shared.clone();
            match std::thread::Builder::new()
                .name(format!("x402-verify-{i}"))
                .spawn(move || run(&sh, i))
            {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(%e, "could not start an x402 verifier thread"),
            }
        }
        Self { shared, threads }
    }

    /// Number of running verifier threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    /// Verifies `payment` against `quote` at time `now` (Unix seconds) on a verifier thread.
    pub async fn verify(
        &self,
        payment: DecodedPayment,
        quote: u64,
        resource: &str,
        now: u64,
    ) -> Result<Verified, PaymentError> {
        let verified = self.check(payment, quote, resource, now).await?;
        let key = verify::replay_key(&verified.network, &verified.payer, &verified.nonce);
        if !self
            .shared
            .store
            .claim_x402_nonce(&key, verified.valid_before)
            .await?
        {
            metrics::counter!("vectorway_x402_verify_total", "outcome" => "x402_nonce_reused")
                .increment(1);
            return Err(PaymentError::NonceReused);
        }
        metrics::counter!("vectorway_x402_verify_total", "outcome" => "ok").increment(1);
        Ok(verified)
    }

    /// Checks `payment` on a verifier thread (everything but the nonce claim).
    async fn check(
        &self,
        payment: DecodedPayment,
        quote: u64,
        resource: &str,
        now: u64,
    ) -> Result<Verified, PaymentError> {
        if self.threads.is_empty() {
            // No thread could be started: check here rather than never.
            return verify_one(&self.shared, &payment, quote, resource, now);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            payment,
            quote,
            resource: resource.to_string(),
            now,
            reply,
        };
        if self.shared.queue.push(job).is_err() {
            metrics::counter!("vectorway_x402_verify_rejected_total").increment(1);
            return Err(PaymentError::Busy);
        }
        fence(Ordering::SeqCst);
        self.wake_one();
        answer.await.map_err(|_| PaymentError::Unavailable)?
    }

    /// Unparks one parked thread, if any is parked (a busy thread finds the job by itself).
    fn wake_one(&self) {
        let n = self.threads.len();
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            if self.shared.parked[i].swap(false, Ordering::SeqCst) {
                self.threads[i].thread().unpark();
                return;
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("an x402 verifier thread panicked");
            }
        }
    }
}

/// One verifier thread: drain in batches, park when idle, leave when stopped and drained.
fn run(shared: &Shared, index: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    loop {
        while batch.len() < BATCH {
            match shared.queue.pop() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        if batch.is_empty() {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            shared.parked[index].store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if shared.queue.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(PARK_TIMEOUT);
            }
            shared.parked[index].store(false, Ordering::SeqCst);
            continue;
        }
        metrics::histogram!("vectorway_x402_verify_batch").record(batch.len() as f64);
        for job in batch.drain(..) {
            // The requester is gone (client disconnected): do not claim the nonce for nobody.
            if job.reply.is_closed() {
                continue;
            }
            let result = catch_unwind(AssertUnwindSafe(|| {
                verify_one(shared, &job.payment, job.quote, &job.resource, job.now)
            }))
            .unwrap_or_else(|_| Err(PaymentError::Internal("verification panicked".into())));
            let _ = job.reply.send(result);
        }
    }
}

/// Verifies one payment and assembles what the API needs from it.
fn verify_one(
    shared: &Shared,
    payment: &DecodedPayment,
    quote: u64,
    resource: &str,
    now: u64,
) -> Result<Verified, PaymentError> {
    let result = verify::check(&shared.cfg, payment, quote, now)
        .map(|checked| Verified::new(&shared.cfg, payment, checked, quote, resource));
    if let Err(e) = &result {
        metrics::counter!("vectorway_x402_verify_total", "outcome" => e.code()).increment(1);
    }
    result
}
