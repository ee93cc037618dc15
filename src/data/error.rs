//! The data plane's error: what went wrong talking to a Redis endpoint, as a variant callers can tell
//! apart (unreachable, AUTH, TLS, a refused command, a broken reply, a timeout, the capture's spill file,
//! ...), with the endpoint it concerns and the text the operator reads.
//!
//! The text is composed where the error happens, worded as the data plane always worded it, so turning
//! an error into a message (`String::from`, `Error::failed(e, hint)`) prints what it printed before the
//! type existed. No variant ever holds a password: endpoints are kept as a [`Peer`], and the text of a
//! redis crate error is scrubbed of the endpoint's password before it is kept.

use std::path::PathBuf;

use crate::data::connect::RedisEndpoint;

/// Which side of a copy or comparison an endpoint is, where the caller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Target,
}

/// The endpoint an error concerns: where it is, never how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub db: i64,
    pub role: Option<Role>,
}

impl Peer {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl From<&RedisEndpoint> for Peer {
    fn from(e: &RedisEndpoint) -> Self {
        Peer {
            host: e.host.clone(),
            port: e.port,
            tls: e.tls,
            db: e.db,
            role: None,
        }
    }
}

/// Shown as [`RedisEndpoint::display_url`] shows the endpoint.
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        write!(f, "{scheme}://{}:{}/{}", self.host, self.port, self.db)
    }
}

/// What went wrong in the data plane. `message` is the whole text the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The server could not be reached, or the connection broke: refused, unreachable, reset, closed.
    #[error("{message}")]
    Unreachable { peer: Peer, message: String },
    /// The server refused the credentials (AUTH refused, NOAUTH, WRONGPASS).
    #[error("{message}")]
    Auth { peer: Peer, message: String },
    /// TLS failed: the CA file cannot be read or used, the handshake failed, the server name is invalid.
    #[error("{message}")]
    Tls { peer: Peer, message: String },
    /// No answer in time.
    #[error("{message}")]
    Timeout { peer: Peer, message: String },
    /// The server answered with an error: a command it does not allow (CONFIG on ElastiCache), an ACL,
    /// OOM at maxmemory, READONLY on a replica. `command` is the command's name where the caller knows it.
    #[error("{message}")]
    Refused {
        peer: Peer,
        command: Option<String>,
        message: String,
    },
    /// A reply that is not what was asked for: not RESP, the wrong shape, more replies than commands.
    #[error("{message}")]
    Protocol { peer: Peer, message: String },
    /// Keyspace notifications are off, or lack what change capture needs.
    #[error("{message}")]
    Notifications { peer: Option<Peer>, message: String },
    /// The capture's spill file could not be written or read back.
    #[error("capture spill file: {source}")]
    Spill {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key the copier has no way to move (a type with no chunked copy, too large for one RESTORE).
    #[error("{message}")]
    Unsupported { peer: Peer, message: String },
    /// A `redis://` URL that does not parse. The URL is not repeated: it may hold a password.
    #[error("{0}")]
    InvalidUrl(String),

    /// A source shard was asked for (`copy --source-shards`) that the source does not have.
    #[error(
        "source shard {index} does not exist: the source is {source_shape} (shards 0 to {last}, in slot order)"
    )]
    NoSuchShard {
        index: usize,
        last: usize,
        source_shape: String,
    },
    /// A failure of ecmigrate's own machinery (a background task that died, no randomness).
    #[error("{0}")]
    Internal(String),
}

/// The text of an error, for call sites that carry errors as text (`Error::failed(e, hint)`, `?` into a
/// `Result<_, String>`).
impl From<DataError> for String {
    fn from(e: DataError) -> String {
        e.to_string()
    }
}

impl DataError {
    /// A redis crate error on `endpoint`, classified by what the crate says of it. Its text is kept
    /// without the endpoint's password.
    pub fn redis(endpoint: &RedisEndpoint, e: &redis::RedisError) -> DataError {
        let text = e.to_string();
        // Belt and braces: the redis crate does not print passwords, but a future version might.
        let message = match &endpoint.password {
            Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "<redacted>"),
            _ => text,
        };
        let peer = Peer::from(endpoint);
        let io_kind = io_error(e).map(std::io::Error::kind);
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
        {
            DataError::Auth { peer, message }
        } else if e.is_timeout() {
            DataError::Timeout { peer, message }
        } else if e.is_connection_refusal() || e.is_connection_dropped() {
            DataError::Unreachable { peer, message }
        } else if matches!(
            e.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        ) {
            DataError::Refused {
                peer,
                command: None,
                message,
            }
        } else if matches!(
            e.kind(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
        ) {
            DataError::Protocol { peer, message }
        } else if endpoint.tls
            && (io_kind == Some(std::io::ErrorKind::InvalidData)
                || e.kind() == redis::ErrorKind::InvalidClientConfig)
        {
            // rustls reports a failed handshake (an untrusted certificate, a server that does not
            // speak TLS) as invalid data; a CA file that cannot be read is a client configuration error.
            DataError::Tls { peer, message }
        } else {
            DataError::Unreachable { peer, message }
        }
    }

