//! The Redis data plane: connections (plain, TLS with a private CA, AUTH), seeding, the copier, change
//! capture, the write fence and the verifier, and their one error type ([`DataError`]). It knows nothing
//! about plans.

pub mod capture;
pub mod connect;
pub mod copier;
pub mod error;
pub mod fence;
pub mod resp;
pub mod seed;
pub mod stream;
pub mod verify;

pub use error::{DataError, Peer, Role};
