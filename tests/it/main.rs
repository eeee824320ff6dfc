//! The integration test binary: real servers on 127.0.0.1:0 against the Gemini simulator.
#![expect(
    clippy::disallowed_methods,
    reason = "tests spawn fake servers and concurrent clients"
)]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]
#![expect(
    clippy::zombie_processes,
    reason = "crash tests kill and reap their servers explicitly"
)]

mod account;
mod agents;
mod billing;
mod chat;
mod conformance;
mod console;
mod crash;
mod discovery;
mod docs_html;
mod edge;
mod exhaustion;
mod facilitator;
mod fallback;
mod faults;
mod harness;
mod local_model;
mod mcp;
mod media;
mod media_counts;
mod media_limits;
mod memory;
mod memory_browse;
mod money;
mod ops;
mod pg;
mod pg_agents;
mod pg_intents;
mod pg_leases;
mod pg_limits;
mod pg_replicas;
mod pg_store;
mod responses;
mod settle;
mod supported;
mod surface;
mod tidy;
mod tools;
mod transfer;
mod upstream;
mod x402;
