//! The stream's health: which side of the copy fails (source, target, or ecmigrate's own machine),
//! with its last error, since when and the retries made since; what the background tailer records
//! and `ecmigrate status` shows.

use serde::Serialize;

use crate::data::error::DataError;

/// Where a stream's trouble is: one side of the copy, or ecmigrate's own machine (the spill file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
    Local,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
            Side::Local => "local",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Side::Source => 0,
            Side::Target => 1,
            Side::Local => 2,
        }
    }
}

/// One side's failure: what is wrong, the last error, since when, and the retries made since.
#[derive(Debug, Clone, Serialize)]
pub struct Trouble {
    /// In a word or two: `unreachable`, `refusing AUTH`, `not answering`, ...
    pub state: &'static str,
    /// The last error, naming the endpoint and its node (`rediss://…:6380/0 (target primary)`).
    pub error: String,
    /// The endpoint (never with a password), where the error names one.
    pub endpoint: Option<String>,
    pub since: chrono::DateTime<chrono::Utc>,
    /// Failed attempts after the first one.
    pub retries: u64,
}

/// Whether each side of the stream works; a side with no [`Trouble`] is fine (as far as last seen).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamHealth {
    pub source: Option<Trouble>,
    pub target: Option<Trouble>,
    pub local: Option<Trouble>,
}

/// A side started failing, or recovered (with its trouble as it last was; `caught_up`: in a round
/// that brought the target up to date, a full reconcile pass included).
#[derive(Debug, Clone)]
pub enum HealthChange {
    Failing {
        side: Side,
        trouble: Trouble,
    },
    Recovered {
        side: Side,
        trouble: Trouble,
        caught_up: bool,
    },
    /// Every side answering, the capture had a gap (a flush, a failover, a dropped subscription…), and a
    /// full reconcile pass closed it.
    Reconciled {
        gap: String,
    },
}

impl StreamHealth {
    pub fn failing(&self) -> bool {
        self.source.is_some() || self.target.is_some() || self.local.is_some()
    }

    fn slot(&mut self, side: Side) -> &mut Option<Trouble> {
        match side {
            Side::Source => &mut self.source,
            Side::Target => &mut self.target,
            Side::Local => &mut self.local,
        }
    }

    /// Record a failure of `side`: a new trouble (returned, to be announced) or one more retry.
    pub(super) fn fail(
        &mut self,
        side: Side,
        e: &DataError,
        error: String,
    ) -> Option<HealthChange> {
        let slot = self.slot(side);
        if let Some(t) = slot {
            t.retries += 1;
            t.state = state_word(e);
            t.error = error;
            return None;
        }
        let trouble = Trouble {
            state: state_word(e),
            error,
            endpoint: e.peer().map(|p| p.to_string()),
            since: chrono::Utc::now(),
            retries: 0,
        };
        *slot = Some(trouble.clone());
        Some(HealthChange::Failing { side, trouble })
    }

    pub(super) fn recover(&mut self, side: Side, caught_up: bool) -> Option<HealthChange> {
        self.slot(side)
            .take()
            .map(|trouble| HealthChange::Recovered {
                side,
                trouble,
                caught_up,
            })
    }
}

/// What a failing side is, as `status` words it (`target unreachable since …`).
fn state_word(e: &DataError) -> &'static str {
    match e {
        DataError::Unreachable { .. } => "unreachable",
        DataError::Auth { .. } => "refusing AUTH",
        DataError::Tls { .. } => "failing TLS",
        DataError::Timeout { .. } => "not answering",
        DataError::Refused { .. } => "refusing commands",
        DataError::Protocol { .. } => "answering oddly",
        DataError::Notifications { .. } => "without keyspace notifications",
        DataError::Unsupported { .. } => "holding a key that cannot be copied",
        DataError::Spill { .. }
        | DataError::InvalidUrl(_)
        | DataError::Internal(_)
        | DataError::NoSuchShard { .. } => "failing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::connect::RedisEndpoint;

    #[test]
    fn a_side_fails_once_counts_its_retries_and_recovers_once() {
        let mut h = StreamHealth::default();
        let e = DataError::Unreachable {
            peer: crate::data::Peer::from(&RedisEndpoint::plain("127.0.0.1", 6380)),
            message: "cannot connect".into(),
        };
        assert!(matches!(
            h.fail(Side::Target, &e, "first".into()),
            Some(HealthChange::Failing {
                side: Side::Target,
                ..
            })
        ));
        assert!(h.fail(Side::Target, &e, "again".into()).is_none());
        let t = h.target.as_ref().unwrap();
        assert_eq!(
            (t.retries, t.state, t.error.as_str()),
            (1, "unreachable", "again")
        );
        assert!(h.failing() && h.source.is_none());
        assert!(matches!(
            h.recover(Side::Target, true),
            Some(HealthChange::Recovered {
                side: Side::Target,
                caught_up: true,
                ..
            })
        ));
        assert!(h.recover(Side::Target, true).is_none());
        assert!(!h.failing());
    }
}
