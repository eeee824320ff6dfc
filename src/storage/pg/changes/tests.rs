//! The change feed's cursor: it re-reads what was seen within the lookback, never less.

use std::time::Duration;

use super::ChangeFeed;

#[test]
fn the_cursor_trails_by_the_lookback() {
    // Within the lookback, everything since the start is read again.
    let mut feed = ChangeFeed::new(5, Duration::from_secs(3600));
    assert_eq!(feed.from(), 5);
    feed.record(9);
    feed.record(12);
    assert_eq!(
        feed.from(),
        5,
        "values seen within the lookback are read again"
    );

    // With no lookback the cursor is the highest value seen, and the history stays short.
    let mut feed = ChangeFeed::new(5, Duration::ZERO);
    for v in 6..100 {
        feed.record(v);
        assert_eq!(feed.from(), v);
        assert!(feed.seen.len() <= 2, "{:?}", feed.seen);
    }
}

#[test]
fn the_cursor_never_moves_back() {
    let mut feed = ChangeFeed::new(0, Duration::from_millis(20));
    feed.record(3);
    std::thread::sleep(Duration::from_millis(30));
    feed.record(7);
    assert_eq!(
        feed.from(),
        3,
        "3 was seen more than the lookback ago, 7 not yet"
    );
    std::thread::sleep(Duration::from_millis(30));
    feed.record(7);
    assert_eq!(feed.from(), 7);
}
