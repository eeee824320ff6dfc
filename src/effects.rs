//! Side effects that must finish whether or not the client stays: one tracked set of detached tasks.
//!
//! hyper drops a request's future when its client disconnects, so anything awaited inside a
//! handler can stop at any `.await`. Work that moves or records money (settling a payment,
//! crediting what it paid for, storing an idempotent answer) is therefore never awaited in the
//! request future itself: the handler hands it to `Effects::spawn`, which runs it on its own
//! task, and awaits the returned `Finishing` handle. Dropping the handle detaches the task; it
//! still runs to its end. Every such task is tracked, and shutdown waits for them
//! (`Effects::drain`) before the journal's final flush. This is the only place in the API and
//! domain layers that spawns tasks for side effects.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// The tracked set of must-finish tasks; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    tracker: TaskTracker,
}

impl Effects {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `fut` to its end on its own task, whatever happens to the caller. `what` names the
    /// effect in logs when it panics.
    pub fn spawn<F>(&self, what: &'static str, fut: F) -> Finishing<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        metrics::gauge!("vectorway_effects_running").increment(1.0);
        let fut = async move {
            let out = fut.await;
            metrics::gauge!("vectorway_effects_running").decrement(1.0);
            out
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "this is the one tracked spawn for side effects"
        )]
        let task = self.tracker.spawn(fut);
        Finishing { what, task }
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every task has ended, or `timeout`; returns how many are still running.
    /// New tasks may still be spawned afterwards (a stream finishing late settles too).
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.tracker.close();
        let _ = tokio::time::timeout(timeout, self.tracker.wait()).await;
        self.tracker.reopen();
        self.tracker.len()
    }
}

/// The outcome of an effect. Awaiting it is optional: dropping it detaches the task.
#[derive(Debug)]
pub struct Finishing<T> {
    what: &'static str,
    task: JoinHandle<T>,
}

/// An effect's task panicked or was aborted at shutdown; its work may be unfinished.
#[derive(Debug, Clone, thiserror::Error)]
#[error("background task `{what}` failed: {detail}")]
pub struct EffectFailed {
    pub what: &'static str,
    pub detail: String,
}

impl<T> Future for Finishing<T> {
    type Output = Result<T, EffectFailed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let what = self.what;
        Pin::new(&mut self.task).poll(cx).map(|joined| {
            joined.map_err(|e| {
                tracing::error!(what, %e, "effect task failed");
                EffectFailed {
                    what,
                    detail: e.to_string(),
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn an_effect_finishes_after_its_caller_is_dropped() {
        let effects = Effects::new();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let handle = effects.spawn("test", async move {
            let _ = wait.await;
            flag.store(true, Ordering::SeqCst);
        });
        // The caller (a request future) goes away before the effect has finished.
        drop(handle);
        assert_eq!(effects.running(), 1);
        go.send(()).unwrap();
        assert_eq!(effects.drain(Duration::from_secs(5)).await, 0);
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn drain_reports_what_is_still_running_and_reopens() {
        let effects = Effects::new();
        let (_keep, wait) = tokio::sync::oneshot::channel::<()>();
        let _h = effects.spawn("stuck", async move {
            let _ = wait.await;
        });
        assert_eq!(effects.drain(Duration::from_millis(20)).await, 1);
        let v = effects.spawn("after", async { 7 }).await.unwrap();
        assert_eq!(v, 7);
    }
}
