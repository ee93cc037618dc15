//! The Redis data plane: connections (plain, TLS with a private CA, AUTH), seeding, and the verifier.
//! It knows nothing about plans.

pub mod capture;
pub mod connect;
pub mod copier;
pub mod fence;
pub mod resp;
pub mod seed;
pub mod stream;
pub mod verify;
