//! Fuzz target: the session-token path refuses every token it did not issue, without panicking.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vectorway::auth::Sessions;
use vectorway::storage::{Storage, Store};

/// Runs a future that needs no I/O reactor to completion (the embedded store's session set-up).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn sessions() -> &'static Sessions {
    static S: OnceLock<(tempfile::TempDir, Sessions)> = OnceLock::new();
    &S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let s = block_on(Sessions::new(&[42u8; 32], "fuzz.example", "http://fuzz.example", Storage::embedded(store), Duration::from_secs(900), Duration::from_secs(3600))).expect("sessions");
        (dir, s)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    // Random bytes can never be a valid HS256 token under our secret.
    assert!(sessions().authenticate(token).is_err());
});
