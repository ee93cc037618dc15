//! The Redis data plane: connections (plain, TLS with a private CA, AUTH), topologies (a single primary
//! or a cluster's primaries, and the key → slot hash), seeding, the copier, change capture, the write
//! fence and the verifier, and their one error type ([`DataError`]). It knows nothing about plans.

pub mod capture;
pub mod connect;
pub mod copier;
pub mod error;
pub mod fence;
pub mod keyscan;
pub mod resp;
pub mod seed;
pub mod stream;
pub mod topology;
pub mod verify;

pub use error::{DataError, Peer, Role};