    /// The same error, its text preceded by what was being done (`copy: …`).
    pub fn context(mut self, what: impl std::fmt::Display) -> DataError {
        if let Some(message) = self.message_mut() {
            *message = format!("{what}: {message}");
        }
        self
    }

    /// The same error naming the command the server refused (only a [`DataError::Refused`] keeps it).
    pub fn command(mut self, name: &str) -> DataError {
        if let DataError::Refused { command, .. } = &mut self {
            *command = Some(name.to_string());
        }
        self
    }

    /// The same error, its endpoint known as the source or the target.
    pub fn role(mut self, role: Role) -> DataError {
        if let Some(peer) = self.peer_mut() {
            peer.role = Some(role);
        }
        self
    }

    /// The endpoint the error concerns, where there is one.
    pub fn peer(&self) -> Option<&Peer> {
        match self {
            DataError::Unreachable { peer, .. }
            | DataError::Auth { peer, .. }
            | DataError::Tls { peer, .. }
            | DataError::Timeout { peer, .. }
            | DataError::Refused { peer, .. }
            | DataError::Protocol { peer, .. }
            | DataError::Unsupported { peer, .. } => Some(peer),
            DataError::Notifications { peer, .. } => peer.as_ref(),
            DataError::Spill { .. }
            | DataError::InvalidUrl(_)
            | DataError::Internal(_)
            | DataError::NoSuchShard { .. } => None,
        }
    }

    fn peer_mut(&mut self) -> Option<&mut Peer> {
        match self {
            DataError::Unreachable { peer, .. }
            | DataError::Auth { peer, .. }
            | DataError::Tls { peer, .. }
            | DataError::Timeout { peer, .. }
            | DataError::Refused { peer, .. }
            | DataError::Protocol { peer, .. }
            | DataError::Unsupported { peer, .. } => Some(peer),
            DataError::Notifications { peer, .. } => peer.as_mut(),
            DataError::Spill { .. }
            | DataError::InvalidUrl(_)
            | DataError::Internal(_)
            | DataError::NoSuchShard { .. } => None,
        }
    }

    fn message_mut(&mut self) -> Option<&mut String> {
        match self {
            DataError::Unreachable { message, .. }
            | DataError::Auth { message, .. }
            | DataError::Tls { message, .. }
            | DataError::Timeout { message, .. }
            | DataError::Refused { message, .. }
            | DataError::Protocol { message, .. }
            | DataError::Notifications { message, .. }
            | DataError::Unsupported { message, .. }
            | DataError::InvalidUrl(message)
            | DataError::Internal(message) => Some(message),
            // Its text is composed from the I/O error; the path says which file.
            DataError::Spill { .. } => None,
            // Composed from its fields; nothing a server said.
            DataError::NoSuchShard { .. } => None,
        }
    }
}

/// The I/O error under a redis crate error, if it is one. The crate keeps it behind an `Arc`.
fn io_error(e: &redis::RedisError) -> Option<&std::io::Error> {
    let source = std::error::Error::source(e)?;
    source.downcast_ref::<std::io::Error>().or_else(|| {
        source
            .downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn endpoint() -> RedisEndpoint {
        RedisEndpoint {
            tls: true,
            password: Some(Secret::new("s3cret-token-value")),
            db: 2,
            ..RedisEndpoint::plain("10.0.0.1", 6380)
        }
    }

    #[test]
    fn redis_errors_are_classified_and_never_keep_the_password() {
        let e = endpoint();
        let server = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "unknown command 'CONFIG' s3cret-token-value".to_string(),
        ));
        let err = DataError::redis(&e, &server)
            .command("CONFIG")
            .context("probe");
        assert!(
            matches!(&err, DataError::Refused { command: Some(c), .. } if c == "CONFIG"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("probe: ") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(!format!("{err:?}").contains("s3cret"));

        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            DataError::redis(&e, &refused),
            DataError::Unreachable { .. }
        ));
        let timed_out = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(
            DataError::redis(&e, &timed_out),
            DataError::Timeout { .. }
        ));
        let handshake = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(matches!(
            DataError::redis(&e, &handshake),
            DataError::Tls { .. }
        ));
        let auth = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(matches!(
            DataError::redis(&e, &auth),
            DataError::Auth { .. }
        ));
    }

    #[test]
    fn peers_read_as_their_endpoint_and_keep_a_role() {
        let e = endpoint();
        let err = DataError::redis(
            &e,
            &redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        )
        .role(Role::Target);
        let peer = err.peer().expect("a peer");
        assert_eq!(peer.to_string(), e.display_url());
        assert_eq!(peer.addr(), "10.0.0.1:6380");
        assert_eq!(peer.role, Some(Role::Target));
        assert_eq!(String::from(DataError::Internal("x".into())), "x");
    }
}
