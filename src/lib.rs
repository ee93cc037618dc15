//! ecmigrate: move an unencrypted ElastiCache (Redis OSS / Valkey) replication group onto a new group with
//! at-rest encryption (KMS) and in-transit encryption (TLS + AUTH), without losing writes, resumable.
//!
//! The binary is a thin shell over this library: `cli` parses, `engine` runs a `plan`'s `steps` against a
//! `cloud` (AWS or the embedded sandbox) and the Redis `data` plane, and `ui` draws what the engine emits.

pub mod cli;
pub mod cloud;
pub mod data;
pub mod eligibility;
pub mod engine;
pub mod error;
#[cfg(feature = "test-hooks")]
pub mod faults;
pub mod fleet;
pub mod plan;
pub mod report;
pub mod secret;
pub mod steps;
pub mod ui;
