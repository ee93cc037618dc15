//! Where a step may keep a generated token: the real store, or (rehearsal) a sink that only checks that
//! it could write there.

use crate::secret::{Secret, TokenStore};

/// Where a step may keep a generated token. The rehearsal's sink only checks that it could.
pub trait TokenSink: Send + Sync {
    fn save(&self, store: &TokenStore, token: &Secret) -> std::result::Result<(), String>;
}

pub(crate) struct RealTokenSink;

impl TokenSink for RealTokenSink {
    fn save(&self, store: &TokenStore, token: &Secret) -> std::result::Result<(), String> {
        store.save(token)
    }
}

pub(crate) struct DryRunTokenSink;

impl TokenSink for DryRunTokenSink {
    fn save(&self, store: &TokenStore, _token: &Secret) -> std::result::Result<(), String> {
        store.check_writable()
    }
}
