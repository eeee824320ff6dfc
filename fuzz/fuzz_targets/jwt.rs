//! Fuzz target: the session-token path refuses every token it did not issue, without panicking.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vectorway::auth::Sessions;
use vectorway::storage::Store;

fn sessions() -> &'static Sessions {
    static S: OnceLock<(tempfile::TempDir, Sessions)> = OnceLock::new();
    &S.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let s = Sessions::new(&[42u8; 32], "fuzz.example", "http://fuzz.example", store, Duration::from_secs(900), Duration::from_secs(3600)).expect("sessions");
        (dir, s)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    // Random bytes can never be a valid HS256 token under our secret.
    assert!(sessions().authenticate(token).is_err());
});
