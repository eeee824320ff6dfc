//! The web console's server side: the embedded single-page app and the spend rollups it charts.
//!
//! `assets` holds the static files (`/console` and `/console/{file}`), compiled into the binary;
//! `rollup` keeps per-wallet hour and day totals, fed as history records are appended, so the
//! console's charts and the operator's top-wallets list never walk the history log.

pub mod assets;
pub mod rollup;
