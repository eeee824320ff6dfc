//! vectorway: an agent-first LLM gateway (OpenAI-compatible chat over Gemini, credits, x402, memory).
//!
//! The binary in `main.rs` is a thin CLI; everything lives here so that integration tests, benches
//! and fuzz targets link against the same code. Dependency direction, top to bottom:
//! `app` → `api` / `simulate` → `http` → `error` → domain (`auth`, `billing`) → base (`upstream`,
//! `storage`, `config`, `telemetry`).

pub mod agents;
pub mod api;
pub mod app;
pub mod auth;
pub mod billing;
pub mod config;
pub mod console;
pub mod crypto;
pub mod effects;
pub mod error;
pub mod http;
pub mod locks;
pub mod media;
pub mod memory;
pub mod openai;
pub mod payments;
pub mod ratelimit;
pub mod simulate;
pub mod storage;
pub mod telemetry;
pub mod upstream;
pub mod wallet;

pub use error::{Error, Result};
